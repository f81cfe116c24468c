//! The network store: named conflists in `<config_dir>` (plus the built-in `bridge`, which needs no
//! file): load, list, create, remove; the list a `--net` mode runs with, and the list GC runs
//! with for each network.

use super::{
    DEFAULT_NETWORK, NetMode, add_portmap, bridge_conflist, builtin_bridge, overlaps,
    overlay_conflist, subnets, version,
};
use crate::error::{Context, Error, Result, at};
use crate::paths::Paths;
use crate::units::PortMapping;
use cni::runtime::ConfList;
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::path::PathBuf;

/// The conflist for a `--net` mode. `ports` adds the `portmap` plugin to bridge networks that lack
/// a plugin with the `portMappings` capability.
pub fn conflist_for(paths: &Paths, mode: &NetMode, ports: &[PortMapping]) -> Result<ConfList> {
    let mut list = match mode {
        NetMode::None => super::conflist::single("none", "none"),
        NetMode::Host => super::conflist::single("host", "host"),
        NetMode::Container(_) => super::conflist::single("container", "container"),
        NetMode::Network(name) => load_network_file(paths, name)?,
    };
    if !ports.is_empty() {
        if !matches!(mode, NetMode::Network(_)) {
            return Err(Error::usage(
                "-p publishes ports of a container with its own address: use it with --net=bridge or a network from `tether network create`",
            ));
        }
        add_portmap(&mut list);
    }
    super::conflist::set_firewall_backend(&mut list, paths.firewall_backend.as_deref());
    if *mode == NetMode::Network(DEFAULT_NETWORK.into()) {
        version::negotiate_version(&mut list, paths);
    }
    Ok(list)
}

/// The conflist of a named network: the built-in `bridge` (its version negotiated with the
/// plugins), or `<config_dir>/*.conflist` by name, as written.
pub fn load_network(paths: &Paths, name: &str) -> Result<ConfList> {
    let mut l = load_network_file(paths, name)?;
    if name == DEFAULT_NETWORK {
        version::negotiate_version(&mut l, paths);
    }
    Ok(l)
}

pub(super) fn load_network_file(paths: &Paths, name: &str) -> Result<ConfList> {
    if name == DEFAULT_NETWORK {
        return Ok(builtin_bridge(paths));
    }
    // `load` skips unreadable files: its only failure is that no readable file names the
    // network (no need to read its message to tell).
    ConfList::load(&paths.config_dir, name).map_err(|_| {
        Error::usage(format!(
            "unknown network {name:?}: no conflist named {name} in {}; create it with `tether network create {name} --subnet 10.89.0.0/24`, or see `tether network ls`",
            paths.config_dir.display()
        ))
    })
}

/// Every network config in the config dir, by name (unreadable files are skipped).
pub fn list_networks(paths: &Paths) -> Vec<(ConfList, Option<PathBuf>)> {
    let mut v = vec![(builtin_bridge(paths), None)];
    let mut files: Vec<PathBuf> = std::fs::read_dir(&paths.config_dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !["conflist", "conf", "json"].contains(&ext) {
            continue;
        }
        match ConfList::load_file(&f) {
            Ok(l) if !v.iter().any(|(x, _)| x.name == l.name) => v.push((l, Some(f))),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "skipping unreadable network config")
            }
        }
    }
    v
}

/// The flags of `tether network create`, as clap parses them.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Network name (letters, digits, '_', '.', '-')
    pub name: String,
    /// bridge: a network on this host; overlay: this host's part of a multi-host overlay of
    /// the same name (`tether overlay init/agent NAME`), whose agent leases the subnet
    #[arg(long, value_enum, default_value_t = Driver::Bridge)]
    pub driver: Driver,
    /// Subnet in CIDR notation, e.g. 10.89.0.0/24 (bridge only, required there)
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (default: the first address of the subnet)
    #[arg(long)]
    pub gateway: Option<String>,
    /// Linux bridge name (default: tbr-<hash of the name>)
    #[arg(long)]
    pub bridge: Option<String>,
    /// Do not masquerade traffic leaving the subnet
    #[arg(long)]
    pub no_masquerade: bool,
    /// The conflist's cniVersion [default: the newest the plugins support, up to 1.1.0, which
    /// `network prune` needs to send GC]
    #[arg(long, value_name = "VERSION")]
    pub cni_version: Option<String>,
    /// The domain containers' names resolve in (`<name>.<domain>`), served by the dnsname
    /// plugin's DNS server on the gateway
    #[arg(long, value_name = "DOMAIN", default_value = super::DEFAULT_DNS_DOMAIN)]
    pub dns_domain: String,
    /// No name resolution on this network (no dnsname plugin, as Docker's default bridge)
    #[arg(long)]
    pub disable_dns: bool,
}

