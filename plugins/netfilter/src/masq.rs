//! Bridge `ipMasq`: per-container masquerade, laid out like the reference plugin but applied as
//! one batch per family and found again by name and comment alone.
//!
//! For container `cid` on network `net` with interface `ifname`, in the `nat` table:
//!
//! ```text
//! :TETHER-<hash> - [0:0]
//! -A TETHER-<hash> -d <subnet> -m comment --comment "tether net=.. id=.. if=.." -j ACCEPT
//! -A TETHER-<hash> ! -d 224.0.0.0/4 -m comment --comment "..." -j MASQUERADE   (v6: ff00::/8)
//! -A POSTROUTING -s <ip>/32 -m comment --comment "..." -j TETHER-<hash>        (one per address)
//! ```

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha256};

use crate::validate::{self, CHAIN_MAX, IFNAME_MAX};
use crate::{
    Batch, Error, Family, Netfilter, OnSaveError, Result, Rule, SavedRule, SavedTable, Table,
};

/// Prefix of the per-container masquerade chains. Never change it (nor [`chain_name`] or
/// [`comment`]): rules written by older versions must still be found by DEL and GC.
pub const MASQ_CHAIN_PREFIX: &str = "TETHER-";

/// At most this many hex digits of the hash (80 bits): plenty against collisions.
const HASH_HEX_MAX: usize = 20;
const POSTROUTING: &str = "POSTROUTING";

/// `prefix` + the first hex digits of sha256("network\0container_id\0ifname"), at most 28
/// characters (iptables' limit).
///
/// Panics if `prefix` is longer than 16 characters (fewer than 12 hex digits would be left):
/// prefixes are constants in our code.
pub fn chain_name(prefix: &str, network: &str, container_id: &str, ifname: &str) -> String {
    assert!(prefix.len() <= 16, "chain prefix {prefix:?} too long");
    let digest = Sha256::new()
        .chain_update(network)
        .chain_update([0])
        .chain_update(container_id)
        .chain_update([0])
        .chain_update(ifname)
        .finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let n = (CHAIN_MAX - prefix.len()).min(HASH_HEX_MAX);
    format!("{prefix}{}", &hex[..n])
}

/// The comment on every rule of one attachment: `tether net=<network> id=<cid> if=<ifname>`.
pub fn comment(network: &str, container_id: &str, ifname: &str) -> String {
    format!("tether net={network} id={container_id} if={ifname}")
}

/// Inverse of [`comment`]: `(network, container_id, ifname)`.
pub fn parse_comment(text: &str) -> Option<(&str, &str, &str)> {
    let mut words = text.split(' ');
    if words.next()? != "tether" {
        return None;
    }
    let net = words.next()?.strip_prefix("net=")?;
    let cid = words.next()?.strip_prefix("id=")?;
    let ifname = words.next()?.strip_prefix("if=")?;
    words.next().is_none().then_some((net, cid, ifname))
}

/// Validates the three identifying fields and returns (comment, chain name).
fn names(network: &str, container_id: &str, ifname: &str) -> Result<(String, String)> {
    validate::name_field("network name", network)?;
    validate::name_field("container id", container_id)?;
    validate::name_field("interface name", ifname)?;
    if ifname.len() > IFNAME_MAX {
        return Err(Error::Invalid {
            what: "interface name",
            value: ifname.to_string(),
            reason: format!("longer than {IFNAME_MAX} characters"),
        });
    }
    let text = comment(network, container_id, ifname);
    validate::comment(&text)?;
    let chain = chain_name(MASQ_CHAIN_PREFIX, network, container_id, ifname);
    Ok((text, chain))
}

fn of_family(addrs: &[IpNetwork], family: Family) -> Vec<IpNetwork> {
    addrs
        .iter()
        .copied()
        .filter(|a| Family::of(a) == family)
        .collect()
}

fn host(addr: &IpNetwork) -> IpNetwork {
    IpNetwork::new(addr.ip(), Family::of(addr).host_prefix()).expect("host prefix is valid")
}

fn subnet(addr: &IpNetwork) -> IpNetwork {
    IpNetwork::new(addr.network(), addr.prefix()).expect("prefix came from a valid network")
}

fn jump_rule(addr: &IpNetwork, text: &str, chain: &str) -> Result<Rule> {
    Rule::new().src(host(addr)).comment(text)?.jump(chain)
}

