//! The three servers with the same records, and the upstream stub. Each server is a child
//! process killed by its own pid when its [`Running`] drops.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use netns_fixtures::Netns;

pub struct Running {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    /// A pid file the server writes itself: aardvark-dns daemonizes on `run`, so the child we
    /// spawned is not the server.
    pid_file: Option<std::path::PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the pid the server wrote (ours, started by this bench).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Record `i`: `n<i>` at 10.100.<i/250>.<i%250+1>; the client is `client` at 10.99.0.100.
fn ip(i: usize) -> String {
    format!("10.100.{}.{}", i / 250, i % 250 + 1)
}

const CLIENT_IP: &str = "10.99.0.100";
const UPSTREAM: &str = "10.99.0.9";

fn resolv_conf(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("resolv.conf");
    std::fs::write(&p, format!("nameserver {UPSTREAM}\n")).unwrap();
    p
}

pub fn tether(ns: &Netns, dir: &Path, n: usize) -> Running {
    let d = dir.join("tether/benchnet");
    std::fs::create_dir_all(&d).unwrap();
    let mut entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"containerId": format!("c{i}"), "ifname": "eth0",
                "names": [format!("n{i}")], "ips": [ip(i)]})
        })
        .collect();
    entries.push(
        serde_json::json!({"containerId": "client", "ifname": "eth0",
        "names": ["client"], "ips": [CLIENT_IP]}),
    );
    std::fs::write(
        d.join("records.json"),
        serde_json::json!({ "entries": entries }).to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("server.json"),
        serde_json::json!({"listen": ["10.99.0.1"], "port": 53, "domain": "dns.podman",
            "resolvConf": resolv_conf(dir)})
        .to_string(),
    )
    .unwrap();
    let bin = netns_fixtures::plugin("tether-dns");
    let mut child = ns
        .command(bin)
        .arg("--dir")
        .arg(&d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "tether-dns: {line}");
    Running {
        name: "tether-dns",
        addr: "10.99.0.1:53".parse().unwrap(),
        child,
        pid_file: None,
    }
}

pub fn aardvark(ns: &Netns, dir: &Path, n: usize) -> Running {
    let d = dir.join("aardvark");
    std::fs::create_dir_all(&d).unwrap();
    // netavark's format: the gateway line, then `<id> <v4> <v6> <names,aliases>`.
    let mut s = String::from("10.99.0.2\n");
    for i in 0..n {
        s.push_str(&format!("c{i:060} {}  n{i}\n", ip(i)));
    }
    s.push_str(&format!("client{:054} {CLIENT_IP}  client\n", 0));
    std::fs::write(d.join("benchnet"), s).unwrap();
    let resolv = resolv_conf(dir);
    // aardvark reads /etc/resolv.conf: give it ours in a mount namespace of its own (unshare
    // makes mounts private, nothing reaches the host's).
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec /usr/lib/podman/aardvark-dns --config {} -p 53 run",
        resolv.display(),
        d.display()
    );
    let mut cmd = ns.command("unshare");
    cmd.args(["-m", "sh", "-c", &script]);
    spawn_quiet(
        ns,
        cmd,
        "aardvark-dns",
        "10.99.0.2:53",
        Some(d.join("aardvark.pid")),
    )
}

pub fn dnsmasq(ns: &Netns, dir: &Path, n: usize) -> Running {
    let d = dir.join("dnsmasq");
    std::fs::create_dir_all(&d).unwrap();
    // dnsname's addnhosts lines: `<ip> <name>.<domain> <name>`.
    let mut hosts = String::new();
    for i in 0..n {
        hosts.push_str(&format!("{} n{i}.dns.podman n{i}\n", ip(i)));
    }
    std::fs::write(d.join("addnhosts"), hosts).unwrap();
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--user=root",
        "--bind-interfaces",
        "--listen-address=10.99.0.3",
        "--port=53",
        "--local=/dns.podman/",
        "--domain=dns.podman",
        &format!("--server={UPSTREAM}"),
        &format!("--addn-hosts={}", d.join("addnhosts").display()),
    ]);
    spawn_quiet(ns, cmd, "dnsmasq", "10.99.0.3:53", None)
}

/// Starts `cmd` with its output discarded and waits until `name` answers at `addr`.
fn spawn_quiet(
    ns: &Netns,
    mut cmd: Command,
    name: &'static str,
    addr: &str,
    pid_file: Option<PathBuf>,
) -> Running {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    wait_answers(ns, addr, name);
    Running {
        name,
        addr,
        child,
        pid_file,
    }
}

fn wait_answers(ns: &Netns, addr: SocketAddr, who: &str) {
    let sock = ns.run(|| UdpSocket::bind("10.99.0.100:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if crate::load::query(&sock, addr, "n0", RecordType::A).is_some_and(|(_, a)| !a.is_empty())
        {
            return;
        }
    }
    panic!("{who} did not answer on {addr}");
}

/// Answers every query with one A record (192.0.2.1), at once; lives as long as the process.
pub fn upstream_stub(ns: &Netns, addr: SocketAddr) {
    let sock = ns.run(move || UdpSocket::bind(addr).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            if let Some(qq) = q.queries.first() {
                r.add_answer(Record::from_rdata(
                    qq.name().clone(),
                    60,
                    RData::A(A("192.0.2.1".parse().unwrap())),
                ));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
}
