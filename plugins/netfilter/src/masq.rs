//! Bridge `ipMasq`: one shared masquerade chain per (network, subnet) and family, as Docker and
//! netavark do, instead of the reference plugin's chain per container.
//!
//! For network `net` with subnet `S`, in the `nat` table (comment `tether net=<net> masq`):
//!
//! ```text
//! :TETHER-MASQ-<hash> - [0:0]
//! -A TETHER-MASQ-<hash> -d S -m comment --comment "..." -j RETURN
//! -A TETHER-MASQ-<hash> -d 224.0.0.0/4 -m comment --comment "..." -j RETURN   (v6: ff00::/8)
//! -A TETHER-MASQ-<hash> -m comment --comment "..." -j MASQUERADE
//! -A POSTROUTING -s S -m comment --comment "..." -j TETHER-MASQ-<hash>
//! ```
//!
//! The reference's semantics (masquerade what the subnet sends anywhere but to the subnet and to
//! multicast), except that the source match is the subnet rather than each container's address,
//! so an address of the subnet that no container holds is masqueraded too. The rule set grows
//! with the networks, not with the containers: once the chain is there, ADD checks its few rules
//! with `-C` and writes nothing; a DEL that is not the network's last has nothing to remove.
//! The chains are shared by the network's containers and go with the last of them: the
//! bridge plugin decides when (from the kernel, under its network lock) and calls
//! [`crate::masquerade_remove`] (the masq_remove module), which finds them by their comment.

use ipnetwork::IpNetwork;

use crate::names::hashed_chain_name;
use crate::{
    Batch, Error, Family, Netfilter, OnSaveError, Result, Rule, SavedTable, Table, lock,
    per_family, sweep, validate,
};

/// Prefix of the shared masquerade chains. Never change it (nor [`masq_chain_name`] or
/// [`masq_comment`]): chains written by older versions must still be recognised.
pub const MASQ_CHAIN_PREFIX: &str = "TETHER-MASQ-";

const POSTROUTING: &str = "POSTROUTING";

/// [`MASQ_CHAIN_PREFIX`] + 16 hex digits of sha256("network\0subnet"): 28 characters, iptables'
/// limit. `subnet` is taken as a network (`10.88.0.5/16` names the chain of `10.88.0.0/16`).
pub fn masq_chain_name(network: &str, subnet: IpNetwork) -> String {
    hashed_chain_name(
        MASQ_CHAIN_PREFIX,
        &[network, &subnet_of(&subnet).to_string()],
    )
}

/// The comment on every rule of a network's masquerade chains and jumps.
pub fn masq_comment(network: &str) -> String {
    format!("tether net={network} masq")
}

/// Makes sure every subnet of `addrs` (container addresses with their prefix, e.g.
/// `10.88.0.5/16`) has its chain and its one POSTROUTING jump, both families at once.
///
/// Per family, when everything is in place (every ADD but a network's first): one restore of
/// `-C` lines, one per rule and jump, which writes nothing. That verifies our few rules without
/// reading the table: an `iptables-save` costs as much as everyone's rules in it (portmap's
/// per-container chains, kube-proxy's), 6.5 ms against 1.7 ms for the checks with 100 published
/// containers. A chain that is missing is created together with its jump in one restore that
/// starts with `-N`, under [`lock::netfilter_lock`]: of several ADDs racing to create it, the
/// first commits and the others' `-N` fails, so they find it on their next read. The lock is
/// needed because iptables-nft-restore checks `-N` against the table as it read it, and its
/// commit still succeeds when another restore created the chain between that read and the
/// commit: two racing creations then both commit (a second jump, the chain's rules twice; 10 of
/// 200 rounds of 8 racing restores on iptables 1.8.9). With `likely_new` (say the caller just
/// created the network's bridge) that restore is tried first, without checking: a network's
/// first ADD then costs one exec as well. Anything else (a rule or jump missing or
/// changed) is repaired from a fresh save under [`lock::netfilter_lock`], which keeps two
/// repairs from adding one jump each; a repair also drops duplicate and stray jumps to our
/// chains. Those do no harm, so while the checks pass they stay (CHECK does not flag them).
/// The checks test presence only: a chain with a rule added by hand, or its rules reordered,
/// passes them; CHECK, which compares the chain exactly, reports it.
///
/// A family that fails leaves the other's chains in place: they are shared, and harmless
/// without containers.
pub fn masquerade_ensure(
    nf: &Netfilter,
    network: &str,
    addrs: &[IpNetwork],
    likely_new: bool,
) -> Result<()> {
    let wanted = wanted(network, addrs)?;
    let families: Vec<Family> = wanted.iter().map(|(f, _)| *f).collect();
    let results = per_family(&families, |family| {
        let subnets = &wanted.iter().find(|(f, _)| *f == family).expect("listed").1;
        ensure_family(nf, family, network, subnets, likely_new)
    });
    results.into_iter().collect()
}

