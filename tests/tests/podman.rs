//! A real runtime as the client: Debian's `podman` (4.3, CNI backend) drives the plugins in
//! `cni_plugin_dirs` through the conflist it writes itself on `podman network create` (cniVersion
//! 0.4.0: `bridge` with `host-local` and capability `ips`, `portmap` with `portMappings`,
//! `firewall` with `"backend": ""`, `tuning`). The same scenario runs with Debian's reference
//! plugins, which shows it is fair, and with ours (`target/<profile>`): they must be drop-ins.
//!
//! Scenario: import a busybox image; create the network (podman lists it only if every plugin's
//! VERSION answer has 0.4.0); run an HTTP server with `-p 18080:8080` and a client with a fixed
//! `--ip` and `--mac-address`; `podman inspect`, the CNI result podman cached and the lease must
//! agree with what each container sees on eth0; fetch the page container to container, from the
//! client through the published port on the gateway (hairpin), from the host on 127.0.0.1, the
//! gateway and its uplink address, and from an outside namespace through that address; `podman
//! network reload` the server (DEL, then ADD with the same IP and MAC) and fetch again; then
//! `podman rm -f` both and `podman network rm`: no container rules, links, leases, cached results
//! or netns mounts may be left, only the static rules of the shared chains ([`clients::is_shared_chain`]).
//!
//! Isolation: podman never sees the real host. It runs in a throwaway host network namespace
//! ([`TestHost`]) and in private mount and pid namespaces (`unshare --pid --fork`) with tmpfs on
//! `/run` (netns bind mounts, runroot, tmpdir), `/dev/shm` (podman's lock table), `/var/lib` (CNI
//! leases and result cache, image cache) and `/var/tmp` (import); storage and config live in a
//! temp dir; `cgroups = "disabled"` (no cgroup dirs on the host). When the test ends or panics,
//! the namespace's init exits and the kernel kills everything in it (conmon, containers). With
//! our plugins, `/usr/lib/cni` is hidden under an empty tmpfs in that mount namespace, so nothing
//! (not even podman's `container cleanup`) can fall back to the reference plugins.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clients::{Done, REFERENCE_DIR, rules_left};
use netns_fixtures::{Netns, Outside, TestHost, bin_dir};
use serde_json::Value;

mod clients;

/// The binaries podman's stock conflist runs.
const PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "firewall", "tuning"];
const NETWORK: &str = "testnet";
const IMAGE: &str = "localhost/tether-busybox:latest";
const HOST_PORT: u16 = 18080;
const CTR_PORT: u16 = 8080;
const PAGE: &str = "tether podman drop-in\n";
const CLI_MAC: &str = "92:54:45:54:48:52";
/// Any single podman command; the whole test stays far below.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn podman_drives_reference_plugins() {
    drop_in(Path::new(REFERENCE_DIR));
}

#[test]
fn podman_drives_tether_plugins() {
    drop_in(&bin_dir());
}

/// A host with no iptables at all: every iptables program in /usr/sbin is a failing one in the
/// sandbox's mount namespace, Podman's conflist has no backend key (firewall's `"backend": ""`),
/// so every plugin ends up on nftables, and the whole scenario must still pass.
#[test]
fn podman_drives_tether_plugins_on_a_host_without_iptables() {
    drop_in_hiding(&bin_dir(), true);
}

fn drop_in(plugin_dir: &Path) {
    drop_in_hiding(plugin_dir, false)
}