/// `tether network create --driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    Bridge,
    Overlay,
}

impl CreateArgs {
    /// Parses the flags and writes the conflist; returns its path.
    pub fn create(&self, paths: &Paths) -> Result<PathBuf> {
        if self.driver == Driver::Overlay {
            return self.create_overlay(paths);
        }
        let Some(subnet) = &self.subnet else {
            return Err(Error::usage(
                "--subnet is required for a bridge network, e.g. --subnet 10.89.0.0/24",
            ));
        };
        let subnet = subnet.parse().map_err(|e| {
            Error::usage(format!(
                "invalid --subnet {subnet:?}: {e}; use CIDR notation such as 10.89.0.0/24"
            ))
        })?;
        let gateway = self
            .gateway
            .as_ref()
            .map(|g| {
                g.parse().map_err(|_| {
                    Error::usage(format!("invalid --gateway {g:?}: use an IP address"))
                })
            })
            .transpose()?;
        create_network(
            paths,
            &CreateOpts {
                name: &self.name,
                subnet,
                gateway,
                bridge: self.bridge.as_deref(),
                masquerade: !self.no_masquerade,
                cni_version: self.cni_version.as_deref(),
                dns_domain: (!self.disable_dns).then_some(self.dns_domain.as_str()),
            },
        )
    }
}

impl CreateArgs {
    /// `--driver overlay`: the subnet, gateway and bridge come from the agent's lease, so
    /// those flags are refused rather than ignored.
    fn create_overlay(&self, paths: &Paths) -> Result<PathBuf> {
        for (flag, set) in [
            ("--subnet", self.subnet.is_some()),
            ("--gateway", self.gateway.is_some()),
            ("--bridge", self.bridge.is_some()),
        ] {
            if set {
                return Err(Error::usage(format!(
                    "{flag} does not apply to --driver overlay: the overlay agent leases this host's subnet (see `tether overlay init`)"
                )));
            }
        }
        tether_overlay_state::validate_name(&self.name).map_err(|e| Error::usage(e.to_string()))?;
        check_new_name(paths, &self.name)?;
        let mut list = overlay_conflist(&self.name, !self.no_masquerade);
        set_version(&mut list, paths, self.cni_version.as_deref())?;
        write_list(paths, &list)
    }
}

/// Refuses a reserved name or one a network already has.
fn check_new_name(paths: &Paths, name: &str) -> Result<()> {
    if !cni::types::valid_id(name) {
        return Err(Error::usage(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.' and '-'"
        )));
    }
    if ["bridge", "host", "none", "default"].contains(&name) || name.starts_with("container") {
        return Err(Error::usage(format!(
            "{name:?} is a reserved network name: pick another"
        )));
    }
    if list_networks(paths).iter().any(|(l, _)| l.name == name) {
        return Err(Error::usage(format!(
            "network {name} already exists: remove it with `tether network rm {name}` or pick another name"
        )));
    }
    Ok(())
}

fn set_version(list: &mut ConfList, paths: &Paths, cni_version: Option<&str>) -> Result<()> {
    match cni_version {
        Some(v) if cni::version::ALL.contains(&v) => list.cni_version = v.to_string(),
        Some(v) => {
            return Err(Error::usage(format!(
                "unknown --cni-version {v:?}: use one of {}",
                cni::version::ALL.join(", ")
            )));
        }
        None => version::negotiate_version(list, paths),
    }
    Ok(())
}