fn ensure_family(
    nf: &Netfilter,
    family: Family,
    network: &str,
    subnets: &[IpNetwork],
    likely_new: bool,
) -> Result<()> {
    // Done (true) when `saved` shows all in place, or when all that lacks is absent chains and
    // the `-N` batch creating them committed.
    let done_by_creating = |saved: &SavedTable| -> Result<bool> {
        let p = plan(saved, family, network, subnets)?;
        if p.batch.is_empty() {
            return Ok(true);
        }
        if p.repairs {
            return Ok(false);
        }
        // Taken before the restore starts, so that it reads the table after any other
        // creator's commit (see above).
        let _lock = lock::netfilter_lock();
        match p.batch.apply(nf) {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(?family, error = %e, "creating the masquerade chains failed");
                Ok(false)
            }
        }
    };
    if likely_new && done_by_creating(&SavedTable::parse("", Table::Nat))? {
        return Ok(());
    }
    match checks(family, network, subnets)?.apply(nf) {
        Ok(()) => return Ok(()),
        Err(e) => tracing::debug!(?family, error = %e, "masquerading not (all) in place"),
    }
    // No lock to read: a restore is one transaction, so a save sees a chain and its jump either
    // complete or not at all.
    if done_by_creating(&SavedTable::parse(
        &nf.save(family, Table::Nat)?,
        Table::Nat,
    ))? {
        return Ok(());
    }
    let _lock = lock::netfilter_lock();
    sweep(nf, family, &[Table::Nat], OnSaveError::Fail, |saved| {
        let p = plan(saved.table(Table::Nat), family, network, subnets)?;
        if !p.missing.is_empty() {
            tracing::debug!(?family, missing = ?p.missing, "repairing masquerading");
        }
        Ok::<_, Error>((p.batch, ()))
    })
    .map_err(Error::from)
}

/// Verifies that every subnet of `addrs` has its chain, exactly as [`masquerade_ensure`] writes
/// it, and a POSTROUTING jump to it (CNI CHECK).
pub fn masquerade_check(nf: &Netfilter, network: &str, addrs: &[IpNetwork]) -> Result<()> {
    for (family, subnets) in wanted(network, addrs)? {
        let saved = SavedTable::parse(&nf.save(family, Table::Nat)?, Table::Nat);
        let missing = plan(&saved, family, network, &subnets)?.missing;
        if !missing.is_empty() {
            return Err(Error::Check(format!("masquerade: {}", missing.join("; "))));
        }
    }
    Ok(())
}

fn subnet_of(addr: &IpNetwork) -> IpNetwork {
    IpNetwork::new(addr.network(), addr.prefix()).expect("prefix came from a valid network")
}

/// The distinct subnets of `addrs` per family present, after validating the network name.
fn wanted(network: &str, addrs: &[IpNetwork]) -> Result<Vec<(Family, Vec<IpNetwork>)>> {
    validate::name_field("network name", network)?;
    validate::comment(&masq_comment(network))?;
    let mut out: Vec<(Family, Vec<IpNetwork>)> = Vec::new();
    for family in Family::ALL {
        let mut subnets: Vec<IpNetwork> = Vec::new();
        for net in addrs
            .iter()
            .filter(|a| Family::of(a) == family)
            .map(subnet_of)
        {
            if !subnets.contains(&net) {
                subnets.push(net);
            }
        }
        if !subnets.is_empty() {
            out.push((family, subnets));
        }
    }
    Ok(out)
}

/// What a family's nat table lacks, and the batch that fixes it (and tidies up what does no
/// harm: duplicate jumps, other jumps to our chains). Both empty when all is in place.
#[derive(Debug)]
struct Plan {
    batch: Batch,
    missing: Vec<String>,
    /// Whether the batch changes chains or jumps that exist, rather than only creating absent
    /// chains with `-N` (which fails when they exist, as the restore reads the table).
    repairs: bool,
}

