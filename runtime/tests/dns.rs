//! Name resolution on networks made with `tether network create`: containers resolve each
//! other by `--name` and `--network-alias` through the dnsname plugin's server on the gateway,
//! and `/etc/resolv.conf` comes from the result's `dns`. The built-in `bridge` network has no
//! names, as Docker's default bridge.

mod common;

use common::*;

#[test]
fn containers_on_a_created_network_resolve_each_other_by_name_and_alias() {
    require_plugins(&["dnsname", "tether-dns", "bridge", "host-local"]);
    let env = Env::new();
    let rootfs = busybox_rootfs(env.host.dir());
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/nslookup")).unwrap();
    let r = rootfs.to_str().unwrap();
    env.tether(&["network", "create", "blue", "--subnet", "10.89.9.0/24"])
        .ok();
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.config_dir.join("blue.conflist")).unwrap())
            .unwrap();
    assert_eq!(conf["plugins"][1]["type"], "dnsname", "{conf}");
    env.run_detached(
        "web",
        &["--net=blue", "--network-alias", "db"],
        &["sleep", "60"],
    );
    let web = netns_fixtures::result_ips(&env.inspect("web")["network"]["result"])[0].to_string();
    let run = |args: &[&str]| {
        let mut a = vec!["run", "--rm", "--rootfs", r, "--net=blue", "--"];
        a.extend_from_slice(args);
        env.tether(&a).ok().to_string()
    };
    let resolv = run(&["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "nameserver 10.89.9.1\nsearch dns.tether\n");
    for name in ["web", "db", "web.dns.tether", "db.dns.tether"] {
        let out = run(&["nslookup", name]);
        assert!(out.contains(&web), "nslookup {name}: {out}");
    }
    // The built-in bridge: the host's resolvers, no names.
    let plain = env
        .tether(&[
            "run",
            "--rm",
            "--rootfs",
            r,
            "--",
            "cat",
            "/etc/resolv.conf",
        ])
        .ok()
        .to_string();
    assert!(!plain.contains("dns.tether"), "{plain}");
    env.tether(&["rm", "-f", "web"]).ok();
    // The network's last DEL stopped its server and removed its state.
    assert!(!env.root.join("dns/blue").exists());
    env.tether(&["network", "rm", "blue"]).ok();
    env.assert_clean();
}

#[test]
fn network_create_refuses_a_bad_dns_domain_and_can_do_without_names() {
    let env = Env::new();
    env.tether(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.89.10.0/24",
        "--dns-domain",
        "dns tether",
    ])
    .fails_with("--dns-domain");
    // The built-in bridge has no names: an alias there is a mistake, said before anything runs.
    env.tether(&["run", "--rm", "--network-alias", "x", "--", "true"])
        .fails_with("--network-alias");
    assert!(!env.config_dir.join("blue.conflist").exists());
    env.tether(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.89.10.0/24",
        "--disable-dns",
    ])
    .ok();
    let conf = std::fs::read_to_string(env.config_dir.join("blue.conflist")).unwrap();
    assert!(!conf.contains("dnsname"), "{conf}");
    env.assert_clean();
}
