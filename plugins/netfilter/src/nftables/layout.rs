//! The nftables layout: one table of our own, `inet tether`, whose rules are a constant handful
//! per network, never per container or port. ADD and DEL add and delete set and map elements.
//!
//! ```text
//! table inet tether                                   "ours alone: Tether's firewall"
//! │
//! ├─ per network N (bridge ipMasq; masq.rs) ─────────────────────────────────────────────────
//! │  set masq4-N  { ipv4_addr; interval }             N's subnets        comment "tether net=N"
//! │  set masq6-N  { ipv6_addr; interval }
//! │  chain masq-N { nat postrouting srcnat
//! │     ip  saddr @masq4-N ip  daddr != @masq4-N ip  daddr != 224.0.0.0/4 masquerade
//! │     ip6 saddr @masq6-N ip6 daddr != @masq6-N ip6 daddr != ff00::/8   masquerade }
//! │
//! ├─ port publishing, shared (portmap; publish.rs) ────────────────────────────────────────────
//! │  map ports4       { inet_proto . inet_service : ipv4_addr . inet_service }   no hostIP
//! │  map hostports4   { ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//! │  set snat4        { ipv4_addr . ipv4_addr; interval }   container . sources to masquerade
//! │  (ports6, hostports6, snat6 likewise)                    every element: "tether net= id= if="
//! │  chain dnat-prerouting { nat prerouting dstnat;  fib daddr type local jump publish }
//! │  chain dnat-output     { nat output -100;        fib daddr type local jump publish }
//! │  chain publish {
//! │     meta nfproto ipv4 dnat ip  to ip  daddr . meta l4proto . th dport map @hostports4
//! │     meta nfproto ipv4 dnat ip  to meta l4proto . th dport map @ports4
//! │     (the same for ip6) }
//! │  chain snat { nat postrouting srcnat
//! │     ct status dnat ip  daddr . ip  saddr @snat4 masquerade      hairpin, localhost, masqAll
//! │     ct status dnat ip6 daddr . ip6 saddr @snat6 masquerade }
//! │  chain localnet-guard { filter prerouting raw;  iifname != "lo" ip daddr 127.0.0.0/8 drop }
//! │
//! ├─ per attachment (id, ifname) = H: what it published, read back by DEL, CHECK and GC ─────
//! │  map pub4-H { ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//! │       hostIP (0.0.0.0 for none) . proto . host port : container . port
//! │       subnet . 0 . prefix : container . 0          (a snat4 range: proto 0 is no port)
//! │  map pub6-H   likewise                                          comment "tether net= id= if="
//! │
//! └─ filtering (firewall plugin; filter.rs) ────────────────────────────────────────────────
//!    set allow4 { ipv4_addr }  allow6 { ipv6_addr }       the attachments' addresses
//!    set isolate { ifname }  no-icc { ifname }  bridge-pairs { ifname . ifname }
//!    set fw4-H { ipv4_addr }  fw6-H { ipv6_addr }          per attachment: its addresses
//!    chain forward { filter forward filter
//!       iifname @no-icc oifname @no-icc drop                                  isolated
//!       iifname @isolate oifname @isolate iifname . oifname != @bridge-pairs drop   same-bridge
//!       ip saddr @allow4 accept;  ip daddr @allow4 ct state established,related accept
//!       (the same for ip6) }
//! ```
//!
//! Every call is one batch that first re-declares the shared objects it relies on (tables,
//! chains and sets are created when missing; a chain whose rules, read first in one dump of the
//! table's few rules, are not exactly ours is flushed and written again), so a rule deleted or
//! added by hand in one of our chains is repaired by the next ADD, and nothing else in the batch
//! can be half-applied. Elements carry the owner's
//! comment; per-attachment record maps are found by name (a hash of container id and ifname), so
//! DEL needs neither the netns, nor `prevResult`, nor a listing of the table.

use tether_nft::expr::{self, CtKey, REG_1, REG32_00, REG32_01, REG32_02, REG32_04, REG32_05};
use tether_nft::{
    BaseChain, Batch, Chain, ChainType, CmpOp, Concat, DataType, Expr, Family as NftFamily, Hook,
    MetaKey, Policy, Rule, Set, SetData, Table, Verdict,
};