/// The three rules of a subnet's chain, in order.
fn chain_rules(family: Family, text: &str, subnet: IpNetwork) -> Result<[Rule; 3]> {
    Ok([
        Rule::new().dst(subnet).comment(text)?.jump("RETURN")?,
        Rule::new()
            .dst(family.multicast())
            .comment(text)?
            .jump("RETURN")?,
        Rule::new().comment(text)?.jump("MASQUERADE")?,
    ])
}

/// POSTROUTING's jump from the subnet to its chain.
fn jump_rule(text: &str, subnet: IpNetwork, chain: &str) -> Result<Rule> {
    Rule::new().src(subnet).comment(text)?.jump(chain)
}

/// `-C` for every rule of the subnets' chains and for their POSTROUTING jumps: the batch
/// commits (changing nothing) exactly when all of them exist.
fn checks(family: Family, network: &str, subnets: &[IpNetwork]) -> Result<Batch> {
    let text = masq_comment(network);
    let mut b = Batch::new(family);
    for &subnet in subnets {
        let chain = masq_chain_name(network, subnet);
        for rule in chain_rules(family, &text, subnet)? {
            b.check(Table::Nat, &chain, &rule)?;
        }
        b.check(Table::Nat, POSTROUTING, &jump_rule(&text, subnet, &chain)?)?;
    }
    Ok(b)
}