fn drop_in_hiding(plugin_dir: &Path, hide_iptables: bool) {
    require_podman();
    clients::require_plugins(plugin_dir, PLUGINS);
    let sb = Sandbox::new(plugin_dir, hide_iptables);
    if hide_iptables {
        let o = sb.inside_command("iptables", &["-V"]);
        assert!(!o.status.success(), "iptables still works in the sandbox");
    }
    let before = sb.state();

    sb.podman(&["import", sb.image_tar().to_str().unwrap(), IMAGE]);
    sb.podman(&["network", "create", NETWORK]);
    let conflist = sb.conflist();
    let subnet = conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap_or_else(|| panic!("no subnet in podman's conflist: {conflist:#}"))
        .to_string();
    // Podman lists a network only if every plugin is found and its VERSION answer has the
    // conflist's version; otherwise it logs why on stderr.
    let ls = sb.podman_out(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        ls.stdout.lines().any(|l| l == NETWORK),
        "podman hides {NETWORK} (a plugin is missing or its VERSION lacks 0.4.0):\n{ls}"
    );

    let srv_id = sb.podman(&words(&format!(
        "run -d --name srv --network {NETWORK} -p {HOST_PORT}:{CTR_PORT} {IMAGE} \
         httpd -f -p {CTR_PORT} -h /www"
    )));
    // A fixed address and MAC: podman 4.3 sends them as `CNI_ARGS` `IP=` (host-local) and `MAC=`
    // (bridge/tuning), next to `IgnoreUnknown=1` and `K8S_POD_NAME`.
    let subnet_prefix = subnet.rsplit_once('.').unwrap().0.to_string();
    let cli_ip = format!("{subnet_prefix}.50");
    let cli_id = sb.podman(&words(&format!(
        "run -d --name cli --network {NETWORK} --ip {cli_ip} --mac-address {CLI_MAC} {IMAGE} \
         sleep 600"
    )));
    let srv = sb.check_attachment("srv", &srv_id);
    let cli = sb.check_attachment("cli", &cli_id);
    assert_eq!((cli.ip, cli.mac.as_str()), (parse(&cli_ip), CLI_MAC));
    assert_ne!(srv.ip, cli.ip);
    assert_eq!(srv.gateway, cli.gateway);
    let mappings = &sb.cached_result(&srv_id)["capabilityArgs"]["portMappings"];
    assert_eq!(mappings[0]["hostPort"], HOST_PORT, "{mappings}");

    // Container to container over the bridge, then hairpin through the published port.
    // busybox's own `wget -T` crashes (Debian 1.35 static); `timeout` bounds it instead.
    let wget =
        |url: String| sb.podman(&words(&format!("exec cli timeout 10 wget -q -O - {url}"))) + "\n";
    assert_eq!(wget(format!("http://{}:{CTR_PORT}/", srv.ip)), PAGE);
    assert_eq!(wget(format!("http://{}:{HOST_PORT}/", srv.gateway)), PAGE);
    // The published port from the host itself and from another machine.
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        srv.gateway,
        sb.outside.host_v4.into(),
    ] {
        let got = http_get(&sb.host, SocketAddr::new(ip, HOST_PORT));
        assert_eq!(got, PAGE, "host -> {ip}:{HOST_PORT}");
    }
    let got = http_get(
        &sb.outside.ns,
        SocketAddr::new(sb.outside.host_v4.into(), HOST_PORT),
    );
    assert_eq!(got, PAGE, "outside -> {}:{HOST_PORT}", sb.outside.host_v4);

    // `podman network reload` (what podman does after a firewall reload): DEL, then ADD again in
    // the same netns asking for the same IP and MAC; the port must still be published.
    sb.podman(&["network", "reload", "srv"]);
    assert_eq!(
        sb.check_attachment("srv", &srv_id),
        srv,
        "after network reload"
    );
    let got = http_get(
        &sb.outside.ns,
        SocketAddr::new(sb.outside.host_v4.into(), HOST_PORT),
    );
    assert_eq!(
        got, PAGE,
        "outside -> {}:{HOST_PORT} after reload",
        sb.outside.host_v4
    );

    sb.podman(&["rm", "-f", "-t", "0", "srv", "cli"]);
    sb.podman(&["network", "rm", NETWORK]);
    let after = sb.state();
    assert_eq!(before.links, after.links, "links left behind");
    assert!(
        after.leases.is_empty(),
        "host-local leases left: {:?}",
        after.leases
    );
    assert!(
        after.cache.is_empty(),
        "CNI results left: {:?}",
        after.cache
    );
    assert!(after.netns.is_empty(), "netns left: {:?}", after.netns);
    let forbidden = [
        subnet_prefix + ".",
        srv_id.clone(),
        cli_id.clone(),
        "cni-podman".to_string(),
        HOST_PORT.to_string(),
    ];
    assert_rules_cleared(&before.rules, &after.rules, &forbidden);
    // Our nftables table (there only when the plugins chose it): nothing of the network or its
    // containers left, only the empty shared objects.
    let nft = sb.host.sh("nft", &["list", "ruleset"]);
    if hide_iptables {
        assert!(
            nft.contains("table inet tether"),
            "nftables was not used:\n{nft}"
        );
    }
    for f in &forbidden {
        assert!(!nft.contains(f.as_str()), "{f} left in nftables:\n{nft}");
    }
}

