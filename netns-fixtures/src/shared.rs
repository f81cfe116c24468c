//! iptables chains that plugins share between attachments and keep after the last DEL, as each
//! plugin documents: leftover checks allow them (and only them).

/// The reference `portmap`'s (`CNI-HOSTPORT-*`) and ours: `TETHER-HOSTPORT-*` and the raw-table
/// `TETHER-LOCALNET-GUARD` (plugins/portmap/src/layout.rs).
pub const PORTMAP_SHARED_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
    "TETHER-HOSTPORT-DNAT",
    "TETHER-HOSTPORT-SETMARK",
    "TETHER-HOSTPORT-MASQ",
    "TETHER-LOCALNET-GUARD",
];

/// The `firewall` layout's (the reference's, which ours keeps): never torn down.
pub const FIREWALL_SHARED_CHAINS: &[&str] = &["CNI-FORWARD", "CNI-ADMIN"];

/// Our bridge's per-network masquerade chains (one per network and subnet, see
/// plugins/netfilter/src/masq.rs): they and their `POSTROUTING` jumps name the subnet, by design,
/// but never a container.
pub fn is_masq_chain(name: &str) -> bool {
    name.starts_with(tether_netfilter::MASQ_CHAIN_PREFIX)
}