/// Installs masquerading for a container's addresses (each with its prefix, e.g. `10.88.0.5/16`):
/// one restore batch per family present. If the second family fails, the first is rolled back.
///
/// Repeating an ADD rewrites the chain but adds a second POSTROUTING jump; DEL removes both.
pub fn masquerade_add(
    nf: &Netfilter,
    network: &str,
    container_id: &str,
    ifname: &str,
    addrs: &[IpNetwork],
) -> Result<()> {
    let (text, chain) = names(network, container_id, ifname)?;
    let mut done: Vec<Vec<IpNetwork>> = Vec::new();
    for family in Family::ALL {
        let addrs = of_family(addrs, family);
        if addrs.is_empty() {
            continue;
        }
        let mut b = Batch::new(family);
        b.new_chain(Table::Nat, &chain)?;
        let mut subnets: Vec<IpNetwork> = Vec::new();
        for net in addrs.iter().map(subnet) {
            if !subnets.contains(&net) {
                subnets.push(net);
            }
        }
        for net in subnets {
            let accept = Rule::new().dst(net).comment(&text)?.jump("ACCEPT")?;
            b.append(Table::Nat, &chain, &accept)?;
        }
        let masq = Rule::new()
            .not_dst(family.multicast())
            .comment(&text)?
            .jump("MASQUERADE")?;
        b.append(Table::Nat, &chain, &masq)?;
        for addr in &addrs {
            b.append(Table::Nat, POSTROUTING, &jump_rule(addr, &text, &chain)?)?;
        }
        if let Err(e) = b.apply(nf) {
            for earlier in &done {
                if let Err(undo) = masquerade_del(nf, network, container_id, ifname, earlier) {
                    tracing::warn!(error = %undo, "rolling back masquerade failed");
                }
            }
            return Err(e);
        }
        done.push(addrs);
    }
    Ok(())
}

/// Removes a container's masquerading. Idempotent: succeeds when nothing is there.
///
/// With `known` addresses (from `prevResult`), each family present in `known` is first removed by
/// the exact batch (`-D POSTROUTING ...`, `-F`, `-X`) without reading anything; families absent
/// from `known` are assumed never set up. If that batch fails (rule gone, stale or partial
/// address list), or `known` is empty (no netns, no `prevResult`), the nat table is saved once and
/// every rule carrying this attachment's comment or jumping to its chain is deleted, then the
/// chain.
pub fn masquerade_del(
    nf: &Netfilter,
    network: &str,
    container_id: &str,
    ifname: &str,
    known: &[IpNetwork],
) -> Result<()> {
    let (text, chain) = names(network, container_id, ifname)?;
    for family in Family::ALL {
        let addrs = of_family(known, family);
        if addrs.is_empty() {
            if known.is_empty() {
                del_by_save(nf, family, &text, &chain)?;
            }
            continue;
        }
        let mut b = Batch::new(family);
        for addr in &addrs {
            b.delete(Table::Nat, POSTROUTING, &jump_rule(addr, &text, &chain)?)?;
        }
        b.flush_chain(Table::Nat, &chain)?;
        b.delete_chain(Table::Nat, &chain)?;
        if let Err(e) = b.apply(nf) {
            tracing::debug!(error = %e, "exact masquerade teardown failed, reading the table");
            del_by_save(nf, family, &text, &chain)?;
        }
    }
    Ok(())
}

fn del_by_save(nf: &Netfilter, family: Family, text: &str, chain: &str) -> Result<()> {
    let chains = [chain.to_string()];
    sweep(nf, family, |saved| {
        let b = cleanup_batch(family, saved, |r| r.comment() == Some(text), &chains);
        (b, ())
    })
}

/// [`crate::sweep`] over the nat table. Every error is returned: the bridge reports an unreadable
/// IPv6 table rather than assume it holds nothing.
fn sweep<T: Default>(
    nf: &Netfilter,
    family: Family,
    mut plan: impl FnMut(&SavedTable) -> (Batch, T),
) -> Result<T> {
    crate::sweep(nf, family, &[Table::Nat], OnSaveError::Fail, |saved| {
        Ok::<_, Error>(plan(saved.table(Table::Nat)))
    })
    .map_err(Error::from)
}

/// Deletes every rule outside `chains` that `is_ours` or that jumps to one of `chains`, then
/// flushes and deletes those of `chains` that exist.
fn cleanup_batch(
    family: Family,
    saved: &SavedTable,
    is_ours: impl Fn(&SavedRule) -> bool,
    chains: &[String],
) -> Batch {
    let mut b = Batch::new(family);
    let listed = |name: &str| chains.iter().any(|c| c == name);
    for rule in &saved.rules {
        if !listed(&rule.chain) && (is_ours(rule) || rule.target().is_some_and(listed)) {
            b.delete_saved_line(Table::Nat, &rule.line);
        }
    }
    for chain in chains.iter().filter(|c| saved.has_chain(c)) {
        // Names come from chain_name(), which only yields valid names.
        b.flush_chain(Table::Nat, chain)
            .and_then(|b| b.delete_chain(Table::Nat, chain))
            .expect("generated chain names are valid");
    }
    b
}