/// Podman's own dnsname conflist with our dnsname: containers resolve each other by name (short
/// and in `dns.podman`) and `--network-alias`, resolv.conf points at the gateway, a removed
/// container is gone at once, and the network's last container takes the DNS server with it.
#[test]
fn podman_resolves_container_names_through_tether_dnsname() {
    require_podman();
    let dir = bin_dir();
    clients::require_plugins(&dir, PLUGINS);
    clients::require_plugins(&dir, &["dnsname", "tether-dns"]);
    let sb = Sandbox::new(&dir, false);
    let before = sb.state();
    sb.podman(&["import", sb.image_tar().to_str().unwrap(), IMAGE]);
    sb.podman(&["network", "create", NETWORK]);
    let conflist = sb.conflist();
    assert_eq!(
        conflist["plugins"][4]["domainName"], "dns.podman",
        "{conflist:#}"
    );
    let a_id = sb.podman(&words(&format!(
        "run -d --name a --network {NETWORK} --network-alias web {IMAGE} sleep 600"
    )));
    let a = sb.check_attachment("a", &a_id);
    let resolv = sb.podman(&["exec", "a", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {}", a.gateway)) && resolv.contains("dns.podman"),
        "{resolv}"
    );
    let lookup = |name: &str| {
        sb.podman_out(&words(&format!(
            "run --rm --network {NETWORK} {IMAGE} nslookup {name}"
        )))
    };
    for name in ["a", "a.dns.podman", "web", "web.dns.podman"] {
        let out = lookup(name);
        assert!(
            out.code == Some(0) && out.stdout.contains(&a.ip.to_string()),
            "nslookup {name}:\n{out}"
        );
    }
    let dns_dir = sb.inside(&format!("/run/tether/dns/{NETWORK}"));
    assert!(dns_dir.join("server.pid").is_file());
    sb.podman(&["rm", "-f", "-t", "0", "a"]);
    assert!(
        !dns_dir.exists(),
        "the last container's DEL stops the server"
    );
    sb.podman(&["network", "rm", NETWORK]);
    let after = sb.state();
    assert_eq!(before.links, after.links, "links left behind");
    assert!(after.leases.is_empty(), "leases left: {:?}", after.leases);
    assert!(
        after.cache.is_empty(),
        "CNI results left: {:?}",
        after.cache
    );
    assert!(after.netns.is_empty(), "netns left: {:?}", after.netns);
}

/// Podman itself is a requirement: CI installs it (scripts/setup.sh); never skip.
fn require_podman() {
    let out = Command::new("podman").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "podman is required for this test (apt-get install podman): {other:?}; \
             the test runs it only inside throwaway namespaces"
        ),
    }
}

/// Podman in its own throwaway host: network namespace, private mount and pid namespaces.
struct Sandbox {
    host: TestHost,
    outside: Outside,
    /// `unshare`, which is in the private mount namespace and whose child is its pid 1.
    init: Child,
    /// Our end of the init's stdin: when it closes (drop, or this process dies) init exits and
    /// the kernel kills every process of the pid namespace.
    lifeline: Option<ChildStdin>,
    plugin_dir: PathBuf,
    runs: AtomicUsize,
}

