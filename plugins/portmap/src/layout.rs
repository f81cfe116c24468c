//! The iptables layout, as pure functions from saved tables to batches.
//!
//! The reference's layout with our names (per family, `nat` table unless noted):
//!
//! ```text
//! PREROUTING, OUTPUT:   -m addrtype --dst-type LOCAL -j TETHER-HOSTPORT-DNAT          (shared)
//! TETHER-HOSTPORT-DNAT: -p tcp -m multiport --dports 8080,8443 [conditions]
//!                       -m comment --comment "tether net=N id=C if=I" -j TETHER-DN-<hash>
//! TETHER-DN-<hash>:     -s <container subnet> -p tcp -m tcp --dport 8080 -j TETHER-HOSTPORT-SETMARK
//!                       -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j TETHER-HOSTPORT-SETMARK (v4)
//!                       -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
//! TETHER-HOSTPORT-SETMARK: -j MARK --set-xmark 0x2000/0x2000                            (shared)
//! POSTROUTING (top):    -j TETHER-HOSTPORT-MASQ                                         (shared)
//! TETHER-HOSTPORT-MASQ: -m mark --mark 0x2000/0x2000 -j MASQUERADE                      (shared)
//! raw PREROUTING (top, v4): -j TETHER-LOCALNET-GUARD                                   (shared)
//! TETHER-LOCALNET-GUARD: -d 127.0.0.0/8 ! -i lo -j DROP                                (shared)
//! ```
//!
//! Every per-container rule (entry and chain rules) carries the attachment's comment, so DEL, GC
//! and the host-port conflict check find them by container id and interface alone: after a network
//! rename (new chain hash), without `portMappings`, without `prevResult`.
//!
//! The guard exists because `route_localnet=1` (needed so `127.0.0.1:PORT` can be DNAT-ed to a
//! container) and the DNAT itself both run before the kernel's martian checks: without it a
//! neighbour on the LAN could send to `127.0.0.1:PORT` and reach ports published only on
//! localhost. It sits in `raw`, before conntrack and NAT, where the destination is still the one
//! the sender wrote. Locally generated traffic to 127.0.0.0/8 comes in on `lo` and is unaffected;
//! replies to our masqueraded localhost connections are addressed to the bridge address there.
//! IPv6 needs no guard: the kernel drops `::1` arriving on any interface other than `lo` before
//! netfilter sees it (and so localhost publishing does not work over IPv6).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use tether_netfilter::{
    Batch, Family, Result as NfResult, Rule, SavedRule, SavedTable, Table, chain_name, comment,
    parse_comment,
};

use crate::config::{Config, HostIp, Mapping, MarkChain, Proto};

pub const DNAT_CHAIN: &str = "TETHER-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "TETHER-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "TETHER-HOSTPORT-MASQ";
pub const GUARD_CHAIN: &str = "TETHER-LOCALNET-GUARD";
/// Per-attachment DNAT chains: this prefix + hash(network, container id, ifname).
pub const DN_PREFIX: &str = "TETHER-DN-";

const DNAT_JUMP_COMMENT: &str = "tether hostport DNAT";
const SETMARK_COMMENT: &str = "tether portfwd masquerade mark";
const MASQ_JUMP_COMMENT: &str = "tether portfwd requiring masquerade";
const GUARD_COMMENT: &str = "tether route_localnet guard: drop 127.0.0.0/8 not from lo";
/// `multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// One attachment: who owns the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Owner<'_> {
    pub fn comment(&self) -> String {
        comment(self.network, self.container_id, self.ifname)
    }

    pub fn chain(&self) -> String {
        chain_name(DN_PREFIX, self.network, self.container_id, self.ifname)
    }
}

fn mark_value(bit: u32) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

fn host(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, Family::from(ip).host_prefix()).expect("host prefix is valid")
}

fn subnet(n: &IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("prefix came from a valid network")
}

