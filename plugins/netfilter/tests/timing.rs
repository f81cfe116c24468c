//! ipMasq ADD latency, on the first container of a network (creates the chain with one restore)
//! and on every later one (one restore of `-C` checks, nothing written), with 0 and 100 other
//! networks' chains in the table. Not run by default (timings on a shared machine are not
//! assertions); run with `cargo test -p tether-netfilter --test timing -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tether_netfilter::{masquerade_check, masquerade_ensure};

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

#[test]
#[ignore = "benchmark"]
fn add_latency() {
    for (backend, tools) in backends() {
        for networks in [0, 100] {
            let ns = ns();
            let nf = nf(&ns, &tools);
            for i in 0..networks {
                let addr = net(&format!("10.{}.{}.2/24", 1 + i / 250, i % 250));
                masquerade_ensure(&nf, &format!("other{i}"), &[addr], false).unwrap();
            }
            let (mut first, mut later) = (vec![], vec![]);
            for run in 0..RUNS {
                let network = format!("{NET}{run}");
                let addr = [net("10.200.0.2/16")];
                // As the bridge does it on the ADD that created the bridge.
                first.push(time(|| {
                    masquerade_ensure(&nf, &network, &addr, true).unwrap()
                }));
                later.push(time(|| {
                    masquerade_ensure(&nf, &network, &addr, false).unwrap()
                }));
                masquerade_check(&nf, &network, &addr).unwrap();
            }
            println!(
                "{backend:6} {networks:3} other networks: first ADD {}  later ADD {}",
                median(first),
                median(later)
            );
        }
    }
}
