//! What a network leaves on the host goes with its last attachment: its masquerade chains, and
//! the bridge when this plugin created it and no port is left on it.
//!
//! ```text
//! DEL / failed ADD / GC, after the attachment's veth is gone:
//!
//!   dump links ── a veth aliased tether:<net>:… left? ── yes ──> done (no lock, no iptables)
//!        │ no
//!   network-<net>.lock EXCLUSIVE (waits for ADDs of <net> in flight)
//!        dump links again ── a veth of <net> now? ── yes ──> keep the chains
//!        │ no
//!        masquerade_remove(<net>)            (both families, see tether-netfilter)
//!   ports-<bridge>.lock EXCLUSIVE
//!        bridge marked tether-bridge:… and no port? ── yes ──> delete the bridge
//! ```
//!
//! "Last" is decided from kernel state, not from a count we keep: the host veth of every
//! attachment carries its network in its alias (`names::alias`), so "no veth aliased to this
//! network" is exactly "no attachment of it on this host", whoever crashed in between. Why the
//! locks make this race-free with ADDs is in the lock module. The unlocked first look keeps the
//! DELs that are not the last as fast as before: one link dump, no lock, no iptables. A veth that
//! the look saw may go right after (its own DEL, which then looks itself; its namespace dying,
//! after which GC finds the chains unused).
//!
//! A veth on the network's bridge that is named like ours (`veth` + 8 hex digits) but has no
//! record of ours (the reference plugin's, whose names look the same, or one of ours whose record
//! did not fit the kernel's 255 bytes) might belong to the network: it keeps the chains, erring
//! on the side of NAT that stays. Other ports (a user's uplink, a veth of their own) do not. Bridges without our mark (a user's `br0`, a
//! bridge of the reference plugin or of an older Tether) are never deleted, nor is one of ours
//! with any port, whoever added it.

use std::collections::BTreeSet;

use cni::Error;
use tether_netlink::{Link, NsHandle};

use crate::config::Config;
use crate::lock::{Mode, lock_network, lock_ports};
use crate::names::{is_our_bridge, parse_alias};
use crate::{nf, nl};

/// After this attachment's veth is gone: removes the network's masquerade chains when no
/// attachment of it is left, then the bridge when it is ours and portless.
pub fn remove_if_unused(conf: &Config, host: &NsHandle) -> Result<(), Error> {
    let links = host.links().map_err(nl("list host links"))?;
    if in_use(&links, &conf.network, bridge_index(&links, &conf.bridge)) {
        return Ok(());
    }
    tracing::debug!(network = %conf.network, "no attachment seen: removing the network's state");
    let _net = lock_network(&conf.network, Mode::Exclusive)?;
    let links = host.links().map_err(nl("list host links"))?;
    if in_use(&links, &conf.network, bridge_index(&links, &conf.bridge)) {
        tracing::debug!(network = %conf.network, "an ADD came in meanwhile: state kept");
        return Ok(());
    }
    // Both run, side by side: each is mostly the kernel waiting for an RCU grace period (the
    // nf_tables commit that deleted rules, the bridge's unregister), so together they cost one
    // wait instead of two; a failure of one must not keep the other. The bridge's ports lock is
    // taken inside the network lock held here, the order every path uses.
    let (masq, bridge) = std::thread::scope(|s| {
        let masq = conf.ip_masq.then(|| {
            s.spawn(|| {
                tether_netfilter::select_for(conf.firewall)
                    .masquerade_remove(&conf.network)
                    .map(drop)
                    .map_err(nf(format!("remove the masquerading of {}", conf.network)))
            })
        });
        let bridge = remove_bridge_if_portless(host, &conf.bridge);
        let masq = masq.map_or(Ok(()), |h| {
            h.join().expect("the masquerade removal panicked")
        });
        (masq, bridge)
    });
    masq.and(bridge)
}

/// GC's sweep: the masquerade chains of every network without a veth left, and every bridge
/// of ours without a port, each decided again under its lock.
pub fn sweep(host: &NsHandle) -> Result<(), Error> {
    let links = host.links().map_err(nl("list host links"))?;
    let masq = sweep_masquerading(host, &links);
    let ports: BTreeSet<u32> = links.iter().filter_map(|l| l.master).collect();
    for br in links
        .iter()
        .filter(|l| is_bridge(l) && is_our_bridge(l.alias.as_deref()))
        .filter(|l| !ports.contains(&l.index))
    {
        remove_bridge_if_portless(host, &br.name)?;
    }
    masq
}

