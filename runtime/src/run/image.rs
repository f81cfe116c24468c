//! `tether run IMAGE [CMD...]`: which positional is an image, and what the image gives the
//! container (its overlayfs layers, Entrypoint/Cmd, Env, WorkingDir, User).
//!
//! The rule that keeps `tether run -- CMD` as it was:
//!
//! ```text
//! tether run [OPTS] IMAGE [CMD...]         no --rootfs, first positional before `--`: an image
//! tether run [OPTS] IMAGE -- CMD...        the same; CMD after the `--`
//! tether run [OPTS] -- CMD...              after `--`: a host command, no image (as before)
//! tether run [OPTS] --rootfs DIR [--] CMD  --rootfs: always a command
//! ```

use super::opts::RunArgs;
use crate::error::{Error, Result};
use crate::image::{config, ops};
use crate::paths::Paths;
use crate::state::ImageMount;

/// The container's command as clap left it, split into image and command if it names one.
pub(super) struct FromImage {
    pub mount: ImageMount,
    pub command: Vec<String>,
    /// The image's Env (tether's defaults and `-e` go over it).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// The image's User, resolved to UID:GID.
    pub user: Option<String>,
}

/// True when the command's first word came right after a `--` on tether's command line (clap
/// swallows that `--`, so it is looked for in the process's own arguments: the command is
/// their tail, as the trailing positional takes everything to the end).
fn after_dashdash(cmd: &[String]) -> bool {
    let argv: Vec<String> = std::env::args().collect();
    let n = cmd.len();
    argv.len() > n && argv[argv.len() - n..] == *cmd && argv[argv.len() - n - 1] == "--"
}

pub(super) fn resolve(
    paths: &Paths,
    a: &RunArgs,
    container_dir: &std::path::Path,
) -> Result<Option<FromImage>> {
    let words = &a.cmd.command;
    if a.rootfs.is_some() || words.is_empty() || after_dashdash(words) {
        return Ok(None);
    }
    let reference = &words[0];
    let mut cli_cmd = &words[1..];
    if cli_cmd.first().is_some_and(|w| w == "--") {
        cli_cmd = &cli_cmd[1..];
    }
    if a.userns {
        return Err(Error::usage(
            "--userns with an image is not supported: the image's layers belong to host root",
        ));
    }
    let img = ops::for_run(paths, reference).map_err(|e| match e {
        Error::Usage(m) if m.starts_with("no such image") => Error::usage(format!(
            "{m}; a host command goes after `--`: `tether run [OPTIONS] -- {}`",
            words.join(" ")
        )),
        e => e,
    })?;
    let rc = img.config.run();
    let command = config::command(&rc, a.entrypoint.as_deref(), cli_cmd);
    if command.is_empty() {
        return Err(Error::usage(format!(
            "image {reference} has no Entrypoint or Cmd: give a command, e.g. `tether run {reference} sh`"
        )));
    }
    let user = match rc.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(resolve_user(u, &img)?),
        None => None,
    };
    let dir = std::path::absolute(container_dir).map_err(|e| Error::io("container dir", e))?;
    let mount = ImageMount {
        id: img.record.id.clone(),
        reference: reference.clone(),
        lowers: img.lowers,
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    for p in mount.lowers.iter().chain([&mount.upper, &mount.work]) {
        if p.to_string_lossy().contains([',', ':']) {
            return Err(Error::usage(format!(
                "{}: overlayfs options cannot name a path with ',' or ':' (choose another --root or --image-root)",
                p.display()
            )));
        }
    }
    Ok(Some(FromImage {
        mount,
        command,
        env: rc.env.unwrap_or_default(),
        workdir: rc.working_dir.filter(|w| w.starts_with('/')),
        user,
    }))
}

/// `User` as Docker reads it: `uid`, `uid:gid`, `name` or `name:group`, names looked up in the
/// image's /etc/passwd and /etc/group.
fn resolve_user(u: &str, img: &ops::ForRun) -> Result<String> {
    let (user, group) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let lookup = |file: &Option<std::path::PathBuf>, name: &str, field: usize| -> Option<u32> {
        let text = std::fs::read_to_string(file.as_ref()?).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(field)?.parse().ok())
                .flatten()
        })
    };
    let not_found = |what: &str, n: &str| {
        Error::usage(format!(
            "image user {u}: no {what} {n} in the image's /etc/{what}"
        ))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, lookup(&img.passwd, user, 3).unwrap_or(0)),
        Err(_) => (
            lookup(&img.passwd, user, 2).ok_or_else(|| not_found("passwd", user))?,
            lookup(&img.passwd, user, 3).unwrap_or(0),
        ),
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&img.group, g, 2).ok_or_else(|| not_found("group", g))?,
        },
    };
    Ok(format!("{uid}:{gid}"))
}