fn plan(saved: &SavedTable, family: Family, network: &str, subnets: &[IpNetwork]) -> Result<Plan> {
    let text = masq_comment(network);
    let mut p = Plan {
        batch: Batch::new(family),
        missing: Vec::new(),
        repairs: false,
    };
    for &subnet in subnets {
        let chain = masq_chain_name(network, subnet);
        let want = chain_rules(family, &text, subnet)?;
        let have: Vec<_> = saved.rules.iter().filter(|r| r.chain == chain).collect();
        let intact = have.len() == want.len() && have.iter().zip(&want).all(|(h, w)| h.same_as(w));
        if !intact {
            if saved.has_chain(&chain) {
                p.missing.push(format!(
                    "chain {chain} for {subnet} differs from what ADD writes"
                ));
                p.repairs = true;
                // Flushes it: refilled in the same transaction.
                p.batch.new_chain(Table::Nat, &chain)?;
            } else {
                p.missing.push(format!(
                    "chain {chain} for {subnet} missing from the {family:?} nat table"
                ));
                // Fails the whole batch if someone else created it since `saved` was read.
                p.batch.create_chain(Table::Nat, &chain)?;
            }
            for rule in &want {
                p.batch.append(Table::Nat, &chain, rule)?;
            }
        }
        let jump = jump_rule(&text, subnet, &chain)?;
        let mut kept = false;
        for r in saved
            .rules
            .iter()
            .filter(|r| r.chain == POSTROUTING && r.target() == Some(chain.as_str()))
        {
            if r.same_as(&jump) && !kept {
                kept = true;
            } else {
                p.batch.delete_saved(Table::Nat, r);
                p.repairs = true;
            }
        }
        if !kept {
            // Without the chain there can be no jump to it (iptables refuses both): only a
            // chain that exists has a jump to repair.
            if saved.has_chain(&chain) {
                p.missing
                    .push(format!("no POSTROUTING jump from {subnet} to {chain}"));
                p.repairs = true;
            }
            p.batch.append(Table::Nat, POSTROUTING, &jump)?;
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn chain_names_are_per_network_and_subnet() {
        let a = masq_chain_name("net", net("10.88.0.5/16"));
        assert_eq!(a, masq_chain_name("net", net("10.88.0.0/16")));
        assert_eq!(a.len(), 28);
        validate::chain(&a).unwrap();
        assert_ne!(a, masq_chain_name("net2", net("10.88.0.0/16")));
        assert_ne!(a, masq_chain_name("net", net("10.88.0.0/24")));
        // Pinned: changing the hash would orphan the chains already on a host.
        assert_eq!(
            masq_chain_name("mynet", net("fd00::5/64")),
            format!(
                "TETHER-MASQ-{}",
                &format!("{:x}", Sha256::digest(b"mynet\0fd00::/64".as_slice()))[..16]
            )
        );
    }

    #[test]
    fn subnets_are_grouped_by_family_without_duplicates() {
        let w = wanted(
            "n",
            &[
                net("fd00::2/64"),
                net("10.0.0.2/24"),
                net("10.0.0.3/24"),
                net("10.1.0.2/24"),
            ],
        )
        .unwrap();
        assert_eq!(
            w,
            [
                (Family::V4, vec![net("10.0.0.0/24"), net("10.1.0.0/24")]),
                (Family::V6, vec![net("fd00::/64")]),
            ]
        );
        assert!(wanted("n", &[]).unwrap().is_empty());
        for bad in ["a b", "", "x\"y", &"n".repeat(250)] {
            assert!(
                matches!(wanted(bad, &[]), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    fn nat(rules: &str) -> SavedTable {
        SavedTable::parse(
            &format!("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{rules}COMMIT\n"),
            Table::Nat,
        )
    }

    #[test]
    fn plans_creation_then_nothing() {
        let s = net("10.88.0.0/16");
        let c = masq_chain_name("n", s);
        let p = plan(&nat(""), Family::V4, "n", &[s]).unwrap();
        let rules = format!(
            "-A {c} -d 10.88.0.0/16 -m comment --comment \"tether net=n masq\" -j RETURN\n\
             -A {c} -d 224.0.0.0/4 -m comment --comment \"tether net=n masq\" -j RETURN\n\
             -A {c} -m comment --comment \"tether net=n masq\" -j MASQUERADE\n\
             -A POSTROUTING -s 10.88.0.0/16 -m comment --comment \"tether net=n masq\" -j {c}\n"
        );
        // `-N`: of two such batches run one after the other (under the lock), the second fails.
        assert_eq!(p.batch.text(), format!("*nat\n-N {c}\n{rules}COMMIT\n"));
        assert_eq!(p.missing.len(), 1, "{:?}", p.missing);
        assert!(!p.repairs);
        // What iptables-save prints after that batch: nothing left to do.
        let p = plan(
            &nat(&format!(":{c} - [0:0]\n{rules}")),
            Family::V4,
            "n",
            &[s],
        )
        .unwrap();
        assert!(
            p.batch.is_empty() && p.missing.is_empty() && !p.repairs,
            "{p:?}"
        );
    }

    #[test]
    fn plans_repairs_and_tidies_duplicates() {
        let s = net("fd00::/64");
        let c = masq_chain_name("n", s);
        let jump = format!(
            "-A POSTROUTING -s fd00::/64 -m comment --comment \"tether net=n masq\" -j {c}\n"
        );
        let stray = format!("-A POSTROUTING -s fd01::/64 -j {c}\n");
        // Chain emptied by hand, its jump twice, one stray jump: refill, keep one jump.
        let p = plan(
            &nat(&format!(":{c} - [0:0]\n{jump}{jump}{stray}")),
            Family::V6,
            "n",
            &[s],
        )
        .unwrap();
        assert_eq!(
            p.missing,
            [format!(
                "chain {c} for fd00::/64 differs from what ADD writes"
            )]
        );
        assert!(p.repairs);
        let text = p.batch.text();
        assert!(text.contains(&format!(":{c} - [0:0]\n")), "{text}");
        assert!(text.contains(&format!("-A {c} -d ff00::/8 ")), "{text}");
        assert_eq!(text.matches("-D POSTROUTING").count(), 2, "{text}");
        assert!(
            text.contains(&format!("-D POSTROUTING -s fd01::/64 -j {c}")),
            "{text}"
        );
        assert!(!text.contains("-A POSTROUTING"), "{text}");
        // Only the jump missing: a repair too.
        let intact = plan(&nat(""), Family::V6, "n", &[s]).unwrap().batch.text();
        let chain_only: String = intact
            .lines()
            .filter(|l| l.starts_with(&format!("-A {c} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let p = plan(
            &nat(&format!(":{c} - [0:0]\n{chain_only}")),
            Family::V6,
            "n",
            &[s],
        )
        .unwrap();
        assert!(p.repairs);
        assert_eq!(
            p.missing,
            [format!("no POSTROUTING jump from fd00::/64 to {c}")]
        );
        assert_eq!(p.batch.text(), format!("*nat\n{jump}COMMIT\n"));
    }
}
