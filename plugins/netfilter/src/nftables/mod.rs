//! The nftables backend: [`Firewall`] over `tether-nft`, in-process netlink, one atomic batch
//! per call, no `nft` or `iptables` exec. The layout is [`layout`]'s diagram; masquerading is
//! `masq.rs`, port publishing `publish.rs`, filtering `filter.rs`.

mod filter;
pub mod layout;
mod masq;
mod publish;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use ipnetwork::IpNetwork;
use tether_nft::Nft;

use crate::Result;
use crate::backend::Firewall;
use crate::policy::{AttachmentId, FilterPolicy, PortPolicy, Published};

/// The nftables implementation of [`Firewall`]. [`Nftables::new`] works on the namespace the
/// plugin runs in (the host's); tests use [`Nftables::in_netns`].
#[derive(Debug, Default)]
pub struct Nftables {
    netns: Option<OwnedFd>,
}

impl Nftables {
    pub fn new() -> Nftables {
        Nftables::default()
    }

    /// Works on the network namespace `ns` (the fd is duplicated).
    pub fn in_netns(ns: impl AsFd) -> std::io::Result<Nftables> {
        Ok(Nftables {
            netns: Some(ns.as_fd().try_clone_to_owned()?),
        })
    }

    /// A socket on our namespace's nf_tables; [`tether_nft::Error::Unavailable`] when the
    /// kernel or the namespace has none.
    pub(crate) fn socket(&self) -> Result<Nft> {
        Ok(match &self.netns {
            Some(ns) => Nft::for_netns(ns.as_fd())?,
            None => Nft::current()?,
        })
    }

    /// Whether our table exists: part of the backend choice ([`crate::backend::select`]).
    pub fn table_exists(&self) -> Result<bool> {
        Ok(self.socket()?.table_exists(&layout::table())?)
    }
}

impl Firewall for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn masquerade_ensure(&self, network: &str, addrs: &[IpNetwork], _new: bool) -> Result<()> {
        masq::ensure(self, network, addrs)
    }

    fn masquerade_check(&self, network: &str, addrs: &[IpNetwork]) -> Result<()> {
        masq::check(self, network, addrs)
    }

    fn masquerade_remove(&self, network: &str) -> Result<usize> {
        masq::remove(self, network)
    }

    fn masquerade_networks(&self) -> Result<BTreeSet<String>> {
        masq::networks(self)
    }

    fn publish_add(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()> {
        publish::add(self, &who, addrs, policy)
    }

    fn publish_check(
        &self,
        who: AttachmentId<'_>,
        addrs: &[IpNetwork],
        policy: &PortPolicy,
    ) -> Result<()> {
        publish::check(self, &who, addrs, policy)
    }

    fn publish_delete(&self, who: AttachmentId<'_>) -> Result<Vec<Published>> {
        publish::delete(self, &who)
    }

    fn publish_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>> {
        publish::gc(self, network, valid)
    }

    fn filter_add(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()> {
        filter::add(self, &who, ips, policy)
    }

    fn filter_check(
        &self,
        who: AttachmentId<'_>,
        ips: &[IpAddr],
        policy: &FilterPolicy,
    ) -> Result<()> {
        filter::check(self, &who, ips, policy)
    }

    fn filter_delete(&self, who: AttachmentId<'_>, known: &[IpAddr]) -> Result<()> {
        filter::delete(self, &who, known)
    }

    fn filter_gc(&self, network: &str, valid: &[AttachmentId<'_>]) -> Result<()> {
        filter::gc(self, network, valid)
    }
}

/// `Ok(None)` for a missing table/set/chain: "nothing there" for reads.
pub(crate) fn absent_ok<T>(r: tether_nft::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(tether_nft::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks that `chain` holds exactly the rules with `expected` comments, in order.
pub(crate) fn check_chain(nft: &mut Nft, chain: &str, expected: &[String]) -> Result<()> {
    let t = layout::table();
    let got = absent_ok(nft.rule_comments(&t, chain))?.ok_or_else(|| {
        crate::Error::Check(format!(
            "nftables chain {chain} of table inet tether is missing"
        ))
    })?;
    let want: Vec<Option<String>> = expected.iter().cloned().map(Some).collect();
    if got != want {
        return Err(crate::Error::Check(format!(
            "nftables chain {chain} has rules {got:?}, expected {want:?}"
        )));
    }
    Ok(())
}
