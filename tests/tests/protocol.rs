//! The protocol list of cni-checklist section 4.1, run against every plugin binary we ship, through
//! the real environment + stdin protocol, inside throwaway namespaces.
//!
//! Each check is a plain function taking the plugin name; `protocol_suite!` instantiates all of
//! them once per plugin, so a failure names both the plugin and the check.

mod common;

use common::*;
use serde_json::{Value, json};

/// VERSION needs nothing but `CNI_COMMAND`: no stdin, no other variable.
fn version_lists_every_version(p: &'static str) {
    let host = TestHost::new();
    let out = host.cni(plugin(p)).command("VERSION").run_checked();
    let v = out.ok();
    assert!(
        v["cniVersion"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let listed: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("no supportedVersions: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(listed, VERSIONS, "{p}");
    // libcni's probe: stdin carries a version, dummy values fill the old skel's variables.
    let out = host
        .cni(plugin(p))
        .command("VERSION")
        .env("CNI_NETNS", "dummy")
        .env("CNI_IFNAME", "dummy")
        .env("CNI_PATH", "dummy")
        .stdin(json!({"cniVersion": "0.4.0"}))
        .run_checked();
    assert_eq!(out.ok()["supportedVersions"], v["supportedVersions"]);
}

fn about_text_without_command(p: &'static str) {
    let host = TestHost::new();
    let out = host.cni(plugin(p)).run_checked();
    assert_eq!(out.status, 0, "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains(p), "{out:#?}");
    assert!(
        out.stderr.contains("CNI protocol versions supported"),
        "{out:#?}"
    );
}

fn unknown_command_is_code_4(p: &'static str) {
    let s = Setup::new(p);
    let out = s.cni("FROB").stdin(s.conf("1.0.0")).run_checked();
    let e = out.err();
    assert_eq!(e["code"], 4, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("FROB"), "{e}");
}

/// Asserts a failure with `code` whose message names `needle`.
#[track_caller]
fn expect_err(out: CniOutput, code: u64, needle: &str) {
    let e = out.err();
    assert_eq!(e["code"], code, "{e}");
    let text = format!("{} {}", e["msg"], e["details"]);
    assert!(
        text.contains(needle),
        "error should mention {needle:?}: {e}"
    );
}

fn environment_validation(p: &'static str) {
    let s = Setup::new(p);
    let conf = s.conf("1.0.0");
    let add = || s.cni("ADD").stdin(&conf);

    expect_err(
        add().unset("CNI_CONTAINERID").run_checked(),
        3,
        "CNI_CONTAINERID",
    );
    expect_err(
        add().env("CNI_CONTAINERID", "").run_checked(),
        3,
        "CNI_CONTAINERID",
    );
    for bad in ["../etc", "a/../b", "../", "-x", "a b", "a;b"] {
        expect_err(
            add().env("CNI_CONTAINERID", bad).run_checked(),
            4,
            "CNI_CONTAINERID",
        );
    }
    expect_err(add().unset("CNI_IFNAME").run_checked(), 4, "CNI_IFNAME");
    for bad in ["abcdefghijklmnop", "a/b", ".", "..", "a:b", "a b"] {
        expect_err(add().env("CNI_IFNAME", bad).run_checked(), 4, "CNI_IFNAME");
    }
    expect_err(add().unset("CNI_NETNS").run_checked(), 4, "CNI_NETNS");
    // Several missing at once: every name is reported.
    let e = add()
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .unset("CNI_CONTAINERID")
        .run_checked()
        .err();
    assert_eq!(e["code"], 4, "{e}");
    for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        assert!(e["msg"].as_str().unwrap().contains(name), "{name}: {e}");
    }
    // CHECK needs the same variables as ADD.
    let check_conf = s.conf("1.0.0");
    expect_err(
        s.cni("CHECK")
            .stdin(&check_conf)
            .unset("CNI_NETNS")
            .run_checked(),
        4,
        "CNI_NETNS",
    );
    // DEL does not need CNI_NETNS, but needs the other two.
    expect_err(
        s.cni("DEL").stdin(&conf).unset("CNI_IFNAME").run_checked(),
        4,
        "CNI_IFNAME",
    );
}

fn netns_must_be_a_namespace(p: &'static str) {
    let s = Setup::new(p);
    let conf = s.conf("1.0.0");
    let file = not_a_netns();
    let path = file.path().display().to_string();
    for cmd in ["ADD", "CHECK"] {
        expect_err(
            s.cni(cmd)
                .stdin(&conf)
                .env("CNI_NETNS", &path)
                .run_checked(),
            4,
            &path,
        );
        expect_err(
            s.cni(cmd)
                .stdin(&conf)
                .env("CNI_NETNS", MISSING_NETNS)
                .run_checked(),
            3,
            MISSING_NETNS,
        );
        // A directory is not a namespace either (procfs magic alone must not pass).
        expect_err(
            s.cni(cmd)
                .stdin(&conf)
                .env("CNI_NETNS", "/proc/self")
                .run_checked(),
            4,
            "/proc/self",
        );
    }
}

fn config_errors(p: &'static str) {
    let s = Setup::new(p);
    let add = || s.cni("ADD");
    expect_err(add().stdin_bytes(b"{not json").run_checked(), 6, "");
    expect_err(add().stdin_bytes(b"").run_checked(), 6, "");
    expect_err(add().stdin_bytes(b"[1,2]").run_checked(), 6, "");

    let mut conf = s.conf("1.0.0");
    conf.as_object_mut().unwrap().remove("name");
    expect_err(add().stdin(&conf).run_checked(), 7, "name");

    let mut conf = s.conf("1.0.0");
    conf["cniVersion"] = "9.9.9".into();
    let e = add().stdin(&conf).run_checked().err();
    assert_eq!(e["code"], 1, "{e}");
    let details = e["details"].as_str().unwrap_or_default();
    for v in VERSIONS {
        assert!(details.contains(v), "details must list {v}: {e}");
    }
    assert!(e["msg"].as_str().unwrap().contains("9.9.9"), "{e}");
}

/// Checks that `r` is a well-formed result of exactly `version`'s shape and returns it parsed.
#[track_caller]
fn assert_result_shape(p: &str, version: &str, r: &Value) -> cni::CniResult {
    assert_eq!(r["cniVersion"], version, "{p}: {r}");
    if cni::version::is_legacy_result(version) {
        for key in ["ips", "interfaces", "routes"] {
            assert!(
                r.get(key).is_none(),
                "{p} {version}: no {key} before 0.3.0: {r}"
            );
        }
        let ip4 = r["ip4"]["ip"].as_str();
        assert!(ip4.is_some(), "{p} {version}: ip4.ip expected: {r}");
    } else {
        assert!(r.get("ip4").is_none() && r.get("ip6").is_none(), "{r}");
        let ips = r["ips"]
            .as_array()
            .unwrap_or_else(|| panic!("{p}: no ips: {r}"));
        assert!(!ips.is_empty(), "{r}");
        let with_version = !cni::version::at_least(version, "1.0.0");
        for ip in ips {
            let addr: cni::result::IpConfig = serde_json::from_value(ip.clone()).unwrap();
            if with_version {
                let fam = if addr.address.is_ipv4() { "4" } else { "6" };
                assert_eq!(ip["version"], fam, "{p} {version}: {r}");
            } else {
                assert!(ip.get("version").is_none(), "{p} {version}: {r}");
            }
            if let Some(i) = ip["interface"].as_u64() {
                let n = r["interfaces"].as_array().map_or(0, Vec::len);
                assert!((i as usize) < n, "{p}: interface index out of range: {r}");
            }
        }
    }
    cni::CniResult::from_json(r).unwrap_or_else(|e| panic!("{p} {version}: {e:?}: {r}"))
}

fn add_result_in_every_version(p: &'static str) {
    for v in VERSIONS {
        let s = Setup::new(p);
        let r = s.add(v);
        let parsed = assert_result_shape(p, v, &r);
        assert!(
            parsed.ips.iter().any(|ip| ip.address.is_ipv4()),
            "{p} {v}: {r}"
        );
        s.cni("DEL").stdin(s.conf(v)).run_checked().ok_empty();
    }
}

fn check_needs_040(p: &'static str) {
    let s = Setup::new(p);
    for v in VERSIONS
        .iter()
        .filter(|v| !cni::version::at_least(v, "0.4.0"))
    {
        let out = s.cni("CHECK").stdin(s.conf(v)).run_checked();
        expect_err(out, 1, "CHECK");
    }
}

fn check_passes_after_add(p: &'static str) {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let s = Setup::new(p);
        let r = s.add(v);
        let mut conf = s.conf(v);
        conf["prevResult"] = r;
        s.cni("CHECK").stdin(&conf).run_checked().ok_empty();
        s.cni("DEL").stdin(&conf).run_checked().ok_empty();
    }
}

fn status_and_gc_need_110(p: &'static str) {
    let s = Setup::new(p);
    for v in VERSIONS
        .iter()
        .filter(|v| !cni::version::at_least(v, "1.1.0"))
    {
        let status = s
            .bare()
            .command("STATUS")
            .env("CNI_PATH", bin_dir())
            .stdin(s.conf(v))
            .run_checked();
        expect_err(status, 1, "STATUS");
        let mut conf = s.conf(v);
        conf["cni.dev/valid-attachments"] = json!([]);
        let gc = s
            .bare()
            .command("GC")
            .env("CNI_PATH", bin_dir())
            .stdin(&conf)
            .run_checked();
        expect_err(gc, 1, "GC");
    }
    // At 1.1.0 a healthy plugin answers STATUS and GC with success and no output.
    s.bare()
        .command("STATUS")
        .env("CNI_PATH", bin_dir())
        .stdin(s.conf("1.1.0"))
        .run_checked()
        .ok_empty();
    let mut conf = s.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    s.bare()
        .command("GC")
        .env("CNI_PATH", bin_dir())
        .stdin(&conf)
        .run_checked()
        .ok_empty();
}

/// DEL succeeds twice, without CNI_NETNS, and with a vanished namespace path.
fn del_is_tolerant(p: &'static str) {
    let s = Setup::new(p);
    let conf = s.conf("1.0.0");
    s.add("1.0.0");
    s.cni("DEL").stdin(&conf).run_checked().ok_empty();
    s.cni("DEL").stdin(&conf).run_checked().ok_empty();
    s.cni("DEL")
        .stdin(&conf)
        .unset("CNI_NETNS")
        .run_checked()
        .ok_empty();
    s.cni("DEL")
        .stdin(&conf)
        .env("CNI_NETNS", "")
        .run_checked()
        .ok_empty();
    s.cni("DEL")
        .stdin(&conf)
        .env("CNI_NETNS", MISSING_NETNS)
        .run_checked()
        .ok_empty();
    // A container the plugin never saw.
    s.cni("DEL")
        .stdin(&conf)
        .env("CNI_CONTAINERID", "never-added")
        .run_checked()
        .ok_empty();
}

/// With debug logging on, logs go to stderr and stdout still holds exactly the result (the
/// `Cni::run` helper parses every stdout as one JSON document).
fn logs_never_reach_stdout(p: &'static str) {
    let s = Setup::new(p);
    let out = s.cni("ADD").stdin(s.conf("1.1.0")).run_checked();
    let r = out.ok();
    assert!(
        !out.stderr.is_empty(),
        "TETHER_LOG=debug should log something on stderr, or this test proves nothing"
    );
    assert_eq!(r["cniVersion"], "1.1.0");
    let out = s.cni("DEL").stdin(s.conf("1.1.0")).run_checked();
    out.ok_empty();
}

macro_rules! protocol_suite {
    ($($module:ident => $plugin:literal),* $(,)?) => {$(
        mod $module {
            #[test] fn version_lists_every_version() { super::version_lists_every_version($plugin) }
            #[test] fn about_text_without_command() { super::about_text_without_command($plugin) }
            #[test] fn unknown_command_is_code_4() { super::unknown_command_is_code_4($plugin) }
            #[test] fn environment_validation() { super::environment_validation($plugin) }
            #[test] fn netns_must_be_a_namespace() { super::netns_must_be_a_namespace($plugin) }
            #[test] fn config_errors() { super::config_errors($plugin) }
            #[test] fn add_result_in_every_version() { super::add_result_in_every_version($plugin) }
            #[test] fn check_needs_040() { super::check_needs_040($plugin) }
            #[test] fn check_passes_after_add() { super::check_passes_after_add($plugin) }
            #[test] fn status_and_gc_need_110() { super::status_and_gc_need_110($plugin) }
            #[test] fn del_is_tolerant() { super::del_is_tolerant($plugin) }
            #[test] fn logs_never_reach_stdout() { super::logs_never_reach_stdout($plugin) }
        }
    )*};
}

protocol_suite! {
    loopback => "loopback",
    none => "none",
    host => "host",
    container => "container",
    bridge => "bridge",
    host_local => "host-local",
}

/// Keeps the macro's plugin list and the shared list in step.
#[test]
fn suite_covers_every_plugin() {
    let covered = [
        "loopback",
        "none",
        "host",
        "container",
        "bridge",
        "host-local",
    ];
    assert_eq!(covered, PLUGINS);
}
