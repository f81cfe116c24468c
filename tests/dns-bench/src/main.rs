//! `tether-dns-bench`: tether-dns against aardvark-dns (Debian 1.4) and dnsmasq (dnsmasq-base),
//! each serving the same 1000 records, then the time from dnsname's ADD to the name resolving.
//! Everything runs in one throwaway network namespace (the host's network is never touched).
//!
//! ```text
//!  bench netns, addresses on lo:
//!   10.99.0.1:53  tether-dns   (records.json, resolvConf → upstream)
//!   10.99.0.2:53  aardvark-dns (netavark's config format; its own mount namespace with a
//!                               /etc/resolv.conf → upstream, which is where it reads them)
//!   10.99.0.3:53  dnsmasq      (addn-hosts as dnsname writes it, --local=/dns.podman/,
//!                               --server=upstream)
//!   10.99.0.9:53  upstream stub: answers every query with one A record at once
//!   10.99.0.100   the client (a container of the records too: aardvark answers only
//!                 queries from containers it knows)
//! ```
//!
//! Per server and kind (hits: `n<i>`, misses: `miss<i>.dns.podman`, forwarded:
//! `f<i>.example.test`): `--clients` closed-loop clients for `--seconds`, qps and p50/p99.
//!
//! Run as root: `cargo build --release -p tether-dnsname -p tether-dns-server -p tether-bridge
//! -p host-local -p tether-dns-bench && target/release/tether-dns-bench`.

mod load;
mod servers;

use std::time::{Duration, Instant};

use clap::Parser;
use hickory_proto::rr::RecordType;
use netns_fixtures::Netns;

#[derive(Parser)]
#[command(name = "tether-dns-bench")]
struct Args {
    /// Records each server holds.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Seconds per server and kind.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Closed-loop clients (threads) per measurement.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// ADDs for the "ADD returned → resolves" figure.
    #[arg(long, default_value_t = 30)]
    adds: usize,
}

fn main() {
    let args = Args::parse();
    netns_fixtures::require_privileges();
    let ns = Netns::new().expect("bench namespace");
    for a in [
        "10.99.0.1",
        "10.99.0.2",
        "10.99.0.3",
        "10.99.0.9",
        "10.99.0.100",
    ] {
        ns.sh("ip", &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    let dir = tempfile_dir();
    servers::upstream_stub(&ns, "10.99.0.9:53".parse().unwrap());
    let running = vec![
        servers::tether(&ns, &dir, args.records),
        servers::aardvark(&ns, &dir, args.records),
        servers::dnsmasq(&ns, &dir, args.records),
    ];
    println!(
        "{} records, {} clients, {:.1} s per figure\n",
        args.records, args.clients, args.seconds
    );
    println!(
        "{:<14} {:<10} {:>10} {:>10} {:>10} {:>8}",
        "server", "kind", "qps", "p50 µs", "p99 µs", "errors"
    );
    let dur = Duration::from_secs_f64(args.seconds);
    let n = args.records;
    for kind in ["hit", "miss", "forwarded"] {
        for s in &running {
            let name = move |i: usize| match kind {
                "hit" => format!("n{}", i % n),
                "miss" => format!("miss{i}.dns.podman"),
                _ => format!("f{}.example.test", i % 5000),
            };
            let r = load::run(&ns, s.addr, args.clients, dur, &name, RecordType::A, kind);
            println!(
                "{:<14} {:<10} {:>10.0} {:>10.0} {:>10.0} {:>8}",
                s.name, kind, r.qps, r.p50_us, r.p99_us, r.errors
            );
        }
    }
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
    add_to_resolve(args.adds);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tether-dns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// dnsname's ADD through a real bridge + dnsname conflist, then the same name queried at
/// once: how long after ADD's return it first resolves (0 when the first query answers).
fn add_to_resolve(adds: usize) {
    use netns_fixtures::{CniHost, conflist, plugin};
    let (d, s) = (plugin("dnsname"), plugin("tether-dns"));
    let h = CniHost::chained(&[("dnsname", d.as_path()), ("tether-dns", s.as_path())]);
    let mut bridge = h.bridge_conf("10.98.0.0/16");
    bridge["ipam"]["dataDir"] = serde_json::json!(h.ipam_dir());
    let dns = serde_json::json!({"type": "dnsname", "domainName": "dns.podman",
        "dataDir": h.dir().join("dns"), "resolvConf": h.dir().join("none")});
    let list = conflist("1.1.0", "benchnet", vec![bridge, dns]);
    let client = h.container();
    let mut rt0 = client.attachment("client", "eth0");
    rt0.args.push(("K8S_POD_NAME".into(), "client".into()));
    h.add(&list, &rt0).expect("ADD client");
    let sock = client.run(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let server: std::net::SocketAddr = "10.98.0.1:53".parse().unwrap();
    let (mut add_ms, mut lag_us, mut first_try) = (Vec::new(), Vec::new(), 0usize);
    let mut rts = Vec::new();
    for i in 0..adds {
        let ctr = h.container();
        let mut rt = ctr.attachment(&format!("c{i}"), "eth0");
        rt.args.push(("K8S_POD_NAME".into(), format!("new{i}")));
        let t0 = Instant::now();
        h.add(&list, &rt).expect("ADD");
        let returned = Instant::now();
        add_ms.push(returned.duration_since(t0).as_secs_f64() * 1e3);
        let mut tries = 0;
        loop {
            tries += 1;
            if let Some((code, answers)) =
                load::query(&sock, server, &format!("new{i}"), RecordType::A)
                && code == hickory_proto::op::ResponseCode::NoError
                && !answers.is_empty()
            {
                break;
            }
            assert!(
                returned.elapsed() < Duration::from_secs(5),
                "new{i} never resolved"
            );
        }
        if tries == 1 {
            first_try += 1;
        }
        lag_us.push(returned.elapsed().as_secs_f64() * 1e6);
        rts.push((ctr, rt));
    }
    for (_, rt) in &rts {
        h.del(&list, rt).expect("DEL");
    }
    h.del(&list, &rt0).expect("DEL client");
    add_ms.sort_by(f64::total_cmp);
    lag_us.sort_by(f64::total_cmp);
    println!(
        "\ndnsname ADD (bridge + dnsname, {adds} ADDs): ADD p50 {:.1} ms; ADD returned → name \
         answered: p50 {:.0} µs, max {:.0} µs (one query's round trip); resolved by the first \
         query after ADD: {first_try}/{adds}",
        load::pct(&add_ms, 50.0),
        load::pct(&lag_us, 50.0),
        lag_us.last().copied().unwrap_or(0.0),
    );
}
