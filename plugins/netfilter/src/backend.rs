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
//!                  └──► Nftables (nftables/)                          tether-nft, in-process
//!                        layout.rs (diagram), masq.rs, publish.rs, filter.rs: one batch per call
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

    /// True only when this backend surely holds nothing of ours (nor of the reference
    /// plugins') here, known without running a program; [`Dual`] then skips it in DEL and GC
    /// cleanups. `false` means unsure.
    fn surely_empty(&self) -> bool {
        false
    }

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

/// Which backend a plugin's config asked for: the reference's keys (`ipMasqBackend` on bridge,
/// `backend` on portmap and firewall), parsed by [`Choice::parse`] in the plugins' config
/// validation so every plugin accepts and refuses the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    Iptables,
    Nftables,
    /// No key (or Podman's `""`): the policy of [`select`].
    #[default]
    Auto,
}

/// The variable a runtime can set for plugins (`tether` does, from `--firewall-backend` or its
/// config file's `firewallBackend`): `iptables` or `nftables`, used when the config has no key.
pub const BACKEND_ENV: &str = "TETHER_FIREWALL_BACKEND";

impl Choice {
    /// `value` of the config key `key`: `"iptables"`, `"nftables"`, `""` or absent (auto);
    /// `"firewalld"` and anything else are [`crate::Error::Invalid`] (CNI code 7).
    pub fn parse(key: &'static str, value: Option<&str>) -> Result<Choice> {
        match value {
            None | Some("") => Ok(Choice::Auto),
            Some("iptables") => Ok(Choice::Iptables),
            Some("nftables") => Ok(Choice::Nftables),
            Some("firewalld") => Err(crate::Error::Invalid {
                what: key,
                value: "firewalld".into(),
                reason: "tether does not talk to firewalld: use \"iptables\" or \"nftables\" \
                         (firewalld itself runs on nftables, whose table ours lives next to)"
                    .into(),
            }),
            Some(other) => Err(crate::Error::Invalid {
                what: key,
                value: other.into(),
                reason: "unknown firewall backend: expected \"iptables\", \"nftables\" or \"\" \
                         (choose automatically)"
                    .into(),
            }),
        }
    }
}

/// The backend for a plugin without a backend key: [`select_for`] with [`Choice::Auto`].
/// Kept argument-free for callers that have no config key (e.g. the overlay plugin).
pub fn select() -> Box<dyn Firewall> {
    select_for(Choice::Auto)
}

/// The one selection policy, the same in every plugin:
/// - an explicit choice (config key) wins; then [`BACKEND_ENV`] (the runtime's choice);
/// - otherwise nftables when our `inet tether` table already exists;
/// - otherwise iptables, unless iptables is not usable on this host (binary missing or
///   failing), then nftables. This is tested only when an iptables call fails (a probe of
///   `iptables --version` then), so the common path costs no extra exec;
/// - iptables is the default (our iptables chains existing, or nothing of ours yet) because on
///   hosts whose iptables FORWARD policy is DROP (Docker installs it) only rules inside
///   iptables' own chains can let container traffic through; an accept in another nftables
///   table cannot override that drop.
///
/// The result also covers the other backend for DEL, CHECK and GC (see [`Dual`]), so switching
/// backend, or a host that changed, never strands rules.
pub fn select_for(choice: Choice) -> Box<dyn Firewall> {
    let choice = match choice {
        Choice::Auto => from_env(),
        c => c,
    };
    let ipt = || Box::new(crate::Iptables::new(Netfilter::new())) as Box<dyn Firewall>;
    let nft = || Box::new(crate::Nftables::new()) as Box<dyn Firewall>;
    let d = match choice {
        Choice::Iptables => Dual::new(ipt(), nft()),
        Choice::Nftables => Dual::new(nft(), ipt()),
        Choice::Auto if crate::Nftables::new().table_exists().unwrap_or(false) => {
            Dual::new(nft(), ipt())
        }
        Choice::Auto => Dual::new(ipt(), nft()).falling_back(),
    };
    tracing::debug!(?choice, primary = d.primary.name(), "firewall backend");
    Box::new(d)
}

fn from_env() -> Choice {
    match std::env::var(BACKEND_ENV) {
        Ok(v) => Choice::parse(BACKEND_ENV, Some(&v)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring {BACKEND_ENV}");
            Choice::Auto
        }),
        Err(_) => Choice::Auto,
    }
}

