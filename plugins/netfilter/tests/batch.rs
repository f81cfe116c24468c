//! Batch application, save parsing and the transient-failure retry, against real binaries.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use tether_netfilter::{
    Batch, Error, Family, Rule, SavedTable, Table, Tools, delete_rules_with_comment,
};

#[test]
fn batch_applies_atomically_and_saved_rules_delete_verbatim() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        let before = snapshot_all(&ns, &tools);

        let mut b = Batch::new(Family::V4);
        b.new_chain(Table::Filter, "TETHER-T").unwrap();
        let r = Rule::new()
            .src(net("10.1.0.0/16"))
            .in_iface("br0")
            .unwrap()
            .args(&["-p", "tcp", "--dport", "8080"])
            .unwrap()
            .comment("tether test \"quoted\" x")
            .unwrap()
            .jump("ACCEPT")
            .unwrap();
        b.append(Table::Filter, "TETHER-T", &r).unwrap();
        let j = Rule::new()
            .comment("tether test jump")
            .unwrap()
            .jump("TETHER-T")
            .unwrap();
        b.insert(Table::Filter, "FORWARD", &j).unwrap();
        b.apply(&nf).unwrap();

        let saved = SavedTable::parse(&nf.save(Family::V4, Table::Filter).unwrap(), Table::Filter);
        assert!(saved.has_chain("TETHER-T"), "{backend}: {saved:?}");
        assert_eq!(saved.rules_with_comment("tether test").count(), 2);
        let rule = saved.rules.iter().find(|r| r.chain == "TETHER-T").unwrap();
        assert_eq!(
            rule.comment(),
            Some("tether test \"quoted\" x"),
            "{backend}"
        );
        assert_eq!(rule.value_of("--dport"), Some("8080"));

        // A failing line (the chain is still referenced) rolls back the whole batch.
        let mut bad = Batch::new(Family::V4);
        bad.flush_chain(Table::Filter, "TETHER-T").unwrap();
        bad.delete_chain(Table::Filter, "TETHER-T").unwrap();
        let mid = snapshot_all(&ns, &tools);
        match bad.apply(&nf) {
            Err(Error::Command { input, stderr, .. }) => {
                assert_eq!(input, bad.text());
                assert!(!stderr.is_empty());
            }
            other => panic!("{backend}: expected a command error, got {other:?}"),
        }
        assert_eq!(
            snapshot_all(&ns, &tools),
            mid,
            "{backend}: partial batch applied"
        );

        let mut del = Batch::new(Family::V4);
        assert_eq!(
            delete_rules_with_comment(&mut del, &saved, "tether test"),
            2
        );
        del.delete_chain(Table::Filter, "TETHER-T").unwrap();
        del.apply(&nf).unwrap();
        assert_eq!(snapshot_all(&ns, &tools), before, "{backend}");

        // An empty batch runs nothing and succeeds.
        Batch::new(Family::V6).apply(&nf).unwrap();
    }
}

#[test]
fn a_big_batch_goes_through_the_pipe() {
    // Far more than a 64 KiB pipe buffer, in one exec.
    let ns = ns();
    let tools = Tools::nft();
    let nf = nf(&ns, &tools);
    let mut b = Batch::new(Family::V4);
    for i in 0..2000 {
        let chain = format!("TETHER-BIG{i}");
        b.new_chain(Table::Nat, &chain).unwrap();
        let r = Rule::new()
            .dst(net(&format!("10.{}.{}.0/24", i / 250, i % 250)))
            .comment(&format!("tether padding padding padding padding {i}"))
            .unwrap()
            .jump("ACCEPT")
            .unwrap();
        b.append(Table::Nat, &chain, &r).unwrap();
    }
    assert!(b.text().len() > 200_000);
    b.apply(&nf).unwrap();
    let saved = SavedTable::parse(&nf.save(Family::V4, Table::Nat).unwrap(), Table::Nat);
    assert_eq!(saved.rules.len(), 2000);
}

/// A fake `iptables-restore` that fails with `message` for the first `failures` calls, then runs
/// the real one. Counts its calls in `dir/count`.
fn flaky_restore(dir: &Path, failures: u32, message: &str) -> PathBuf {
    wrapper(dir, Path::new("iptables-nft-restore"), failures, message)
}

fn one_chain() -> Batch {
    let mut b = Batch::new(Family::V4);
    b.new_chain(Table::Nat, "TETHER-RETRY").unwrap();
    b
}

#[test]
fn transient_failures_are_retried_a_bounded_number_of_times() {
    let eagain = "Resource temporarily unavailable";

    // Two EAGAINs, then success.
    let dir = tempfile::tempdir().unwrap();
    let ns = ns();
    let tools = Tools {
        v4_restore: flaky_restore(dir.path(), 2, eagain),
        ..Tools::nft()
    };
    let flaky = nf(&ns, &tools);
    one_chain().apply(&flaky).unwrap();
    assert_eq!(calls(dir.path()), 3);
    let saved = SavedTable::parse(&flaky.save(Family::V4, Table::Nat).unwrap(), Table::Nat);
    assert!(saved.has_chain("TETHER-RETRY"));

    // Always EAGAIN: gives up after a bounded number of attempts, with the error.
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools {
        v4_restore: flaky_restore(dir.path(), 1000, eagain),
        ..Tools::nft()
    };
    let err = one_chain().apply(&nf(&ns, &tools)).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("[input line: :TETHER-RETRY - [0:0]]"),
        "{err}"
    );
    assert_eq!(calls(dir.path()), 6);

    // A real error is not retried.
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools {
        v4_restore: flaky_restore(dir.path(), 1000, "No chain/target/match by that name."),
        ..Tools::nft()
    };
    let err = one_chain().apply(&nf(&ns, &tools)).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(calls(dir.path()), 1);
}

#[test]
fn missing_binary_is_a_spawn_error() {
    let ns = ns();
    let tools = Tools {
        v4_restore: "/nonexistent/iptables-restore".into(),
        ..Tools::nft()
    };
    let err = one_chain().apply(&nf(&ns, &tools)).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
}
