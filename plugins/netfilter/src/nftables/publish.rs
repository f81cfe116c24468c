//! Port publishing on nftables: an attachment's mappings become elements of the shared maps
//! (`ports4`, `hostports4`, `snat4`, and the v6 twins) plus its own record map `pub4-H`, which
//! DEL, CHECK and GC read back instead of the table (see [`super::layout`]).
//!
//! ```text
//!  ADD   lock ─ read own record ─ conflict lookups (GET per host port; hostports dump for
//!        mappings on every address) ─ ONE batch: declare shared objects, destroy the old
//!        elements, add the new ones (EXCL: a host port held meanwhile fails it all)
//!  DEL   read own record ─ ONE batch: destroy its elements and the record
//! ```
//! Conflicts are exact: the same host port (and protocol) on the same host address, or on
//! every address against any one address, held by another (container id, ifname).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use tether_nft::{Batch, Elem, Nft, Value};

use super::layout::{self, hostports_map, ports_map, record_map, snat_set};
use super::{Nftables, absent_ok, check_chain};
use crate::names::parse_comment;
use crate::policy::{AttachmentId, HostIp, MarkChain, PortPolicy, Proto, Published};
use crate::{Error, Family, Result};

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc_proto::TCP,
        Proto::Udp => libc_proto::UDP,
        Proto::Sctp => libc_proto::SCTP,
    }
}

mod libc_proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

fn proto_of(n: u8) -> Option<Proto> {
    match n {
        libc_proto::TCP => Some(Proto::Tcp),
        libc_proto::UDP => Some(Proto::Udp),
        libc_proto::SCTP => Some(Proto::Sctp),
        _ => None,
    }
}

fn unspecified(f: Family) -> IpAddr {
    match f {
        Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
        Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// The last address of `start/prefix`.
fn last(start: IpAddr, prefix: u8) -> IpAddr {
    match start {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            Ipv4Addr::from(u32::from(a) | host).into()
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            Ipv6Addr::from(u128::from(a) | host).into()
        }
    }
}

/// What one record element stands for in the shared objects.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// In `ports{f}` (key proto . port) or `hostports{f}` (key addr . proto . port).
    Port {
        host: Option<IpAddr>,
        proto: u8,
        port: u16,
        to: IpAddr,
        to_port: u16,
    },
    /// A `snat{f}` range: container . start/prefix.
    Snat {
        container: IpAddr,
        start: IpAddr,
        prefix: u8,
    },
}

impl Piece {
    fn record(&self, f: Family, comment: &str) -> Result<Elem> {
        let e = match *self {
            Piece::Port {
                host,
                proto,
                port,
                to,
                to_port,
            } => Elem::key(&[
                Value::ip(host.unwrap_or(unspecified(f))),
                Value::Proto(proto),
                Value::Port(port),
            ])
            .to(&[Value::ip(to), Value::Port(to_port)]),
            // proto 0 is no port: the record's way of naming a snat range.
            Piece::Snat {
                container,
                start,
                prefix,
            } => Elem::key(&[
                Value::ip(start),
                Value::Proto(0),
                Value::Port(prefix.into()),
            ])
            .to(&[Value::ip(container), Value::Port(0)]),
        };
        Ok(e.comment(comment)?)
    }

    fn from_record(e: &Elem) -> Option<Piece> {
        let ip = |v: &Value| match v {
            Value::Ipv4(a) => Some(IpAddr::from(*a)),
            Value::Ipv6(a) => Some(IpAddr::from(*a)),
            _ => None,
        };
        let (k, d) = (&e.key, e.data.as_ref()?);
        let (Value::Proto(proto), Value::Port(port), Value::Port(to_port)) = (k[1], k[2], d[1])
        else {
            return None;
        };
        let (a, to) = (ip(&k[0])?, ip(&d[0])?);
        Some(if proto == 0 {
            Piece::Snat {
                container: to,
                start: a,
                prefix: u8::try_from(port).ok()?,
            }
        } else {
            Piece::Port {
                host: (!a.is_unspecified()).then_some(a),
                proto,
                port,
                to,
                to_port,
            }
        })
    }

