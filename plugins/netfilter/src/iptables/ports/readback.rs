//! Reading the port publishing layout back: who publishes which host port (the conflict
//! check), what removing an attachment involves, and the entry rules of
//! `TETHER-HOSTPORT-DNAT` alone (the fast paths that do not save every table).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{DN_PREFIX, DNAT_CHAIN};
use crate::policy::{AttachmentId, HostIp, Mapping, PortPolicy, Proto, Published};
use crate::{Batch, Family, Result as NfResult, SavedRule, SavedTable, Table, parse_comment};

/// `10.0.0.2:80` or `[fd00::2]:80` -> the address.
pub(super) fn dnat_addr(to: &str) -> Option<IpAddr> {
    let host = match to.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => to.rsplit_once(':').map_or(to, |(h, _)| h),
    };
    host.parse().ok()
}

/// Every host port that our DNAT rules publish, with its holder.
pub fn published(saved: &SavedTable, family: Family) -> Vec<Published> {
    saved
        .rules
        .iter()
        .filter(|r| r.chain.starts_with(DN_PREFIX) && r.target() == Some("DNAT"))
        .filter_map(|r| {
            let (net, cid, ifname) = parse_comment(r.comment()?)?;
            let host_ip = match r.value_of("-d") {
                Some(d) => HostIp::Addr(d.parse::<IpNetwork>().ok()?.ip()),
                None => HostIp::AnyOf(family),
            };
            Some(Published {
                proto: Proto::parse(r.value_of("-p")?)?,
                host_port: r.value_of("--dport")?.parse().ok()?,
                host_ip,
                to: r.value_of("--to-destination").and_then(dnat_addr),
                network: net.to_string(),
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
            })
        })
        .collect()
}

/// The first published port of another attachment that a mapping of ours would shadow.
pub fn conflict<'a>(
    cfg: &PortPolicy,
    owner: &AttachmentId<'_>,
    family: Family,
    existing: &'a [Published],
) -> Option<(Mapping, &'a Published)> {
    for m in cfg.mappings_for(family) {
        for p in existing {
            let same_attachment = p.container_id == owner.container_id && p.ifname == owner.ifname;
            if !same_attachment
                && p.proto == m.proto
                && p.host_port == m.host_port
                && p.host_ip.overlaps(m.host_ip)
            {
                return Some((*m, p));
            }
        }
    }
    None
}

/// What removing an attachment's rules involves in one family.
#[derive(Debug, Default)]
pub struct Removal {
    /// Entry rules in `TETHER-HOSTPORT-DNAT`.
    pub entries: Vec<SavedRule>,
    /// Per-attachment chains to flush and delete.
    pub chains: BTreeSet<String>,
    /// What those chains published (for the conntrack flush).
    pub published: Vec<Published>,
}

impl Removal {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.chains.is_empty()
    }

    /// Adds the deletes to `b`: entry rules first, then the chains they pointed at.
    pub fn add_to(&self, b: &mut Batch) -> NfResult<()> {
        for r in &self.entries {
            b.delete_saved(Table::Nat, r);
        }
        for c in &self.chains {
            b.flush_chain(Table::Nat, c)?.delete_chain(Table::Nat, c)?;
        }
        Ok(())
    }
}

/// Finds everything in `saved` that belongs to the attachments `is_stale` selects (by the parsed
/// comment `(network, container id, ifname)`): their entry rules, the chains those jump to, and
/// any `TETHER-DN-` chain holding their rules. `extra_chains` are removed too if they exist
/// (an empty chain left by an interrupted ADD carries no comment).
pub fn removal(
    saved: &SavedTable,
    family: Family,
    is_stale: impl Fn(&str, &str, &str) -> bool,
    extra_chains: &[String],
) -> Removal {
    let stale = |r: &SavedRule| {
        r.comment()
            .and_then(parse_comment)
            .is_some_and(|(n, c, i)| is_stale(n, c, i))
    };
    let mut out = Removal::default();
    for r in &saved.rules {
        if r.chain == DNAT_CHAIN && stale(r) {
            if let Some(t) = r.target().filter(|t| t.starts_with(DN_PREFIX)) {
                out.chains.insert(t.to_string());
            }
            out.entries.push(r.clone());
        } else if r.chain.starts_with(DN_PREFIX) && stale(r) {
            out.chains.insert(r.chain.clone());
        }
    }
    out.chains.extend(extra_chains.iter().cloned());
    out.chains.retain(|c| saved.has_chain(c));
    // A chain may still be referenced by an entry rule of someone else (it never is with our
    // own names, but a hash collision or a hand-made rule must not make the batch fail).
    let referenced_elsewhere: BTreeSet<&str> = saved
        .rules
        .iter()
        .filter(|r| !out.entries.contains(r) && !out.chains.contains(&r.chain))
        .filter_map(|r| r.target())
        .collect();
    out.chains
        .retain(|c| !referenced_elsewhere.contains(c.as_str()));
    out.published = published(saved, family)
        .into_iter()
        .filter(|p| is_stale(&p.network, &p.container_id, &p.ifname))
        .collect();
    out
}