/// `--to-destination` as iptables-save prints it (and [`Rule::to_destination`] writes it):
/// `10.88.0.5:80`, `[fd00::5]:80`.
fn dnat_target(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
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

/// Mappings that apply to a container address of `family`.
fn mappings_for(cfg: &Config, family: Family) -> impl Iterator<Item = &Mapping> {
    cfg.mappings
        .iter()
        .filter(move |m| m.host_ip.applies_to(family))
}

/// A published host port, as read back from a DNAT rule in a `TETHER-DN-` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub proto: Proto,
    pub host_port: u16,
    pub host_ip: HostIp,
    /// The container address traffic goes to.
    pub to: Option<IpAddr>,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// `10.0.0.2:80` or `[fd00::2]:80` -> the address.
fn dnat_addr(to: &str) -> Option<IpAddr> {
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
    cfg: &Config,
    owner: &Owner<'_>,
    family: Family,
    existing: &'a [Published],
) -> Option<(Mapping, &'a Published)> {
    for m in mappings_for(cfg, family) {
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

/// One shared rule that ADD needs (a jump into our chains, or a rule of a shared chain).
struct BaseRule {
    table: Table,
    chain: &'static str,
    rule: Rule,
    /// Inserted at the top rather than appended.
    at_top: bool,
    /// Whether a saved rule of `chain` already does this job (a looser test than equality, so
    /// that a rule written by an older version or spelled differently is not added twice).
    found: fn(&SavedRule, &str) -> bool,
}

/// The shared chains ADD needs in `family`, with their table.
fn base_chains(cfg: &Config, family: Family) -> Vec<(Table, &'static str)> {
    let mut chains = vec![(Table::Nat, DNAT_CHAIN)];
    if let (true, MarkChain::Bit(_)) = (cfg.snat, &cfg.mark) {
        chains.extend([(Table::Nat, SETMARK_CHAIN), (Table::Nat, MASQ_CHAIN)]);
    }
    if family == Family::V4 {
        chains.push((Table::Raw, GUARD_CHAIN));
    }
    chains
}

/// The shared rules ADD needs in `family`, in the order they are written (a chain's rules before
/// the jumps to it). `found` gets the rule and the mark value.
fn base_rules(cfg: &Config, family: Family) -> NfResult<Vec<BaseRule>> {
    let mut rules = Vec::new();
    for entry in ["PREROUTING", "OUTPUT"] {
        rules.push(BaseRule {
            table: Table::Nat,
            chain: entry,
            rule: Rule::new()
                .args(&["-m", "addrtype", "--dst-type", "LOCAL"])?
                .comment(DNAT_JUMP_COMMENT)?
                .jump(DNAT_CHAIN)?,
            at_top: false,
            found: |r, _| r.target() == Some(DNAT_CHAIN),
        });
    }
    if let (true, MarkChain::Bit(bit)) = (cfg.snat, &cfg.mark) {
        let mark = mark_value(*bit);
        rules.push(BaseRule {
            table: Table::Nat,
            chain: SETMARK_CHAIN,
            rule: Rule::new()
                .comment(SETMARK_COMMENT)?
                .jump("MARK")?
                .args(&["--set-xmark", &mark])?,
            at_top: false,
            found: |r, mark| r.value_of("--set-xmark") == Some(mark),
        });
        rules.push(BaseRule {
            table: Table::Nat,
            chain: MASQ_CHAIN,
            rule: Rule::new()
                .args(&["-m", "mark", "--mark", &mark])?
                .jump("MASQUERADE")?,
            at_top: false,
            found: |r, mark| r.value_of("--mark") == Some(mark) && r.target() == Some("MASQUERADE"),
        });
        // At the top: the bridge's masquerade chains in POSTROUTING would otherwise ACCEPT
        // hairpin traffic (destination in the container subnet) first.
        rules.push(BaseRule {
            table: Table::Nat,
            chain: "POSTROUTING",
            rule: Rule::new().comment(MASQ_JUMP_COMMENT)?.jump(MASQ_CHAIN)?,
            at_top: true,
            found: |r, _| r.target() == Some(MASQ_CHAIN),
        });
    }
    if family == Family::V4 {
        rules.push(BaseRule {
            table: Table::Raw,
            chain: GUARD_CHAIN,
            rule: guard_rule()?,
            at_top: false,
            found: |r, _| r.target() == Some("DROP"),
        });
        rules.push(BaseRule {
            table: Table::Raw,
            chain: "PREROUTING",
            rule: Rule::new().comment(GUARD_COMMENT)?.jump(GUARD_CHAIN)?,
            at_top: true,
            found: |r, _| r.target() == Some(GUARD_CHAIN),
        });
    }
    Ok(rules)
}

/// Adds the shared chains and rules that are missing from the saved tables (never flushing a
/// shared chain: other attachments' rules live in `TETHER-HOSTPORT-DNAT`). The raw table's are
/// skipped when it was not read.
pub fn ensure_base(
    b: &mut Batch,
    cfg: &Config,
    family: Family,
    nat: &SavedTable,
    raw: Option<&SavedTable>,
) -> NfResult<()> {
    write_base(b, cfg, family, nat, raw, false)
}

/// The whole base, for a host without `TETHER-HOSTPORT-DNAT`: every shared chain is created
/// with `-N`, so the batch fails (and changes nothing in that table) if one exists already when
/// it runs; without the chains there can be no jumps to them. The caller holds the netfilter
/// lock: on nf_tables `-N` does not stop a racing restore. Raw first, as in [`check_base`].
pub fn create_base(b: &mut Batch, cfg: &Config, family: Family) -> NfResult<()> {
    let raw = SavedTable::parse("", Table::Raw);
    let nat = SavedTable::parse("", Table::Nat);
    write_base(b, cfg, family, &nat, Some(&raw), true)
}

fn write_base(
    b: &mut Batch,
    cfg: &Config,
    family: Family,
    nat: &SavedTable,
    raw: Option<&SavedTable>,
    create: bool,
) -> NfResult<()> {
    let saved = |table: Table| match table {
        Table::Raw => raw,
        _ => Some(nat),
    };
    let mut chains = base_chains(cfg, family);
    chains.sort_by_key(|(table, _)| *table != Table::Raw);
    for (table, chain) in chains {
        if saved(table).is_some_and(|t| !t.has_chain(chain)) {
            if create {
                b.create_chain(table, chain)?;
            } else {
                b.new_chain(table, chain)?;
            }
        }
    }
    let mark = match &cfg.mark {
        MarkChain::Bit(bit) => mark_value(*bit),
        MarkChain::External(_) => String::new(),
    };
    for base in base_rules(cfg, family)? {
        let Some(t) = saved(base.table) else {
            continue;
        };
        let found = t
            .rules
            .iter()
            .any(|r| r.chain == base.chain && (base.found)(r, &mark));
        if !found && base.at_top {
            b.insert(base.table, base.chain, &base.rule)?;
        } else if !found {
            b.append(base.table, base.chain, &base.rule)?;
        }
    }
    Ok(())
}

/// `-C` for every shared rule ADD needs, raw table first: put before an attachment's rules in
/// one batch, it commits them only if the base is complete, without reading the tables. With
/// nf_tables each table of a restore commits on its own, so the raw section, which holds only
/// checks, goes first: when it fails, the nat section never runs.
pub fn check_base(b: &mut Batch, cfg: &Config, family: Family) -> NfResult<()> {
    let mut rules = base_rules(cfg, family)?;
    rules.sort_by_key(|r| r.table != Table::Raw);
    for base in rules {
        b.check(base.table, base.chain, &base.rule)?;
    }
    Ok(())
}

fn guard_rule() -> NfResult<Rule> {
    Rule::new()
        .dst("127.0.0.0/8".parse().expect("static network"))
        .args(&["!", "-i", "lo"])?
        .comment(GUARD_COMMENT)?
        .jump("DROP")
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
    fn owned_by(&self, who: &Owner<'_>) -> bool {
        self.container_id == who.container_id && self.ifname == who.ifname
    }
}

/// The entry rules in a listing of `TETHER-HOSTPORT-DNAT` ([`tether_netfilter::Netfilter::list_chain`]).
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
    cfg: &Config,
    who: &Owner<'_>,
    family: Family,
) -> bool {
    entries.iter().all(|e| {
        !e.owned_by(who)
            && e.ports.as_ref().is_some_and(|(proto, ports)| {
                !mappings_for(cfg, family)
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
pub fn removal_from_entries(entries: &[Entry<'_>], who: &Owner<'_>) -> Option<Removal> {
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

/// The per-attachment chain and its entry rules for one container address.
pub fn add_attachment(
    b: &mut Batch,
    cfg: &Config,
    owner: &Owner<'_>,
    addr: &IpNetwork,
) -> NfResult<()> {
    let family = Family::of(addr);
    let text = owner.comment();
    let chain = owner.chain();
    let maps: Vec<&Mapping> = mappings_for(cfg, family).collect();
    if maps.is_empty() {
        return Ok(());
    }
    b.new_chain(Table::Nat, &chain)?;
    let mark_target = match &cfg.mark {
        MarkChain::Bit(_) => SETMARK_CHAIN,
        MarkChain::External(c) => c.as_str(),
    };
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
            let hairpin = port_match(m, Some(src))?
                .comment(&text)?
                .jump(mark_target)?;
            b.append(Table::Nat, &chain, &hairpin)?;
            if family == Family::V4 && !cfg.masq_all {
                let local = port_match(m, Some(host([127, 0, 0, 1].into())))?
                    .comment(&text)?
                    .jump(mark_target)?;
                b.append(Table::Nat, &chain, &local)?;
            }
        }
        let dnat = port_match(m, None)?
            .comment(&text)?
            .jump("DNAT")?
            .to_destination(addr.ip(), m.container_port);
        b.append(Table::Nat, &chain, &dnat)?;
    }
    // Entry rules: one per protocol and per 15 distinct ports, inserted at the top so that the
    // newest attachment wins over anything older in the chain (the reference's order).
    let protos: BTreeSet<Proto> = maps.iter().map(|m| m.proto).collect();
    for proto in protos {
        let ports: BTreeSet<u16> = maps
            .iter()
            .filter(|m| m.proto == proto)
            .map(|m| m.host_port)
            .collect();
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let entry = Rule::new()
                .args(&[
                    "-p",
                    proto.as_str(),
                    "-m",
                    "multiport",
                    "--dports",
                    &chunk.join(","),
                ])?
                .args(
                    &cfg.conditions(family)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )?
                .comment(&text)?
                .jump(&chain)?;
            b.insert(Table::Nat, DNAT_CHAIN, &entry)?;
        }
    }
    Ok(())
}

/// CHECK for one container address: every rule ADD would have made is present.
pub fn check(
    cfg: &Config,
    owner: &Owner<'_>,
    addr: &IpNetwork,
    nat: &SavedTable,
    raw: Option<&SavedTable>,
) -> Result<(), String> {
    let family = Family::of(addr);
    let maps: Vec<&Mapping> = mappings_for(cfg, family).collect();
    if maps.is_empty() {
        return Ok(());
    }
    let chain = owner.chain();
    fn rules_of<'a>(t: &'a SavedTable, c: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        t.rules.iter().filter(move |r| r.chain == c)
    }
    for entry in ["PREROUTING", "OUTPUT"] {
        if !rules_of(nat, entry).any(|r| r.target() == Some(DNAT_CHAIN)) {
            return Err(format!(
                "{family:?} nat {entry} has no jump to {DNAT_CHAIN}"
            ));
        }
    }
    if !nat.has_chain(&chain) {
        return Err(format!("{family:?} nat chain {chain} is missing"));
    }
    let mine = published(nat, family);
    for m in &maps {
        let want_ip = match m.host_ip {
            HostIp::Addr(a) => HostIp::Addr(a),
            _ => HostIp::AnyOf(family),
        };
        let found = mine.iter().any(|p| {
            p.container_id == owner.container_id
                && p.ifname == owner.ifname
                && p.proto == m.proto
                && p.host_port == m.host_port
                && p.host_ip == want_ip
                && p.to == Some(addr.ip())
        });
        let dnat_ok = found
            && rules_of(nat, &chain).any(|r| {
                r.value_of("--to-destination") == Some(&dnat_target(addr.ip(), m.container_port))
                    && r.value_of("--dport") == Some(&m.host_port.to_string())
            });
        if !dnat_ok {
            return Err(format!(
                "no DNAT rule for host port {}/{} to {} in {chain}",
                m.host_port,
                m.proto.as_str(),
                dnat_target(addr.ip(), m.container_port)
            ));
        }
        let entry_ok = rules_of(nat, DNAT_CHAIN).any(|r| {
            r.target() == Some(chain.as_str())
                && r.value_of("-p") == Some(m.proto.as_str())
                && r.value_of("--dports")
                    .is_some_and(|ps| ps.split(',').any(|p| p == m.host_port.to_string()))
        });
        if !entry_ok {
            return Err(format!(
                "no entry rule for host port {}/{} in {DNAT_CHAIN}",
                m.host_port,
                m.proto.as_str()
            ));
        }
        if cfg.snat {
            let target = match &cfg.mark {
                MarkChain::Bit(_) => SETMARK_CHAIN,
                MarkChain::External(c) => c.as_str(),
            };
            let marks = rules_of(nat, &chain)
                .filter(|r| {
                    r.target() == Some(target)
                        && r.value_of("--dport") == Some(&m.host_port.to_string())
                })
                .count();
            let want = if family == Family::V4 && !cfg.masq_all {
                2
            } else {
                1
            };
            if marks < want {
                return Err(format!(
                    "masquerade mark rules for host port {} missing in {chain}",
                    m.host_port
                ));
            }
        }
    }
    if let (true, MarkChain::Bit(bit)) = (cfg.snat, &cfg.mark) {
        let mark = mark_value(*bit);
        if !rules_of(nat, SETMARK_CHAIN).any(|r| r.value_of("--set-xmark") == Some(mark.as_str())) {
            return Err(format!("{SETMARK_CHAIN} does not set {mark}"));
        }
        if !rules_of(nat, MASQ_CHAIN).any(|r| r.value_of("--mark") == Some(mark.as_str())) {
            return Err(format!("{MASQ_CHAIN} does not masquerade {mark}"));
        }
        if !rules_of(nat, "POSTROUTING").any(|r| r.target() == Some(MASQ_CHAIN)) {
            return Err(format!("POSTROUTING has no jump to {MASQ_CHAIN}"));
        }
    }
    if let (Family::V4, Some(raw)) = (family, raw) {
        let guarded = raw
            .rules
            .iter()
            .any(|r| r.chain == "PREROUTING" && r.target() == Some(GUARD_CHAIN))
            && raw
                .rules
                .iter()
                .any(|r| r.chain == GUARD_CHAIN && r.target() == Some("DROP"));
        if !guarded {
            return Err(format!(
                "raw PREROUTING has no {GUARD_CHAIN} (localhost guard)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MARK_BIT;

    fn cfg(mappings: Vec<Mapping>) -> Config {
        Config {
            snat: true,
            masq_all: false,
            mark: MarkChain::Bit(DEFAULT_MARK_BIT),
            conditions_v4: vec!["!".into(), "-s".into(), "192.0.2.0/24".into()],
            conditions_v6: vec![],
            mappings,
        }
    }

    fn tcp(hp: u16, cp: u16, host_ip: HostIp) -> Mapping {
        Mapping {
            proto: Proto::Tcp,
            host_port: hp,
            container_port: cp,
            host_ip,
        }
    }

    const OWNER: Owner<'static> = Owner {
        network: "net1",
        container_id: "c1",
        ifname: "eth0",
    };

    #[test]
    fn batch_for_a_fresh_host() {
        let c = cfg(vec![
            tcp(8080, 80, HostIp::Any),
            tcp(8443, 443, HostIp::Addr("127.0.0.1".parse().unwrap())),
        ]);
        let empty = SavedTable::parse("", Table::Nat);
        let raw = SavedTable::parse("", Table::Raw);
        let mut b = Batch::new(Family::V4);
        ensure_base(&mut b, &c, Family::V4, &empty, Some(&raw)).unwrap();
        add_attachment(&mut b, &c, &OWNER, &"10.88.0.5/16".parse().unwrap()).unwrap();
        let text = b.text();
        let chain = OWNER.chain();
        for want in [
            ":TETHER-HOSTPORT-DNAT - [0:0]".to_string(),
            "-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment \"tether hostport DNAT\" -j TETHER-HOSTPORT-DNAT".into(),
            "-A TETHER-HOSTPORT-SETMARK -m comment --comment \"tether portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000".into(),
            "-A TETHER-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE".into(),
            format!("-A {chain} -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j TETHER-HOSTPORT-SETMARK"),
            format!("-A {chain} -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 8443 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j TETHER-HOSTPORT-SETMARK"),
            format!("-A {chain} -p tcp -m tcp --dport 8080 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j DNAT --to-destination 10.88.0.5:80"),
            format!("-I TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 8080,8443 ! -s 192.0.2.0/24 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j {chain}"),
            "*raw\n:TETHER-LOCALNET-GUARD - [0:0]\n-A TETHER-LOCALNET-GUARD -d 127.0.0.0/8 ! -i lo".into(),
        ] {
            assert!(text.contains(&want), "missing {want}\nin\n{text}");
        }
    }

    #[test]
    fn v6_skips_v4_only_mappings_and_localhost() {
        let c = cfg(vec![
            tcp(8080, 80, HostIp::AnyOf(Family::V4)),
            tcp(9090, 90, HostIp::Any),
        ]);
        let mut b = Batch::new(Family::V6);
        add_attachment(&mut b, &c, &OWNER, &"fd00::5/64".parse().unwrap()).unwrap();
        let text = b.text();
        assert!(!text.contains("8080"), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
        assert!(
            text.contains("-j DNAT --to-destination [fd00::5]:90\n"),
            "{text}"
        );
        assert!(text.contains("-s fd00::/64"), "{text}");
    }

    #[test]
    fn masq_all_no_snat_and_external_mark_chain() {
        let addr: IpNetwork = "10.88.0.5/16".parse().unwrap();
        let empty = SavedTable::parse("", Table::Nat);
        let text = |c: &Config| {
            let mut b = Batch::new(Family::V4);
            ensure_base(&mut b, c, Family::V4, &empty, None).unwrap();
            add_attachment(&mut b, c, &OWNER, &addr).unwrap();
            b.text()
        };
        let mut c = cfg(vec![tcp(8080, 80, HostIp::Any)]);
        c.masq_all = true;
        let t = text(&c);
        assert!(t.contains("-s 0.0.0.0/0 -p tcp"), "{t}");
        assert!(!t.contains("127.0.0.1"), "{t}");
        c.masq_all = false;
        c.mark = MarkChain::External("KUBE-MARK-MASQ".into());
        let t = text(&c);
        assert!(t.contains("-j KUBE-MARK-MASQ"), "{t}");
        assert!(!t.contains(SETMARK_CHAIN) && !t.contains(MASQ_CHAIN), "{t}");
        c.snat = false;
        let t = text(&c);
        assert!(
            !t.contains("KUBE-MARK-MASQ") && t.contains("-j DNAT"),
            "{t}"
        );
        c.mark = MarkChain::Bit(0);
        c.snat = true;
        assert!(text(&c).contains("--set-xmark 0x1/0x1"));
    }

    #[test]
    fn finds_holders_and_conflicts() {
        let saved = SavedTable::parse(
            "*nat\n:TETHER-HOSTPORT-DNAT - [0:0]\n:TETHER-DN-aaa - [0:0]\n:TETHER-DN-bbb - [0:0]\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 81 -m comment --comment \"tether net=net1 id=c2 if=eth0\" -j TETHER-DN-bbb\n\
             -A TETHER-DN-aaa -p tcp -m tcp --dport 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j DNAT --to-destination 10.0.0.2:80\n\
             -A TETHER-DN-bbb -d 10.1.1.1/32 -p tcp -m tcp --dport 81 -m comment --comment \"tether net=net1 id=c2 if=eth0\" -j DNAT --to-destination 10.0.0.3:81\n\
             COMMIT\n",
            Table::Nat,
        );
        let p = published(&saved, Family::V4);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].host_ip, HostIp::Addr("10.1.1.1".parse().unwrap()));
        assert_eq!(p[0].to, Some("10.0.0.2".parse().unwrap()));
        // Our own old rules (renamed network) are not a conflict; c2's port 81 is.
        let c = cfg(vec![tcp(80, 80, HostIp::Any), tcp(81, 81, HostIp::Any)]);
        let (m, holder) = conflict(&c, &OWNER, Family::V4, &p).unwrap();
        assert_eq!((m.host_port, holder.container_id.as_str()), (81, "c2"));
        let other_ip = cfg(vec![tcp(81, 81, HostIp::Addr("10.1.1.2".parse().unwrap()))]);
        assert!(conflict(&other_ip, &OWNER, Family::V4, &p).is_none());

        let r = removal(&saved, Family::V4, |_, c, i| c == "c1" && i == "eth0", &[]);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.chains.iter().collect::<Vec<_>>(), ["TETHER-DN-aaa"]);
        assert_eq!(r.published.len(), 1);
        let mut b = Batch::new(Family::V4);
        r.add_to(&mut b).unwrap();
        assert_eq!(
            b.text(),
            "*nat\n-D TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
             -F TETHER-DN-aaa\n-X TETHER-DN-aaa\nCOMMIT\n"
        );
    }

    #[test]
    fn entries_decide_the_fast_paths() {
        let dnat = SavedTable::parse_listing(
            "-N TETHER-HOSTPORT-DNAT\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80,81 -m comment --comment \"tether net=n id=c2 if=eth0\" -j TETHER-DN-bbb\n\
             -A TETHER-HOSTPORT-DNAT -p udp -m multiport --dports 53 -m comment --comment \"tether net=n id=c3 if=eth0\" -j TETHER-DN-ccc\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 90 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m comment --comment \"hand made\" -j ACCEPT\n",
            Table::Nat,
        );
        let e = entries(&dnat);
        assert_eq!(e.len(), 3, "only rules with an attachment's comment");
        assert_eq!(e[0].ports, Some((Proto::Tcp, vec![80, 81])));
        let c4 = Owner {
            container_id: "c4",
            ..OWNER
        };
        let fresh = cfg(vec![tcp(82, 80, HostIp::Any)]);
        assert!(entries_allow_add(&e, &fresh, &c4, Family::V4));
        // Another's port (any host address: the full check decides), or our own old entry.
        let taken = cfg(vec![tcp(81, 80, HostIp::Addr("10.1.1.1".parse().unwrap()))]);
        assert!(!entries_allow_add(&e, &taken, &c4, Family::V4));
        assert!(!entries_allow_add(&e, &fresh, &OWNER, Family::V4));
        // The same port on another protocol is no conflict.
        let udp81 = cfg(vec![Mapping {
            proto: Proto::Udp,
            ..tcp(81, 80, HostIp::Any)
        }]);
        assert!(entries_allow_add(&e, &udp81, &c4, Family::V4));

        // DEL: our entry (network renamed) and its chain; UDP or no entry need the full table.
        let r = removal_from_entries(&e, &OWNER).unwrap();
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.chains.iter().collect::<Vec<_>>(), ["TETHER-DN-aaa"]);
        let c3 = Owner {
            container_id: "c3",
            ..OWNER
        };
        assert!(removal_from_entries(&e, &c3).is_none(), "UDP");
        assert!(
            removal_from_entries(&e, &c4).unwrap().is_empty(),
            "no entry"
        );
        // A chain of ours that another entry jumps to too.
        let shared = SavedTable::parse_listing(
            "-A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 90 -m comment --comment \"tether net=n id=c1 if=eth0\" -j TETHER-DN-aaa\n\
             -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 91 -m comment --comment \"tether net=n id=c9 if=eth0\" -j TETHER-DN-aaa\n",
            Table::Nat,
        );
        assert!(removal_from_entries(&entries(&shared), &OWNER).is_none());
    }

    #[test]
    fn base_checks_and_creation_put_raw_first() {
        let c = cfg(vec![tcp(8080, 80, HostIp::Any)]);
        let mut b = Batch::new(Family::V4);
        check_base(&mut b, &c, Family::V4).unwrap();
        let text = b.text();
        assert!(
            text.starts_with("*raw\n-C TETHER-LOCALNET-GUARD -d 127.0.0.0/8 ! -i lo "),
            "{text}"
        );
        assert_eq!(text.matches("-C ").count(), 7, "{text}");
        assert!(
            !text.contains("-A ") && !text.contains("-I ") && !text.contains("-N "),
            "{text}"
        );
        // Exactly what ensure_base writes on an empty host, as checks.
        let mut written = Batch::new(Family::V4);
        let empty_nat = SavedTable::parse("", Table::Nat);
        let empty_raw = SavedTable::parse("", Table::Raw);
        ensure_base(&mut written, &c, Family::V4, &empty_nat, Some(&empty_raw)).unwrap();
        let written = written.text();
        for line in text.lines().filter(|l| l.starts_with("-C ")) {
            let spec = &line[3..];
            assert!(
                written.contains(&format!("-A {spec}\n"))
                    || written.contains(&format!("-I {spec}\n")),
                "{line} not in\n{written}"
            );
        }
        let mut created = Batch::new(Family::V4);
        create_base(&mut created, &c, Family::V4).unwrap();
        let created = created.text();
        assert!(
            created.starts_with("*raw\n-N TETHER-LOCALNET-GUARD\n"),
            "{created}"
        );
        assert_eq!(created.matches("-N ").count(), 4, "{created}");
        assert_eq!(
            created.replace("-N ", ":").lines().count(),
            written.lines().count()
        );
        // IPv6: no raw table.
        let mut v6 = Batch::new(Family::V6);
        check_base(&mut v6, &c, Family::V6).unwrap();
        assert!(!v6.text().contains("raw"), "{}", v6.text());
    }

    #[test]
    fn parses_dnat_targets() {
        assert_eq!(dnat_addr("10.0.0.2:80"), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(dnat_addr("[fd00::2]:80"), Some("fd00::2".parse().unwrap()));
        assert_eq!(dnat_addr("10.0.0.2"), Some("10.0.0.2".parse().unwrap()));
    }
}