    /// The element of the shared set or map it stands for, with the set.
    fn shared(&self, f: Family, comment: &str) -> Result<(tether_nft::Set, Elem)> {
        Ok(match *self {
            Piece::Port {
                host: None,
                proto,
                port,
                to,
                to_port,
            } => (
                ports_map(f),
                Elem::key(&[Value::Proto(proto), Value::Port(port)])
                    .to(&[Value::ip(to), Value::Port(to_port)])
                    .comment(comment)?,
            ),
            Piece::Port {
                host: Some(h),
                proto,
                port,
                to,
                to_port,
            } => (
                hostports_map(f),
                Elem::key(&[Value::ip(h), Value::Proto(proto), Value::Port(port)])
                    .to(&[Value::ip(to), Value::Port(to_port)])
                    .comment(comment)?,
            ),
            Piece::Snat {
                container,
                start,
                prefix,
            } => (
                snat_set(f),
                Elem::range(
                    &[Value::ip(container), Value::ip(start)],
                    &[Value::ip(container), Value::ip(last(start, prefix))],
                )
                .comment(comment)?,
            ),
        })
    }

    fn published(&self, f: Family, owner: Option<(&str, &str, &str)>) -> Option<Published> {
        let Piece::Port {
            host,
            proto,
            port,
            to,
            ..
        } = *self
        else {
            return None;
        };
        let (network, cid, ifname) = owner.unwrap_or_default();
        Some(Published {
            proto: proto_of(proto)?,
            host_port: port,
            host_ip: host.map_or(HostIp::AnyOf(f), HostIp::Addr),
            to: Some(to),
            network: network.into(),
            container_id: cid.into(),
            ifname: ifname.into(),
        })
    }
}

/// The pieces ADD writes for one family (none when the attachment has no address of it).
fn plan(addrs: &[IpNetwork], policy: &PortPolicy, f: Family) -> Result<Vec<Piece>> {
    if !policy.conditions(f).is_empty() {
        return Err(Error::Invalid {
            what: "portmap conditions",
            value: policy.conditions(f).join(" "),
            reason: "conditionsV4/conditionsV6 are iptables matches; the nftables backend \
                     cannot apply them (use backend \"iptables\")"
                .into(),
        });
    }
    let Some(addr) = addrs.iter().find(|a| Family::of(a) == f) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Piece> = policy
        .mappings_for(f)
        .map(|m| Piece::Port {
            host: m.host_ip.addr(),
            proto: proto_num(m.proto),
            port: m.host_port,
            to: addr.ip(),
            to_port: m.container_port,
        })
        .collect();
    if out.is_empty() {
        return Ok(out);
    }
    if let MarkChain::External(chain) = &policy.mark {
        return Err(Error::Invalid {
            what: "externalSetMarkChain",
            value: chain.clone(),
            reason: "an iptables chain; the nftables backend masquerades itself (use backend \
                     \"iptables\")"
                .into(),
        });
    }
    let snat = |start: IpAddr, prefix: u8| Piece::Snat {
        container: addr.ip(),
        start,
        prefix,
    };
    if policy.masq_all {
        out.push(snat(unspecified(f), 0));
    } else if policy.snat {
        // Hairpin: from the container's subnet (itself and its neighbours); localhost: from
        // 127.0.0.0/8 through route_localnet (IPv6 has no localhost publishing, see iptables).
        out.push(snat(addr.network(), addr.prefix()));
        if f == Family::V4 {
            out.push(snat(Ipv4Addr::new(127, 0, 0, 0).into(), 8));
        }
    }
    Ok(out)
}

fn read_record(nft: &mut Nft, who: &AttachmentId<'_>, f: Family) -> Result<Option<Vec<Elem>>> {
    absent_ok(nft.elements(&layout::table(), &record_map(who, f)))
}

fn is_own(who: &AttachmentId<'_>, e: &Elem) -> bool {
    e.comment
        .as_deref()
        .and_then(parse_comment)
        .is_some_and(|(_, cid, ifname)| who.same_interface(cid, ifname))
}

fn holder(e: &Elem) -> String {
    e.comment.clone().unwrap_or_else(|| "something else".into())
}

