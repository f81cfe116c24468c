//! libcni's own client as the runtime: `cnitool add|check|del NETWORK NETNS`, built once per
//! test run from `tests/cnitool/main.go` against Debian's libcni 1.1.2
//! (`golang-github-appc-cni-dev`, which ships libcni but not cnitool's main) with Debian's
//! `golang-go`, offline (GOPATH mode, `GOPROXY=off`), into `target/cnitool/`.
//!
//! Scenario, at cniVersion 0.3.1, 0.4.0 and 1.0.0, with our plugins and with Debian's reference
//! (the same code, parameterised by plugin dir):
//!
//! ```text
//!   outside ns (198.51.100.2) ── outside0 ─┐ throwaway host ns, cnitool runs here
//!                                          │ bridge cnitool0 10.66.0.1/24, NAT, portmap
//!                          ┌───────────────┴──────────────┐
//!                     srv eth0 10.66.0.50             cli eth0 (host-local)
//!                     (CNI_ARGS IP=, MAC=;            (no args)
//!                      CAP_ARGS 18080 -> 8080)
//! ```
//!
//! ADD both (chain bridge + host-local, portmap, tuning); the printed result, libcni's result
//! cache (`CNI_CACHE_DIR/results/<net>-<id>-eth0`, with the args it was given) and each eth0
//! agree; real TCP: cli -> srv across the bridge, outside -> host:18080 (portmap DNAT), srv ->
//! outside (source NATed to the host's address); ping the gateway. CHECK both (libcni refuses it
//! below 0.4.0 without running a plugin). DEL both, DEL again (idempotent, no cache left); then
//! no rules but the shared chains, no links but the bridge, no leases, no cache.
//!
//! Known reference failure, asserted so the test notices when it changes: the reference
//! portmap's CHECK fails for a container with port mappings and only IPv4
//! (containernetworking/plugins#819), at 0.4.0 and 1.0.0.

mod clients;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clients::{REFERENCE_DIR, assert_links_cleared, assert_rules_cleared, files, leases};
use netns_fixtures::{EchoServer, Netns, TestHost, bin_dir, ping, tcp_echo};
use serde_json::{Value, json};

const NETWORK: &str = "cninet";
const BRIDGE: &str = "cnitool0";
const SUBNET: &str = "10.66.0.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 50);
const SRV_MAC: &str = "92:54:45:54:48:53";
const HOST_PORT: u16 = 18080;
const CTR_PORT: u16 = 8080;
const PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "tuning"];

#[test]
fn cnitool_drives_tether_plugins_at_0_3_1() {
    scenario(&bin_dir(), "0.3.1");
}

#[test]
fn cnitool_drives_tether_plugins_at_0_4_0() {
    scenario(&bin_dir(), "0.4.0");
}

#[test]
fn cnitool_drives_tether_plugins_at_1_0_0() {
    scenario(&bin_dir(), "1.0.0");
}

#[test]
fn cnitool_drives_reference_plugins_at_0_3_1() {
    scenario(Path::new(REFERENCE_DIR), "0.3.1");
}

#[test]
fn cnitool_drives_reference_plugins_at_0_4_0() {
    scenario(Path::new(REFERENCE_DIR), "0.4.0");
}

#[test]
fn cnitool_drives_reference_plugins_at_1_0_0() {
    scenario(Path::new(REFERENCE_DIR), "1.0.0");
}