/// An entry rule of `TETHER-HOSTPORT-DNAT` that carries an attachment's comment.
#[derive(Debug)]
pub struct Entry<'a> {
    pub rule: &'a SavedRule,
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// `None` when the rule is not in the form ADD writes (a protocol and a port list).
    pub ports: Option<(Proto, Vec<u16>)>,
}

impl Entry<'_> {
    fn owned_by(&self, who: &AttachmentId<'_>) -> bool {
        self.container_id == who.container_id && self.ifname == who.ifname
    }
}

/// The entry rules in a listing of `TETHER-HOSTPORT-DNAT` ([`crate::Netfilter::list_chain`]).
pub fn entries(dnat: &SavedTable) -> Vec<Entry<'_>> {
    dnat.rules
        .iter()
        .filter(|r| r.chain == DNAT_CHAIN)
        .filter_map(|rule| {
            let (network, container_id, ifname) = parse_comment(rule.comment()?)?;
            let ports = || {
                let proto = Proto::parse(rule.value_of("-p")?)?;
                let list = rule.value_of("--dports")?.split(',');
                let list = list.map(|p| p.parse().ok()).collect::<Option<Vec<u16>>>()?;
                Some((proto, list))
            };
            Some(Entry {
                rule,
                network,
                container_id,
                ifname,
                ports: ports(),
            })
        })
        .collect()
}

/// Whether an ADD can go by the entry rules alone: this attachment has none yet (a repeated ADD
/// or one after a rename replaces rules, which needs the full table), and no other attachment's
/// entry names a protocol and host port of ours (the precise conflict check needs the host
/// addresses, which only the per-attachment chains hold). An entry not in ADD's form is a reason
/// to look closer too.
pub fn entries_allow_add(
    entries: &[Entry<'_>],
    cfg: &PortPolicy,
    who: &AttachmentId<'_>,
    family: Family,
) -> bool {
    entries.iter().all(|e| {
        !e.owned_by(who)
            && e.ports.as_ref().is_some_and(|(proto, ports)| {
                !cfg.mappings_for(family)
                    .any(|m| m.proto == *proto && ports.contains(&m.host_port))
            })
    })
}

/// This attachment's removal found from the entry rules alone, or `None` when they do not
/// settle it: an entry for UDP or SCTP (the conntrack flush needs the DNAT targets, which only
/// the per-attachment chains hold), or a chain of ours that another entry also jumps to.
///
/// No entry of ours means nothing to remove (the DEL of an attachment without mappings, as most
/// of Kubernetes' pods are): every ADD, fast or full, writes a per-attachment chain in the same
/// restore as the entries that jump to it, and every removal deletes them together. A chain
/// left without its entry by hand is GC's to find (it reads the whole table).
pub fn removal_from_entries(entries: &[Entry<'_>], who: &AttachmentId<'_>) -> Option<Removal> {
    let (ours, others): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| e.owned_by(who));
    if ours
        .iter()
        .any(|e| !matches!(e.ports, Some((Proto::Tcp, _))))
    {
        return None;
    }
    let mut out = Removal::default();
    for e in ours {
        let target = e.rule.target().filter(|t| t.starts_with(DN_PREFIX))?;
        out.chains.insert(target.to_string());
        out.entries.push(e.rule.clone());
    }
    let shared = others
        .iter()
        .any(|e| e.rule.target().is_some_and(|t| out.chains.contains(t)));
    (!shared).then_some(out)
}
