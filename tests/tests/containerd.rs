//! A real runtime as the client: Debian's containerd 1.6 with `ctr run --cni`. ctr (not
//! containerd) runs CNI through go-cni's defaults: the first conflist in `/etc/cni/net.d`,
//! plugins from `/opt/cni/bin`, ifname `eth0`, container id `<namespace>-<id>`, `CNI_NETNS`
//! `/proc/<pid>/ns/net` on ADD and **empty on DEL**, no capability args, no `CNI_ARGS`, and a
//! DEL only when `ctr run` was not detached. The same scenarios run with Debian's reference
//! plugins and with ours (`target/<profile>`).
//!
//! ```text
//!  test process ── unshare --mount --pid ── bash (pid 1 of the sandbox, lifeline on stdin)
//!                  in the throwaway host       ├── containerd --config <tmp>/config.toml
//!                  netns (TestHost)            │     └── containerd-shim-runc-v2 ── runc ── task
//!                                              └── (nsenter) ctr -a <tmp>/containerd.sock ...
//!  private mounts: /run, /var/lib (libcni cache, host-local leases), /opt (tmpfs)
//!                  /opt/cni/bin  <- bind of the plugin dir under test
//!                  /etc/cni/net.d <- bind of <tmp>/net.d (the test's conflist)
//!                  /usr/lib/cni   <- empty tmpfs when testing ours (no fallback possible)
//! ```
//!
//! containerd gets a private root, state dir and sockets in the test's temp dir, the CRI plugin
//! (the only one that listens on TCP) and every snapshotter but `native` disabled (plain copies
//! under the private root: no overlayfs, no mounts outside the sandbox), and a unique
//! containerd namespace per test, so its cgroups are `/<namespace>/<id>`, removed at the end.
//! The image is a busybox-static root filesystem packed by the test as a docker archive and
//! `ctr image import`ed (no registry needed). When the test ends or panics, the sandbox's pid 1
//! stops containerd by its pid and exits; the kernel then kills what is left of the pid
//! namespace (shims, containers), and the private mounts go with the mount namespace.
//!
//! Scenarios: two containers (bridge, gateway, NAT to an outside namespace; `ctr task kill -s
//! 9` then delete, and a plain exit with `--rm`); a detached container, which ctr never DELs,
//! and the DEL its user must run instead; ten in parallel; a static port mapping (ctr has no
//! `-p`); a broken conflist. Each ends with nothing left: links but the bridge, rules but the
//! shared chains, leases, libcni's cached results.
//!
//! Known reference failures, asserted so the test notices when they change: the reference
//! bridge leaks its per-container masquerade chain (`CNI-<hash>`, its rules and its
//! `POSTROUTING` jump) on every DEL with an empty `CNI_NETNS`, i.e. on every ctr DEL
//! (containernetworking/plugins#810); and when IPAM fails it leaves the bridge and the
//! container's veth it made before asking (the veth goes with the container's namespace).

mod clients;
#[path = "containerd/image.rs"]
mod image;
#[path = "containerd/sandbox.rs"]
mod sandbox;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use clients::{REFERENCE_DIR, assert_links_cleared, rules_left};
use netns_fixtures::bin_dir;
use sandbox::{Running, Sandbox};
use serde_json::{Value, json};

const PLUGINS: &[&str] = &["bridge", "host-local", "portmap"];
const NETWORK: &str = "ctrnet";
const BRIDGE: &str = "ctr0";
const SUBNET: &str = "10.77.0.0/24";
const SUBNET_PREFIX: &str = "10.77.0.";
const GATEWAY: &str = "10.77.0.1";
const IMAGE: &str = "localhost/tether-busybox:latest";
const PAGE: &str = "tether containerd drop-in\n";
const OUTSIDE_PAGE: &str = "hello from the outside\n";
const CTR_PORT: u16 = 8080;
const HOST_PORT: u16 = 18080;
const OUTSIDE_PORT: u16 = 9000;
/// Up to three echoes to the gateway from inside a container, one second each: with our bridge
/// the first one right after ADD is sometimes lost (see cnitool.rs).
const PING_GATEWAY: &str = "n=0; until ping -c1 -W1 10.77.0.1 >/dev/null; do \
                            n=$((n+1)); [ $n -lt 3 ] || exit 1; done";
/// Any single ctr command; the whole test stays far below.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn containerd_runs_tether_containers_that_reach_each_other_and_the_outside() {
    lifecycle(&bin_dir());
}