use crate::Family;
use crate::policy::AttachmentId;

pub const TABLE: &str = "tether";
const TABLE_COMMENT: &str = "Tether's firewall (nftables backend): ours alone";
/// nft's comment limit; longer owner comments are cut (see [`owner_comment`]).
const COMMENT_MAX: usize = 128;

pub fn table() -> Table {
    Table::new(NftFamily::Inet, TABLE)
        .and_then(|t| t.comment(TABLE_COMMENT))
        .expect("static table")
}

pub(crate) fn v6(f: Family) -> bool {
    f == Family::V6
}

fn suffix(f: Family) -> &'static str {
    if v6(f) { "6" } else { "4" }
}

pub(crate) fn addr_type(f: Family) -> DataType {
    if v6(f) {
        DataType::Ipv6Addr
    } else {
        DataType::Ipv4Addr
    }
}

fn nfproto(f: Family) -> Vec<Expr> {
    if v6(f) {
        expr::nfproto_ipv6()
    } else {
        expr::nfproto_ipv4()
    }
}

fn nft_family(f: Family) -> NftFamily {
    if v6(f) { NftFamily::Ip6 } else { NftFamily::Ip }
}

/// The owner comment of per-attachment objects, cut to nft's limit (a cut comment names no
/// network GC could match, so GC leaves it: DEL still finds it by name).
pub fn owner_comment(who: &AttachmentId<'_>) -> String {
    let mut c = who.comment();
    while c.len() > COMMENT_MAX {
        c.pop();
    }
    c
}

fn cut(mut c: String) -> String {
    while c.len() > COMMENT_MAX {
        c.pop();
    }
    c
}

pub(crate) fn set(name: &str, key: &[DataType], data: SetData, interval: bool, c: &str) -> Set {
    Set::new(name, key, data, interval)
        .and_then(|s| s.comment(&cut(c.to_string())))
        .expect("our set names and comments are valid")
}

fn base(name: &str, chain_type: ChainType, hook: Hook, priority: i32, c: &str) -> Chain {
    let b = BaseChain {
        chain_type,
        hook,
        priority,
        policy: Policy::Accept,
    };
    Chain::base(name, b)
        .and_then(|ch| ch.comment(&cut(c.to_string())))
        .expect("our chain names are valid")
}

fn rule(chain: &str, e: Vec<Expr>, c: &str) -> Rule {
    Rule::new(chain, e)
        .and_then(|r| r.comment(c))
        .expect("our rules are valid")
}

/// The rules of our table as read before a batch: `(chain, comment)` in order.
pub type Current = [(String, Option<String>)];

/// Whether `chain` holds exactly rules with these comments.
fn holds(current: &Current, chain: &str, rules: &[CommentedRule]) -> bool {
    let have: Vec<&Option<String>> = current
        .iter()
        .filter(|(c, _)| c == chain)
        .map(|(_, comment)| comment)
        .collect();
    have.len() == rules.len()
        && have
            .iter()
            .zip(rules)
            .all(|(h, (_, c))| h.as_deref() == Some(c.as_str()))
}

/// Flushes `chain` and writes `rules` into it, unless it already holds exactly them.
fn write_rules(
    b: &mut Batch,
    t: &Table,
    current: &Current,
    chain: &str,
    rules: Vec<CommentedRule>,
) {
    if holds(current, chain, &rules) {
        return;
    }
    b.flush_chain(t, chain);
    for (e, comment) in rules {
        b.add_rule(t, &rule(chain, e, &comment));
    }
}

/// Whether every chain of a group already holds its rules: then the table, the chains and the
/// sets those rules use exist (a rule cannot name a missing set), and declaring them again is
/// left out. Re-declaring an existing chain is an update, which the kernel releases after an
/// RCU grace period that the process then waits for when it closes its socket (about 16 ms).
fn ready(current: &Current, chains: &[(&str, Vec<CommentedRule>)]) -> bool {
    chains.iter().all(|(c, r)| holds(current, c, r))
}

