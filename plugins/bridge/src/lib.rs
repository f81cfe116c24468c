//! The `bridge` CNI plugin: a Linux bridge on the host, one veth pair per container (host end on
//! the bridge, container end created directly in the container's namespace as `CNI_IFNAME`),
//! addresses and routes from the IPAM plugin, optionally a gateway address on the bridge,
//! forwarding and masquerading (one shared chain per network and subnet).
//!
//! It behaves like the reference plugin (same keys, defaults, result shape and kernel state; see
//! `config`) and improves on it where the reference is known to fail:
//! - everything ADD creates for a container is found again from `(network, container id,
//!   ifname)` alone: the host veth has a deterministic name and an alias record, so DEL never
//!   needs the container's namespace and GC can find leftovers;
//! - masquerading is one shared chain per (network, subnet) and family, not a chain per
//!   container: ADD reads the nat table once and writes only when the chain is missing, a DEL
//!   that is not the network's last touches no iptables, and the work per container does not
//!   grow with the containers;
//! - DEL never touches the container's namespace (its path may name another container by now):
//!   deleting the host veth, provably ours by name and alias, deletes its peer;
//! - a failed ADD unwinds everything it created (`undo`), including the IPAM lease;
//! - bridge creation and its gateway address are serialised by a per-bridge lock, and every
//!   "ensure" treats `EEXIST` as success, so parallel ADDs on a fresh host do not race;
//! - container addresses are added with `IFA_F_NODAD` (unless `enabledad`), so there is no
//!   DAD wait, and nothing polls with sleeps;
//! - ADD returns only once the host veth is oper-up and its bridge port forwarding (`port`),
//!   so a container's first packet is not dropped by a port the kernel has not enabled yet.
//!
//! What stays on the host after the last DEL: only the forwarding sysctls. The DEL (or failed
//! ADD, or GC) that leaves a network without attachments on this host removes its masquerade
//! chains (`TETHER-MASQ-*`) and their `POSTROUTING` jumps, and deletes the bridge when this
//! plugin created it (marked with the alias `tether-bridge:<network>`) and no port is left on
//! it, taking its gateway addresses with it. A bridge we did not create (a user's `br0`, the
//! reference's, one made by a Tether before the mark) stays, with the gateway addresses ADD put
//! on it, as with the reference. "Last" is read from the kernel under a per-network lock, so a
//! concurrent ADD never loses its masquerading (see `teardown` and `lock`). GC also sweeps what
//! vanished networks left: the chains of networks without a veth, our bridges without a port.
//!
//! Keys (defaults as in the reference): `bridge` ("cni0"), `isGateway`, `isDefaultGateway`
//! (implies `isGateway`), `forceAddress`, `ipMasq`, `mtu` (a bridge we create and both veth
//! ends; an existing bridge keeps its MTU), `hairpinMode`, `promiscMode`, `enabledad` (off: the
//! container's addresses get `IFA_F_NODAD` and `accept_dad=0`; on: DAD runs and ADD waits for
//! it), `portIsolation`, `disableContainerInterface` (L2 only), `ipam`, `dns`, and the MAC from
//! `CNI_ARGS MAC`, `args.cni.mac` or `runtimeConfig.mac`. `ipMasqBackend` may be `iptables` or
//! `nftables` (both go through `iptables-restore`). Refused with code 2, because ignoring them
//! would silently drop isolation: `vlan` (non-zero), `vlanTrunk`, `macspoofchk`.
//!
//! Differences a careful observer can see: the host veth is `veth` + 8 hex digits of
//! sha256(cid NUL ifname) with the alias `tether:<net>:<cid>:<ifname>`; a bridge we create has
//! the alias `tether-bridge:<net>` and goes with its last port; masquerading is
//! `TETHER-MASQ-<hash>` per network and subnet, matching the subnet rather than each container's
//! address, with `RETURN` where the reference's chain has `ACCEPT` (see tether-netfilter's masq
//! module); 1.1.0 results carry each interface's `mtu`; the IPAM
//! runs before the bridge is touched, so a full pool or a non-bridge link named like the bridge
//! changes nothing.

mod add;
mod check;
pub mod config;
mod del;
mod gc;
pub mod lock;
pub mod names;
pub mod plan;
mod port;
mod teardown;

use cni::{Attachment, CniResult, Error, Request};
// The undo stack and the error mapping are the plugin kit's; the names stay `crate::undo`,
// `crate::nl` and `crate::nf` for the modules here.
use tether_kit::undo;
pub(crate) use tether_kit::{nf, nl};

pub use config::Config;

/// The plugin, for `cni::run`.
pub struct Bridge;

impl cni::Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &["MAC", "IP"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        add::add(req)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        check::check(req)
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        let conf = Config::parse(req)?;
        match &conf.ipam {
            Some(ipam) => cni::delegate::status(ipam, req),
            None => Ok(()),
        }
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), Error> {
        gc::gc(req, valid)
    }
}
