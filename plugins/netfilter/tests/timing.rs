//! ADD/DEL latency for one container, alone and as the 1000th. Not run by default (timings on a
//! shared machine are not assertions); run with
//! `cargo test -p tether-netfilter --test timing -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tether_netfilter::{
    Batch, Family, MASQ_CHAIN_PREFIX, Netfilter, Rule, Table, chain_name, comment, masquerade_add,
    masquerade_check, masquerade_del,
};

const NET: &str = "bench";
const RUNS: usize = 20;

fn median(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("{:6.2} ms", v[v.len() / 2].as_secs_f64() * 1e3)
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The same rules `masquerade_add` writes, for `n` containers, in one batch.
fn others(nf: &Netfilter, n: usize) {
    let mut b = Batch::new(Family::V4);
    for i in 0..n {
        let cid = format!("other{i}");
        let chain = chain_name(MASQ_CHAIN_PREFIX, NET, &cid, "eth0");
        let c = comment(NET, &cid, "eth0");
        let rule = |r: Rule, target: &str| r.comment(&c).unwrap().jump(target).unwrap();
        b.new_chain(Table::Nat, &chain).unwrap();
        b.append(
            Table::Nat,
            &chain,
            &rule(Rule::new().dst(net("10.0.0.0/8")), "ACCEPT"),
        )
        .unwrap();
        b.append(
            Table::Nat,
            &chain,
            &rule(Rule::new().not_dst(net("224.0.0.0/4")), "MASQUERADE"),
        )
        .unwrap();
        let src = net(&format!("10.{}.{}.2/32", 1 + i / 250, i % 250));
        b.append(
            Table::Nat,
            "POSTROUTING",
            &rule(Rule::new().src(src), &chain),
        )
        .unwrap();
    }
    b.apply(nf).unwrap();
}

#[test]
#[ignore = "benchmark"]
fn add_del_latency() {
    for (backend, tools) in backends() {
        for existing in [0, 999] {
            let ns = ns();
            let nf = nf(&ns, &tools);
            others(&nf, existing);
            let addr = [net("10.200.0.2/8")];
            let (mut add, mut del, mut slow) = (vec![], vec![], vec![]);
            for _ in 0..RUNS {
                add.push(time(|| {
                    masquerade_add(&nf, NET, "me", "eth0", &addr).unwrap()
                }));
                masquerade_check(&nf, NET, "me", "eth0", &addr).unwrap();
                del.push(time(|| {
                    masquerade_del(&nf, NET, "me", "eth0", &addr).unwrap()
                }));
                masquerade_add(&nf, NET, "me", "eth0", &addr).unwrap();
                slow.push(time(|| {
                    masquerade_del(&nf, NET, "me", "eth0", &[]).unwrap()
                }));
                assert!(masquerade_check(&nf, NET, "me", "eth0", &addr).is_err());
            }
            println!(
                "{backend:6} {existing:4} others: ADD {}  DEL(known) {}  DEL(no prevResult) {}",
                median(add),
                median(del),
                median(slow)
            );
        }
    }
}