/// The exact conflict check, made under the netfilter lock (the EXCL adds are the last guard).
fn conflicts(nft: &mut Nft, who: &AttachmentId<'_>, f: Family, new: &[Piece]) -> Result<()> {
    let t = layout::table();
    let mut hostports: Option<Vec<Elem>> = None;
    for p in new {
        let Piece::Port {
            host, proto, port, ..
        } = *p
        else {
            continue;
        };
        let name = proto_of(proto).map_or("?", Proto::as_str);
        let conflict = |e: &Elem, on: String| {
            Error::Conflict(format!(
                "host port {name}/{port} on {on} is already published by {}",
                holder(e)
            ))
        };
        let any_key = Elem::key(&[Value::Proto(proto), Value::Port(port)]);
        if let Some(Some(e)) = absent_ok(nft.element(&t, &ports_map(f), &any_key))?
            && !is_own(who, &e)
        {
            return Err(conflict(&e, "every host address".into()));
        }
        match host {
            Some(h) => {
                let key = Elem::key(&[Value::ip(h), Value::Proto(proto), Value::Port(port)]);
                if let Some(Some(e)) = absent_ok(nft.element(&t, &hostports_map(f), &key))?
                    && !is_own(who, &e)
                {
                    return Err(conflict(&e, h.to_string()));
                }
            }
            None => {
                if hostports.is_none() {
                    let all = absent_ok(nft.elements(&t, &hostports_map(f)))?;
                    hostports = Some(all.unwrap_or_default());
                }
                for e in hostports.iter().flatten() {
                    if e.key[1..] == [Value::Proto(proto), Value::Port(port)] && !is_own(who, e) {
                        return Err(conflict(
                            e,
                            format!("{} (of every address)", e.key[0].ip_string()),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

trait IpString {
    fn ip_string(&self) -> String;
}

impl IpString for Value {
    fn ip_string(&self) -> String {
        match self {
            Value::Ipv4(a) => a.to_string(),
            Value::Ipv6(a) => a.to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// Adds to `b` the removal of what `record` stands for, and of the record itself.
fn remove_record(
    b: &mut Batch,
    who_comment: &str,
    f: Family,
    record: &[Elem],
    set: &str,
) -> Result<()> {
    let t = layout::table();
    for e in record {
        if let Some(p) = Piece::from_record(e) {
            let (s, el) = p.shared(f, who_comment)?;
            b.destroy_elements(&t, &s, &[el])?;
        }
    }
    b.destroy_set(&t, set);
    Ok(())
}

pub fn add(
    nf: &Nftables,
    who: &AttachmentId<'_>,
    addrs: &[IpNetwork],
    policy: &PortPolicy,
) -> Result<()> {
    let plans: Vec<(Family, Vec<Piece>)> = Family::ALL
        .into_iter()
        .map(|f| Ok((f, plan(addrs, policy, f)?)))
        .collect::<Result<_>>()?;
    // The socket before the lock, so that it is dropped (closed) after the lock: see [`delete`].
    let mut nft = nf.socket()?;
    let _lock = crate::lock::netfilter_lock();
    let t = layout::table();
    let comment = layout::owner_comment(who);
    let current = absent_ok(nft.rules(&t))?.unwrap_or_default();
    let mut b = Batch::new();
    layout::declare_publish(&mut b, &t, &current);
    for (f, pieces) in &plans {
        conflicts(&mut nft, who, *f, pieces)?;
        let rec = record_map(who, *f);
        if let Some(old) = read_record(&mut nft, who, *f)? {
            remove_record(&mut b, &comment, *f, &old, &rec.name)?;
        }
        if pieces.is_empty() {
            continue;
        }
        b.add_set(&t, &rec);
        let recs: Vec<Elem> = pieces
            .iter()
            .map(|p| p.record(*f, &comment))
            .collect::<Result<_>>()?;
        b.add_elements(&t, &rec, &recs)?;
        for p in pieces {
            let (s, e) = p.shared(*f, &comment)?;
            match p {
                // A host port is claimed exclusively: one already there fails the batch.
                Piece::Port { .. } => b.add_elements(&t, &s, &[e])?,
                Piece::Snat { .. } => b.ensure_elements(&t, &s, &[e])?,
            };
        }
    }
    nft.apply(&b).map_err(|e| match e {
        tether_nft::Error::Exists { op } => Error::Conflict(format!(
            "a host port asked for is already published ({op}); nothing was changed"
        )),
        e => e.into(),
    })
}

pub fn check(
    nf: &Nftables,
    who: &AttachmentId<'_>,
    addrs: &[IpNetwork],
    policy: &PortPolicy,
) -> Result<()> {
    let mut nft = nf.socket()?;
    let t = layout::table();
    for (chain, rules) in layout::publish_rules() {
        let want: Vec<String> = rules.into_iter().map(|(_, c)| c).collect();
        check_chain(&mut nft, chain, &want)?;
    }
    let comment = layout::owner_comment(who);
    for f in Family::ALL {
        let pieces = plan(addrs, policy, f)?;
        let rec = record_map(who, f);
        let got = read_record(&mut nft, who, f)?.unwrap_or_default();
        let mut got: Vec<Piece> = got.iter().filter_map(Piece::from_record).collect();
        let mut want = pieces.clone();
        let key = |p: &Piece| format!("{p:?}");
        got.sort_by_key(key);
        want.sort_by_key(key);
        if got != want {
            return Err(Error::Check(format!(
                "nftables record {} holds {got:?}, expected {want:?}",
                rec.name
            )));
        }
        for p in &pieces {
            let (s, e) = p.shared(f, &comment)?;
            let found = absent_ok(nft.element(&t, &s, &e))?.flatten();
            let ok = found.as_ref().is_some_and(|g| {
                g.data == e.data && (e.key_end.is_none() || g.key_end == e.key_end)
            });
            if !ok {
                return Err(Error::Check(format!(
                    "nftables {} lacks {:?} (found {found:?})",
                    s.name, e.key
                )));
            }
        }
    }
    Ok(())
}

/// Removes the records of `owners` (and what they stand for) in one batch.
fn remove_owned(nft: &mut Nft, owners: &[(String, String, String)]) -> Result<Vec<Published>> {
    let mut b = Batch::new();
    let mut gone = Vec::new();
    for (network, cid, ifname) in owners {
        let who = AttachmentId {
            network,
            container_id: cid,
            ifname,
        };
        for f in Family::ALL {
            let Some(rec) = read_record(nft, &who, f)? else {
                continue;
            };
            let comment = rec
                .iter()
                .find_map(|e| e.comment.clone())
                .unwrap_or_else(|| layout::owner_comment(&who));
            for e in &rec {
                if let Some(p) = Piece::from_record(e) {
                    gone.extend(p.published(f, parse_comment(&comment)));
                }
            }
            remove_record(&mut b, &comment, f, &rec, &record_map(&who, f).name)?;
        }
    }
    match nft.apply(&b) {
        Ok(()) => Ok(gone),
        // The table went meanwhile: nothing left of it.
        Err(tether_nft::Error::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Removes what `who` published. The socket is opened before the lock and so closed after it
/// is released: closing an nfnetlink socket after a commit that deleted something waits for
/// the kernel's release of the deleted objects (one RCU grace period, ~15 ms: the
/// `NETLINK_URELEASE` notifier of nf_tables flushes its destroy work), and under the lock that
/// wait would serialize every parallel DEL behind the previous one's.
pub fn delete(nf: &Nftables, who: &AttachmentId<'_>) -> Result<Vec<Published>> {
    let mut nft = nf.socket()?;
    let _lock = crate::lock::netfilter_lock();
    let owner = (
        who.network.into(),
        who.container_id.into(),
        who.ifname.into(),
    );
    remove_owned(&mut nft, &[owner])
}

pub fn gc(nf: &Nftables, network: &str, valid: &[AttachmentId<'_>]) -> Result<Vec<Published>> {
    // Socket first, closed after the lock is released (see [`delete`]).
    let mut nft = nf.socket()?;
    let _lock = crate::lock::netfilter_lock();
    let sets = absent_ok(nft.sets(&layout::table()))?.unwrap_or_default();
    let mut stale = Vec::new();
    for s in sets {
        if !(s.name.starts_with("pub4-") || s.name.starts_with("pub6-")) {
            continue;
        }
        let Some((net, cid, ifname)) = s.comment.as_deref().and_then(parse_comment) else {
            continue;
        };
        let owner = (net.to_string(), cid.to_string(), ifname.to_string());
        if net == network
            && !valid.iter().any(|v| v.same_interface(cid, ifname))
            && !stale.contains(&owner)
        {
            stale.push(owner);
        }
    }
    // One batch per few attachments: a netlink message has to fit the socket's send buffer.
    let mut gone = Vec::new();
    for chunk in stale.chunks(GC_CHUNK) {
        gone.extend(remove_owned(&mut nft, chunk)?);
    }
    Ok(gone)
}

/// Attachments removed per GC batch.
const GC_CHUNK: usize = 32;
