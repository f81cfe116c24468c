//! The firewall plugin's `filter` table layout, as pure functions from a saved table to a batch.
//!
//! The reference's layout and chain names, because admins write rules against them:
//!
//! ```text
//! FORWARD (top):          -j CNI-ISOLATION-STAGE-1            (only with an ingress policy)
//! FORWARD (top):          -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
//! CNI-FORWARD (top):      -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//! CNI-FORWARD:            -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "tether net=N id=C if=I" -j ACCEPT
//! CNI-FORWARD:            -s <ip>/32 -m comment --comment "tether net=N id=C if=I" -j ACCEPT
//! CNI-ISOLATION-STAGE-1:  -i <br> ! -o <br> -j CNI-ISOLATION-STAGE-2   (same-bridge, isolated)
//!                         -i <br> -o <br> -j DROP                      (isolated)
//!                         -j RETURN
//! CNI-ISOLATION-STAGE-2:  -o <br> -j DROP
//!                         -j RETURN
//! ```
//!
//! `CNI-ADMIN` is the admin's: created empty if missing, never written to. The chains, the jumps
//! and the per-bridge isolation rules are shared and never removed (as in the reference: other
//! containers may be on the bridge). The per-address rules carry the attachment's comment, so DEL
//! and GC find them without `prevResult` (the reference removes only what `prevResult` lists).

use std::net::IpAddr;

use crate::policy::{FilterPolicy as Config, IngressPolicy};
use crate::{Batch, Family, Result as NfResult, Rule, SavedRule, SavedTable, Table, parse_comment};
use ipnetwork::IpNetwork;

pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

/// The reference's comment on its isolation rules, `CNI firewall plugin rules (ingressPolicy:
/// same-bridge)`; ours for `isolated` follows the same pattern.
fn policy_comment(p: IngressPolicy) -> String {
    format!("CNI firewall plugin rules (ingressPolicy: {})", p.as_str())
}

fn host(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, Family::from(ip).host_prefix()).expect("host prefix is valid")
}

/// The two per-address rules: replies in, anything out.
fn ip_rules(ip: IpAddr, comment: &str) -> NfResult<[Rule; 2]> {
    Ok([
        Rule::new()
            .dst(host(ip))
            .args(&["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"])?
            .attachment_comment(comment)?
            .jump("ACCEPT")?,
        Rule::new()
            .src(host(ip))
            .attachment_comment(comment)?
            .jump("ACCEPT")?,
    ])
}

fn rules_of<'a>(t: &'a SavedTable, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
    t.rules.iter().filter(move |r| r.chain == chain)
}

fn position(t: &SavedTable, chain: &str, target: &str) -> Option<usize> {
    rules_of(t, chain).position(|r| r.target() == Some(target))
}

/// Is `flag <value>` in the rule, not negated?
fn has(r: &SavedRule, flag: &str, value: &str) -> bool {
    r.args
        .windows(2)
        .enumerate()
        .any(|(i, w)| w[0] == flag && w[1] == value && (i == 0 || r.args[i - 1] != "!"))
}

/// Is `! flag <value>` in the rule?
fn has_not(r: &SavedRule, flag: &str, value: &str) -> bool {
    r.args
        .windows(3)
        .any(|w| w[0] == "!" && w[1] == flag && w[2] == value)
}

/// Rules of one attachment in `CNI-FORWARD`, whatever the network was called.
pub fn attachment_rules<'a>(
    t: &'a SavedTable,
    is_stale: impl Fn(&str, &str, &str) -> bool + 'a,
) -> impl Iterator<Item = &'a SavedRule> + 'a {
    rules_of(t, FORWARD_CHAIN).filter(move |r| {
        r.comment()
            .and_then(parse_comment)
            .is_some_and(|(n, c, i)| is_stale(n, c, i))
    })
}