fn addr_port() -> impl Fn(Family) -> SetData {
    |f| SetData::Value(Concat(vec![addr_type(f), DataType::InetService]))
}

// ---- masquerade, per network ----------------------------------------------------------------

pub fn masq_set(network: &str, f: Family) -> Set {
    let name = format!("masq{}-{network}", suffix(f));
    set(
        &name,
        &[addr_type(f)],
        SetData::None,
        true,
        &format!("tether net={network}"),
    )
}

pub fn masq_chain(network: &str) -> String {
    format!("masq-{network}")
}

/// The masquerade rule's comment, one per family: also what CHECK expects to read back.
pub fn masq_rule_comment(network: &str, f: Family) -> String {
    cut(format!("masquerade network {network}, IPv{}", suffix(f)))
}

/// The network's sets and chain with its two rules (flushed first: repeatable).
pub fn declare_masq(b: &mut Batch, t: &Table, current: &Current, network: &str) {
    let chain = masq_chain(network);
    let rules = masq_rules(network);
    if holds(current, &chain, &rules) {
        return;
    }
    b.add_table(t);
    for f in Family::ALL {
        b.add_set(t, &masq_set(network, f));
    }
    let c = format!("tether net={network}: masquerade its subnets");
    b.add_chain(t, &base(&chain, ChainType::Nat, Hook::Postrouting, 100, &c));
    write_rules(b, t, current, &chain, rules);
}

fn masq_rules(network: &str) -> Vec<CommentedRule> {
    let mut rules = Vec::new();
    for f in Family::ALL {
        let s = masq_set(network, f).name;
        let mut e = nfproto(f);
        e.push(expr::addr_to(v6(f), true, REG_1));
        e.push(expr::in_set(&s, false));
        e.push(expr::addr_to(v6(f), false, REG_1));
        e.push(expr::in_set(&s, true));
        e.extend(if v6(f) {
            expr::not_multicast_v6()
        } else {
            expr::not_multicast_v4()
        });
        e.push(Expr::Masquerade);
        rules.push((e, masq_rule_comment(network, f)));
    }
    rules
}

// ---- port publishing, shared ------------------------------------------------------------------

pub const PUBLISH_CHAIN: &str = "publish";
pub const SNAT_CHAIN: &str = "snat";
pub const DNAT_PRE_CHAIN: &str = "dnat-prerouting";
pub const DNAT_OUT_CHAIN: &str = "dnat-output";
pub const GUARD_CHAIN: &str = "localnet-guard";

pub fn ports_map(f: Family) -> Set {
    let key = [DataType::InetProto, DataType::InetService];
    let c = "published ports on every host address: proto . port : container . port";
    set(
        &format!("ports{}", suffix(f)),
        &key,
        addr_port()(f),
        false,
        c,
    )
}

pub fn hostports_map(f: Family) -> Set {
    let key = [addr_type(f), DataType::InetProto, DataType::InetService];
    let c = "published ports on one host address: hostIP . proto . port : container . port";
    set(
        &format!("hostports{}", suffix(f)),
        &key,
        addr_port()(f),
        false,
        c,
    )
}

pub fn snat_set(f: Family) -> Set {
    let key = [addr_type(f), addr_type(f)];
    let c = "DNAT-ed traffic to masquerade: container . sources (hairpin, localhost, masqAll)";
    set(&format!("snat{}", suffix(f)), &key, SetData::None, true, c)
}

/// One attachment's record of what it published (see the diagram).
pub fn record_map(who: &AttachmentId<'_>, f: Family) -> Set {
    let name = record_name("pub", who, f);
    let key = [addr_type(f), DataType::InetProto, DataType::InetService];
    set(&name, &key, addr_port()(f), false, &owner_comment(who))
}

pub fn record_name(prefix: &str, who: &AttachmentId<'_>, f: Family) -> String {
    crate::names::hashed_chain_name(
        &format!("{prefix}{}-", suffix(f)),
        &[who.container_id, who.ifname],
    )
}