/// Verifies that the chain, its rules and one POSTROUTING jump per address exist (CNI CHECK).
pub fn masquerade_check(
    nf: &Netfilter,
    network: &str,
    container_id: &str,
    ifname: &str,
    addrs: &[IpNetwork],
) -> Result<()> {
    let (_, chain) = names(network, container_id, ifname)?;
    for family in Family::ALL {
        let addrs = of_family(addrs, family);
        if addrs.is_empty() {
            continue;
        }
        let saved = SavedTable::parse(&nf.save(family, Table::Nat)?, Table::Nat);
        let missing = |what: String| Err(Error::Check(format!("masquerade: {what}")));
        if !saved.has_chain(&chain) {
            return missing(format!(
                "chain {chain} missing from the {family:?} nat table"
            ));
        }
        let chain_ref = chain.as_str();
        let in_chain = |target: &'static str| {
            saved
                .rules
                .iter()
                .filter(move |r| r.chain == chain_ref && r.target() == Some(target))
        };
        if in_chain("MASQUERADE").next().is_none() {
            return missing(format!("no MASQUERADE rule in {chain}"));
        }
        for addr in &addrs {
            let net = subnet(addr);
            let accepts = in_chain("ACCEPT")
                .any(|r| r.value_of("-d").and_then(|d| d.parse().ok()) == Some(net));
            if !accepts {
                return missing(format!("no ACCEPT for {net} in {chain}"));
            }
            let jumps = saved.rules.iter().any(|r| {
                r.chain == POSTROUTING
                    && r.target() == Some(chain.as_str())
                    && r.source() == Some(host(addr))
            });
            if !jumps {
                return missing(format!("no POSTROUTING jump from {} to {chain}", addr.ip()));
            }
        }
    }
    Ok(())
}

/// Removes, from one save per family, the chains and rules of every attachment on `network`
/// whose `(container_id, ifname)` is not in `valid`. Returns how many attachments were removed.
pub fn masquerade_gc(nf: &Netfilter, network: &str, valid: &[(String, String)]) -> Result<usize> {
    validate::name_field("network name", network)?;
    let is_valid = |cid: &str, ifname: &str| valid.iter().any(|(c, i)| c == cid && i == ifname);
    let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
    for family in Family::ALL {
        let stale = sweep(nf, family, |saved| {
            let stale: BTreeSet<(String, String)> = saved
                .rules
                .iter()
                .filter_map(|r| parse_comment(r.comment()?))
                .filter(|&(net, cid, ifname)| net == network && !is_valid(cid, ifname))
                .map(|(_, cid, ifname)| (cid.to_string(), ifname.to_string()))
                .collect();
            let chains: Vec<String> = stale
                .iter()
                .map(|(cid, ifname)| chain_name(MASQ_CHAIN_PREFIX, network, cid, ifname))
                .collect();
            let is_stale = |r: &SavedRule| {
                r.comment()
                    .and_then(parse_comment)
                    .is_some_and(|(net, cid, ifname)| {
                        net == network && stale.contains(&(cid.to_string(), ifname.to_string()))
                    })
            };
            let b = cleanup_batch(family, saved, is_stale, &chains);
            (b, stale)
        })?;
        removed.extend(stale);
    }
    Ok(removed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_bounded() {
        let a = chain_name(MASQ_CHAIN_PREFIX, "net", "cid", "eth0");
        assert_eq!(a, chain_name(MASQ_CHAIN_PREFIX, "net", "cid", "eth0"));
        assert_eq!(a.len(), 27);
        assert!(a.starts_with("TETHER-"));
        validate::chain(&a).unwrap();
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(a, chain_name(MASQ_CHAIN_PREFIX, "ne", "tcid", "eth0"));
        assert_ne!(a, chain_name(MASQ_CHAIN_PREFIX, "net", "cid", "eth1"));
        assert_eq!(chain_name("TETHER-DN-", "n", "c", "i").len(), 28);
        // Pinned: changing the hash would orphan every chain already on a host.
        assert_eq!(
            chain_name(MASQ_CHAIN_PREFIX, "mynet", "abc", "eth0"),
            format!(
                "TETHER-{}",
                &format!("{:x}", Sha256::digest(b"mynet\0abc\0eth0".as_slice()))[..20]
            )
        );
    }

    #[test]
    fn comment_round_trips() {
        let c = comment("my-net.1", "0123abc", "eth0");
        assert_eq!(c, "tether net=my-net.1 id=0123abc if=eth0");
        assert_eq!(parse_comment(&c), Some(("my-net.1", "0123abc", "eth0")));
        assert_eq!(parse_comment("tether net=a id=b"), None);
        assert_eq!(parse_comment("tether net=a id=b if=c extra"), None);
        assert_eq!(parse_comment("name: \"a\" id: \"b\""), None);
    }

    #[test]
    fn identifying_fields_are_validated() {
        assert!(names("net", "cid", "eth0").is_ok());
        for (n, c, i) in [
            ("a b", "cid", "eth0"),
            ("net", "c\"d", "eth0"),
            ("net", "cid", "eth0 x"),
            ("net", "cid", "averyveryverylongifname"),
            ("net", "", "eth0"),
            ("net", "cid", "eth\n0"),
            (&*"n".repeat(240), "cid", "eth0"),
        ] {
            assert!(
                matches!(names(n, c, i), Err(Error::Invalid { .. })),
                "{n:?} {c:?} {i:?} accepted"
            );
        }
    }
}