/// pid 1 of the sandbox. `$@`: directories to hide under an empty tmpfs.
const INIT: &str = r#"
set -eu
mount -t tmpfs -o mode=0755 tether-run /run
mount -t tmpfs tether-shm /dev/shm
mount -t tmpfs tether-varlib /var/lib
mount -t tmpfs tether-vartmp /var/tmp
# `fail=PROGRAM` then `over=PATH`s: bind PROGRAM (which always fails) over each PATH, every
# iptables program (netns_fixtures::iptables_programs, the list the plugin tests hide too).
fail=/nonexistent
for d in "$@"; do
    case "$d" in
    fail=*) fail="${d#fail=}" ;;
    over=*) mount --bind "$fail" "${d#over=}" ;;
    *) mount -t tmpfs -o ro tether-hidden "$d" ;;
    esac
done
# crun refuses hosts with both cgroup v1 controllers and a v2 hierarchy; this mount namespace
# only needs v1 (cgroups are disabled anyway), so hide the v2 half here.
if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then
    umount /sys/fs/cgroup/unified
fi
echo ready
# bash, as pid 1, reaps the orphans (conmon double-forks) while it waits for EOF.
while read -r _; do :; done
"#;

impl Sandbox {
    fn new(plugin_dir: &Path, hide_iptables: bool) -> Sandbox {
        let host = TestHost::new();
        let outside = host.add_outside();
        let dir = host.dir().to_path_buf();
        for d in ["storage", "networks"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ncgroups = \"disabled\"\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
                 network_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                plugin_dir.display(),
                dir.join("networks").display()
            ),
        )
        .unwrap();
        clients::write_podman_storage_conf(&dir);

        let hidden: Vec<String> = if plugin_dir == Path::new(REFERENCE_DIR) {
            vec![]
        } else {
            vec![REFERENCE_DIR.to_string()]
        };
        let fail = dir.join("no-iptables");
        if hide_iptables {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(
                &fail,
                "#!/bin/sh\necho 'iptables hidden by the test' >&2\nexit 1\n",
            )
            .unwrap();
            std::fs::set_permissions(&fail, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let init_err = dir.join("init.stderr");
        let mut hide: Vec<String> = Vec::new();
        if hide_iptables {
            hide.push(format!("fail={}", fail.display()));
            hide.extend(
                netns_fixtures::iptables_programs()
                    .iter()
                    .map(|p| format!("over={}", p.display())),
            );
        }
        let init_args = std::iter::once("tether-podman-init")
            .chain(hidden.iter().map(String::as_str))
            .chain(hide.iter().map(String::as_str));
        let (init, lifeline, line) = clients::spawn_sandbox_init(&host, INIT, init_args, &init_err);
        let sb = Sandbox {
            host,
            outside,
            init,
            lifeline,
            plugin_dir: plugin_dir.to_path_buf(),
            runs: AtomicUsize::new(0),
        };
        clients::assert_sandbox_ready(&line, &init_err);
        for d in &hidden {
            assert!(
                list(&sb.inside(d)).is_empty(),
                "{d} is not hidden in the sandbox"
            );
        }
        sb
    }

    fn dir(&self) -> &Path {
        self.host.dir()
    }

    /// Runs `program args` inside the sandbox's namespaces.
    fn inside_command(&self, program: &str, args: &[&str]) -> std::process::Output {
        let pid = self.init.id().to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-n", "--", program])
            .args(args)
            .output()
            .unwrap()
    }

    /// A path as seen inside the sandbox's mount namespace.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.init.id()))
    }