/// The comments of the publish chains' rules, in order: what CHECK reads back.
/// A rule's expressions with its comment.
pub type CommentedRule = (Vec<Expr>, String);

pub fn publish_rules() -> Vec<(&'static str, Vec<CommentedRule>)> {
    let jump = |c: &str| {
        let mut e = expr::fib_daddr_local();
        e.push(Expr::Immediate(Verdict::Jump(PUBLISH_CHAIN.into())));
        vec![(e, format!("tether: published ports, {c}"))]
    };
    let mut publish = Vec::new();
    let mut snat = Vec::new();
    for f in Family::ALL {
        // ip daddr . meta l4proto . th dport: the address fills register 1 (v4: its first 4
        // bytes), the protocol and port follow in the next 4-byte slots.
        let (pr, pp) = if v6(f) {
            (REG32_04, REG32_05)
        } else {
            (REG32_01, REG32_02)
        };
        let mut e = nfproto(f);
        e.push(expr::addr_to(
            v6(f),
            false,
            if v6(f) { REG_1 } else { REG32_00 },
        ));
        e.push(expr::meta_to(MetaKey::L4Proto, pr));
        e.push(expr::th_dport(pp));
        let port_reg = if v6(f) { REG32_04 } else { REG32_01 };
        e.extend(expr::dnat_map_lookup(
            &hostports_map(f).name,
            nft_family(f),
            port_reg,
        ));
        publish.push((
            e,
            format!("tether: ports on one host address, IPv{}", suffix(f)),
        ));
        let mut e = nfproto(f);
        e.push(expr::meta_to(MetaKey::L4Proto, REG32_00));
        e.push(expr::th_dport(REG32_01));
        e.extend(expr::dnat_map_lookup(
            &ports_map(f).name,
            nft_family(f),
            port_reg,
        ));
        publish.push((
            e,
            format!("tether: ports on every host address, IPv{}", suffix(f)),
        ));

        let mut e = nfproto(f);
        e.extend(expr::ct_any(CtKey::Status, expr::CT_STATUS_DNAT));
        e.push(expr::addr_to(v6(f), false, REG_1));
        e.push(expr::addr_to(
            v6(f),
            true,
            if v6(f) { REG32_04 } else { REG32_01 },
        ));
        e.push(expr::in_set(&snat_set(f).name, false));
        e.push(Expr::Masquerade);
        snat.push((
            e,
            format!("tether: hairpin and localhost, IPv{}", suffix(f)),
        ));
    }
    let mut guard = expr::ifname_op(MetaKey::IifName, "lo", CmpOp::Neq);
    guard.extend(expr::nfproto_ipv4());
    guard.extend(expr::ip_prefix(
        false,
        "127.0.0.0/8".parse().expect("static"),
        CmpOp::Eq,
    ));
    guard.push(Expr::Immediate(Verdict::Drop));
    vec![
        (DNAT_PRE_CHAIN, jump("from outside")),
        (DNAT_OUT_CHAIN, jump("from this host")),
        (PUBLISH_CHAIN, publish),
        (SNAT_CHAIN, snat),
        (
            GUARD_CHAIN,
            vec![(
                guard,
                "tether route_localnet guard: 127.0.0.0/8 only from lo".into(),
            )],
        ),
    ]
}

/// The shared publishing objects, their chains flushed and rewritten.
pub fn declare_publish(b: &mut Batch, t: &Table, current: &Current) {
    let chains = publish_rules();
    if ready(current, &chains) {
        return;
    }
    b.add_table(t);
    for f in Family::ALL {
        b.add_set(t, &ports_map(f))
            .add_set(t, &hostports_map(f))
            .add_set(t, &snat_set(f));
    }
    let c = "tether: port publishing";
    b.add_chain(
        t,
        &base(DNAT_PRE_CHAIN, ChainType::Nat, Hook::Prerouting, -100, c),
    )
    .add_chain(
        t,
        &base(DNAT_OUT_CHAIN, ChainType::Nat, Hook::Output, -100, c),
    )
    .add_chain(t, &Chain::regular(PUBLISH_CHAIN).expect("static"))
    .add_chain(
        t,
        &base(SNAT_CHAIN, ChainType::Nat, Hook::Postrouting, 100, c),
    )
    .add_chain(
        t,
        &base(GUARD_CHAIN, ChainType::Filter, Hook::Prerouting, -300, c),
    );
    for (chain, rules) in chains {
        write_rules(b, t, current, chain, rules);
    }
}

