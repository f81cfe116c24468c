//! The clap types of the image commands and their output (tables on stdout), so that `cli/`
//! holds only one arm per command.

use super::ops;
use crate::error::Result;
use crate::paths::Paths;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Import a docker-archive or OCI layout archive (plain or gzip layers); prints the image id
    Import {
        /// Name the image NAME[:TAG] (default: the names the archive carries)
        #[arg(long, value_name = "REF")]
        name: Option<String>,
        /// The archive (`podman save`, `docker save`, `skopeo copy ... oci-archive:`)
        file: PathBuf,
    },
    /// List images (as `tether images`)
    Ls,
    /// Show images as JSON: id, names, layers, config
    Inspect {
        /// Image names or ids
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write an image as a docker-archive (what `podman load` and `docker load` read)
    Export {
        /// Image name or id
        image: String,
        /// The archive to write (replaced atomically)
        file: PathBuf,
    },
    /// Remove layers no image uses
    Prune,
    /// Remove images (as `tether rmi`)
    Rm(RmiArgs),
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove even if containers use the image (their writable layers stay until `tether rm`)
    #[arg(short, long)]
    pub force: bool,
    /// Image names or ids
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn images(p: &Paths) -> Result<i32> {
    println!(
        "{:<40}  {:<12}  {:<12}  {:<20}  SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for r in ops::list(p)? {
        println!(
            "{:<40}  {:<12}  {:<12}  {:<20}  {}",
            r.repository,
            r.tag,
            r.id,
            r.created.get(..19).unwrap_or(&r.created),
            crate::units::human_bytes(r.size)
        );
    }
    Ok(0)
}

pub fn rmi(p: &Paths, a: &RmiArgs) -> Result<i32> {
    let mut code = 0;
    for i in &a.images {
        match ops::rmi(p, i, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("tether: {i}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn diff(p: &Paths, container: &str) -> Result<i32> {
    for (k, path) in ops::diff(p, container)? {
        println!("{k} {path}");
    }
    Ok(0)
}

pub fn commit(p: &Paths, container: &str, reference: &str) -> Result<i32> {
    println!("{}", ops::commit(p, container, reference)?);
    Ok(0)
}

pub fn image(p: &Paths, c: &ImageCmd) -> Result<i32> {
    match c {
        ImageCmd::Import { name, file } => {
            for (id, names) in ops::import(p, file, name.as_deref())? {
                println!("{id}");
                for n in names {
                    tracing::info!(%n, %id, "tagged");
                }
            }
            Ok(0)
        }
        ImageCmd::Ls => images(p),
        ImageCmd::Inspect { images } => {
            let v = images
                .iter()
                .map(|i| ops::inspect(p, i))
                .collect::<Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            Ok(0)
        }
        ImageCmd::Export { image, file } => {
            println!("{}", ops::export(p, image, file)?);
            Ok(0)
        }
        ImageCmd::Prune => {
            for (d, size) in ops::prune(p)? {
                println!("deleted layer {d} ({})", crate::units::human_bytes(size));
            }
            Ok(0)
        }
        ImageCmd::Rm(a) => rmi(p, a),
    }
}
