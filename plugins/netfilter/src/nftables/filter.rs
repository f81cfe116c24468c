//! Filtering (the firewall plugin) on nftables: the attachment's addresses as elements of
//! `allow4`/`allow6` with its record `fw4-H`/`fw6-H`, and the bridge's ingress policy as
//! elements of `isolate`, `no-icc` and `bridge-pairs` (see [`super::layout`]). The bridge's
//! elements are the network's, shared by its attachments: they stay, as the iptables
//! backend's per-bridge rules do.
//!
//! `iptablesAdminChainName` names an iptables chain: the nftables table has none to jump to,
//! so it is ignored here (an admin's nftables rules live in the admin's own table).

use std::net::IpAddr;

use tether_nft::{Batch, Elem, Nft, Value};

use super::layout::{self, allow_set, filter_record, isolate_set, no_icc_set, pairs_set};
use super::{Nftables, absent_ok, check_chain};
use crate::names::parse_comment;
use crate::policy::{AttachmentId, FilterPolicy, IngressPolicy};
use crate::{Error, Family, Result};

fn bridge_elems(policy: &FilterPolicy) -> Result<Vec<(tether_nft::Set, Elem)>> {
    let Some(br) = policy.bridge.as_deref() else {
        return Ok(Vec::new());
    };
    let v = Value::ifname(br)?;
    let mut out = Vec::new();
    if policy.ingress != IngressPolicy::Open {
        out.push((isolate_set(), Elem::key(&[v])));
        out.push((pairs_set(), Elem::key(&[v, v])));
    }
    if policy.ingress == IngressPolicy::Isolated {
        out.push((no_icc_set(), Elem::key(&[v])));
    }
    Ok(out)
}

fn read_record(nft: &mut Nft, who: &AttachmentId<'_>, f: Family) -> Result<Option<Vec<IpAddr>>> {
    let rec = absent_ok(nft.elements(&layout::table(), &filter_record(who, f)))?;
    Ok(rec.map(|r| {
        r.iter()
            .filter_map(|e| match e.key.first() {
                Some(Value::Ipv4(a)) => Some(IpAddr::from(*a)),
                Some(Value::Ipv6(a)) => Some(IpAddr::from(*a)),
                _ => None,
            })
            .collect()
    }))
}

fn removal(b: &mut Batch, who: &AttachmentId<'_>, f: Family, ips: &[IpAddr]) -> Result<()> {
    let t = layout::table();
    let elems: Vec<Elem> = ips
        .iter()
        .filter(|a| Family::from(**a) == f)
        .map(|a| Elem::key(&[Value::ip(*a)]))
        .collect();
    if !elems.is_empty() {
        b.destroy_elements(&t, &allow_set(f), &elems)?;
    }
    b.destroy_set(&t, &filter_record(who, f).name);
    Ok(())
}

pub fn add(
    nf: &Nftables,
    who: &AttachmentId<'_>,
    ips: &[IpAddr],
    policy: &FilterPolicy,
) -> Result<()> {
    let mut nft = nf.socket()?;
    let t = layout::table();
    let comment = layout::owner_comment(who);
    let current = absent_ok(nft.rules(&t))?.unwrap_or_default();
    let mut b = Batch::new();
    layout::declare_filter(&mut b, &t, &current);
    for f in Family::ALL {
        if let Some(old) = read_record(&mut nft, who, f)? {
            removal(&mut b, who, f, &old)?;
        }
        let mine: Vec<Elem> = ips
            .iter()
            .filter(|a| Family::from(**a) == f)
            .map(|a| Elem::key(&[Value::ip(*a)]).comment(&comment))
            .collect::<tether_nft::Result<_>>()?;
        if mine.is_empty() {
            continue;
        }
        let rec = filter_record(who, f);
        b.add_set(&t, &rec);
        b.add_elements(&t, &rec, &mine)?;
        b.ensure_elements(&t, &allow_set(f), &mine)?;
    }
    for (s, e) in bridge_elems(policy)? {
        b.ensure_elements(&t, &s, &[e])?;
    }
    nft.apply(&b)?;
    Ok(())
}

pub fn check(
    nf: &Nftables,
    who: &AttachmentId<'_>,
    ips: &[IpAddr],
    policy: &FilterPolicy,
) -> Result<()> {
    let mut nft = nf.socket()?;
    let t = layout::table();
    let want: Vec<String> = layout::filter_rules().into_iter().map(|(_, c)| c).collect();
    check_chain(&mut nft, layout::FORWARD_CHAIN, &want)?;
    for f in Family::ALL {
        let mut want: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|a| Family::from(*a) == f)
            .collect();
        let mut got = read_record(&mut nft, who, f)?.unwrap_or_default();
        want.sort();
        got.sort();
        if got != want {
            return Err(Error::Check(format!(
                "nftables record {} holds {got:?}, expected {want:?}",
                filter_record(who, f).name
            )));
        }
        for a in &want {
            if absent_ok(nft.element(&t, &allow_set(f), &Elem::key(&[Value::ip(*a)])))?
                .flatten()
                .is_none()
            {
                return Err(Error::Check(format!(
                    "{a} is not in nftables set {}",
                    allow_set(f).name
                )));
            }
        }
    }
    for (s, e) in bridge_elems(policy)? {
        if absent_ok(nft.element(&t, &s, &e))?.flatten().is_none() {
            return Err(Error::Check(format!(
                "bridge {:?} is not in nftables set {} (ingressPolicy {})",
                policy.bridge,
                s.name,
                policy.ingress.as_str()
            )));
        }
    }
    Ok(())
}

fn remove(nft: &mut Nft, owners: &[(AttachmentId<'_>, Vec<IpAddr>)]) -> Result<()> {
    let mut b = Batch::new();
    for (who, known) in owners {
        for f in Family::ALL {
            let mut ips = read_record(nft, who, f)?.unwrap_or_default();
            ips.extend(known.iter().copied().filter(|a| Family::from(*a) == f));
            removal(&mut b, who, f, &ips)?;
        }
    }
    match nft.apply(&b) {
        Ok(()) | Err(tether_nft::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn delete(nf: &Nftables, who: &AttachmentId<'_>, known: &[IpAddr]) -> Result<()> {
    let mut nft = nf.socket()?;
    if !nft.table_exists(&layout::table())? {
        return Ok(());
    }
    remove(&mut nft, &[(*who, known.to_vec())])
}

pub fn gc(nf: &Nftables, network: &str, valid: &[AttachmentId<'_>]) -> Result<()> {
    let mut nft = nf.socket()?;
    let sets = absent_ok(nft.sets(&layout::table()))?.unwrap_or_default();
    let mut stale: Vec<(String, String)> = Vec::new();
    for s in &sets {
        if !(s.name.starts_with("fw4-") || s.name.starts_with("fw6-")) {
            continue;
        }
        let Some((net, cid, ifname)) = s.comment.as_deref().and_then(parse_comment) else {
            continue;
        };
        let o = (cid.to_string(), ifname.to_string());
        if net == network
            && !valid.iter().any(|v| v.same_interface(cid, ifname))
            && !stale.contains(&o)
        {
            stale.push(o);
        }
    }
    let owners: Vec<(AttachmentId<'_>, Vec<IpAddr>)> = stale
        .iter()
        .map(|(cid, ifname)| {
            let who = AttachmentId {
                network,
                container_id: cid,
                ifname,
            };
            (who, Vec::new())
        })
        .collect();
    // One batch per few attachments: a netlink message has to fit the socket's send buffer.
    for chunk in owners.chunks(32) {
        remove(&mut nft, chunk)?;
    }
    Ok(())
}
