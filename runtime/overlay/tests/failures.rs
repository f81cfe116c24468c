//! What the overlay does when agents die, etcd goes away, or many hosts start at once.

mod cluster;

use cluster::{Cluster, wait_for};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[test]
fn a_sigkilled_agent_expires_after_its_ttl_and_every_peer_drops_its_entries() {
    let mut c = Cluster::new(3, 11, 2);
    c.init("10.210.0.0/16", &["--vni", "11"]);
    for i in 0..3 {
        c.start_agent(i);
        c.attach_container(i);
    }
    for i in 0..3 {
        c.wait_routes(i, 2);
    }
    c.wait_full_mesh(&[0, 1, 2]);
    let dead = c.wait_lease(2).subnet;
    let killed = Instant::now();
    c.stop_agent(2, libc::SIGKILL);
    // Nothing happens before the TTL (2 s) runs out; then both peers drop route, neighbour, FDB.
    for i in 0..2 {
        c.wait_routes(i, 1);
        wait_for(
            Duration::from_secs(2),
            "peers.json without the dead host",
            || {
                let peers = c.hosts[i].state().read_peers().unwrap();
                peers.iter().all(|p| p.subnet != dead).then_some(())
            },
        );
        let neigh = c.hosts[i].ns.sh("ip", &["neigh", "show", "dev", "tvx-11"]);
        let fdb = c.hosts[i]
            .ns
            .sh("bridge", &["fdb", "show", "dev", "tvx-11"]);
        assert_eq!(neigh.lines().count(), 1, "{neigh}");
        assert_eq!(fdb.lines().count(), 1, "{fdb}");
        assert!(!fdb.contains("192.168.77.12"), "{fdb}");
    }
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "dropped before the TTL: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "TTL 2 s but took {took:?}");
    assert!(c.ping(0, 1), "the survivors still talk");
    // The killed agent left its device and files behind; started again, it takes back the
    // subnet of its lease.json (free again) and cleans up on SIGTERM like any other.
    c.start_agent(2);
    wait_for(Duration::from_secs(10), "same subnet again", || {
        let l = c.hosts[2].state().read_lease().ok().flatten()?;
        (l.agent_pid == c.hosts[2].agent_pid().unwrap()).then_some(())
    });
    assert_eq!(c.wait_lease(2).subnet, dead);
    c.wait_full_mesh(&[0, 1, 2]);
    c.teardown_and_assert_clean();
}

#[test]
fn an_agent_restarted_before_its_ttl_keeps_its_subnet_and_no_peer_loses_its_entries() {
    let mut c = Cluster::new(2, 12, 6);
    c.init("10.211.0.0/16", &["--vni", "12"]);
    c.two_hosts_meshed();
    let before = c.wait_lease(1).subnet;
    c.stop_agent(1, libc::SIGKILL);
    c.start_agent(1);
    wait_for(
        Duration::from_secs(10),
        "the new agent's lease file",
        || {
            let l = c.hosts[1].state().read_lease().ok().flatten()?;
            (l.agent_pid == c.hosts[1].agent_pid().unwrap()).then_some(l)
        },
    );
    assert_eq!(
        c.wait_lease(1).subnet,
        before,
        "same subnet after the restart"
    );
    // Past the old lease's TTL: host 0 never dropped the route, traffic never stopped.
    let end = Instant::now() + Duration::from_secs(7);
    while Instant::now() < end {
        assert_eq!(c.overlay_routes(0).len(), 1, "host 0 kept the route");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.ping(0, 1) && c.ping(1, 0));
    let keys: Vec<_> = c
        .keys()
        .into_iter()
        .filter(|k| k.contains("/subnets/"))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        !c.hosts[0].log_text().contains("peer left"),
        "{}",
        c.hosts[0].log_text()
    );
    c.teardown_and_assert_clean();
}

#[test]
fn with_etcd_stopped_traffic_flows_agents_retry_and_resync_and_a_host_that_joined_meanwhile_becomes_reachable()
 {
    let mut c = Cluster::new(3, 13, 5);
    c.init("10.212.0.0/16", &["--vni", "13"]);
    c.two_hosts_meshed();
    c.stop_etcd();
    // Host 2 joins while etcd is down: its agent waits for etcd (--wait-for-etcd).
    c.start_agent_with(2, &["--wait-for-etcd"]);
    // Longer than the TTL: the data plane stays as it was.
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        assert!(
            c.ping(0, 1),
            "traffic between existing containers keeps flowing"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.overlay_routes(0).len(), 1);
    for i in 0..2 {
        let log = c.hosts[i].log_text();
        assert!(log.contains("lost etcd session"), "host {i}: {log}");
        assert!(
            log.contains("etcd unreachable") && log.contains("retrying in"),
            "host {i}: {log}"
        );
        assert!(log.contains(&c.url), "host {i}: {log}");
    }
    assert!(
        c.hosts[2].log_text().contains("--wait-for-etcd: retrying"),
        "{}",
        c.hosts[2].log_text()
    );
    c.start_etcd();
    c.attach_container(2);
    for i in 0..3 {
        c.wait_routes(i, 2);
    }
    c.wait_full_mesh(&[0, 1, 2]);
    for i in 0..2 {
        assert!(
            c.hosts[i].log_text().contains("resynced"),
            "{}",
            c.hosts[i].log_text()
        );
    }
    c.teardown_and_assert_clean();
}

#[test]
fn twenty_agents_started_at_once_lease_twenty_distinct_subnets() {
    let mut c = Cluster::new(20, 14, 10);
    c.init("10.213.0.0/16", &["--vni", "14"]);
    for i in 0..20 {
        c.start_agent(i);
    }
    let subnets: HashSet<_> = (0..20).map(|i| c.wait_lease(i).subnet).collect();
    assert_eq!(subnets.len(), 20, "{subnets:?}");
    let keys: Vec<_> = c
        .keys()
        .into_iter()
        .filter(|k| k.contains("/subnets/"))
        .collect();
    assert_eq!(keys.len(), 20, "{keys:?}");
    for i in 0..20 {
        c.wait_routes(i, 19);
    }
    c.teardown_and_assert_clean();
}

#[test]
fn an_agent_on_a_full_network_fails_with_a_clear_error() {
    let mut c = Cluster::new(3, 15, 10);
    // /29 in /30s: two host subnets.
    c.init("10.214.0.0/29", &["--vni", "15", "--host-prefix", "30"]);
    c.start_agent(0);
    c.start_agent(1);
    c.wait_lease(0);
    c.wait_lease(1);
    let out = c.tether(2, &["agent", "ov", "--etcd", &c.url, "--iface", "eth0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"ov\" is full: all 2 host subnets /30 of 10.214.0.0/29 are leased"),
        "{err}"
    );
    // Its lease was revoked, not left to expire: only the two holders' leases exist.
    let leases = c.etcdctl(&["lease", "list"]);
    let text = String::from_utf8_lossy(&leases.stdout);
    assert!(text.starts_with("found 2 leases"), "{text}");
    c.assert_host_clean(2);
    c.teardown_and_assert_clean();
}