// ---- filtering --------------------------------------------------------------------------------

pub const FORWARD_CHAIN: &str = "forward";

pub fn allow_set(f: Family) -> Set {
    let c = "the attachments' addresses (firewall plugin)";
    set(
        &format!("allow{}", suffix(f)),
        &[addr_type(f)],
        SetData::None,
        false,
        c,
    )
}

pub fn isolate_set() -> Set {
    let c = "bridges with ingressPolicy same-bridge or isolated";
    set("isolate", &[DataType::IfName], SetData::None, false, c)
}

pub fn no_icc_set() -> Set {
    let c = "bridges with ingressPolicy isolated";
    set("no-icc", &[DataType::IfName], SetData::None, false, c)
}

pub fn pairs_set() -> Set {
    let c = "bridge . itself, for each isolated bridge";
    let key = [DataType::IfName, DataType::IfName];
    set("bridge-pairs", &key, SetData::None, false, c)
}

pub fn filter_record(who: &AttachmentId<'_>, f: Family) -> Set {
    let name = record_name("fw", who, f);
    set(
        &name,
        &[addr_type(f)],
        SetData::None,
        false,
        &owner_comment(who),
    )
}

pub fn filter_rules() -> Vec<CommentedRule> {
    let mut rules = Vec::new();
    let mut e = vec![
        expr::meta(MetaKey::IifName),
        expr::in_set(&no_icc_set().name, false),
    ];
    e.push(expr::meta(MetaKey::OifName));
    e.push(expr::in_set(&no_icc_set().name, false));
    e.push(Expr::Immediate(Verdict::Drop));
    rules.push((e, "tether: ingressPolicy isolated".to_string()));
    let iso = isolate_set().name;
    let mut e = vec![expr::meta(MetaKey::IifName), expr::in_set(&iso, false)];
    e.push(expr::meta(MetaKey::OifName));
    e.push(expr::in_set(&iso, false));
    e.push(expr::meta_to(MetaKey::IifName, REG_1));
    e.push(expr::meta_to(MetaKey::OifName, REG32_04));
    e.push(expr::in_set(&pairs_set().name, true));
    e.push(Expr::Immediate(Verdict::Drop));
    rules.push((e, "tether: ingressPolicy same-bridge".to_string()));
    for f in Family::ALL {
        let s = allow_set(f).name;
        let mut e = nfproto(f);
        e.push(expr::addr_to(v6(f), true, REG_1));
        e.push(expr::in_set(&s, false));
        e.push(Expr::Immediate(Verdict::Accept));
        rules.push((e, format!("tether: from containers, IPv{}", suffix(f))));
        let mut e = nfproto(f);
        e.push(expr::addr_to(v6(f), false, REG_1));
        e.push(expr::in_set(&s, false));
        e.extend(expr::ct_any(
            CtKey::State,
            expr::CT_STATE_ESTABLISHED_RELATED,
        ));
        e.push(Expr::Immediate(Verdict::Accept));
        rules.push((
            e,
            format!("tether: replies to containers, IPv{}", suffix(f)),
        ));
    }
    rules
}

pub fn declare_filter(b: &mut Batch, t: &Table, current: &Current) {
    if holds(current, FORWARD_CHAIN, &filter_rules()) {
        return;
    }
    b.add_table(t);
    for f in Family::ALL {
        b.add_set(t, &allow_set(f));
    }
    b.add_set(t, &isolate_set())
        .add_set(t, &no_icc_set())
        .add_set(t, &pairs_set());
    let c = "tether: firewall plugin";
    b.add_chain(
        t,
        &base(FORWARD_CHAIN, ChainType::Filter, Hook::Forward, 0, c),
    );
    write_rules(b, t, current, FORWARD_CHAIN, filter_rules());
}
