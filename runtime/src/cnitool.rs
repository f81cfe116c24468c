//! `tether cni`: drive any conflist by hand, as libcni's `cnitool` does. The flags are parsed by
//! clap into [`CniCmd`]; `CNI_ARGS` is parsed by the protocol crate's own parser, the one the
//! plugins use.

use crate::error::{Context, Error, Result};
use crate::network;
use crate::paths::Paths;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CniTarget {
    /// Network name (a conflist in the config dir, or the built-in `bridge`)
    pub network: String,
    /// Path of the network namespace (any nsfs path: /run/netns/x, /proc/PID/ns/net)
    pub netns: PathBuf,
    /// CNI_CONTAINERID [default: a hash of the netns path, as cnitool does]
    #[arg(long)]
    pub container_id: Option<String>,
    /// CNI_IFNAME
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// CNI_ARGS, e.g. "IP=10.88.0.9;K=V"
    #[arg(long, env = "CNI_ARGS")]
    pub args: Option<String>,
    /// Capability arguments as a JSON object, e.g. '{"portMappings":[...]}'
    #[arg(long, env = "CAP_ARGS")]
    pub capability_args: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// ADD: attach NETNS to NETWORK; prints the result
    Add(CniTarget),
    /// DEL: detach, in reverse plugin order with the cached result
    Del(CniTarget),
    /// CHECK the attachment against the cached result
    Check(CniTarget),
    /// STATUS: whether the network's plugins are ready
    Status {
        /// Network name
        network: String,
    },
    /// GC: remove every attachment of NETWORK except the listed ones
    Gc {
        /// Network name
        network: String,
        /// CONTAINERID:IFNAME of an attachment to keep (repeatable)
        #[arg(long = "valid", value_name = "ID:IFNAME")]
        valid: Vec<String>,
    },
}

/// What a `tether cni` command has to show.
#[derive(Debug)]
pub enum Outcome {
    /// ADD's result, in the network's version.
    Result(Value),
    /// STATUS: the network is ready.
    Ready(String),
    Done,
}

impl CniTarget {
    fn runtime_conf(&self) -> Result<cni::runtime::RuntimeConf> {
        let container_id = match &self.container_id {
            Some(c) => c.clone(),
            None => {
                use sha2::Digest;
                let h = sha2::Sha256::digest(self.netns.as_os_str().as_encoded_bytes());
                h.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        let args = cni::request::parse_cni_args(self.args.as_deref().unwrap_or(""))
            .map_err(|e| Error::usage(format!("invalid --args: {}", e.msg)))?;
        let capability_args = match &self.capability_args {
            Some(s) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => m,
                _ => return Err(Error::usage("--capability-args must be a JSON object")),
            },
            None => Default::default(),
        };
        Ok(cni::runtime::RuntimeConf {
            container_id,
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            args,
            capability_args,
        })
    }
}

/// `CONTAINERID:IFNAME`.
fn attachment(v: &str) -> Result<cni::Attachment> {
    v.split_once(':')
        .map(|(c, i)| cni::Attachment {
            container_id: c.to_string(),
            ifname: i.to_string(),
        })
        .ok_or_else(|| Error::usage(format!("invalid --valid {v:?}: use CONTAINERID:IFNAME")))
}

pub fn execute(paths: &Paths, c: &CniCmd) -> Result<Outcome> {
    let inv = paths.invoker();
    match c {
        CniCmd::Add(t) => {
            let l = network::load_network(paths, &t.network)?;
            let r = inv.add(&l, &t.runtime_conf()?).ctx("ADD failed")?;
            Ok(Outcome::Result(r.to_json(&l.cni_version)))
        }
        CniCmd::Del(t) => {
            let l = network::load_network(paths, &t.network)?;
            inv.del(&l, &t.runtime_conf()?).ctx("DEL failed")?;
            Ok(Outcome::Done)
        }
        CniCmd::Check(t) => {
            let l = network::load_network(paths, &t.network)?;
            inv.check(&l, &t.runtime_conf()?).ctx("CHECK failed")?;
            Ok(Outcome::Done)
        }
        CniCmd::Status { network } => {
            let l = network::load_network(paths, network)?;
            inv.status(&l).ctx("STATUS failed")?;
            Ok(Outcome::Ready(network.clone()))
        }
        CniCmd::Gc { network, valid } => {
            let l = network::load_network(paths, network)?;
            let valid = valid
                .iter()
                .map(|v| attachment(v))
                .collect::<Result<Vec<_>>>()?;
            inv.gc(&l, &valid).ctx("GC failed")?;
            Ok(Outcome::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(args: Option<&str>) -> CniTarget {
        CniTarget {
            network: "n".into(),
            netns: "/run/netns/x".into(),
            container_id: None,
            ifname: "eth0".into(),
            args: args.map(str::to_string),
            capability_args: Some(r#"{"portMappings":[]}"#.into()),
        }
    }

    #[test]
    fn runtime_conf_from_the_flags() {
        let rt = target(Some("IP=10.88.0.9;;K=V")).runtime_conf().unwrap();
        assert_eq!(
            rt.args,
            [("IP".into(), "10.88.0.9".into()), ("K".into(), "V".into())]
        );
        assert_eq!(rt.container_id.len(), 64, "a hash of the netns path");
        assert!(rt.capability_args.contains_key("portMappings"));
        let e = target(Some("novalue")).runtime_conf().unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("KEY=VALUE"), "{e}");
        assert!(attachment("c1:eth0").is_ok());
        assert!(attachment("c1").is_err());
    }
}