fn sweep_masquerading(host: &NsHandle, links: &[Link]) -> Result<(), Error> {
    let nets = match tether_netfilter::select().masquerade_networks() {
        Ok(nets) => nets,
        // No iptables on this host: then no chains either.
        Err(e @ tether_netfilter::Error::Spawn { .. }) => {
            tracing::debug!(error = %e, "no masquerade chains to sweep");
            return Ok(());
        }
        Err(e) => return Err(nf("list the networks that masquerade")(e)),
    };
    // The names come from comments anyone could have written: only CNI network names can be
    // ours (and name a lock file).
    let cni_name = |n: &&String| {
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    for net in nets
        .iter()
        .filter(cni_name)
        .filter(|n| !in_use(links, n, None))
    {
        let _net = lock_network(net, Mode::Exclusive)?;
        let links = host.links().map_err(nl("list host links"))?;
        if !in_use(&links, net, None) {
            tracing::info!(network = %net, "GC removes the masquerading of a network without attachments");
            tether_netfilter::select()
                .masquerade_remove(net)
                .map_err(nf(format!("remove the masquerading of {net}")))?;
        }
    }
    Ok(())
}

/// Whether an attachment of `network` may still be on the host: a veth whose record names it,
/// or a veth named like an attachment's on the network's bridge (`bridge`) with no record.
fn in_use(links: &[Link], network: &str, bridge: Option<u32>) -> bool {
    links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .any(|l| match l.alias.as_deref().and_then(parse_alias) {
            Some((net, _, _)) => net == network,
            None => bridge.is_some() && l.master == bridge && looks_like_attachment(&l.name),
        })
}

/// `veth` + 8 hex digits: our host veths, and the reference plugin's.
fn looks_like_attachment(name: &str) -> bool {
    name.len() == 12 && name.starts_with("veth") && name[4..].chars().all(|c| c.is_ascii_hexdigit())
}

fn is_bridge(l: &Link) -> bool {
    l.kind.as_deref() == Some("bridge")
}

fn bridge_index(links: &[Link], name: &str) -> Option<u32> {
    links
        .iter()
        .find(|l| l.name == name && is_bridge(l))
        .map(|l| l.index)
}

/// Deletes bridge `name` when it carries our mark and has no port, under its port lock.
fn remove_bridge_if_portless(host: &NsHandle, name: &str) -> Result<(), Error> {
    let ours = |l: &Link| is_bridge(l) && is_our_bridge(l.alias.as_deref());
    match host
        .link_by_name(name)
        .map_err(nl(format!("look up bridge {name}")))?
    {
        Some(l) if ours(&l) => {}
        _ => return Ok(()),
    }
    let _ports = lock_ports(name, Mode::Exclusive)?;
    let links = host.links().map_err(nl("list host links"))?;
    let Some(br) = links.iter().find(|l| l.name == name).filter(|l| ours(l)) else {
        return Ok(());
    };
    if links.iter().any(|l| l.master == Some(br.index)) {
        return Ok(());
    }
    match host.del_link(br.index) {
        Ok(()) => {
            tracing::debug!(bridge = name, "deleted our bridge, which had no port left");
            Ok(())
        }
        Err(tether_netlink::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(nl(format!("delete bridge {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, kind: &str, master: Option<u32>, alias: Option<&str>) -> Link {
        Link {
            index,
            name: format!("veth0000000{index}"),
            kind: Some(kind.into()),
            mac: None,
            mtu: 1500,
            up: true,
            oper_up: true,
            master,
            promisc: false,
            link_netnsid: None,
            peer_index: None,
            bridge_port: None,
            alias: alias.map(str::to_string),
        }
    }

    #[test]
    fn a_network_is_in_use_while_a_veth_names_it_or_an_unrecorded_veth_is_on_its_bridge() {
        let br = link(1, "bridge", None, Some("tether-bridge:a"));
        let a = link(2, "veth", Some(1), Some("tether:a:c1:eth0"));
        let b = link(3, "veth", Some(1), Some("tether:b:c2:eth0"));
        let anon = link(4, "veth", Some(1), None);
        let dummy = link(5, "dummy", Some(1), None);
        let users = Link {
            name: "uplink0".into(),
            ..link(6, "veth", Some(1), None)
        };
        assert!(in_use(&[br.clone(), a.clone()], "a", Some(1)));
        assert!(!in_use(&[br.clone(), b.clone()], "a", Some(1)));
        assert!(in_use(&[br.clone(), b.clone()], "b", None));
        assert!(in_use(&[br.clone(), anon.clone()], "a", Some(1)));
        assert!(!in_use(&[br.clone(), anon], "a", None));
        // A user's uplink on the bridge is not an attachment.
        assert!(!in_use(&[br.clone(), dummy], "a", Some(1)));
        assert!(!in_use(&[br, users], "a", Some(1)));
    }
}
