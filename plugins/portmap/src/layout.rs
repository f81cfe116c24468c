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

/// Adds the shared chains and jumps that are missing (never flushing a shared chain: other
/// attachments' rules live in `TETHER-HOSTPORT-DNAT`).
pub fn ensure_base(
    b: &mut Batch,
    cfg: &Config,
    family: Family,
    nat: &SavedTable,
    raw: Option<&SavedTable>,
) -> NfResult<()> {
    let has_rule = |t: &SavedTable, chain: &str, pred: &dyn Fn(&SavedRule) -> bool| {
        t.rules.iter().any(|r| r.chain == chain && pred(r))
    };
    if !nat.has_chain(DNAT_CHAIN) {
        b.new_chain(Table::Nat, DNAT_CHAIN)?;
    }
    for entry in ["PREROUTING", "OUTPUT"] {
        if !has_rule(nat, entry, &|r| r.target() == Some(DNAT_CHAIN)) {
            let jump = Rule::new()
                .args(&["-m", "addrtype", "--dst-type", "LOCAL"])?
                .comment(DNAT_JUMP_COMMENT)?
                .jump(DNAT_CHAIN)?;
            b.append(Table::Nat, entry, &jump)?;
        }
    }
    if let (true, MarkChain::Bit(bit)) = (cfg.snat, &cfg.mark) {
        let mark = mark_value(*bit);
        if !nat.has_chain(SETMARK_CHAIN) {
            b.new_chain(Table::Nat, SETMARK_CHAIN)?;
        }
        if !has_rule(nat, SETMARK_CHAIN, &|r| {
            r.value_of("--set-xmark") == Some(mark.as_str())
        }) {
            let set = Rule::new()
                .comment(SETMARK_COMMENT)?
                .jump("MARK")?
                .args(&["--set-xmark", &mark])?;
            b.append(Table::Nat, SETMARK_CHAIN, &set)?;
        }
        if !nat.has_chain(MASQ_CHAIN) {
            b.new_chain(Table::Nat, MASQ_CHAIN)?;
        }
        if !has_rule(nat, MASQ_CHAIN, &|r| {
            r.value_of("--mark") == Some(mark.as_str()) && r.target() == Some("MASQUERADE")
        }) {
            let masq = Rule::new()
                .args(&["-m", "mark", "--mark", &mark])?
                .jump("MASQUERADE")?;
            b.append(Table::Nat, MASQ_CHAIN, &masq)?;
        }
        // At the top: the bridge's per-container masquerade chains in POSTROUTING would
        // otherwise ACCEPT hairpin traffic (destination in the container subnet) first.
        if !has_rule(nat, "POSTROUTING", &|r| r.target() == Some(MASQ_CHAIN)) {
            let jump = Rule::new().comment(MASQ_JUMP_COMMENT)?.jump(MASQ_CHAIN)?;
            b.insert(Table::Nat, "POSTROUTING", &jump)?;
        }
    }
    if let (Family::V4, Some(raw)) = (family, raw) {
        if !raw.has_chain(GUARD_CHAIN) {
            b.new_chain(Table::Raw, GUARD_CHAIN)?;
        }
        if !has_rule(raw, GUARD_CHAIN, &|r| r.target() == Some("DROP")) {
            b.append(Table::Raw, GUARD_CHAIN, &guard_rule()?)?;
        }
        if !has_rule(raw, "PREROUTING", &|r| r.target() == Some(GUARD_CHAIN)) {
            let jump = Rule::new().comment(GUARD_COMMENT)?.jump(GUARD_CHAIN)?;
            b.insert(Table::Raw, "PREROUTING", &jump)?;
        }
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
    fn parses_dnat_targets() {
        assert_eq!(dnat_addr("10.0.0.2:80"), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(dnat_addr("[fd00::2]:80"), Some("fd00::2".parse().unwrap()));
        assert_eq!(dnat_addr("10.0.0.2"), Some("10.0.0.2".parse().unwrap()));
    }
}
