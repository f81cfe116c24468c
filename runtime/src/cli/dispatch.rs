//! From a parsed command line to the runtime's functions: one arm per command, no logic beyond
//! choosing what to call and what to print (`print.rs`).

use super::args::{Cli, Command, Global, NetworkCmd};
use super::print;
use crate::container;
use crate::error::Result;
use crate::paths::Paths;
use crate::{cnitool, gc, image, network, run, units};
use std::io::Write;
use std::time::Duration;

/// The paths every command works with, from the global flags (and their environment variables).
pub(super) fn paths(g: &Global) -> Result<Paths> {
    Paths::resolve(
        g.root.clone(),
        g.config_dir.clone(),
        g.cni_path.as_deref(),
        g.image_root.clone(),
        g.firewall_backend.as_deref(),
        &g.config,
    )
}

/// Runs `f` for each name, printing the name on success and the error on failure; exit code 1
/// if any failed.
fn for_each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = None;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "tether: {n}: {e}");
                failed = Some(1);
            }
        }
    }
    Ok(failed.unwrap_or(0))
}

pub(super) fn dispatch(cli: Cli) -> Result<i32> {
    let p = paths(&cli.global)?;
    match cli.command {
        Command::Run(a) => run::run(&p, cli.global.cgroup_manager, &a),
        Command::Exec(a) => container::exec(
            &p,
            &a.container,
            a.cmd.command,
            &a.env,
            a.workdir,
            (a.interactive, a.tty),
        ),
        Command::Ps(a) => print::ps(&p, &a),
        Command::Inspect { containers } => print::inspect(&p, &containers),
        Command::Logs { follow, container } => print::logs(&p, &container, follow),
        Command::Stop { time, containers } => for_each(&containers, |c| {
            container::stop(&p, c, Duration::from_secs(time))
        }),
        Command::Kill { signal, containers } => {
            let sig = units::parse_signal(&signal)?;
            for_each(&containers, |c| container::kill_container(&p, c, sig))
        }
        Command::Rm { force, containers } => for_each(&containers, |c| container::rm(&p, c, force)),
        Command::Pause { containers } => for_each(&containers, |c| container::pause(&p, c, true)),
        Command::Unpause { containers } => {
            for_each(&containers, |c| container::pause(&p, c, false))
        }
        Command::Stats { json, containers } => print::stats(&p, &containers, json),
        Command::Info => print::info(&p, cli.global.cgroup_manager),
        Command::Network(n) => match n {
            NetworkCmd::Create(a) => {
                let f = a.create(&p)?;
                println!("{}", a.name);
                tracing::info!(file = %f.display(), "network config written");
                Ok(0)
            }
            NetworkCmd::Ls => print::network_ls(&p),
            NetworkCmd::Inspect { name } => {
                print::network_inspect(&network::load_network(&p, &name)?, &gc::users(&p, &name))
            }
            NetworkCmd::Rm { names } => for_each(&names, |name| gc::remove_network(&p, name)),
            NetworkCmd::Prune => {
                for line in gc::prune(&p)? {
                    println!("{line}");
                }
                Ok(0)
            }
        },
        Command::Cni(c) => print::cni(cnitool::execute(&p, &c)?),
        Command::Images => image::cmd::images(&p),
        Command::Image(c) => image::cmd::image(&p, &c),
        Command::Rmi(a) => image::cmd::rmi(&p, &a),
        Command::Diff { container } => image::cmd::diff(&p, &container),
        Command::Commit {
            container,
            reference,
        } => image::cmd::commit(&p, &container, &reference),
        Command::Overlay(o) => Ok(tether_overlay_agent::main(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Manager;

    #[test]
    fn the_firewall_backend_comes_from_the_flag_then_the_config_file_and_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("tether.json");
        std::fs::write(&file, r#"{"firewallBackend": "nftables"}"#).unwrap();
        let resolve = |flag: Option<&str>, f: &std::path::Path| {
            Paths::resolve(None, None, None, None, flag, f).map(|p| p.firewall_backend)
        };
        assert_eq!(resolve(None, &file).unwrap().as_deref(), Some("nftables"));
        assert_eq!(
            resolve(Some("iptables"), &file).unwrap().as_deref(),
            Some("iptables")
        );
        assert_eq!(resolve(None, &d.path().join("none")).unwrap(), None);
        assert!(resolve(Some("pf"), &file).is_err());
        std::fs::write(&file, r#"{"firewallBackend": "firewalld"}"#).unwrap();
        assert!(resolve(None, &file).is_err());
    }

    #[test]
    fn an_explicit_cni_path_replaces_the_default_search_path() {
        let d = tempfile::tempdir().unwrap();
        let global = |cni: Option<&str>, config: &str| Global {
            root: None,
            config_dir: None,
            cni_path: cni.map(str::to_string),
            image_root: None,
            firewall_backend: None,
            config: d.path().join(config),
            cgroup_manager: Manager::Auto,
            log: "warn".into(),
        };
        let search = |cni: Option<&str>, config: &str| -> Vec<String> {
            paths(&global(cni, config))
                .unwrap()
                .cni_path
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        let exe_dir = std::env::current_exe().unwrap();
        let exe_dir = exe_dir.parent().unwrap().display().to_string();
        assert_eq!(
            search(None, "absent.json"),
            [exe_dir, "/opt/cni/bin".into()]
        );
        assert_eq!(search(Some("/a::/b:/a"), "absent.json"), ["/a", "/b"]);
        std::fs::write(d.path().join("list.json"), r#"{"cniPath": ["/c"]}"#).unwrap();
        std::fs::write(d.path().join("str.json"), r#"{"cniPath": "/d:/e"}"#).unwrap();
        assert_eq!(search(None, "list.json"), ["/c"]);
        assert_eq!(search(None, "str.json"), ["/d", "/e"]);
        // The flag (or CNI_PATH) beats the file; an empty one counts as unset.
        assert_eq!(search(Some("/a"), "str.json"), ["/a"]);
        assert_eq!(search(Some(""), "str.json"), ["/d", "/e"]);
    }
}