fn write_list(paths: &Paths, list: &ConfList) -> Result<PathBuf> {
    let mut list = list.clone();
    super::conflist::set_firewall_backend(&mut list, paths.firewall_backend.as_deref());
    std::fs::create_dir_all(&paths.config_dir).ctx(at("create", &paths.config_dir))?;
    let path = paths.config_dir.join(format!("{}.conflist", list.name));
    crate::atomic::write_replacing(&path, &list.to_bytes()).ctx(at("write", &path))?;
    Ok(path)
}

pub struct CreateOpts<'a> {
    pub name: &'a str,
    pub subnet: IpNetwork,
    pub gateway: Option<std::net::IpAddr>,
    pub bridge: Option<&'a str>,
    pub masquerade: bool,
    /// The conflist's `cniVersion`; by default the newest the plugins on the search path support,
    /// up to [`super::CNI_VERSION`].
    pub cni_version: Option<&'a str>,
    /// The dnsname plugin's `domainName`; `None`: no dnsname in the list.
    pub dns_domain: Option<&'a str>,
}

/// Writes `<config_dir>/<name>.conflist`.
pub fn create_network(paths: &Paths, o: &CreateOpts) -> Result<PathBuf> {
    check_new_name(paths, o.name)?;
    if o.subnet.ip() != o.subnet.network() {
        return Err(Error::usage(format!(
            "--subnet {} has host bits set: did you mean {}/{}?",
            o.subnet,
            o.subnet.network(),
            o.subnet.prefix()
        )));
    }
    if let Some(gw) = o.gateway
        && !o.subnet.contains(gw)
    {
        return Err(Error::usage(format!(
            "--gateway {gw} is not in --subnet {}",
            o.subnet
        )));
    }
    let bridge = match o.bridge {
        Some(b)
            if b.is_empty()
                || b.len() > 15
                || b.contains('/')
                || b.contains(char::is_whitespace) =>
        {
            return Err(Error::usage(format!(
                "invalid --bridge {b:?}: a Linux interface name of 1 to 15 characters without '/' or spaces"
            )));
        }
        Some(b) => b.to_string(),
        None => {
            use sha2::Digest;
            let h = sha2::Sha256::digest(o.name.as_bytes());
            format!(
                "tbr-{}",
                h.iter()
                    .take(4)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    };
    for (l, _) in list_networks(paths) {
        if let Some(s) = subnets(&l).into_iter().find(|s| overlaps(*s, o.subnet)) {
            return Err(Error::usage(format!(
                "--subnet {} overlaps {s} of network {}: pick a free range",
                o.subnet, l.name
            )));
        }
        if l.plugins
            .iter()
            .any(|p| p.get("bridge").and_then(Value::as_str) == Some(&bridge))
        {
            return Err(Error::usage(format!(
                "bridge {bridge} is already used by network {}: pass another --bridge",
                l.name
            )));
        }
    }
    let mut list = bridge_conflist(
        o.name,
        &bridge,
        o.subnet,
        o.gateway,
        o.masquerade,
        &paths.ipam_dir(),
    );
    if let Some(domain) = o.dns_domain {
        super::add_dnsname(&mut list, domain, &paths.dns_dir())?;
    }
    set_version(&mut list, paths, o.cni_version)?;
    write_list(paths, &list)
}

/// The file of a network that `network rm` may remove (not the built-in one).
pub fn network_file(paths: &Paths, name: &str) -> Result<PathBuf> {
    if name == DEFAULT_NETWORK {
        return Err(Error::usage(
            "the built-in bridge network cannot be removed",
        ));
    }
    list_networks(paths)
        .into_iter()
        .find(|(l, _)| l.name == name)
        .and_then(|(_, f)| f)
        .ok_or_else(|| Error::usage(format!("no such network: {name} (see `tether network ls`)")))
}

/// The list GC runs with for a network: `tether run -p` adds portmap to bridge networks, so its
/// rules are theirs to collect too; the built-in network's version is negotiated as for a run.
pub fn gc_list(paths: &Paths, mut list: ConfList) -> ConfList {
    if super::is_bridge_network(&list)
        && cni::runtime::find_plugin("portmap", &paths.cni_path).is_ok()
    {
        super::add_portmap(&mut list);
    }
    if list.name == DEFAULT_NETWORK {
        version::negotiate_version(&mut list, paths);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::test_paths as paths;

    #[test]
    fn create_list_and_conflicts() {
        let (_d, p) = paths();
        let o = CreateOpts {
            name: "blue",
            subnet: "10.89.0.0/24".parse().unwrap(),
            gateway: None,
            bridge: None,
            masquerade: true,
            cni_version: None,
            dns_domain: Some("dns.tether"),
        };
        let f = create_network(&p, &o).unwrap();
        assert!(f.ends_with("blue.conflist"));
        let l = load_network(&p, "blue").unwrap();
        assert!(l.plugins[0]["bridge"].as_str().unwrap().starts_with("tbr-"));
        assert_eq!(l.plugins[1]["type"], "dnsname");
        assert_eq!(l.plugins[1]["domainName"], "dns.tether");
        assert_eq!(l.plugins[1]["capabilities"]["aliases"], true);
        assert!(
            create_network(&p, &o)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        let o2 = CreateOpts {
            name: "red",
            subnet: "10.89.0.128/25".parse().unwrap(),
            ..o
        };
        assert!(
            create_network(&p, &o2)
                .unwrap_err()
                .to_string()
                .contains("overlaps")
        );
        let o3 = CreateOpts {
            name: "green",
            subnet: "10.90.0.1/24".parse().unwrap(),
            ..o2
        };
        assert!(
            create_network(&p, &o3)
                .unwrap_err()
                .to_string()
                .contains("host bits")
        );
        let e = load_network(&p, "nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown network") && e.contains("tether network create"),
            "{e}"
        );
        assert_eq!(list_networks(&p).len(), 2);
    }

    #[test]
    fn an_overlay_network_is_the_overlay_plugin_named_like_the_network() {
        let (_d, p) = paths();
        let args = |extra: &[&str]| {
            use clap::Parser;
            #[derive(clap::Parser)]
            struct T {
                #[command(flatten)]
                a: CreateArgs,
            }
            let mut v = vec!["t", "ov1", "--driver", "overlay", "--cni-version", "1.1.0"];
            v.extend_from_slice(extra);
            T::parse_from(v).a
        };
        args(&[]).create(&p).unwrap();
        let l = load_network(&p, "ov1").unwrap();
        assert_eq!(
            l.plugins,
            vec![serde_json::json!({"type": "overlay", "network": "ov1"})]
        );
        assert_eq!(crate::network::overlay_network(&l), Some("ov1"));
        assert!(crate::network::is_bridge_network(&l), "-p adds portmap");
        let e = args(&[]).create(&p).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = args(&["--subnet", "10.1.0.0/24"])
            .create(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--subnet does not apply"), "{e}");
        let mut a = args(&["--no-masquerade"]);
        a.name = "ov2".into();
        a.create(&p).unwrap();
        assert_eq!(load_network(&p, "ov2").unwrap().plugins[0]["ipMasq"], false);
    }

    #[test]
    fn builtin_bridge_and_portmap() {
        let (_d, p) = paths();
        let l = conflist_for(&p, &NetMode::Network("bridge".into()), &[]).unwrap();
        assert_eq!(l.name, "bridge");
        assert_eq!(l.plugins[0]["bridge"], "tether0");
        assert_eq!(
            l.plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.88.0.0/16"
        );
        assert_eq!(
            l.plugins[0]["ipam"]["dataDir"],
            p.ipam_dir().display().to_string()
        );
        let port = crate::units::parse_port("8080:80").unwrap();
        let l = conflist_for(
            &p,
            &NetMode::Network("bridge".into()),
            std::slice::from_ref(&port),
        )
        .unwrap();
        assert_eq!(l.plugins[1]["type"], "portmap");
        assert!(conflist_for(&p, &NetMode::None, &[port]).is_err());
    }
}