/// The reference plugin's uncommented rules for `ips` (so a DEL by us cleans up after an ADD by
/// the reference, e.g. across an upgrade).
pub fn reference_rules<'a>(
    t: &'a SavedTable,
    ips: &'a [IpAddr],
) -> impl Iterator<Item = &'a SavedRule> + 'a {
    rules_of(t, FORWARD_CHAIN).filter(move |r| {
        r.comment().is_none()
            && ips.iter().any(|ip| {
                let h = host(*ip).to_string();
                let a: Vec<&str> = r.args.iter().map(String::as_str).collect();
                a == [
                    "-d",
                    h.as_str(),
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ] || a == ["-s", h.as_str(), "-j", "ACCEPT"]
            })
    })
}

/// ADD for one family: shared chains and jumps that are missing, the isolation rules of
/// `bridge`, and the attachment's per-address rules (replacing any it had).
pub fn plan_add(
    b: &mut Batch,
    cfg: &Config,
    t: &SavedTable,
    comment: &str,
    is_mine: impl Fn(&str, &str, &str) -> bool,
    ips: &[IpAddr],
    bridge: Option<&str>,
) -> NfResult<()> {
    for chain in [FORWARD_CHAIN, cfg.admin_chain.as_str()] {
        if !t.has_chain(chain) {
            b.new_chain(Table::Filter, chain)?;
        }
    }
    let fwd_jump = position(t, "FORWARD", FORWARD_CHAIN);
    if fwd_jump.is_none() {
        let jump = Rule::new().comment(FORWARD_COMMENT)?.jump(FORWARD_CHAIN)?;
        b.insert(Table::Filter, "FORWARD", &jump)?;
    }
    if position(t, FORWARD_CHAIN, &cfg.admin_chain).is_none() {
        let jump = Rule::new().comment(ADMIN_COMMENT)?.jump(&cfg.admin_chain)?;
        b.insert(Table::Filter, FORWARD_CHAIN, &jump)?;
    }
    for r in attachment_rules(t, is_mine) {
        b.delete_saved(Table::Filter, r);
    }
    for ip in ips {
        for rule in ip_rules(*ip, comment)? {
            b.append(Table::Filter, FORWARD_CHAIN, &rule)?;
        }
    }
    if let (Some(br), IngressPolicy::SameBridge | IngressPolicy::Isolated) = (bridge, cfg.ingress) {
        isolation(b, t, cfg.ingress, br, fwd_jump)?;
    }
    Ok(())
}

fn isolation(
    b: &mut Batch,
    t: &SavedTable,
    policy: IngressPolicy,
    br: &str,
    fwd_jump: Option<usize>,
) -> NfResult<()> {
    let shared = policy_comment(IngressPolicy::SameBridge);
    let mine = policy_comment(policy);
    for chain in [STAGE1, STAGE2] {
        if !t.has_chain(chain) {
            b.new_chain(Table::Filter, chain)?;
        }
    }
    // Stage 1 must be looked at before CNI-FORWARD, which accepts everything a container sends.
    let jump = Rule::new().comment(&shared)?.jump(STAGE1)?;
    match position(t, "FORWARD", STAGE1) {
        None => {
            b.insert(Table::Filter, "FORWARD", &jump)?;
        }
        Some(pos) if fwd_jump.is_none_or(|f| f < pos) => {
            // CNI-FORWARD's jump is (or is about to be) ahead of it: move it back to the top.
            let old = rules_of(t, "FORWARD")
                .nth(pos)
                .expect("position came from this chain");
            b.delete_saved(Table::Filter, old);
            b.insert(Table::Filter, "FORWARD", &jump)?;
        }
        Some(_) => {}
    }
    let stage1: Vec<&SavedRule> = rules_of(t, STAGE1).collect();
    if policy == IngressPolicy::Isolated
        && !stage1
            .iter()
            .any(|r| has(r, "-i", br) && has(r, "-o", br) && r.target() == Some("DROP"))
    {
        let drop = Rule::new()
            .in_iface(br)?
            .out_iface(br)?
            .comment(&mine)?
            .jump("DROP")?;
        b.insert(Table::Filter, STAGE1, &drop)?;
    }
    if !stage1
        .iter()
        .any(|r| has(r, "-i", br) && has_not(r, "-o", br) && r.target() == Some(STAGE2))
    {
        let to_stage2 = Rule::new()
            .in_iface(br)?
            .arg("!")?
            .out_iface(br)?
            .comment(&mine)?
            .jump(STAGE2)?;
        b.insert(Table::Filter, STAGE1, &to_stage2)?;
    }
    if !stage1.iter().any(|r| r.target() == Some("RETURN")) {
        b.append(
            Table::Filter,
            STAGE1,
            &Rule::new().comment(&shared)?.jump("RETURN")?,
        )?;
    }
    let stage2: Vec<&SavedRule> = rules_of(t, STAGE2).collect();
    if !stage2
        .iter()
        .any(|r| has(r, "-o", br) && r.target() == Some("DROP"))
    {
        let drop = Rule::new().out_iface(br)?.comment(&mine)?.jump("DROP")?;
        b.insert(Table::Filter, STAGE2, &drop)?;
    }
    if !stage2.iter().any(|r| r.target() == Some("RETURN")) {
        b.append(
            Table::Filter,
            STAGE2,
            &Rule::new().comment(&shared)?.jump("RETURN")?,
        )?;
    }
    Ok(())
}

