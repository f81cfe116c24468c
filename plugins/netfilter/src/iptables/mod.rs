//! The iptables backend: [`Firewall`] over `iptables-restore`/`iptables-save` (and the v6
//! twins), whichever of nf_tables or legacy they talk to. Masquerading is `masq.rs`'s
//! layout, port publishing [`ports`]'s, filtering [`filter`]'s; every change is one [`Batch`]
//! per family.
//!
//! [`Batch`]: crate::Batch

mod absent;
pub mod filter;
pub mod ports;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::backend::Firewall;
use crate::policy::{AttachmentId, FilterPolicy, PortPolicy, Published};
use crate::{Netfilter, Result};

/// The iptables implementation of [`Firewall`]. [`Iptables::new`] with [`Netfilter::new`]
/// works on the namespace the plugin runs in (the host's); tests hand it a
/// [`Netfilter::in_netns`].
#[derive(Debug, Default)]
pub struct Iptables {
    nf: Netfilter,
}

impl Iptables {
    pub fn new(nf: Netfilter) -> Iptables {
        Iptables { nf }
    }

    pub fn netfilter(&self) -> &Netfilter {
        &self.nf
    }
}

impl Firewall for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn surely_empty(&self) -> bool {
        !self.nf.in_other_netns() && absent::surely_absent()
    }

    fn masquerade_ensure(
        &self,
        network: &str,
        addrs: &[IpNetwork],
        likely_new: bool,
    ) -> Result<()> {
        crate::masquerade_ensure(&self.nf, network, addrs, likely_new)
    }

    fn masquerade_check(&self, network: &str, addrs: &[IpNetwork]) -> Result<()> {
        crate::masquerade_check(&self.nf, network, addrs)
    }

    fn masquerade_remove(&self, network: &str) -> Result<usize> {
        crate::masquerade_remove(&self.nf, network)
    }

    fn masquerade_networks(&self) -> Result<BTreeSet<String>> {
        crate::masquerade_networks(&self.nf)
    }

    fn publish_add(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()> {
        ports::add(&self.nf, &who, addrs, policy)
    }

    fn publish_check(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()> {
        ports::check(&self.nf, &who, addrs, policy)
    }

    fn publish_delete(&self, who: AttachmentId<'_>) -> Result<Vec<Published>> {
        ports::delete(&self.nf, &who)
    }

    fn publish_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>> {
        ports::gc(&self.nf, network, valid)
    }

    fn filter_add(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()> {
        filter::add(&self.nf, &who, ips, policy)
    }

    fn filter_check(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()> {
        filter::check(&self.nf, &who, ips, policy)
    }

    fn filter_delete(&self, who: AttachmentId<'_>, known: &[IpAddr]) -> Result<()> {
        filter::delete(&self.nf, &who, known)
    }

    fn filter_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<()> {
        filter::gc(&self.nf, network, valid)
    }
}