#[test]
fn containerd_runs_reference_containers_that_reach_each_other_and_the_outside() {
    lifecycle(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_detached_tether_container_needs_the_users_del() {
    detached(&bin_dir());
}

#[test]
fn containerd_detached_reference_container_needs_the_users_del() {
    detached(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_runs_ten_tether_containers_in_parallel() {
    parallel(&bin_dir());
}

#[test]
fn containerd_runs_ten_reference_containers_in_parallel() {
    parallel(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_publishes_a_static_port_mapping_with_tether_portmap() {
    static_port(&bin_dir());
}

#[test]
fn containerd_publishes_a_static_port_mapping_with_reference_portmap() {
    static_port(Path::new(REFERENCE_DIR));
}

#[test]
fn containerd_with_a_broken_tether_conflist_fails_cleanly() {
    broken(&bin_dir());
}

#[test]
fn containerd_with_a_broken_reference_conflist_fails_cleanly() {
    broken(Path::new(REFERENCE_DIR));
}

/// The conflist ctr reads: bridge + host-local (default data dir, in the sandbox's /var/lib),
/// then `extra` plugins.
fn conflist(extra: Vec<Value>) -> Value {
    let mut plugins = vec![clients::masquerading_gateway_bridge(BRIDGE, SUBNET)];
    plugins.extend(extra);
    json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins})
}

/// A server run in the foreground (ctr waits for it) and killed with `ctr task kill -s 9`, then
/// deleted; a client run with `--rm` that pings the gateway, fetches the server's page across
/// the bridge and a page from the outside through NAT, then exits by itself.
fn lifecycle(plugin_dir: &Path) {
    let sb = Sandbox::new(plugin_dir, &conflist(vec![]));
    let before = sb.state();

    let srv = sb.spawn_run("srv", &format!("httpd -f -p {CTR_PORT} -h /www"));
    let srv_ip = sb.wait_attached("srv");
    let outside = sb.outside_httpd();
    let cli = sb.ctr(&[
        "run",
        "--cni",
        "--rm",
        IMAGE,
        "cli",
        "sh",
        "-c",
        &format!(
            "set -e; ip -4 -o addr show eth0; {PING_GATEWAY}; \
             echo gateway ok; timeout 10 wget -q -O - http://{srv_ip}:{CTR_PORT}/; \
             timeout 10 wget -q -O - http://{}:{OUTSIDE_PORT}/",
            sb.outside.outside_v4
        ),
    ]);
    assert!(cli.contains(&format!("inet {SUBNET_PREFIX}")), "{cli}");
    assert!(
        cli.ends_with(&format!("gateway ok\n{PAGE}{OUTSIDE_PAGE}")),
        "cli saw: {cli}"
    );
    let cli_ip = cli
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(cli_ip, srv_ip);
    let peers = outside.peers();
    assert_eq!(
        peers,
        [sb.outside.host_v4.to_string()],
        "the outside must see the host's address (masquerade), not {cli_ip}"
    );

    sb.ctr(&["task", "kill", "-s", "9", "srv"]);
    let status = srv.wait();
    assert_eq!(
        status.code,
        Some(137),
        "ctr run srv after SIGKILL: {status}"
    );
    let _ = sb.ctr_out(&["task", "delete", "srv"]);
    sb.ctr(&["container", "delete", "srv"]);
    assert_eq!(sb.ctr(&["container", "ls", "-q"]), "");

    sb.assert_cleared(&before, &["srv", "cli"]);
}

/// `ctr run -d --cni` never sends a DEL: after `ctr task kill` and `ctr container delete` the
/// lease and libcni's cached result (and with the reference its masquerade chain) stay. What a
/// user must do, shown here: run the conflist's DEL for container id `<namespace>-<id>`,
/// ifname `eth0`, empty netns, plugins in reverse order (as ctr would have), and remove libcni's
/// cache file `/var/lib/cni/results/<network>-<namespace>-<id>-eth0`.
fn detached(plugin_dir: &Path) {
    let list = conflist(vec![]);
    let sb = Sandbox::new(plugin_dir, &list);
    let before = sb.state();
    sb.ctr(&["run", "-d", "--cni", IMAGE, "bg", "sleep", "600"]);
    sb.wait_attached("bg");
    sb.ctr(&["task", "kill", "-s", "9", "bg"]);
    wait_for(|| sb.ctr(&["task", "ls"]).contains("STOPPED"));
    sb.ctr(&["task", "delete", "bg"]);
    sb.ctr(&["container", "delete", "bg"]);
    let left = sb.state();
    assert!(
        left.leases.iter().any(|l| l.starts_with(SUBNET_PREFIX)),
        "ctr sent a DEL for a detached container? {:?}",
        left.leases
    );
    assert_eq!(left.cache.len(), 1, "{:?}", left.cache);

    // The user's DEL.
    let id = format!("{}-bg", sb.namespace);
    let plugins = list["plugins"].as_array().unwrap();
    for plugin in plugins.iter().rev() {
        let mut conf = plugin.clone();
        conf["name"] = NETWORK.into();
        conf["cniVersion"] = list["cniVersion"].clone();
        let done = sb.in_sandbox_with_stdin(
            &[&format!(
                "/opt/cni/bin/{}",
                plugin["type"].as_str().unwrap()
            )],
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &conf.to_string(),
        );
        assert_eq!(done.code, Some(0), "the user's DEL: {done}");
    }
    std::fs::remove_file(sb.inside(&format!("/var/lib/cni/results/{NETWORK}-{id}-eth0"))).unwrap();
    sb.assert_cleared(&before, &["bg"]);
}

/// Ten `ctr run --cni --rm` at once, each pinging the gateway: ten distinct addresses, and
/// nothing left.
fn parallel(plugin_dir: &Path) {
    let sb = Sandbox::new(plugin_dir, &conflist(vec![]));
    let before = sb.state();
    let ids: Vec<String> = (0..10).map(|i| format!("par{i}")).collect();
    let runs: Vec<Running> = ids
        .iter()
        .map(|id| {
            sb.spawn_run_rm(
                id,
                // The task stays a moment after its last line: ctr 1.6 copies a task's output
                // from a FIFO and, under load, could exit having dropped what the task printed
                // right before it exited (1 run in 3 at load 6 lost the "ok").
                &format!("ip -4 -o addr show eth0; {PING_GATEWAY} && echo ok && sleep 0.5"),
            )
        })
        .collect();
    let mut ips = BTreeSet::new();
    for (id, run) in ids.iter().zip(runs) {
        let done = run.wait();
        assert_eq!(done.code, Some(0), "ctr run {id}: {done}");
        assert!(done.stdout.ends_with("ok\n"), "{id}: {done}");
        let ip = done
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("{id}: no address: {done}"))
            .to_string();
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 10, "addresses: {ips:?}");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sb.assert_cleared(&before, &ids);
}

/// ctr has no `-p`, so the mapping is static: a `runtimeConfig` written into the conflist,
/// which libcni passes through untouched when the plugin declares no capability (ctr sends
/// none). Outside -> host:18080 reaches the container; after the kill, nothing is left.
fn static_port(plugin_dir: &Path) {
    let portmap = json!({
        "type": "portmap",
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": CTR_PORT, "protocol": "tcp"}
        ]},
    });
    let sb = Sandbox::new(plugin_dir, &conflist(vec![portmap]));
    let before = sb.state();
    let srv = sb.spawn_run("web", &format!("httpd -f -p {CTR_PORT} -h /www"));
    sb.wait_attached("web");
    let url = format!("http://{}:{HOST_PORT}/", sb.outside.host_v4);
    let page = sb.outside_wget(&url);
    assert_eq!(page, PAGE, "outside -> {url}");

    sb.ctr(&["task", "kill", "-s", "9", "web"]);
    let status = srv.wait();
    assert_eq!(
        status.code,
        Some(137),
        "ctr run web after SIGKILL: {status}"
    );
    let _ = sb.ctr_out(&["task", "delete", "web"]);
    sb.ctr(&["container", "delete", "web"]);
    sb.assert_cleared(&before, &["web"]);
}

/// A conflist whose first plugin cannot work (an IPAM range that is not a network): `ctr run`
/// fails with the plugin's error and nothing of the attempt is left.
fn broken(plugin_dir: &Path) {
    let mut c = conflist(vec![]);
    c["plugins"][0]["ipam"]["subnet"] = "10.77.0.0/33".into();
    let sb = Sandbox::new(plugin_dir, &c);
    let before = sb.state();
    let run = sb.ctr_out(&["run", "--cni", "--rm", IMAGE, "bad", "true"]);
    assert_ne!(run.code, Some(0), "ctr run with a broken conflist: {run}");
    assert!(
        run.stderr.contains("10.77.0.0/33") || run.stderr.contains("invalid"),
        "the plugin's error should reach the user: {run}"
    );
    // While ctr's half-made task (and so the container's namespace) still exists.
    let during = sb.state();
    let bad = rules_left(&before.rules, &during.rules, SUBNET_PREFIX, &[]);
    assert!(bad.is_empty(), "rules left behind: {bad:#?}");
    assert!(during.leases.is_empty(), "leases left: {:?}", during.leases);
    assert!(
        during.cache.is_empty(),
        "CNI results left: {:?}",
        during.cache
    );
    let added: Vec<&str> = during
        .links
        .difference(&before.links)
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    if sb.plugin_dir == Path::new(REFERENCE_DIR) {
        // The reference makes its bridge and the veth before asking IPAM, and undoes neither
        // when IPAM fails; the veth goes only with the container's namespace.
        assert_eq!(
            added,
            ["bridge", "veth"],
            "the reference left its bridge and veth after a failed ADD before; did that change?"
        );
    } else {
        assert!(added.is_empty(), "a failed ADD left links: {added:?}");
    }
    // ctr leaves the created task behind on a CNI failure; removing it is the user's part.
    sb.ctr(&["task", "delete", "-f", "bad"]);
    sb.ctr(&["container", "delete", "bad"]);
    let allowed = if sb.plugin_dir == Path::new(REFERENCE_DIR) {
        BRIDGE
    } else {
        "-"
    };
    wait_for(|| sb.state().links.difference(&before.links).count() <= 1);
    assert_links_cleared(&before.links, &sb.state().links, allowed);
}

/// Polls `done` for up to 5 s: the kernel removes a dead namespace's links asynchronously.
pub fn wait_for(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
