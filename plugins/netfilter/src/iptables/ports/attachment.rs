//! One attachment's part of the port publishing layout (see [`super`]): its `TETHER-DN-<hash>`
//! chain and its entry rules in `TETHER-HOSTPORT-DNAT`, built once by [`rules`] and then
//! written by [`add_attachment`] or verified by [`check_attachment`], so CHECK can never
//! disagree with what ADD writes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{DNAT_CHAIN, MULTIPORT_MAX, SETMARK_CHAIN, dn_chain, host, subnet};
use crate::policy::{AttachmentId, Mapping, MarkChain, PortPolicy, Proto};
use crate::{Batch, Family, Result as NfResult, Rule, Table};

/// Everything one container address gets: its chain's rules (appended in order) and the entry
/// rules jumping to it (each inserted at the top of `TETHER-HOSTPORT-DNAT`, in order).
#[derive(Debug)]
pub struct AttachmentRules {
    pub chain: String,
    pub rules: Vec<Rule>,
    pub entries: Vec<Rule>,
}

/// `[-s src] [-d hostIP] -p proto -m proto --dport hp`: in iptables-save's order.
fn port_match(m: &Mapping, src: Option<IpNetwork>) -> NfResult<Rule> {
    let mut r = Rule::new();
    if let Some(s) = src {
        r = r.src(s);
    }
    if let Some(a) = m.host_ip.addr() {
        r = r.dst(host(a));
    }
    let p = m.proto.as_str();
    r.args(&["-p", p, "-m", p, "--dport", &m.host_port.to_string()])
}

/// The rules of one container address; `None` when no mapping applies to its family.
pub fn rules(
    cfg: &PortPolicy,
    owner: &AttachmentId<'_>,
    addr: &IpNetwork,
) -> NfResult<Option<AttachmentRules>> {
    let family = Family::of(addr);
    let text = owner.comment();
    let chain = dn_chain(owner);
    let maps: Vec<&Mapping> = cfg.mappings_for(family).collect();
    if maps.is_empty() {
        return Ok(None);
    }
    let mark_target = match &cfg.mark {
        MarkChain::Bit(_) => SETMARK_CHAIN,
        MarkChain::External(c) => c.as_str(),
    };
    let mut rules = Vec::new();
    for m in &maps {
        if cfg.snat {
            // Hairpin: a container reaching itself or a neighbour through a host address must
            // be masqueraded, or the reply would bypass the host and be dropped by the sender.
            let src = if cfg.masq_all {
                IpNetwork::new(
                    match family {
                        Family::V4 => IpAddr::from([0, 0, 0, 0]),
                        Family::V6 => IpAddr::from([0u16; 8]),
                    },
                    0,
                )
                .expect("zero prefix is valid")
            } else {
                subnet(addr)
            };
            rules.push(
                port_match(m, Some(src))?
                    .attachment_comment(&text)?
                    .jump(mark_target)?,
            );
            if family == Family::V4 && !cfg.masq_all {
                rules.push(
                    port_match(m, Some(host([127, 0, 0, 1].into())))?
                        .attachment_comment(&text)?
                        .jump(mark_target)?,
                );
            }
        }
        rules.push(
            port_match(m, None)?
                .attachment_comment(&text)?
                .jump("DNAT")?
                .to_destination(addr.ip(), m.container_port),
        );
    }
    // Entry rules: one per protocol and per 15 distinct ports, inserted at the top so that the
    // newest attachment wins over anything older in the chain (the reference's order).
    let mut entries = Vec::new();
    let conditions: Vec<&str> = cfg.conditions(family).iter().map(String::as_str).collect();
    let protos: BTreeSet<Proto> = maps.iter().map(|m| m.proto).collect();
    for proto in protos {
        let ports: BTreeSet<u16> = maps
            .iter()
            .filter(|m| m.proto == proto)
            .map(|m| m.host_port)
            .collect();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            entries.push(
                Rule::new()
                    .args(&[
                        "-p",
                        proto.as_str(),
                        "-m",
                        "multiport",
                        "--dports",
                        &chunk.join(","),
                    ])?
                    .args(&conditions)?
                    .attachment_comment(&text)?
                    .jump(&chain)?,
            );
        }
    }
    Ok(Some(AttachmentRules {
        chain,
        rules,
        entries,
    }))
}

/// The per-attachment chain (declared, so flushed if it exists) and its entry rules for one
/// container address.
pub fn add_attachment(
    b: &mut Batch,
    cfg: &PortPolicy,
    owner: &AttachmentId<'_>,
    addr: &IpNetwork,
) -> NfResult<()> {
    let Some(a) = rules(cfg, owner, addr)? else {
        return Ok(());
    };
    b.new_chain(Table::Nat, &a.chain)?;
    for r in &a.rules {
        b.append(Table::Nat, &a.chain, r)?;
    }
    for e in &a.entries {
        b.insert(Table::Nat, DNAT_CHAIN, e)?;
    }
    Ok(())
}

/// `-C` for every rule [`add_attachment`] writes for these inputs: the batch commits (changing
/// nothing) exactly when all of them exist, compared by iptables itself, so that the user's
/// conditions and every other spelling iptables-save normalises compare as they should.
pub fn check_attachment(
    b: &mut Batch,
    cfg: &PortPolicy,
    owner: &AttachmentId<'_>,
    addr: &IpNetwork,
) -> NfResult<()> {
    let Some(a) = rules(cfg, owner, addr)? else {
        return Ok(());
    };
    for r in &a.rules {
        b.check(Table::Nat, &a.chain, r)?;
    }
    for e in &a.entries {
        b.check(Table::Nat, DNAT_CHAIN, e)?;
    }
    Ok(())
}
