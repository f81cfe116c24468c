//! 100 ADDs at once on a fresh host (no bridge yet): every one succeeds with its own address,
//! the bridge gets exactly one gateway address and the network one masquerade jump per family;
//! then 100 parallel DELs leave the host clean.

mod common;

use std::collections::BTreeSet;

use common::*;
use netns_fixtures::Netns;
use serde_json::Value;

const N: usize = 100;

#[test]
fn hundred_parallel_adds_then_dels() {
    let env = Env::new();
    let conf = env.gw_conf(&["10.60.0.0/24", "fd60::/64"]);
    let before = env.snapshot();
    let ctrs: Vec<Netns> = (0..N).map(|_| env.th.container()).collect();

    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = ctrs
            .iter()
            .enumerate()
            .map(|(i, ctr)| {
                let (env, conf) = (&env, &conf);
                s.spawn(move || env.add(ctr, &format!("ctr{i}"), conf))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().ok())
            .collect()
    });

    let addrs: BTreeSet<_> = results.iter().flat_map(result_ips).collect();
    assert_eq!(
        addrs.len(),
        2 * N,
        "every container has its own v4 and v6 address"
    );
    let br = env.link("tbr0").expect("one bridge");
    let h = env.host().netlink();
    let gw: Vec<String> = h
        .addrs(Some(br.index))
        .unwrap()
        .iter()
        .filter(|a| a.scope == 0)
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(gw, ["10.60.0.1/24", "fd60::1/64"]);
    let ports = h
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l.master == Some(br.index))
        .count();
    assert_eq!(ports, N);
    let macs: BTreeSet<_> = results
        .iter()
        .map(|r| r["interfaces"][0]["mac"].to_string())
        .collect();
    assert_eq!(macs.len(), 1, "the bridge MAC never changed: {macs:?}");
    let masq: Vec<String> = env
        .snapshot()
        .iptables
        .into_iter()
        .filter(|l| is_shared_masq(l))
        .collect();
    for fam in ["v4", "v6"] {
        let jumps = masq
            .iter()
            .filter(|l| l.starts_with(&format!("{fam} -A POSTROUTING")))
            .count();
        assert_eq!(jumps, 1, "{fam}: {masq:#?}");
    }
    assert_eq!(masq.len(), 2 * 5, "{masq:#?}");
    for (i, (ctr, r)) in ctrs.iter().zip(&results).enumerate().step_by(17) {
        env.check(ctr, &format!("ctr{i}"), &conf, r).ok_empty();
    }

    std::thread::scope(|s| {
        for (i, (ctr, r)) in ctrs.iter().zip(&results).enumerate() {
            let (env, conf) = (&env, &conf);
            s.spawn(move || {
                env.del(Some(ctr), &format!("ctr{i}"), conf, Some(r))
                    .ok_empty()
            });
        }
    });
    assert_nothing_left(&before, &env.snapshot());
}