    /// Runs `podman args` in the sandbox and returns its output.
    fn podman_out(&self, args: &[&str]) -> Done {
        let p = self.init.id();
        let d = self.dir();
        let mut cmd = clients::podman_command(p, d, args);
        // Files, not pipes: `podman run -d` leaves conmon behind, which may hold inherited pipes.
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (d.join(format!("{n}.out")), d.join(format!("{n}.err")));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter: {e}"));
        let code = clients::exit_code_within(&mut child, COMMAND_TIMEOUT);
        Done {
            client: "podman",
            args: args.join(" "),
            plugins: self.plugin_dir.clone(),
            code,
            timeout: COMMAND_TIMEOUT,
            stdout: std::fs::read_to_string(out).unwrap(),
            stderr: std::fs::read_to_string(err).unwrap(),
        }
    }

    /// Runs `podman args`, panics unless it succeeds, returns its trimmed stdout.
    #[track_caller]
    fn podman(&self, args: &[&str]) -> String {
        let run = self.podman_out(args);
        assert_eq!(run.code, Some(0), "podman failed:\n{run}");
        // Podman only logs some plugin failures (a DEL failing during `rm -f`, a network it
        // cannot load) and carries on, so any warning fails the test.
        assert!(
            !run.stderr.contains("level=warning") && !run.stderr.contains("level=error"),
            "podman logged a problem:\n{run}"
        );
        run.stdout.trim().to_string()
    }

    /// A tarball of a busybox-static root filesystem with the page the server serves.
    fn image_tar(&self) -> PathBuf {
        // Applet links made without exec'ing the fresh copy (ETXTBSY under parallel tests).
        let root = clients::busybox_rootfs(self.dir());
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::write(root.join("www/index.html"), PAGE).unwrap();
        let tar = self.dir().join("rootfs.tar");
        clients::run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        tar
    }

