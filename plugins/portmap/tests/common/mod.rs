//! A fake host for chained-plugin tests on top of `netns_fixtures::CniHost` (and its `Outside`
//! neighbour): containers as namespaces, a `CNI_PATH` of our portmap/firewall (or the
//! reference's) plus an interface plugin, conflists run through `cni::runtime::Invoker` exactly
//! as a runtime runs them, and echo servers/clients whose sockets live in the namespaces.
//!
//! Interface plugins (`bridge`, `host-local`): ours from the target dir when they have been built
//! (CI builds every binary first), else Debian's reference ones, which are drop-ins.
//! `TETHER_TEST_IFACE_PLUGINS=tether|reference` forces one or the other.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cni::runtime::{ConfList, RuntimeConf};
use cni::{CniResult, Error};
use netns_fixtures::{CniHost, Netns};
use serde_json::{Value, json};

/// Which implementation of a chained plugin a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Tether,
    Reference,
}

fn reference(name: &str) -> PathBuf {
    netns_fixtures::reference_plugin(name).unwrap_or_else(|| {
        panic!("/usr/lib/cni/{name} missing: install Debian's containernetworking-plugins")
    })
}

/// The plugins to put on `CNI_PATH`: `chained` (name, our binary) as ours or the reference's,
/// and the interface plugins.
fn plugins(which: Impl, iface: Option<Impl>, chained: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
    let tether_iface = match (iface, std::env::var("TETHER_TEST_IFACE_PLUGINS").as_deref()) {
        (Some(i), _) => i == Impl::Tether,
        (None, Ok("tether")) => true,
        (None, Ok("reference")) => false,
        _ => ["bridge", "host-local"]
            .iter()
            .all(|n| netns_fixtures::bin_dir().join(n).is_file()),
    };
    let mut out = Vec::new();
    for name in ["bridge", "host-local"] {
        let target = if tether_iface {
            netns_fixtures::plugin(name)
        } else {
            reference(name)
        };
        out.push((name.to_string(), target));
    }
    for (name, our_path) in chained {
        let target = match which {
            Impl::Tether => PathBuf::from(our_path),
            Impl::Reference => reference(name),
        };
        out.push((name.to_string(), target));
    }
    out
}

/// A [`CniHost`] (derefs to it, and through it to the `TestHost` and the host [`Netns`]) whose
/// attachments are [`Container`]s on `eth0`.
pub struct Host {
    pub h: CniHost,
}

impl std::ops::Deref for Host {
    type Target = CniHost;
    fn deref(&self) -> &CniHost {
        &self.h
    }
}

pub struct Container {
    pub ns: Netns,
    pub id: String,
}

impl Host {
    pub fn new(which: Impl, chained: &[(&str, &str)]) -> Host {
        Host::with_iface(which, None, chained)
    }

    /// Like [`Host::new`], with the interface plugins' implementation forced.
    pub fn with_iface(which: Impl, iface: Option<Impl>, chained: &[(&str, &str)]) -> Host {
        let list = plugins(which, iface, chained);
        let list: Vec<(&str, &Path)> = list
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        Host {
            h: CniHost::new(&list),
        }
    }

    /// This host without a working iptables: every plugin runs where each iptables program
    /// fails (`CniHost::without_iptables`); [`Host::snapshot`] still reads the real state.
    pub fn without_iptables(self) -> Host {
        Host {
            h: self.h.without_iptables(),
        }
    }

    pub fn container(&self, id: &str) -> Container {
        Container {
            ns: self.h.container(),
            id: id.to_string(),
        }
    }

    fn rt(&self, c: &Container, caps: Value) -> RuntimeConf {
        RuntimeConf {
            capability_args: caps.as_object().cloned().unwrap_or_default(),
            ..c.ns.attachment(&c.id, "eth0")
        }
    }

    /// ADD through the list, run inside the host namespace as a runtime on that host would.
    pub fn add(&self, list: &ConfList, c: &Container, caps: Value) -> Result<CniResult, Error> {
        self.h.add(list, &self.rt(c, caps))
    }

    pub fn del(&self, list: &ConfList, c: &Container, caps: Value) -> Result<(), Error> {
        self.h.del(list, &self.rt(c, caps))
    }

    pub fn check(&self, list: &ConfList, c: &Container, caps: Value) -> Result<(), Error> {
        self.h.check(list, &self.rt(c, caps))
    }

    pub fn gc(&self, list: &ConfList, valid: &[&Container]) -> Result<(), Error> {
        let valid: Vec<cni::Attachment> = valid
            .iter()
            .map(|c| cni::Attachment {
                container_id: c.id.clone(),
                ifname: "eth0".into(),
            })
            .collect();
        self.h.gc(list, &valid)
    }

    /// Runs one plugin binary directly inside the host namespace (for commands a conflist of
    /// this version cannot send, or to time one plugin alone).
    pub fn exec(
        &self,
        binary: &Path,
        command: &str,
        c: Option<&Container>,
        conf: &Value,
    ) -> Result<Option<Value>, Error> {
        let rt = c.map(|c| c.ns.attachment(&c.id, "eth0"));
        self.h.exec_binary(binary, command, rt.as_ref(), conf)
    }

