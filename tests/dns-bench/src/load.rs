//! Closed-loop UDP clients: each sends one query, waits for its answer, records the latency.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use netns_fixtures::Netns;

pub struct Figures {
    pub qps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Timeouts and answers other than expected (hits: NOERROR with an answer; misses:
    /// NXDOMAIN; forwarded: NOERROR with an answer).
    pub errors: usize,
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One query; `None` on timeout or garbage.
pub fn query(
    sock: &UdpSocket,
    to: SocketAddr,
    name: &str,
    t: RecordType,
) -> Option<(ResponseCode, Vec<String>)> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, t));
    sock.send_to(&m.to_vec().ok()?, to).ok()?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        if r.metadata.id == m.metadata.id {
            return Some((
                r.metadata.response_code,
                r.answers.iter().map(|a| a.data.to_string()).collect(),
            ));
        }
    }
}

pub fn run(
    ns: &Netns,
    server: SocketAddr,
    clients: usize,
    dur: Duration,
    name: &(dyn Fn(usize) -> String + Sync),
    t: RecordType,
    kind: &str,
) -> Figures {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let stop = &stop;
                s.spawn(move || {
                    // The client's address: a container the servers know.
                    let sock = ns.run(|| UdpSocket::bind("10.99.0.100:0").unwrap());
                    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, c * 7919);
                    while !stop.load(Ordering::Relaxed) {
                        let n = name(i);
                        i += 1;
                        let t0 = Instant::now();
                        let got = query(&sock, server, &n, t);
                        let us = t0.elapsed().as_secs_f64() * 1e6;
                        let ok = match (&got, kind) {
                            (Some((ResponseCode::NXDomain, _)), "miss") => true,
                            (Some((ResponseCode::NoError, a)), "hit" | "forwarded") => {
                                !a.is_empty()
                            }
                            _ => false,
                        };
                        if ok {
                            lat.push(us);
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let errors = results.iter().map(|(_, e)| e).sum();
    all.sort_by(f64::total_cmp);
    Figures {
        qps: all.len() as f64 / elapsed,
        p50_us: pct(&all, 50.0),
        p99_us: pct(&all, 99.0),
        errors,
    }
}
