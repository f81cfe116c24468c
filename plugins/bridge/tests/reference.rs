//! Side by side with Debian's reference `bridge` + `host-local` (/usr/lib/cni): the same config
//! through both gives results of the same shape and equivalent kernel state. This guards the
//! drop-in claim.
//!
//! Normalised before comparing, because they differ by design: veth names (random there,
//! hashed here), MACs, comments, and the masquerade layout (a `CNI-<sha512>` chain per container
//! there, one shared `TETHER-MASQ-<hash>` chain per network and subnet here, which the last DEL
//! removes together with the bridge it created, which the reference keeps): masquerade lines
//! are left out of the comparison, only that both masquerade the same families is compared; that ours masquerades what the reference does is
//! tested with real packets in packets.rs. Route protocols are compared as they are: both add
//! theirs as `boot`.

mod common;

use common::*;
use netns_fixtures::{Netns, Snapshot};
use serde_json::{Value, json};

/// The structure of a JSON value: objects keep their keys, arrays their length and order,
/// strings that are MACs or veth names become placeholders.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(s) if s.len() == 17 && s.matches(':').count() == 5 => json!("<mac>"),
        Value::String(s) if is_veth(s) => json!("<veth>"),
        Value::String(s) if s.starts_with("/proc/") => json!("<netns>"),
        other => other.clone(),
    }
}

fn is_veth(s: &str) -> bool {
    s.len() == 12 && s.starts_with("veth") && s[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// A masquerade chain, one of its rules, or a jump to it (the snapshot's `v4 `/`v6 ` prefix
/// first).
fn is_masq(line: &str) -> bool {
    line.split(' ').any(|w| {
        let w = w.trim_start_matches(':');
        w.starts_with("CNI-") || w.starts_with("TETHER-")
    })
}

/// The families (`v4`, `v6`) with a MASQUERADE rule.
fn masq_families(s: &Snapshot) -> Vec<&str> {
    let mut out: Vec<&str> = s
        .iptables
        .iter()
        .filter(|l| l.ends_with("-j MASQUERADE"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn normalize(s: &Snapshot) -> Snapshot {
    let word = |w: &str| {
        if is_veth(w) {
            "<veth>".to_string()
        } else {
            w.to_string()
        }
    };
    let line = |l: &String| {
        let mut l = l.clone();
        // Comments: everything from `-m comment` to the next ` -j `.
        if let Some(i) = l.find(" -m comment --comment ") {
            let rest = &l[i..];
            let j = rest.find(" -j ").unwrap_or(rest.len());
            l = format!("{}{}", &l[..i], &rest[j..]);
        }
        l.split(' ').map(word).collect::<Vec<_>>().join(" ")
    };
    let fix = |v: &Vec<String>| {
        let mut out: Vec<String> = v.iter().map(line).collect();
        out.sort();
        out
    };
    Snapshot {
        links: fix(&s.links),
        addrs: fix(&s.addrs),
        routes: fix(&s.routes),
        iptables: fix(&s.iptables.iter().filter(|l| !is_masq(l)).cloned().collect()),
        // Our host-local keeps a lookup index under `<dataDir>/<net>/.tether/` (the reference ignores it).
        files: s
            .files
            .iter()
            .filter(|(k, _)| !k.contains("/.tether/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

struct Side {
    env: Env,
    ctrs: Vec<Netns>,
    results: Vec<Value>,
}

fn run(p: Plugins, conf_of: &dyn Fn(&Env) -> Value) -> Side {
    let env = Env::with(p);
    let conf = conf_of(&env);
    let ctrs: Vec<Netns> = (0..2).map(|_| env.th.container()).collect();
    let results = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| env.add(c, &format!("ctr{i}"), &conf).ok())
        .collect();
    Side { env, ctrs, results }
}

fn compare(conf_of: &dyn Fn(&Env) -> Value) {
    let theirs = run(Plugins::reference(), conf_of);
    let ours = run(Plugins::ours(), conf_of);
    for (t, o) in theirs.results.iter().zip(&ours.results) {
        assert_eq!(shape(t), shape(o), "\nreference: {t}\nours:      {o}");
    }
    let (rt, ro) = (theirs.env.snapshot(), ours.env.snapshot());
    assert_eq!(
        masq_families(&rt),
        masq_families(&ro),
        "masqueraded families"
    );
    let host = |s: &Side| normalize(&s.env.snapshot());
    let (ht, ho) = (host(&theirs), host(&ours));
    if ht != ho {
        panic!(
            "host state differs (- reference, + ours):\n{}",
            ht.diff(&ho)
        );
    }
    for (ct, co) in theirs.ctrs.iter().zip(&ours.ctrs) {
        let (st, so) = (normalize(&ct.snapshot(&[])), normalize(&co.snapshot(&[])));
        if st != so {
            panic!(
                "container state differs (- reference, + ours):\n{}",
                st.diff(&so)
            );
        }
    }
    // Sysctls the reference sets, checked on ours.
    let o = &ours.env;
    assert_eq!(
        o.host().sysctl("net/ipv4/ip_forward"),
        theirs.env.host().sysctl("net/ipv4/ip_forward")
    );
    for side in [&theirs, &ours] {
        let conf = conf_of(&side.env);
        for (i, (c, r)) in side.ctrs.iter().zip(&side.results).enumerate() {
            side.env
                .del(Some(c), &format!("ctr{i}"), &conf, Some(r))
                .ok_empty();
        }
    }
    // The one difference after the last DEL: the reference keeps the bridge (its link,
    // addresses and connected routes), ours deletes the bridge it created.
    let bridge = conf_of(&theirs.env)["bridge"]
        .as_str()
        .unwrap_or("cni0")
        .to_string();
    let without_bridge = |mut s: Snapshot| {
        let mine = |l: &String| {
            l.starts_with(&format!("{bridge} ")) || l.contains(&format!(" dev {bridge} "))
        };
        for v in [&mut s.links, &mut s.addrs, &mut s.routes] {
            v.retain(|l| !mine(l));
        }
        s
    };
    let (ht, ho) = (host(&theirs), host(&ours));
    assert!(
        theirs.env.link(&bridge).is_some(),
        "the reference keeps its bridge"
    );
    assert!(
        ours.env.link(&bridge).is_none(),
        "ours deletes the bridge it created"
    );
    let ht = without_bridge(ht);
    if ht != ho {
        panic!(
            "host state after DEL differs (- reference, + ours):\n{}",
            ht.diff(&ho)
        );
    }
}

#[test]
fn gateway_network_with_masquerade_dual_stack() {
    compare(&|env| {
        env.conf(
            "1.0.0",
            &["10.70.0.0/24", "fd70::/64"],
            json!({ "bridge": "cni0", "isDefaultGateway": true, "ipMasq": true }),
        )
    });
}

#[test]
fn plain_l3_network_in_an_old_version() {
    compare(&|env| env.conf("0.3.1", &["10.71.0.0/24"], json!({})));
}

#[test]
fn layer2_only_network() {
    compare(&|_| json!({ "cniVersion": "0.4.0", "name": NET, "type": "bridge", "bridge": "l2br" }));
}