    /// The conflist `podman network create` wrote, checked against its stock shape.
    fn conflist(&self) -> Value {
        let path = self.dir().join(format!("networks/{NETWORK}.conflist"));
        let c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let types: Vec<&str> = c["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        // Podman 4.3 appends dnsname when its plugin dir has the binary (ours has).
        let mut stock = vec!["bridge", "portmap", "firewall", "tuning"];
        if self.plugin_dir.join("dnsname").is_file() {
            stock.push("dnsname");
        }
        assert_eq!(types, stock, "{c:#}");
        assert_eq!(c["cniVersion"], "0.4.0", "{c:#}");
        assert_eq!(c["plugins"][0]["ipam"]["type"], "host-local", "{c:#}");
        c
    }

    /// What libcni cached for `id` (`/var/lib/cni/results/<net>-<id>-eth0`): the final result
    /// of the chain and the capability args podman sent.
    fn cached_result(&self, id: &str) -> Value {
        let path = self.inside(&format!("/var/lib/cni/results/{NETWORK}-{id}-eth0"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("CNI result cache {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// `podman inspect`, the cached CNI result, the lease and the container's own eth0 must all
    /// agree on the address, gateway and MAC.
    fn check_attachment(&self, name: &str, id: &str) -> Attachment {
        let inspect: Value = serde_json::from_str(&self.podman(&["inspect", name])).unwrap();
        let n = &inspect[0]["NetworkSettings"]["Networks"][NETWORK];
        let inspected = Attachment {
            ip: parse(n["IPAddress"].as_str().unwrap()),
            prefix: n["IPPrefixLen"].as_u64().unwrap() as u8,
            gateway: parse(n["Gateway"].as_str().unwrap()),
            mac: n["MacAddress"].as_str().unwrap().to_string(),
        };

        let exec = |args: &[&str]| {
            let mut a = vec!["exec", name];
            a.extend(args);
            self.podman(&a)
        };
        let addr = exec(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        let cidr = word_after(&addr, "inet");
        let (ip, prefix) = cidr.split_once('/').unwrap();
        let gateway = word_after(&exec(&["ip", "route", "show", "default"]), "via");
        let seen = Attachment {
            ip: parse(ip),
            prefix: prefix.parse().unwrap(),
            gateway: parse(&gateway),
            mac: exec(&["cat", "/sys/class/net/eth0/address"]),
        };
        assert_eq!(inspected, seen, "podman inspect vs eth0 of {name}");

        let cache = self.cached_result(id);
        let r = &cache["result"];
        assert_eq!(r["cniVersion"], "0.4.0", "{cache:#}");
        assert_eq!(r["ips"].as_array().unwrap().len(), 1, "{r:#}");
        assert_eq!(
            r["ips"][0]["address"],
            format!("{}/{}", seen.ip, seen.prefix),
            "{r:#}"
        );
        assert_eq!(r["ips"][0]["gateway"], seen.gateway.to_string(), "{r:#}");
        let ifc = r["ips"][0]["interface"].as_u64().unwrap() as usize;
        assert_eq!(r["interfaces"][ifc]["name"], "eth0", "{r:#}");
        assert_eq!(r["interfaces"][ifc]["mac"], seen.mac, "{r:#}");

        let lease = self.inside(&format!("/var/lib/cni/networks/{NETWORK}/{}", seen.ip));
        let owner = std::fs::read_to_string(&lease)
            .unwrap_or_else(|e| panic!("lease {}: {e}", lease.display()));
        assert_eq!(owner.lines().next(), Some(id), "lease of {}", seen.ip);
        seen
    }

    /// What must come back after removal.
    fn state(&self) -> State {
        let links = self
            .host
            .netlink()
            .links()
            .unwrap()
            .into_iter()
            .map(|l| (l.name, l.kind))
            .collect();
        let leases = list(&self.inside(&format!("/var/lib/cni/networks/{NETWORK}")))
            .into_iter()
            // host-local's lock and its round-robin cursor are kept on purpose.
            .filter(|f| f != "lock" && !f.starts_with("last_reserved_ip"))
            .collect();
        State {
            links,
            leases,
            cache: list(&self.inside("/var/lib/cni/results")),
            netns: list(&self.inside("/run/netns")),
            rules: clients::rules(&self.host),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // EOF makes init exit; the kernel then kills the whole pid namespace, and unshare exits
        // once its child is gone.
        clients::stop_sandbox_init(
            &mut self.init,
            self.lifeline.take(),
            Duration::from_secs(10),
        );
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Attachment {
    ip: IpAddr,
    prefix: u8,
    gateway: IpAddr,
    mac: String,
}

struct State {
    links: Vec<(String, Option<String>)>,
    leases: Vec<String>,
    cache: Vec<String>,
    netns: Vec<String>,
    rules: BTreeSet<String>,
}

/// Every rule and chain the run added must be a static rule of a shared chain; nothing may
/// mention a container, the subnet (except the masquerade chains of the network, which exist
/// for it), the bridge or the host port; nothing may be missing. `forbidden[0]` is the subnet.
#[track_caller]
fn assert_rules_cleared(before: &BTreeSet<String>, after: &BTreeSet<String>, forbidden: &[String]) {
    let bad = rules_left(before, after, &forbidden[0], &forbidden[1..]);
    let added: Vec<_> = after.difference(before).collect();
    eprintln!("left after removal (shared, allowed): {added:#?}");
    assert!(bad.is_empty(), "rules left behind: {bad:#?}");
}

/// An HTTP/1.0 GET of `/` from inside `ns`, retried while the server is still starting.
#[track_caller]
fn http_get(ns: &Netns, to: SocketAddr) -> String {
    let result = ns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: tether\r\n\r\n")?;
                let mut resp = String::new();
                s.read_to_string(&mut resp)?;
                Ok(resp)
            })();
            match attempt {
                Ok(resp) => return Ok(resp),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let resp = result.unwrap_or_else(|e| panic!("GET http://{to}/: {e}"));
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET http://{to}/: {resp}"
    );
    body.to_string()
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn word_after(text: &str, key: &str) -> String {
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == key)
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no {key:?} in {text:?}"))
        .to_string()
}

#[track_caller]
fn parse(ip: &str) -> IpAddr {
    ip.parse().unwrap_or_else(|e| panic!("{ip:?}: {e}"))
}

/// Names in `dir`, sorted; none if it does not exist.
fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    names.sort();
    names
}