fn scenario(plugin_dir: &Path, version: &str) {
    clients::require_plugins(plugin_dir, PLUGINS);
    let reference = plugin_dir == Path::new(REFERENCE_DIR);
    let t = Tool::new(plugin_dir, version);
    let outside = t.host.add_outside();
    let (srv_ns, cli_ns) = (t.host.container(), t.host.container());
    let links_before = clients::links(&t.host);
    let rules_before = clients::rules(&t.host);

    let srv_args = format!("IgnoreUnknown=1;IP={SRV_IP};MAC={SRV_MAC}");
    let srv_caps = json!({"portMappings": [
        {"hostPort": HOST_PORT, "containerPort": CTR_PORT, "protocol": "tcp"}
    ]});
    let srv = t.add(&srv_ns, Some(&srv_args), Some(&srv_caps));
    assert_eq!(srv.ip, IpAddr::V4(SRV_IP), "CNI_ARGS IP=");
    assert_eq!(srv.mac, SRV_MAC, "CNI_ARGS MAC=");
    let cli = t.add(&cli_ns, None, None);
    assert_ne!(cli.ip, srv.ip);
    let cache = t.cached(&srv_ns);
    assert_eq!(cache["capabilityArgs"], srv_caps, "{cache:#}");
    let cached_args: Vec<String> = cache["cniArgs"]
        .as_array()
        .unwrap_or_else(|| panic!("no cniArgs cached: {cache:#}"))
        .iter()
        .map(|kv| format!("{}={}", kv[0].as_str().unwrap(), kv[1].as_str().unwrap()))
        .collect();
    assert_eq!(cached_args.join(";"), srv_args, "{cache:#}");

    // Real packets: across the bridge, through the published port from outside, and out
    // through NAT.
    // Retried, and the retry is logged: with our bridge (never with the reference's, in 195
    // runs each) the first echo right after ADD goes unanswered in about 1 run of 20. In those
    // runs the host veth's operstate is still UNKNOWN when ADD returns (the kernel's linkwatch
    // has not yet turned the carrier into a forwarding bridge port); an open bridge finding.
    let answered = (1..=3).find(|_| ping(&cli_ns, GATEWAY.into()));
    assert!(
        answered.is_some(),
        "cli -> gateway {GATEWAY}: 3 pings unanswered"
    );
    if answered != Some(1) {
        eprintln!(
            "cli -> gateway ({}, {version}): answered at ping {answered:?}",
            plugin_dir.display()
        );
    }
    let server = EchoServer::tcp(
        &srv_ns,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), CTR_PORT),
    );
    let echo = |ns: &Netns, to: SocketAddr| {
        tcp_echo(ns, to, b"tether cnitool").unwrap_or_else(|e| panic!("tcp to {to}: {e}"))
    };
    assert_eq!(
        echo(&cli_ns, SocketAddr::new(srv.ip, CTR_PORT)),
        b"tether cnitool"
    );
    let published = SocketAddr::new(outside.host_v4.into(), HOST_PORT);
    assert_eq!(
        echo(&outside.ns, published),
        b"tether cnitool",
        "outside -> {published}"
    );
    assert_eq!(
        server.peers().last().map(|p| p.ip()),
        Some(outside.outside_v4.into()),
        "the published port keeps the client's address"
    );
    let far = EchoServer::tcp(
        &outside.ns,
        SocketAddr::new(outside.outside_v4.into(), 9000),
    );
    assert_eq!(echo(&srv_ns, far.addr()), b"tether cnitool");
    assert_eq!(
        far.peers(),
        [SocketAddr::new(
            outside.host_v4.into(),
            far.peers()[0].port()
        )],
        "the outside must see the host's address (masquerade)"
    );
    drop((server, far));

    // A client hands CHECK and DEL the same arguments as ADD (libcni caches them, but 1.1
    // does not reuse them).
    let attachments = [
        ("srv", &srv_ns, Some(srv_args.as_str()), Some(&srv_caps)),
        ("cli", &cli_ns, None, None),
    ];
    for (name, ns, args, caps) in attachments {
        let mapped = caps.is_some();
        let out = t.run("check", ns, args, caps);
        if version == "0.3.1" {
            // libcni itself refuses; no plugin runs.
            assert!(
                !out.status.success()
                    && stderr(&out).contains("does not support the CHECK command"),
                "CHECK {name} at 0.3.1: {}",
                describe(&out)
            );
        } else if reference && mapped {
            // plugins#819: the reference portmap's CHECK looks for the IPv6 DNAT chain too.
            assert!(
                !out.status.success() && stderr(&out).contains("could not check ipv6 dnat"),
                "the reference portmap's CHECK of an IPv4-only container with port mappings \
                 failed before (plugins#819); did it change? {}",
                describe(&out)
            );
        } else {
            assert!(out.status.success(), "CHECK {name}: {}", describe(&out));
        }
    }

    for (_, ns, args, caps) in attachments {
        t.ok("del", ns, args, caps);
        assert!(
            !t.cache_file(ns).exists(),
            "libcni keeps its cache after DEL"
        );
        // Idempotent, now without a cached result to hand the plugins.
        t.ok("del", ns, args, caps);
    }

    assert_links_cleared(&links_before, &clients::links(&t.host), BRIDGE);
    let forbidden = [
        t.container_id(&srv_ns),
        t.container_id(&cli_ns),
        format!("{HOST_PORT}"),
        BRIDGE.to_string(),
    ];
    let rules_after = clients::rules(&t.host);
    assert_rules_cleared(&rules_before, &rules_after, "10.66.0.", &forbidden);
    let left = leases(&t.host.ipam_dir());
    assert!(left.is_empty(), "leases left: {left:?}");
    let cached = files(&t.cache_dir());
    assert!(cached.is_empty(), "libcni cache left: {cached:?}");
}

/// One attachment as the ADD result, libcni's cache and the container's eth0 all tell it.
#[derive(Debug, PartialEq, Eq)]
struct Attachment {
    ip: IpAddr,
    mac: String,
}

/// cnitool in a throwaway host, with its conflist dir, plugin dir and result cache.
struct Tool {
    host: TestHost,
    plugin_dir: PathBuf,
    version: String,
}

