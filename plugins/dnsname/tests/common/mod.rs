//! A network with `bridge` + `dnsname` on a throwaway host, containers on it, a DNS client
//! inside their namespaces, and an "outside" resolver the server forwards to.
//!
//! ```text
//!  outside ns: 198.51.100.2:53  tiny resolver: *.example.test A 192.0.2.7, else NXDOMAIN
//!      │ veth (outside0)
//!  host ns: tbr0 10.77.0.1/24 fd77::1/64 ── tether-dns on both, :53 udp+tcp
//!      │ veths                              resolv.conf (the test's) → 198.51.100.2
//!  container ns: eth0 10.77.0.x, fd77::x    client: UDP/TCP queries to the gateway
//! ```
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use cni::CniResult;
use cni::runtime::{ConfList, RuntimeConf};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netns_fixtures::{CniHost, Netns, Outside, Snapshot, conflist, plugin};
use serde_json::{Value, json};

pub const NET: &str = "dnsnet";
pub const DOMAIN: &str = "dns.tether";
pub const GW4: &str = "10.77.0.1";
pub const GW6: &str = "fd77::1";

pub struct Net {
    pub h: CniHost,
    pub list: ConfList,
    pub outside: Outside,
    pub before: Snapshot,
}

impl Net {
    /// The host, its outside resolver and the conflist; nothing added yet.
    pub fn new() -> Net {
        Net::with_dns(json!({"type": "dnsname", "domainName": DOMAIN,
            "capabilities": {"aliases": true}}))
    }

    /// With this dnsname config (`dataDir` and `resolvConf` are filled in when absent).
    pub fn with_dns(mut dns: Value) -> Net {
        let (d, s) = (plugin("dnsname"), plugin("tether-dns"));
        let h = CniHost::chained(&[("dnsname", d.as_path()), ("tether-dns", s.as_path())]);
        let outside = h.add_outside();
        start_resolver(&outside);
        std::fs::write(
            h.dir().join("resolv.conf"),
            format!("nameserver {}\nnameserver {GW4}\n", outside.outside_v4),
        )
        .unwrap();
        if dns.get("dataDir").is_none() {
            dns["dataDir"] = json!(h.dir().join("dns"));
        }
        if dns.get("resolvConf").is_none() {
            dns["resolvConf"] = json!(h.dir().join("resolv.conf"));
        }
        let bridge = json!({"type": "bridge", "bridge": "tbr0", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": h.ipam_dir(),
                "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]}});
        let list = conflist("1.1.0", NET, vec![bridge, dns]);
        let before = h.snapshot(&[]);
        Net {
            h,
            list,
            outside,
            before,
        }
    }

    pub fn dns_dir(&self) -> PathBuf {
        self.h.dir().join("dns")
    }

    pub fn rt(&self, ctr: &Netns, id: &str, name: Option<&str>, aliases: &[&str]) -> RuntimeConf {
        let mut rt = ctr.attachment(id, "eth0");
        rt.args.push(("IgnoreUnknown".into(), "1".into()));
        if let Some(n) = name {
            rt.args.push(("K8S_POD_NAME".into(), n.into()));
        }
        if !aliases.is_empty() {
            rt.capability_args
                .insert("aliases".into(), json!({ NET: aliases }));
        }
        rt
    }

    /// ADD of a new container `id` named `name`; panics on failure.
    #[track_caller]
    pub fn add(&self, id: &str, name: &str, aliases: &[&str]) -> (Netns, RuntimeConf, CniResult) {
        let ctr = self.h.container();
        let rt = self.rt(&ctr, id, Some(name), aliases);
        let r = self
            .h
            .add(&self.list, &rt)
            .unwrap_or_else(|e| panic!("ADD {id}: {e:?}"));
        (ctr, rt, r)
    }

    #[track_caller]
    pub fn del(&self, rt: &RuntimeConf) {
        self.h
            .del(&self.list, rt)
            .unwrap_or_else(|e| panic!("DEL {}: {e:?}", rt.container_id));
    }

    /// The server's pid, from its pid file.
    pub fn server_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dns_dir().join(NET).join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// After the last DEL: the host is as before, the state directory holds only the lock
    /// file, and no server of ours is alive.
    #[track_caller]
    pub fn assert_clean(&self, pids: &[i32]) {
        netns_fixtures::assert_snapshot_eq(&self.before, &self.h.snapshot(&[]));
        let left: Vec<String> = std::fs::read_dir(self.dns_dir())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.iter().all(|f| f.ends_with(".lock")),
            "dns state left behind: {left:?}"
        );
        for pid in pids {
            assert!(!alive(*pid), "server {pid} still runs");
        }
    }
}

impl Drop for Net {
    /// A test that failed before its last DEL must not leave its server running: it is ours
    /// (its pid file, its `--dir`), so it is killed by that pid.
    fn drop(&mut self) {
        let dir = self.dns_dir().join(NET);
        if let Some(pid) = self.server_pid() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A UDP socket inside `ns` (it stays in that namespace whatever thread uses it).
pub fn client(ns: &Netns) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

pub fn client6(ns: &Netns) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind("[::]:0").unwrap());
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// What a query got: the response code and the answers' data as text.
pub type Answer = (ResponseCode, Vec<String>);

pub fn message(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

/// One UDP query to `server:53`.
pub fn ask(sock: &UdpSocket, server: &str, name: &str, t: RecordType) -> Result<Answer, String> {
    let m = message(name, t);
    let to: SocketAddr = SocketAddr::new(server.parse().unwrap(), 53);
    sock.send_to(&m.to_vec().unwrap(), to)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock
            .recv_from(&mut buf)
            .map_err(|e| format!("{name}: recv: {e}"))?;
        let r = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
        if r.metadata.id == m.metadata.id {
            return Ok(parse(&r));
        }
    }
}

pub fn parse(r: &Message) -> Answer {
    (
        r.metadata.response_code,
        r.answers.iter().map(|a| a.data.to_string()).collect(),
    )
}

/// [`ask`] that must succeed.
#[track_caller]
pub fn must(sock: &UdpSocket, name: &str, t: RecordType) -> Answer {
    ask(sock, GW4, name, t).unwrap_or_else(|e| panic!("query {name} {t}: {e}"))
}

/// A container's addresses from its ADD result, v4 then v6.
pub fn addrs(r: &CniResult) -> (String, String) {
    let v4 = r.ips.iter().find(|i| i.address.is_ipv4()).unwrap();
    let v6 = r.ips.iter().find(|i| i.address.is_ipv6()).unwrap();
    (v4.address.ip().to_string(), v6.address.ip().to_string())
}

/// A resolver in the outside namespace on port 53: `*.example.test` A 192.0.2.7, NXDOMAIN
/// otherwise. It lives as long as the outside namespace's socket (the test's process).
fn start_resolver(o: &Outside) {
    let addr = SocketAddr::new(IpAddr::V4(o.outside_v4), 53);
    let sock = o.ns.run(move || UdpSocket::bind(addr).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.message_type = MessageType::Response;
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            match q.queries.first() {
                Some(qq) if qq.name().to_ascii().ends_with(".example.test.") => {
                    r.add_answer(Record::from_rdata(
                        qq.name().clone(),
                        60,
                        RData::A(A("192.0.2.7".parse().unwrap())),
                    ));
                }
                _ => r.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
}
