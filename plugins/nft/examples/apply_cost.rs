//! What one in-process transaction costs: builds the test layout in a throwaway namespace,
//! then times publishing and unpublishing one port (one batch each), N times.
//!
//! `cargo run -p tether-nft --example apply_cost -- [N]` (as root; prints medians in µs).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Instant;

use tether_nft::{Batch, Concat, DataType, Elem, Family, Nft, Set, SetData, Table, Value};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let ns = netns_fixtures::Netns::new().expect("a throwaway namespace (run as root)");
    let mut nft = Nft::for_netns(ns.as_fd()).expect("nf_tables socket");
    let t = Table::new(Family::Inet, "cost").unwrap();
    let key = [DataType::InetProto, DataType::InetService];
    let data = SetData::Value(Concat(vec![DataType::Ipv4Addr, DataType::InetService]));
    let map = Set::new("ports", &key, data, false).unwrap();
    let mut b = Batch::new();
    b.add_table(&t).add_set(&t, &map);
    nft.apply(&b).unwrap();

    let (mut add, mut del) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let e = Elem::key(&[Value::Proto(6), Value::Port(10000 + i as u16)])
            .to(&[Value::Ipv4(Ipv4Addr::new(10, 88, 0, 2)), Value::Port(80)]);
        let start = Instant::now();
        let mut b = Batch::new();
        b.add_elements(&t, &map, std::slice::from_ref(&e)).unwrap();
        nft.apply(&b).unwrap();
        add.push(start.elapsed());
        let start = Instant::now();
        let mut b = Batch::new();
        b.delete_elements(&t, &map, &[e]).unwrap();
        nft.apply(&b).unwrap();
        del.push(start.elapsed());
    }
    add.sort();
    del.sort();
    println!(
        "N={n}: publish median {} µs, unpublish median {} µs (one batch each, build + send + ACK)",
        add[n / 2].as_micros(),
        del[n / 2].as_micros()
    );
}
