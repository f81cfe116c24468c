//! The firewall backend seam: every firewall change a plugin makes is one call of [`Firewall`],
//! with data-only inputs ([`crate::policy`]), so that no plugin speaks a backend's syntax.
//!
//! ```text
//!  bridge (ipMasq)      portmap               firewall                plugins
//!  masquerade_*         publish_*             filter_*
//!       │                   │                     │
//!       └──────────┬────────┴─────────────────────┘
//!                  ▼
//!            select() ──► Box<dyn Firewall>                           this module
//!                  │
//!                  ├──► Iptables (iptables/)                          first implementation
//!                  │     ├── masq.rs            TETHER-MASQ-<hash>, POSTROUTING jumps
//!                  │     ├── iptables/ports/    TETHER-HOSTPORT-*, TETHER-DN-<hash>
//!                  │     └── iptables/filter*   CNI-FORWARD, CNI-ISOLATION-STAGE-*
//!                  │          all through Batch → one iptables-restore per family
//!                  │          and SavedTable ← iptables-save / iptables -S
//!                  └──► (nftables: one new module implementing Firewall)
//!
//!  tether-lock (below everything): netfilter_lock, per-bridge locks
//! ```
//!
//! Per-attachment operations take an [`AttachmentId`] (network, container id, ifname) and find
//! their state again from it alone, so DEL and GC need neither the container's netns nor a
//! `prevResult`. Network-level masquerading is keyed by the network name (and, when added, its
//! subnets).
//! Every call is all or nothing for what it adds, and every delete is idempotent (gone is
//! success). Locking against Tether's other plugins is the backend's business.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::policy::{AttachmentId, FilterPolicy, PortPolicy, Published};
use crate::{Netfilter, Result};

/// Masquerading, port publishing and filtering, as operations on networks and attachments.
pub trait Firewall: Send + Sync {
    /// The backend's name, for logs and errors (`"iptables"`).
    fn name(&self) -> &'static str;

    /// Makes sure every subnet of `addrs` (container addresses with their prefix, e.g.
    /// `10.88.0.5/16`) of `network` is masqueraded when it leaves the subnet, both families.
    /// `likely_new` (say the caller just created the network's bridge) lets the backend skip
    /// looking first. Shared by the network's attachments: nothing of it is the caller's to undo.
    fn masquerade_ensure(&self, network: &str, addrs: &[IpNetwork], likely_new: bool)
    -> Result<()>;

    /// CHECK: the masquerading of every subnet of `addrs` is in place exactly as
    /// [`Firewall::masquerade_ensure`] writes it ([`crate::Error::Check`] otherwise).
    fn masquerade_check(&self, network: &str, addrs: &[IpNetwork]) -> Result<()>;

    /// Removes all masquerade state of `network` (both families), found by what it is recorded
    /// under (not recomputed from subnets, so a network whose subnets changed, or a caller that
    /// knows none, still finds all of it): for the last attachment of a network, GC and
    /// `network rm`. Returns how many chains went; nothing there is success.
    fn masquerade_remove(&self, network: &str) -> Result<usize>;

    /// The networks that own masquerade state on this host: what a sweep for vanished
    /// networks starts from.
    fn masquerade_networks(&self) -> Result<BTreeSet<String>>;

    /// Publishes `policy.mappings` of the attachment to its addresses (the first of each family
    /// is used), replacing whatever it published before. A host port another attachment holds
    /// is [`crate::Error::Conflict`]. All or nothing.
    fn publish_add(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()>;

    /// CHECK: everything [`Firewall::publish_add`] would write for these inputs is in place
    /// ([`crate::Error::Check`] otherwise).
    fn publish_check(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()>;

    /// Removes what the attachment (by container id and ifname, any network name) published;
    /// returns what that was.
    fn publish_delete(&self, who: AttachmentId<'_>) -> Result<Vec<Published>>;

    /// Removes what attachments of `network` not in `valid` published (and anything of ours
    /// that nothing uses); returns what that was. `valid` compares container id and ifname.
    fn publish_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>>;

    /// Lets `ips` of the attachment through and applies the policy's bridge isolation,
    /// replacing the attachment's earlier rules. All or nothing for the per-address rules (the
    /// shared chains and per-bridge rules stay, as the reference's).
    fn filter_add(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()>;

    /// CHECK of [`Firewall::filter_add`] ([`crate::Error::Check`] otherwise).
    fn filter_check(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()>;

    /// Removes the attachment's filter rules; `known` addresses (from a `prevResult`) also
    /// catch rules the reference plugin wrote without our comment.
    fn filter_delete(&self, who: AttachmentId<'_>, known: &[IpAddr]) -> Result<()>;

    /// Removes the filter rules of attachments of `network` not in `valid`.
    fn filter_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<()>;
}

/// The one place every plugin asks which backend to use. For now always iptables (through the
/// host's `iptables-restore`, nf_tables or legacy); the nftables issue adds the policy (the
/// reference's keys, what the host has, what state exists) here, not in the plugins.
pub fn select() -> Box<dyn Firewall> {
    Box::new(crate::Iptables::new(Netfilter::new()))
}