    /// `iptables-save -t <table>` (or ip6tables) of the host, without comments and counters.
    pub fn save(&self, v6: bool, table: &str) -> String {
        let prog = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        self.h
            .sh(prog, &["-t", table])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.split_once(" [") {
                Some((head, _)) if l.starts_with(':') => head.to_string(),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every table we care about, both families, for before/after comparisons.
    pub fn snapshot(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for v6 in [false, true] {
            for table in ["nat", "filter", "raw", "mangle"] {
                let fam = if v6 { "v6" } else { "v4" };
                lines.extend(
                    self.save(v6, table)
                        .lines()
                        .map(|l| format!("{fam} {table} {l}")),
                );
            }
        }
        lines
    }
}

/// Waits (up to 10 s) until no IPv6 address in `ns` is still tentative (duplicate address
/// detection), so that IPv6 reachability checks do not race the kernel.
pub fn settle_ipv6(ns: &Netns) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if ns
            .sh("ip", &["-6", "-o", "addr", "show", "tentative"])
            .trim()
            .is_empty()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("IPv6 addresses still tentative after 10 s");
}

/// `(before - after, after - before)` of two snapshots, as sorted lines.
pub fn diff(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    let gone: Vec<String> = before
        .iter()
        .filter(|l| !after.contains(l))
        .cloned()
        .collect();
    let new: Vec<String> = after
        .iter()
        .filter(|l| !before.contains(l))
        .cloned()
        .collect();
    (gone, new)
}

/// A bridge network like podman's default (bridge with host-local, gateway, masquerade,
/// hairpin), followed by `chained`.
pub fn conflist(
    version: &str,
    name: &str,
    bridge: &str,
    subnets: &[&str],
    data_dir: &Path,
    chained: Vec<Value>,
) -> ConfList {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
    let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
    if subnets.iter().any(|s| s.contains(':')) {
        routes.push(json!({"dst": "::/0"}));
    }
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": ranges,
            "routes": routes,
            "dataDir": data_dir,
        }
    })];
    plugins.extend(chained);
    netns_fixtures::conflist(version, name, plugins)
}

/// The container's address of one family from a result.
pub fn addr_of(r: &CniResult, v6: bool) -> IpAddr {
    r.ips
        .iter()
        .map(|i| i.address.ip())
        .find(|ip| ip.is_ipv6() == v6)
        .unwrap_or_else(|| panic!("no {} address in {r:?}", if v6 { "v6" } else { "v4" }))
}

/// The gateway of one family from a result.
pub fn gateway_of(r: &CniResult, v6: bool) -> IpAddr {
    r.ips
        .iter()
        .filter(|i| i.address.ip().is_ipv6() == v6)
        .find_map(|i| i.gateway)
        .expect("gateway")
}

/// A TCP (and UDP) echo server inside a namespace: answers every message with `<tag>:<message>`.
/// Stops when dropped.
pub struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Echo {
    /// Listens on `port` for TCP and UDP, on all addresses of both families.
    pub fn start(ns: &Netns, port: u16, tag: &str) -> Echo {
        let (tcp, udp) = ns.run(|| {
            let tcp = TcpListener::bind(("::", port)).expect("bind tcp");
            let udp = UdpSocket::bind(("::", port)).expect("bind udp");
            (tcp, udp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (s1, t1) = (stop.clone(), tag.to_string());
        let tcp_thread = std::thread::spawn(move || {
            while !s1.load(Ordering::SeqCst) {
                match tcp.accept() {
                    Ok((mut conn, _)) => {
                        let tag = t1.clone();
                        std::thread::spawn(move || {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let mut buf = [0u8; 512];
                            if let Ok(n) = conn.read(&mut buf) {
                                let msg = String::from_utf8_lossy(&buf[..n]);
                                let _ = conn.write_all(format!("{tag}:{msg}").as_bytes());
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let (s2, t2) = (stop.clone(), tag.to_string());
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = udp.send_to(format!("{t2}:{msg}").as_bytes(), from);
                }
            }
        });
        Echo {
            stop,
            threads: vec![tcp_thread, udp_thread],
        }
    }
}

/// One TCP request from inside `ns`: connect, send `msg`, read the answer.
pub fn tcp_echo(
    ns: &Netns,
    to: SocketAddr,
    msg: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut s = ns.run(|| TcpStream::connect_timeout(&to, timeout))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(msg.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Asserts that a TCP request through `to` is answered by the server tagged `tag`.
#[track_caller]
pub fn assert_tcp(ns: &Netns, to: SocketAddr, tag: &str) {
    let got = tcp_echo(ns, to, "ping", Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("TCP to {to}: {e}"));
    assert_eq!(got, format!("{tag}:ping"), "TCP to {to}");
}

/// Asserts that a TCP connection to `to` does not get through (times out or is refused).
#[track_caller]
pub fn assert_tcp_blocked(ns: &Netns, to: SocketAddr) {
    let got = tcp_echo(ns, to, "ping", Duration::from_millis(1500));
    assert!(got.is_err(), "TCP to {to} got through: {got:?}");
}

/// A UDP socket inside `ns`, bound to a fixed local port so that repeated sends use one conntrack
/// entry (as a long-lived UDP client does).
pub fn udp_client(ns: &Netns, local: SocketAddr) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind(local)).expect("bind udp client");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s
}

pub fn udp_ask(s: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    s.send_to(msg.as_bytes(), to).ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
