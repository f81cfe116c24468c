//! `--net` modes, network configs (built-in `bridge` plus `tether network create` conflists), plugin
//! lookup, and the files (`/etc/hosts`, `/etc/resolv.conf`) derived from a CNI result.

use crate::error::{Context, Error, Result, at};
use crate::state::Paths;
use crate::units::PortMapping;
use cni::runtime::ConfList;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The built-in default network: needs no file.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "tether0";
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// The spec version of the networks tether makes: 1.1.0 brings GC (what `network prune` relies on to
/// collect leases, veths and rules nobody has a cache entry for any more) and STATUS.
pub const CNI_VERSION: &str = "1.1.0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// Own namespace, loopback only.
    None,
    /// The host's namespace.
    Host,
    /// Another container's namespace.
    Container(String),
    /// A bridge network: the default `bridge` or one made with `tether network create`.
    Network(String),
}

impl NetMode {
    pub fn parse(s: &str) -> Result<NetMode> {
        Ok(match s {
            "none" => NetMode::None,
            "host" => NetMode::Host,
            "" | "default" => NetMode::Network(DEFAULT_NETWORK.into()),
            s if s.starts_with("container:") => {
                let name = &s["container:".len()..];
                if name.is_empty() {
                    return Err(Error::usage(
                        "--net=container: needs a container name, for example --net=container:web",
                    ));
                }
                NetMode::Container(name.to_string())
            }
            s => NetMode::Network(s.to_string()),
        })
    }

    /// Whether the container gets a network namespace of its own.
    pub fn own_netns(&self) -> bool {
        matches!(self, NetMode::None | NetMode::Network(_))
    }
}

/// The plugin search path: the user's (`--cni-path`, `CNI_PATH` or the config file's `cniPath`)
/// when given, as every CNI runtime treats `CNI_PATH`; otherwise the directory `tether` is installed
/// in (where the workspace builds the plugins), then `/opt/cni/bin`.
pub fn cni_search_path(user: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    if user.is_empty() {
        v.extend(
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
        );
        v.push(PathBuf::from("/opt/cni/bin"));
    } else {
        v.extend(user.iter().cloned());
    }
    let mut seen = Vec::new();
    v.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
    v
}

pub fn split_path_list(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

fn single(name: &str, plugin: &str) -> ConfList {
    ConfList {
        cni_version: CNI_VERSION.into(),
        name: name.into(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![json!({ "type": plugin })],
    }
}

/// A bridge conflist: bridge + host-local.
pub fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: IpNetwork,
    gateway: Option<std::net::IpAddr>,
    masquerade: bool,
    ipam_dir: &Path,
) -> ConfList {
    let mut range = json!({ "subnet": subnet.to_string() });
    if let Some(gw) = gateway {
        range["gateway"] = json!(gw.to_string());
    }
    let default_route = if subnet.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    ConfList {
        cni_version: CNI_VERSION.into(),
        name: name.into(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": masquerade,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[range]],
                "routes": [{ "dst": default_route }],
                "dataDir": ipam_dir.display().to_string(),
            }
        })],
    }
}

pub fn builtin_bridge(paths: &Paths) -> ConfList {
    bridge_conflist(
        DEFAULT_NETWORK,
        DEFAULT_BRIDGE,
        DEFAULT_SUBNET.parse().expect("valid default subnet"),
        None,
        true,
        &paths.ipam_dir(),
    )
}