impl Tool {
    fn new(plugin_dir: &Path, version: &str) -> Tool {
        let host = TestHost::new();
        let mut bridge = clients::masquerading_gateway_bridge(BRIDGE, SUBNET);
        bridge["ipam"]["dataDir"] = json!(host.ipam_dir());
        let conflist = json!({
            "cniVersion": version,
            "name": NETWORK,
            "plugins": [
                bridge,
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "tuning"},
            ],
        });
        let dir = host.dir().join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("10-cninet.conflist"), conflist.to_string()).unwrap();
        Tool {
            host,
            plugin_dir: plugin_dir.to_path_buf(),
            version: version.to_string(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.host.dir().join("cache")
    }

    /// `cnitool CMD cninet NETNS` inside the host, with `CNI_ARGS` / `CAP_ARGS` if given.
    fn run(&self, cmd: &str, ns: &Netns, args: Option<&str>, caps: Option<&Value>) -> Output {
        let mut c = self.host.command(cnitool());
        c.args([cmd, NETWORK])
            .arg(ns.path())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", self.host.dir().join("net.d"))
            .env("CNI_PATH", &self.plugin_dir)
            .env("CNI_CACHE_DIR", self.cache_dir());
        if let Some(a) = args {
            c.env("CNI_ARGS", a);
        }
        if let Some(caps) = caps {
            c.env("CAP_ARGS", caps.to_string());
        }
        c.output().unwrap_or_else(|e| panic!("run cnitool: {e}"))
    }

    #[track_caller]
    fn ok(&self, cmd: &str, ns: &Netns, args: Option<&str>, caps: Option<&Value>) -> String {
        let out = self.run(cmd, ns, args, caps);
        assert!(
            out.status.success(),
            "cnitool {cmd} ({} plugins, {}): {}",
            self.plugin_dir.display(),
            self.version,
            describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// ADD, then checks the printed result against libcni's cache and the container's eth0.
    #[track_caller]
    fn add(&self, ns: &Netns, args: Option<&str>, caps: Option<&Value>) -> Attachment {
        let printed: Value = serde_json::from_str(&self.ok("add", ns, args, caps))
            .unwrap_or_else(|e| panic!("cnitool add printed no JSON: {e}"));
        assert_eq!(printed["cniVersion"], self.version, "{printed:#}");
        let cache = self.cached(ns);
        assert_eq!(cache["result"], printed, "libcni cached another result");
        assert_eq!(cache["networkName"], NETWORK, "{cache:#}");
        assert_eq!(cache["ifName"], "eth0", "{cache:#}");

        let ips = printed["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "{printed:#}");
        let (ip, prefix) = ips[0]["address"].as_str().unwrap().split_once('/').unwrap();
        assert_eq!(prefix, "24", "{printed:#}");
        assert_eq!(ips[0]["gateway"], GATEWAY.to_string(), "{printed:#}");
        let ifc = &printed["interfaces"][ips[0]["interface"].as_u64().unwrap() as usize];
        assert_eq!(ifc["name"], "eth0", "{printed:#}");
        let got = Attachment {
            ip: ip.parse().unwrap(),
            mac: ifc["mac"].as_str().unwrap().to_string(),
        };

        let eth0 = &ns.ip_json(&["addr", "show", "dev", "eth0"])[0];
        let v4: Vec<&Value> = eth0["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(v4.len(), 1, "{eth0:#}");
        let seen = Attachment {
            ip: v4[0]["local"].as_str().unwrap().parse().unwrap(),
            mac: eth0["address"].as_str().unwrap().to_string(),
        };
        assert_eq!(got, seen, "the result vs the container's eth0");
        got
    }

    /// The container id cnitool derives from the netns path: upstream's rule, kept in our
    /// main.go (`cnitool-` + the first 10 bytes of the path's SHA-512, in hex).
    fn container_id(&self, ns: &Netns) -> String {
        use std::io::Write;
        let mut child = Command::new("sha512sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("sha512sum: {e}"));
        let path = ns.path().display().to_string();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(path.as_bytes())
            .unwrap();
        let hex = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        format!("cnitool-{}", &hex[..20])
    }

    fn cache_file(&self, ns: &Netns) -> PathBuf {
        let id = self.container_id(ns);
        self.cache_dir()
            .join("results")
            .join(format!("{NETWORK}-{id}-eth0"))
    }

    #[track_caller]
    fn cached(&self, ns: &Netns) -> Value {
        let path = self.cache_file(ns);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("libcni result cache {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    )
}

/// Builds cnitool once per test run into `target/cnitool/cnitool`, offline, with Debian's Go
/// and libcni (`apt-get install golang-go golang-github-appc-cni-dev`).
fn cnitool() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cnitool");
        let gopath = Path::new("/usr/share/gocode");
        assert!(
            gopath
                .join("src/github.com/containernetworking/cni/libcni")
                .is_dir(),
            "libcni is missing: apt-get install golang-github-appc-cni-dev"
        );
        let out_dir = bin_dir().parent().unwrap().join("cnitool");
        std::fs::create_dir_all(&out_dir).unwrap();
        let bin = out_dir.join("cnitool");
        // Built next to its final name and renamed: another test binary may be running it.
        let tmp = out_dir.join(format!("cnitool.{}", std::process::id()));
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", out_dir.join("gocache"))
            .env("CGO_ENABLED", "0")
            .output()
            .unwrap_or_else(|e| panic!("go (apt-get install golang-go): {e}"));
        assert!(
            out.status.success(),
            "building cnitool failed: {}",
            describe(&out)
        );
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
}