/// CHECK for one family.
pub fn check(
    cfg: &Config,
    t: &SavedTable,
    comment: &str,
    ips: &[IpAddr],
    bridge: Option<&str>,
) -> Result<(), String> {
    let fwd = position(t, "FORWARD", FORWARD_CHAIN)
        .ok_or_else(|| format!("FORWARD has no jump to {FORWARD_CHAIN}"))?;
    if position(t, FORWARD_CHAIN, &cfg.admin_chain).is_none() {
        return Err(format!(
            "{FORWARD_CHAIN} has no jump to {}",
            cfg.admin_chain
        ));
    }
    for ip in ips {
        let h = host(*ip).to_string();
        let mine: Vec<&SavedRule> = rules_of(t, FORWARD_CHAIN)
            .filter(|r| r.comment() == Some(comment) && r.target() == Some("ACCEPT"))
            .collect();
        if !mine.iter().any(|r| has(r, "-d", &h)) || !mine.iter().any(|r| has(r, "-s", &h)) {
            return Err(format!("{FORWARD_CHAIN} lacks the ACCEPT rules for {ip}"));
        }
    }
    if let (Some(br), IngressPolicy::SameBridge | IngressPolicy::Isolated) = (bridge, cfg.ingress) {
        match position(t, "FORWARD", STAGE1) {
            Some(p) if p < fwd => {}
            _ => {
                return Err(format!(
                    "FORWARD has no jump to {STAGE1} ahead of {FORWARD_CHAIN}"
                ));
            }
        }
        let isolates = rules_of(t, STAGE1)
            .any(|r| has(r, "-i", br) && has_not(r, "-o", br) && r.target() == Some(STAGE2))
            && rules_of(t, STAGE2).any(|r| has(r, "-o", br) && r.target() == Some("DROP"));
        if !isolates {
            return Err(format!("no isolation rules for bridge {br}"));
        }
        if cfg.ingress == IngressPolicy::Isolated
            && !rules_of(t, STAGE1)
                .any(|r| has(r, "-i", br) && has(r, "-o", br) && r.target() == Some("DROP"))
        {
            return Err(format!("no rule dropping traffic within bridge {br}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ingress: IngressPolicy) -> Config {
        Config {
            admin_chain: "CNI-ADMIN".into(),
            ingress,
            bridge: None,
        }
    }

    const C: &str = "tether net=n id=c1 if=eth0";

    #[test]
    fn fresh_host_isolated() {
        let t = SavedTable::parse("", Table::Filter);
        let mut b = Batch::new(Family::V4);
        let ips = ["10.0.0.5".parse().unwrap()];
        plan_add(
            &mut b,
            &cfg(IngressPolicy::Isolated),
            &t,
            C,
            |_, c, i| c == "c1" && i == "eth0",
            &ips,
            Some("br0"),
        )
        .unwrap();
        let text = b.text();
        let lines: Vec<&str> = text.lines().collect();
        let pos = |s: &str| {
            lines
                .iter()
                .position(|l| l.contains(s))
                .unwrap_or_else(|| panic!("{s} missing in\n{text}"))
        };
        // The stage-1 jump is inserted after (so ends up above) the CNI-FORWARD jump.
        assert!(
            pos("-I FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD")
                < pos(
                    "-I FORWARD -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-1"
                )
        );
        pos(
            "-A CNI-FORWARD -d 10.0.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"tether net=n id=c1 if=eth0\" -j ACCEPT",
        );
        pos(
            "-A CNI-FORWARD -s 10.0.0.5/32 -m comment --comment \"tether net=n id=c1 if=eth0\" -j ACCEPT",
        );
        pos(
            "-I CNI-ISOLATION-STAGE-1 -i br0 -o br0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j DROP",
        );
        pos("-I CNI-ISOLATION-STAGE-1 -i br0 ! -o br0");
        pos("-I CNI-ISOLATION-STAGE-2 -o br0");
    }

    #[test]
    fn existing_layout_gets_only_what_is_missing() {
        let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:CNI-FORWARD - [0:0]\n:CNI-ADMIN - [0:0]\n\
            :CNI-ISOLATION-STAGE-1 - [0:0]\n:CNI-ISOLATION-STAGE-2 - [0:0]\n\
            -A FORWARD -m comment --comment \"x\" -j CNI-ISOLATION-STAGE-1\n\
            -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
            -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
            -A CNI-FORWARD -s 10.0.0.5/32 -m comment --comment \"tether net=old id=c1 if=eth0\" -j ACCEPT\n\
            -A CNI-FORWARD -s 10.0.0.6/32 -j ACCEPT\n\
            -A CNI-ISOLATION-STAGE-1 -i br0 ! -o br0 -j CNI-ISOLATION-STAGE-2\n\
            -A CNI-ISOLATION-STAGE-1 -j RETURN\n\
            -A CNI-ISOLATION-STAGE-2 -o br0 -j DROP\n-A CNI-ISOLATION-STAGE-2 -j RETURN\nCOMMIT\n";
        let t = SavedTable::parse(saved, Table::Filter);
        let mut b = Batch::new(Family::V4);
        let ips = ["10.0.0.5".parse().unwrap()];
        plan_add(
            &mut b,
            &cfg(IngressPolicy::SameBridge),
            &t,
            C,
            |_, c, i| c == "c1" && i == "eth0",
            &ips,
            Some("br0"),
        )
        .unwrap();
        assert_eq!(
            b.text(),
            "*filter\n-D CNI-FORWARD -s 10.0.0.5/32 -m comment --comment \"tether net=old id=c1 if=eth0\" -j ACCEPT\n\
             -A CNI-FORWARD -d 10.0.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"tether net=n id=c1 if=eth0\" -j ACCEPT\n\
             -A CNI-FORWARD -s 10.0.0.5/32 -m comment --comment \"tether net=n id=c1 if=eth0\" -j ACCEPT\nCOMMIT\n"
        );
        check(&cfg(IngressPolicy::SameBridge), &t, C, &[], Some("br0")).unwrap();
        assert!(check(&cfg(IngressPolicy::Isolated), &t, C, &[], Some("br0")).is_err());
        assert!(check(&cfg(IngressPolicy::Open), &t, C, &ips, None).is_err());
        let other = ["10.0.0.6".parse().unwrap()];
        assert_eq!(reference_rules(&t, &other).count(), 1);
    }
}