/// Lowers `list.cni_version` to the newest version that every plugin of the list found on the
/// search path supports, asking each with VERSION as libcni's `ValidateNetworkList` does. Only for
/// the lists tether generates: Debian's reference plugins, for example, stop at 1.0.0, and the
/// built-in network must work with them too. Plugins that are missing or do not answer are left to
/// fail on use, with their own error. Answers are remembered in `<root>/cni/plugin-versions.json`
/// (see [`VersionCache`]).
pub fn negotiate_version(list: &mut ConfList, paths: &Paths) {
    let mut types: Vec<&str> = Vec::new();
    for p in &list.plugins {
        for ty in [p.get("type"), p.pointer("/ipam/type")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !types.contains(&ty) {
                types.push(ty);
            }
        }
    }
    let mut common: Vec<&str> = cni::version::ALL
        .iter()
        .copied()
        .filter(|v| cni::version::at_least(&list.cni_version, v))
        .collect();
    let stdin = json!({ "cniVersion": list.cni_version }).to_string();
    let search: Vec<String> = paths
        .cni_path
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let env = [
        ("CNI_COMMAND", "VERSION".to_string()),
        ("CNI_PATH", search.join(":")),
    ];
    let mut cache = VersionCache::load(&paths.cni_cache());
    for ty in types {
        let Ok(bin) = cni::runtime::find_plugin(ty, &paths.cni_path) else {
            continue;
        };
        let supported = cache.get_or_probe(&bin, || {
            let answer = tracing::debug_span!("version_probe", plugin = ty)
                .in_scope(|| cni::invoke::exec_plugin(&bin, &env, stdin.as_bytes()));
            match answer {
                Ok(Some(v)) => Some(
                    v.get("supportedVersions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                ),
                Ok(None) => {
                    tracing::debug!(plugin = ty, "VERSION printed nothing");
                    None
                }
                Err(e) => {
                    tracing::debug!(plugin = ty, error = %e, "VERSION failed");
                    None
                }
            }
        });
        if let Some(supported) = supported {
            common.retain(|c| supported.iter().any(|s| s == c));
        }
    }
    cache.store();
    if let Some(best) = common.last()
        && *best != list.cni_version
    {
        tracing::info!(
            network = %list.name,
            from = %list.cni_version,
            to = best,
            "lowering cniVersion to what the plugins support"
        );
        list.cni_version = best.to_string();
    }
}

/// A plugin binary's identity on disk: any replacement, rewrite or `touch` changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(p: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionEntry {
    stamp: FileStamp,
    supported_versions: Vec<String>,
}

/// The VERSION answers of plugin binaries by path, valid while the binary's [`FileStamp`] is
/// unchanged. Exec'ing every plugin of the built-in network on each `tether run` cost 1 to 2.5 ms a
/// plugin for an answer that changes only with the binary. Failed probes are not remembered.
struct VersionCache {
    file: PathBuf,
    entries: BTreeMap<PathBuf, VersionEntry>,
    dirty: bool,
}

impl VersionCache {
    fn load(cache_dir: &Path) -> VersionCache {
        let file = cache_dir.join("plugin-versions.json");
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        VersionCache {
            file,
            entries,
            dirty: false,
        }
    }

    fn get_or_probe(
        &mut self,
        bin: &Path,
        probe: impl FnOnce() -> Option<Vec<String>>,
    ) -> Option<Vec<String>> {
        // Stamped before the probe: a binary replaced meanwhile gets a new stamp, so a stale
        // answer is never filed under the new binary.
        let stamp = FileStamp::of(bin)?;
        if let Some(e) = self.entries.get(bin).filter(|e| e.stamp == stamp) {
            return Some(e.supported_versions.clone());
        }
        let supported = probe()?;
        self.entries.insert(
            bin.to_path_buf(),
            VersionEntry {
                stamp,
                supported_versions: supported.clone(),
            },
        );
        self.dirty = true;
        Some(supported)
    }

    /// Best effort: without the file the next run just probes again.
    fn store(&self) {
        if !self.dirty {
            return;
        }
        let bytes = serde_json::to_vec(&self.entries).expect("entries serialize");
        let r = self
            .file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::state::write_replacing(&self.file, &bytes));
        if let Err(e) = r {
            tracing::debug!(file = %self.file.display(), error = %e, "plugin version cache not saved");
        }
    }
}

/// The conflist of a named network: the built-in `bridge` (its version negotiated with the
/// plugins), or `<config_dir>/*.conflist` by name, as written.
pub fn load_network(paths: &Paths, name: &str) -> Result<ConfList> {
    let mut l = load_network_file(paths, name)?;
    if name == DEFAULT_NETWORK {
        negotiate_version(&mut l, paths);
    }
    Ok(l)
}

fn load_network_file(paths: &Paths, name: &str) -> Result<ConfList> {
    if name == DEFAULT_NETWORK {
        return Ok(builtin_bridge(paths));
    }
    match ConfList::load(&paths.config_dir, name) {
        Ok(l) => Ok(l),
        Err(e) if e.msg.starts_with("no network named") => Err(Error::usage(format!(
            "unknown network {name:?}: no conflist named {name} in {}; create it with `tether network create {name} --subnet 10.89.0.0/24`, or see `tether network ls`",
            paths.config_dir.display()
        ))),
        Err(e) => Err(Error::cni(format!("failed to load network {name}"), e)),
    }
}

