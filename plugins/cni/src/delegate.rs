//! Running a delegated (IPAM) plugin for the current request, as the spec describes: same
//! environment, the entire upper config on stdin.

use crate::error::Error;
use crate::invoke::{exec_plugin, find_plugin};
use crate::request::{Command, Request};
use crate::result::CniResult;

fn env_for(req: &Request, command: Command) -> Vec<(&'static str, String)> {
    let mut env = vec![("CNI_COMMAND", command.as_str().to_string())];
    if !req.container_id.is_empty() {
        env.push(("CNI_CONTAINERID", req.container_id.clone()));
    }
    if let Some(ns) = &req.netns {
        env.push(("CNI_NETNS", ns.display().to_string()));
    }
    if !req.ifname.is_empty() {
        env.push(("CNI_IFNAME", req.ifname.clone()));
    }
    if !req.args_raw.is_empty() {
        env.push(("CNI_ARGS", req.args_raw.clone()));
    }
    let path: Vec<String> = req.path.iter().map(|p| p.display().to_string()).collect();
    env.push(("CNI_PATH", path.join(":")));
    env
}

fn run(plugin_type: &str, req: &Request, command: Command) -> Result<Option<CniResult>, Error> {
    let bin = find_plugin(plugin_type, &req.path)?;
    let out = exec_plugin(&bin, &env_for(req, command), &req.stdin)?;
    out.map(|v| CniResult::from_json(&v)).transpose()
}

/// Runs `command` of the delegate `plugin_type` for this request's attachment with `conf` on
/// stdin instead of the request's own config: for a plugin that hands the whole attachment to
/// another plugin with a config of its making (as the reference flannel plugin delegates to
/// bridge). Its result, if it printed one, whatever version.
pub fn exec_with(
    plugin_type: &str,
    req: &Request,
    command: Command,
    conf: &[u8],
) -> Result<Option<CniResult>, Error> {
    let bin = find_plugin(plugin_type, &req.path)?;
    let out = exec_plugin(&bin, &env_for(req, command), conf)?;
    out.map(|v| CniResult::from_json(&v)).transpose()
}

/// ADD on the delegate; its result, whatever version it printed.
pub fn add(plugin_type: &str, req: &Request) -> Result<CniResult, Error> {
    run(plugin_type, req, Command::Add)?.ok_or_else(|| {
        Error::internal(format!(
            "IPAM plugin {plugin_type} returned no result on ADD"
        ))
    })
}

pub fn del(plugin_type: &str, req: &Request) -> Result<(), Error> {
    run(plugin_type, req, Command::Del).map(drop)
}

pub fn check(plugin_type: &str, req: &Request) -> Result<(), Error> {
    run(plugin_type, req, Command::Check).map(drop)
}

pub fn status(plugin_type: &str, req: &Request) -> Result<(), Error> {
    run(plugin_type, req, Command::Status).map(drop)
}

pub fn gc(plugin_type: &str, req: &Request) -> Result<(), Error> {
    run(plugin_type, req, Command::Gc).map(drop)
}
