//! The shared part of the port publishing layout (see [`super`]): `TETHER-HOSTPORT-DNAT` and
//! the jumps to it, the masquerade mark chains, the `route_localnet` guard. Written once per
//! host and family, never flushed (every attachment's entry rules live in
//! `TETHER-HOSTPORT-DNAT`), never removed.

use super::{
    DNAT_CHAIN, DNAT_JUMP_COMMENT, GUARD_CHAIN, GUARD_COMMENT, MASQ_CHAIN, MASQ_JUMP_COMMENT,
    SETMARK_CHAIN, SETMARK_COMMENT, mark_value,
};
use crate::policy::{MarkChain, PortPolicy};
use crate::{Batch, Family, Result as NfResult, Rule, SavedRule, SavedTable, Table};

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
fn base_chains(cfg: &PortPolicy, family: Family) -> Vec<(Table, &'static str)> {
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
fn base_rules(cfg: &PortPolicy, family: Family) -> NfResult<Vec<BaseRule>> {
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
    cfg: &PortPolicy,
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
pub fn create_base(b: &mut Batch, cfg: &PortPolicy, family: Family) -> NfResult<()> {
    let raw = SavedTable::parse("", Table::Raw);
    let nat = SavedTable::parse("", Table::Nat);
    write_base(b, cfg, family, &nat, Some(&raw), true)
}

fn write_base(
    b: &mut Batch,
    cfg: &PortPolicy,
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
pub fn check_base(b: &mut Batch, cfg: &PortPolicy, family: Family) -> NfResult<()> {
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