/// The conflist for a `--net` mode. `ports` adds the `portmap` plugin to bridge networks that lack
/// a plugin with the `portMappings` capability.
pub fn conflist_for(paths: &Paths, mode: &NetMode, ports: &[PortMapping]) -> Result<ConfList> {
    let mut list = match mode {
        NetMode::None => single("none", "none"),
        NetMode::Host => single("host", "host"),
        NetMode::Container(_) => single("container", "container"),
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
    if *mode == NetMode::Network(DEFAULT_NETWORK.into()) {
        negotiate_version(&mut list, paths);
    }
    Ok(list)
}

/// Appends the `portmap` plugin (with the `portMappings` capability) unless the list has a plugin
/// with that capability already.
pub fn add_portmap(list: &mut ConfList) {
    let has_portmap = list.plugins.iter().any(|p| {
        p.pointer("/capabilities/portMappings")
            .and_then(Value::as_bool)
            == Some(true)
    });
    if !has_portmap {
        list.plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
}

/// Whether a list is a bridge network (one `tether run -p` would add `portmap` to).
pub fn is_bridge_network(list: &ConfList) -> bool {
    list.plugins
        .first()
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        == Some("bridge")
}

/// Fails with a message naming the binary and the search path if any plugin of `list` is missing.
pub fn check_plugins(list: &ConfList, cni_path: &[PathBuf]) -> Result<()> {
    for p in &list.plugins {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        cni::runtime::find_plugin(ty, cni_path).map_err(|e| {
            Error::usage(format!(
                "network {}: {}; install the plugins (see README) or pass --cni-path",
                list.name, e.msg
            ))
        })?;
        if let Some(ipam) = p.pointer("/ipam/type").and_then(Value::as_str) {
            cni::runtime::find_plugin(ipam, cni_path).map_err(|e| {
                Error::usage(format!(
                    "network {} (IPAM of {ty}): {}; install the plugins (see README) or pass --cni-path",
                    list.name, e.msg
                ))
            })?;
        }
    }
    Ok(())
}

/// Subnets of a conflist's IPAM ranges (for overlap checks and `network ls`).
pub fn subnets(list: &ConfList) -> Vec<IpNetwork> {
    let mut v = Vec::new();
    for p in &list.plugins {
        let Some(ipam) = p.get("ipam") else { continue };
        if let Some(s) = ipam
            .get("subnet")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            v.push(s);
        }
        for set in ipam
            .get("ranges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for r in set.as_array().into_iter().flatten() {
                if let Some(s) = r
                    .get("subnet")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                {
                    v.push(s);
                }
            }
        }
    }
    v
}

pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
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

pub struct CreateOpts<'a> {
    pub name: &'a str,
    pub subnet: IpNetwork,
    pub gateway: Option<std::net::IpAddr>,
    pub bridge: Option<&'a str>,
    pub masquerade: bool,
    /// The conflist's `cniVersion`; by default the newest the plugins on the search path support,
    /// up to [`CNI_VERSION`].
    pub cni_version: Option<&'a str>,
}

/// Writes `<config_dir>/<name>.conflist`.
pub fn create_network(paths: &Paths, o: &CreateOpts) -> Result<PathBuf> {
    if !cni::types::valid_id(o.name) {
        return Err(Error::usage(format!(
            "invalid network name {:?}: use letters, digits, '_', '.' and '-'",
            o.name
        )));
    }
    if ["bridge", "host", "none", "default"].contains(&o.name) || o.name.starts_with("container") {
        return Err(Error::usage(format!(
            "{:?} is a reserved network name: pick another",
            o.name
        )));
    }
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
        if l.name == o.name {
            return Err(Error::usage(format!(
                "network {} already exists: remove it with `tether network rm {}` or pick another name",
                o.name, o.name
            )));
        }
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
    match o.cni_version {
        Some(v) if cni::version::ALL.contains(&v) => list.cni_version = v.to_string(),
        Some(v) => {
            return Err(Error::usage(format!(
                "unknown --cni-version {v:?}: use one of {}",
                cni::version::ALL.join(", ")
            )));
        }
        None => negotiate_version(&mut list, paths),
    }
    std::fs::create_dir_all(&paths.config_dir).ctx(at("create", &paths.config_dir))?;
    let path = paths.config_dir.join(format!("{}.conflist", o.name));
    crate::state::write_replacing(&path, &list.to_bytes()).ctx(at("write", &path))?;
    Ok(path)
}