/// Whether `iptables` runs here (a missing binary, or one that fails, is not usable).
pub fn iptables_usable() -> bool {
    let tools = crate::Tools::system();
    std::process::Command::new(tools.list(crate::Family::V4))
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The chosen backend for ADD, and both for cleanup: DEL and GC also clean the other
/// backend's state of the attachment (its failures, e.g. no iptables on the host, are only
/// logged), and CHECK passes when either backend has it all in place. With no explicit choice
/// ([`Dual::falling_back`]), a failing iptables call on a host where iptables is not usable is
/// done on nftables instead.
pub struct Dual {
    primary: Box<dyn Firewall>,
    other: Box<dyn Firewall>,
    fallback: bool,
}

impl Dual {
    pub fn new(primary: Box<dyn Firewall>, other: Box<dyn Firewall>) -> Dual {
        Dual {
            primary,
            other,
            fallback: false,
        }
    }

    /// When the primary (iptables) fails to run, and iptables is not usable here, use `other`.
    pub fn falling_back(mut self) -> Dual {
        self.fallback = true;
        self
    }

    fn unusable(&self, e: &crate::Error) -> bool {
        self.fallback
            && matches!(e, crate::Error::Spawn { .. } | crate::Error::Command { .. })
            && !iptables_usable()
    }

    /// The primary's answer (or, falling back, the other's).
    fn one<T>(&self, f: impl Fn(&dyn Firewall) -> Result<T>) -> Result<T> {
        match f(self.primary.as_ref()) {
            Err(e) if self.unusable(&e) => {
                tracing::info!(error = %e, "iptables is not usable here: using nftables");
                f(self.other.as_ref())
            }
            r => r,
        }
    }

    /// Both: the primary's answer (or, falling back, the other's alone), plus the other's
    /// best effort.
    fn both<T>(&self, what: &str, f: impl Fn(&dyn Firewall) -> Result<T>) -> Result<T>
    where
        T: Default + IntoIterator + Extend<T::Item>,
    {
        match f(self.primary.as_ref()) {
            Err(e) if self.unusable(&e) => f(self.other.as_ref()),
            Err(e) => Err(e),
            // Nothing of ours can be on the other side (a host that never used it): no need
            // to look (for iptables, four execs).
            Ok(v) if self.other.surely_empty() => Ok(v),
            Ok(mut v) => {
                let o = f(self.other.as_ref()).unwrap_or_else(|e| {
                    let name = self.other.name();
                    tracing::debug!(backend = name, error = %e, "{what} on the other backend");
                    T::default()
                });
                v.extend(o);
                Ok(v)
            }
        }
    }

    /// CHECK: the primary's, or the other's when the primary's found nothing in place.
    fn check(&self, f: impl Fn(&dyn Firewall) -> Result<()>) -> Result<()> {
        match self.one(&f) {
            Err(e @ crate::Error::Check(_)) => f(self.other.as_ref()).map_err(|_| e),
            r => r,
        }
    }
}

/// A count as something [`Dual::both`] can add up.
#[derive(Default)]
struct Count(usize);

impl IntoIterator for Count {
    type Item = usize;
    type IntoIter = std::iter::Once<usize>;
    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.0)
    }
}

impl Extend<usize> for Count {
    fn extend<I: IntoIterator<Item = usize>>(&mut self, it: I) {
        self.0 += it.into_iter().sum::<usize>();
    }
}

/// Nothing, as something [`Dual::both`] can combine.
#[derive(Default)]
struct Unit;

impl IntoIterator for Unit {
    type Item = ();
    type IntoIter = std::iter::Empty<()>;
    fn into_iter(self) -> Self::IntoIter {
        std::iter::empty()
    }
}

impl Extend<()> for Unit {
    fn extend<I: IntoIterator<Item = ()>>(&mut self, _: I) {}
}

impl Firewall for Dual {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn masquerade_ensure(&self, network: &str, addrs: &[IpNetwork], new: bool) -> Result<()> {
        self.one(|f| f.masquerade_ensure(network, addrs, new))
    }

    fn masquerade_check(&self, network: &str, addrs: &[IpNetwork]) -> Result<()> {
        self.check(|f| f.masquerade_check(network, addrs))
    }

    fn masquerade_remove(&self, network: &str) -> Result<usize> {
        self.both("masquerade_remove", |f| {
            f.masquerade_remove(network).map(Count)
        })
        .map(|c| c.0)
    }

    fn masquerade_networks(&self) -> Result<BTreeSet<String>> {
        self.both("masquerade_networks", |f| f.masquerade_networks())
    }

    fn publish_add(&self, who: AttachmentId<'_>, a: &[IpNetwork], p: &PortPolicy) -> Result<()> {
        self.one(|f| f.publish_add(who, a, p))
    }

    fn publish_check(&self, who: AttachmentId<'_>, a: &[IpNetwork], p: &PortPolicy) -> Result<()> {
        self.check(|f| f.publish_check(who, a, p))
    }

    fn publish_delete(&self, who: AttachmentId<'_>) -> Result<Vec<Published>> {
        self.both("publish_delete", |f| f.publish_delete(who))
    }

    fn publish_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>> {
        self.both("publish_gc", |f| f.publish_gc(network, valid))
    }

    fn filter_add(&self, who: AttachmentId<'_>, ips: &[IpAddr], p: &FilterPolicy) -> Result<()> {
        self.one(|f| f.filter_add(who, ips, p))
    }

    fn filter_check(&self, who: AttachmentId<'_>, ips: &[IpAddr], p: &FilterPolicy) -> Result<()> {
        self.check(|f| f.filter_check(who, ips, p))
    }

    fn filter_delete(&self, who: AttachmentId<'_>, known: &[IpAddr]) -> Result<()> {
        self.both("filter_delete", |f| {
            f.filter_delete(who, known).map(|_| Unit)
        })
        .map(drop)
    }

    fn filter_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<()> {
        self.both("filter_gc", |f| f.filter_gc(network, valid).map(|_| Unit))
            .map(drop)
    }
}
