//! Everything `tether run` checks and resolves before anything is created: a bad flag is a usage
//! error (exit code 125) with nothing made. The result is the container's record-to-be.

use super::opts::RunArgs;
use crate::cgroups::{self, Manager};
use crate::error::{Context, Error, Result};
use crate::network::{self, NetMode, NetworkRecord};
use crate::paths::Paths;
use crate::state::{self, Config, ContainerState, IdMap, Store};
use crate::units;

/// A container that may be created.
pub(super) struct Plan {
    pub id: String,
    pub name: String,
    /// The network record, complete but for ADD's result.
    pub network: NetworkRecord,
    /// For `container:NAME`: that container, checked running.
    pub joined: Option<ContainerState>,
    pub cgroup: cgroups::CgroupRecord,
    pub config: Config,
    /// The confinement compiled (seccomp BPF), for the child to apply.
    pub confine: crate::confine::Prepared,
}

fn build_env(a: &RunArgs, hostname: &str, image_env: &[String]) -> Result<Vec<String>> {
    let mut env: Vec<String> = vec![
        format!("PATH={}", crate::process::DEFAULT_PATH),
        format!("HOSTNAME={hostname}"),
        "HOME=/root".into(),
    ];
    // The image's Env over tether's defaults, `-e` over both (Docker's order).
    for e in image_env {
        if let Some((k, _)) = e.split_once('=') {
            env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k));
            env.push(e.clone());
        }
    }
    for e in &a.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `-e KEY` passes tether's own value, as Docker does.
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        if k.is_empty() || k.contains('\0') {
            return Err(Error::usage(format!("invalid -e {e:?}: use KEY=VALUE")));
        }
        env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    Ok(env)
}

pub(super) fn plan(paths: &Paths, manager: Manager, a: &RunArgs) -> Result<Plan> {
    if a.cmd.command.is_empty() || a.cmd.command[0].is_empty() {
        return Err(Error::usage(
            "no command given: put it after the options, for example `tether run --net=none -- sh -c 'echo hi'`",
        ));
    }
    let id = state::new_id()?;
    let from_image = super::image::resolve(paths, a, &paths.container_dir(&id))?;
    // The image's WorkingDir and User are defaults the flags override.
    let adjusted;
    let a = match &from_image {
        Some(img) => {
            let mut x = a.clone();
            x.workdir = x.workdir.or(img.workdir.clone());
            x.security.user = x.security.user.or(img.user.clone());
            adjusted = x;
            &adjusted
        }
        None => a,
    };
    let name = match &a.name {
        Some(n) => {
            state::validate_name(n)?;
            n.clone()
        }
        None => format!("tether-{}", &id[..8]),
    };
    let limits = a.limits.parse()?;
    let mode = NetMode::parse(&a.net)?;
    let ports = a
        .publish
        .iter()
        .map(|p| units::parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let store = Store { paths };
    let joined = match &mode {
        NetMode::Container(target) => {
            let t = store.find(target).map_err(|_| {
                Error::usage(format!(
                    "--net=container:{target}: no such container (see `tether ps`)"
                ))
            })?;
            if !t.is_running() {
                return Err(Error::usage(format!(
                    "--net=container:{target}: the container is {}; its network namespace exists only while it runs (start one with `tether run -d --name {target} ...`)",
                    t.effective_status()
                )));
            }
            Some(t)
        }
        _ => None,
    };
    let conflist = network::conflist_for(paths, &mode, &ports)?;
    network::check_plugins(&conflist, &paths.cni_path)?;
    let rootfs = match &a.rootfs {
        None if from_image.is_some() => Some(
            std::path::absolute(paths.container_dir(&id).join("rootfs")).ctx("container dir")?,
        ),
        Some(r) => {
            let c = std::fs::canonicalize(r)
                .map_err(|e| Error::usage(format!("--rootfs {}: {e}", r.display())))?;
            if !c.is_dir() {
                return Err(Error::usage(format!(
                    "--rootfs {} is not a directory",
                    r.display()
                )));
            }
            Some(c)
        }
        None => None,
    };
    if let Some(w) = &a.workdir
        && !w.starts_with('/')
    {
        return Err(Error::usage(format!(
            "-w {w}: the working directory must be an absolute path"
        )));
    }
    let hostname = match &a.hostname {
        Some(h) => {
            if h.is_empty() || h.len() > 64 || h.contains(['/', ' ', '\0']) {
                return Err(Error::usage(format!(
                    "invalid --hostname {h:?}: 1 to 64 characters, no spaces or '/'"
                )));
            }
            h.clone()
        }
        None if mode == NetMode::Host => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| id[..12].to_string()),
        None => id[..12].to_string(),
    };
    if a.userns && a.userns_size == 0 {
        return Err(Error::usage("--userns-size must be at least 1"));
    }
    let confinement = a.security.confinement()?;
    let confine = crate::confine::prepare(&confinement)?;
    if let (true, Some(u)) = (a.userns, confinement.user)
        && u.uid.max(u.gid) >= a.userns_size
    {
        return Err(Error::usage(format!(
            "--user {}:{}: not mapped by --userns (ids 0 to {}): raise --userns-size",
            u.uid,
            u.gid,
            a.userns_size - 1
        )));
    }
    let cgroup = cgroups::plan(manager, a.cgroup_parent.as_deref(), &id, &limits)?;
    let fs = super::fsconf::plan(a, cgroup.version)?;
    let config = Config {
        command: match &from_image {
            Some(i) => i.command.clone(),
            None => a.cmd.command.clone(),
        },
        env: build_env(a, &hostname, from_image.as_ref().map_or(&[], |i| &i.env))?,
        workdir: a.workdir.clone(),
        hostname,
        rootfs,
        userns: a.userns.then_some(IdMap {
            host_id: a.userns_host_id,
            size: a.userns_size,
        }),
        limits,
        auto_remove: a.rm,
        detached: a.detach,
        interactive: a.interactive,
        tty: a.tty,
        confinement,
        fs,
        image: from_image.map(|i| i.mount),
    };
    let mut network = NetworkRecord::new(
        mode.clone(),
        conflist,
        ports,
        joined.as_ref().map(|j| j.id.clone()),
        // The pin's path is recorded before the pin exists: whoever finds the record can remove
        // it (see orphans.rs for what a kill before the record leaves).
        mode.own_netns().then(|| paths.netns_dir().join(&id)),
    );
    if !a.network_alias.is_empty() && !crate::network::has_dnsname(&network.conflist) {
        return Err(Error::usage(format!(
            "--network-alias needs a network with name resolution (made with `tether network create`); {} has none",
            network.name()
        )));
    }
    // Names for dnsname: the --name the user gave (a generated one is not worth a record) and
    // the aliases; used only by lists that have dnsname.
    network.dns_name = a.name.clone();
    network.aliases = a.network_alias.clone();
    Ok(Plan {
        id,
        name,
        network,
        joined,
        cgroup,
        config,
        confine,
    })
}