/// The addresses a result gives the container (those on a sandbox interface, or all if none says).
pub fn container_addresses(result: &cni::CniResult) -> Vec<IpNetwork> {
    let in_sandbox = |i: &Option<usize>| {
        i.and_then(|i| result.interfaces.get(i))
            .is_some_and(|itf| itf.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    };
    let any_sandbox = result.ips.iter().any(|ip| in_sandbox(&ip.interface));
    result
        .ips
        .iter()
        .filter(|ip| !any_sandbox || in_sandbox(&ip.interface))
        .map(|ip| ip.address)
        .collect()
}

/// `/etc/hosts` for a container.
pub fn hosts_file(mode: &NetMode, hostname: &str, result: Option<&cni::CniResult>) -> String {
    if *mode == NetMode::Host {
        return std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for a in result.map(container_addresses).unwrap_or_default() {
        if !a.ip().is_loopback() {
            s.push_str(&format!("{}\t{hostname}\n", a.ip()));
        }
    }
    s
}

/// `/etc/resolv.conf`: the result's DNS if it has any, else the host's (without loopback servers,
/// which mean nothing inside another namespace).
pub fn resolv_file(mode: &NetMode, result: Option<&cni::CniResult>) -> String {
    if let Some(dns) = result.map(|r| &r.dns).filter(|d| !d.nameservers.is_empty()) {
        let mut s = String::new();
        for n in &dns.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        let mut search = dns.search.clone();
        if let Some(d) = &dns.domain
            && search.is_empty()
        {
            search.push(d.clone());
        }
        if !search.is_empty() {
            s.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !dns.options.is_empty() {
            s.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        return s;
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if *mode == NetMode::Host {
        return host;
    }
    host.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback()))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Fails if a host port is taken by a listening socket in tether's (the host's) namespace.
pub fn check_port_free(p: &PortMapping) -> Result<()> {
    let ip = p
        .host_ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, p.host_port);
    let r = match p.protocol.as_str() {
        "udp" => std::net::UdpSocket::bind(addr).map(drop),
        "tcp" => std::net::TcpListener::bind(addr).map(drop),
        _ => Ok(()),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::usage(format!(
            "port {}/{} is already in use on the host: pick another host port",
            p.host_port, p.protocol
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let p = Paths {
            root: d.path().join("root"),
            config_dir: d.path().join("net.d"),
            cni_path: vec![],
        };
        (d, p)
    }

    #[test]
    fn modes() {
        assert_eq!(NetMode::parse("none").unwrap(), NetMode::None);
        assert_eq!(
            NetMode::parse("container:a").unwrap(),
            NetMode::Container("a".into())
        );
        assert_eq!(
            NetMode::parse("default").unwrap(),
            NetMode::Network("bridge".into())
        );
        assert!(NetMode::parse("container:").is_err());
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
        };
        let f = create_network(&p, &o).unwrap();
        assert!(f.ends_with("blue.conflist"));
        let l = load_network(&p, "blue").unwrap();
        assert!(l.plugins[0]["bridge"].as_str().unwrap().starts_with("tbr-"));
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

    /// A fake plugin that answers VERSION with `versions` and counts its runs in `<dir>/runs`.
    fn fake_plugin(dir: &Path, name: &str, versions: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let script = format!(
            "#!/bin/sh\necho {name} >> {runs}\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[{versions}]}}'\n",
            runs = dir.join("runs").display()
        );
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A new inode each time, as `install` does (and no writable fd to race an exec).
        std::fs::rename(&tmp, &p).unwrap();
    }

    fn runs(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn version_answers_are_cached_until_the_binary_changes() {
        let (d, mut p) = paths();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        p.cni_path = vec![bin.clone()];
        fake_plugin(&bin, "bridge", r#""0.4.0","1.0.0","1.1.0""#);
        fake_plugin(&bin, "host-local", r#""0.4.0","1.0.0""#);
        let negotiated = || {
            let mut l = builtin_bridge(&p);
            negotiate_version(&mut l, &p);
            l.cni_version
        };
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin), ["bridge", "host-local"]);
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin), ["bridge", "host-local"], "second run probed");
        assert!(p.cni_cache().join("plugin-versions.json").is_file());
        // An upgraded host-local is asked again, and only it.
        fake_plugin(&bin, "host-local", r#""0.4.0","1.0.0","1.1.0""#);
        assert_eq!(negotiated(), "1.1.0");
        assert_eq!(runs(&bin), ["bridge", "host-local", "host-local"]);
        // A plugin whose VERSION fails is not remembered: asked every time.
        std::fs::write(bin.join(".bridge.tmp"), "#!/bin/sh\nexit 1\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                bin.join(".bridge.tmp"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        std::fs::rename(bin.join(".bridge.tmp"), bin.join("bridge")).unwrap();
        assert_eq!(negotiated(), "1.1.0");
        fake_plugin(&bin, "bridge", r#""0.4.0","1.0.0""#);
        assert_eq!(negotiated(), "1.0.0");
        assert_eq!(runs(&bin).iter().filter(|r| *r == "bridge").count(), 2);
    }

    #[test]
    fn etc_files_from_a_result() {
        let r = cni::CniResult::from_json(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "tether0"}, {"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 1}],
            "dns": {"nameservers": ["10.88.0.1"], "search": ["example.com"]}
        }))
        .unwrap();
        let mode = NetMode::Network("bridge".into());
        assert!(hosts_file(&mode, "box", Some(&r)).contains("10.88.0.5\tbox\n"));
        assert_eq!(
            resolv_file(&mode, Some(&r)),
            "nameserver 10.88.0.1\nsearch example.com\n"
        );
    }
}
