//! Networking, through CNI plugins only. One file per job:
//!
//! ```text
//! mode.rs      --net values (NetMode): parse and Display, one the inverse of the other
//! conflist.rs  the conflists tether generates (built-in bridge, none/host/container, portmap
//!              added for -p), what is in a list, plugin lookup and the host-port check
//! version.rs   VERSION negotiation for generated lists, and its per-binary answer cache
//! store.rs     the network store: <config_dir>/*.conflist by name (load, list, create, remove),
//!              the list a --net mode runs with, and the list GC runs with
//! record.rs    a container's network record (mode, conflist, result, pin) and the ADD and
//!              DEL that run from it
//! overlay.rs   what the overlay agent reports for an overlay network (lease, peers)
//! etc.rs       /etc/hosts and /etc/resolv.conf derived from a CNI result
//! ```

mod conflist;
mod etc;
mod mode;
mod overlay;
mod record;
mod store;
mod version;

pub use conflist::{
    add_dnsname, add_portmap, bridge_conflist, builtin_bridge, check_plugins, check_port_free,
    has_dnsname, is_bridge_network, overlaps, overlay_conflist, overlay_network,
    set_firewall_backend, subnets,
};
pub use etc::{container_addresses, hosts_file, resolv_file};
pub use mode::NetMode;
pub use overlay::{OverlayView, overlay_view};
pub use record::NetworkRecord;
pub use store::{
    CreateArgs, CreateOpts, conflist_for, create_network, gc_list, list_networks, load_network,
    network_file,
};
pub use version::negotiate_version;

/// The built-in default network: needs no file.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "tether0";
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// The spec version of the networks tether makes: 1.1.0 brings GC (what `network prune` relies on to
/// collect leases, veths and rules nobody has a cache entry for any more) and STATUS.
pub const CNI_VERSION: &str = "1.1.0";
/// The search domain of the networks `tether network create` makes (`--dns-domain`).
pub const DEFAULT_DNS_DOMAIN: &str = "dns.tether";

#[cfg(test)]
pub(crate) fn test_paths() -> (tempfile::TempDir, crate::paths::Paths) {
    let d = tempfile::tempdir().unwrap();
    let p = crate::paths::Paths {
        root: d.path().join("root"),
        config_dir: d.path().join("net.d"),
        cni_path: vec![],
        image_root: d.path().join("images"),
        firewall_backend: None,
    };
    (d, p)
}
