//! The shared save-plan-apply loop, the one-exec save of several tables and typed DNAT targets,
//! against real binaries in throwaway namespaces.

mod common;

use common::*;
use tether_netfilter::{
    Batch, Error, Family, OnSaveError, PLAN_ATTEMPTS, Rule, SavedTable, SweepError, Table, Tools,
    delete_rules_with_comment, sweep,
};

#[test]
fn several_tables_are_read_with_one_exec() {
    for (backend, tools) in backends() {
        let ns = ns();
        let dir = tempfile::tempdir().unwrap();
        let counted = Tools {
            v4_save: wrapper(dir.path(), &tools.v4_save, 0, ""),
            ..tools.clone()
        };
        let nf = nf(&ns, &counted);

        // Nothing created yet: every table reads as empty (legacy creates tables on first use).
        let fresh = nf
            .save_tables(Family::V4, &[Table::Nat, Table::Raw])
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(fresh.table(Table::Raw).rules.is_empty(), "{backend}");
        assert!(fresh.table(Table::Nat).rules.is_empty(), "{backend}");
        assert_eq!(calls(dir.path()), 1, "{backend}");

        run_restore(
            &ns,
            &tools.v4_restore,
            "*nat\n:TETHER-SV - [0:0]\n-A TETHER-SV -m comment --comment \"tether nat\" -j RETURN\nCOMMIT\n\
             *raw\n-A PREROUTING -d 127.0.0.0/8 ! -i lo -m comment --comment \"tether raw\" -j DROP\nCOMMIT\n\
             *filter\n-A FORWARD -m comment --comment \"tether filter\" -j ACCEPT\nCOMMIT\n",
        );
        let both = nf
            .save_tables(Family::V4, &[Table::Nat, Table::Raw])
            .unwrap();
        assert_eq!(calls(dir.path()), 2, "{backend}: one exec for two tables");
        for table in [Table::Nat, Table::Raw] {
            let alone = SavedTable::parse(&nf.save(Family::V4, table).unwrap(), table);
            assert_eq!(both.table(table), &alone, "{backend} {table}");
            assert_eq!(alone.rules.len(), 1, "{backend} {table}: {alone:?}");
        }
        assert!(both.get(Table::Filter).is_none(), "not asked for");
        assert_eq!(both.family, Family::V4);

        // One table is `-t <table>`: the filter rule is not in a nat-only read.
        let nat = nf.save_tables(Family::V4, &[Table::Nat]).unwrap();
        assert!(nat.get(Table::Filter).is_none());
        assert_eq!(nat.table(Table::Nat).rules.len(), 1, "{backend}");
        // No table runs nothing.
        let before = calls(dir.path());
        nf.save_tables(Family::V4, &[]).unwrap();
        assert_eq!(calls(dir.path()), before, "{backend}");
    }
}

#[test]
fn ipv6_dnat_targets_are_written_bracketed() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        let mut b = Batch::new(Family::V6);
        b.new_chain(Table::Nat, "TETHER-DN6").unwrap();
        let dnat = Rule::new()
            .args(&["-p", "tcp", "-m", "tcp", "--dport", "8080"])
            .unwrap()
            .jump("DNAT")
            .unwrap()
            .to_destination("fd00::5".parse().unwrap(), 80);
        b.append(Table::Nat, "TETHER-DN6", &dnat).unwrap();
        b.apply(&nf).unwrap_or_else(|e| panic!("{backend}: {e}"));
        let saved = SavedTable::parse(&nf.save(Family::V6, Table::Nat).unwrap(), Table::Nat);
        let rule = saved
            .rules
            .iter()
            .find(|r| r.chain == "TETHER-DN6")
            .unwrap_or_else(|| panic!("{backend}: {saved:?}"));
        assert_eq!(rule.value_of("--to-destination"), Some("[fd00::5]:80"));
        // Byte for byte what iptables-save prints, so CHECK can compare texts.
        assert_eq!(
            rule.line,
            format!("-A TETHER-DN6 {}", dnat.text()),
            "{backend}"
        );
    }
}

const TWO_RULES: &str = "*filter\n:TETHER-SW - [0:0]\n\
    -A TETHER-SW -s 10.0.0.1/32 -m comment --comment \"tether sweep\" -j ACCEPT\n\
    -A TETHER-SW -s 10.0.0.2/32 -m comment --comment \"tether sweep\" -j ACCEPT\nCOMMIT\n";

#[test]
fn a_stale_plan_is_made_again_from_a_fresh_save() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        run_restore(&ns, &tools.v4_restore, TWO_RULES);
        let mut plans = 0;
        let deleted = sweep(
            &nf,
            Family::V4,
            &[Table::Filter],
            OnSaveError::Fail,
            |saved| {
                plans += 1;
                let mut b = Batch::new(Family::V4);
                let n = delete_rules_with_comment(&mut b, saved.table(Table::Filter), "tether sweep");
                if plans == 1 {
                    // Someone else removes one of them between our save and our restore.
                    run_restore(
                        &ns,
                        &tools.v4_restore,
                        "*filter\n-D TETHER-SW -s 10.0.0.1/32 -m comment --comment \"tether sweep\" -j ACCEPT\nCOMMIT\n",
                    );
                }
                Ok::<_, Error>((b, n))
            },
        )
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(plans, 2, "{backend}");
        assert_eq!(
            deleted, 1,
            "{backend}: the value of the plan that was applied"
        );
        let left = SavedTable::parse(&nf.save(Family::V4, Table::Filter).unwrap(), Table::Filter);
        assert_eq!(
            left.rules_with_comment("tether sweep").count(),
            0,
            "{backend}"
        );
    }
}

#[test]
fn a_batch_that_keeps_failing_is_given_up_after_the_last_attempt() {
    let ns = ns();
    let nf = nf(&ns, &Tools::nft());
    let mut plans = 0;
    let e = sweep(&nf, Family::V4, &[Table::Filter], OnSaveError::Fail, |_| {
        plans += 1;
        let mut b = Batch::new(Family::V4);
        b.delete_chain(Table::Filter, "TETHER-NONE")?;
        Ok::<_, Error>((b, ()))
    })
    .unwrap_err();
    assert!(matches!(e, SweepError::Apply(Error::Command { .. })), "{e}");
    assert!(e.to_string().starts_with("applying the rules: "), "{e}");
    assert_eq!(plans, PLAN_ATTEMPTS);
}

#[test]
fn plan_errors_pass_through_and_nothing_is_applied() {
    let ns = ns();
    let tools = Tools::nft();
    let nf = nf(&ns, &tools);
    let before = snapshot_all(&ns, &tools);
    let e = sweep(&nf, Family::V4, &[Table::Nat], OnSaveError::Fail, |_| {
        Err::<(Batch, ()), _>("refused")
    })
    .unwrap_err();
    assert!(matches!(e, SweepError::Plan("refused")), "{e}");
    assert_eq!(snapshot_all(&ns, &tools), before);
}

#[test]
fn unreadable_ipv6_tables_are_skipped_only_when_asked() {
    let ns = ns();
    let tools = Tools {
        v4_save: "/nonexistent/iptables-save".into(),
        v6_save: "/nonexistent/ip6tables-save".into(),
        ..Tools::nft()
    };
    let nf = nf(&ns, &tools);
    let never = |_: &_| -> Result<(Batch, u32), Error> { panic!("planned without a save") };
    // Teardown: nothing of ours can be in a table that cannot be read.
    let v = sweep(&nf, Family::V6, &[Table::Nat], OnSaveError::SkipV6, never).unwrap();
    assert_eq!(v, 0);
    // Otherwise an error naming the step.
    let e = sweep(&nf, Family::V6, &[Table::Nat], OnSaveError::Fail, never).unwrap_err();
    assert!(matches!(e, SweepError::Save(Error::Spawn { .. })), "{e}");
    assert!(e.to_string().starts_with("reading the tables: "), "{e}");
    // IPv4 is never skipped.
    let e = sweep(&nf, Family::V4, &[Table::Nat], OnSaveError::SkipV6, never).unwrap_err();
    assert!(matches!(e, SweepError::Save(_)), "{e}");
}

#[test]
fn one_chain_is_listed_as_a_save_shows_it() {
    for (backend, tools) in backends() {
        let ns = ns();
        let nf = nf(&ns, &tools);
        for family in Family::ALL {
            run_restore(
                &ns,
                tools.restore(family),
                "*nat\n:TETHER-LS - [0:0]\n:TETHER-OTHER - [0:0]\n\
                 -A TETHER-LS -p tcp -m multiport --dports 80,81 -m comment --comment \"tether a b\" -j RETURN\n\
                 -A TETHER-LS -m comment --comment plain -j TETHER-OTHER\n\
                 -A TETHER-OTHER -j RETURN\nCOMMIT\n",
            );
            let listed = nf
                .list_chain(family, Table::Nat, "TETHER-LS")
                .unwrap_or_else(|e| panic!("{backend} {family:?}: {e}"));
            let saved = SavedTable::parse(&nf.save(family, Table::Nat).unwrap(), Table::Nat);
            let of_chain: Vec<_> = saved
                .rules
                .iter()
                .filter(|r| r.chain == "TETHER-LS")
                .collect();
            assert_eq!(listed.chains, ["TETHER-LS"], "{backend} {family:?}");
            assert_eq!(
                listed.rules.iter().collect::<Vec<_>>(),
                of_chain,
                "{backend} {family:?}"
            );
            assert_eq!(listed.rules[0].comment(), Some("tether a b"));
            assert!(
                nf.list_chain(family, Table::Nat, "TETHER-NONE").is_err(),
                "{backend} {family:?}: a missing chain is an error"
            );
            assert!(matches!(
                nf.list_chain(family, Table::Nat, "bad name"),
                Err(Error::Invalid { .. })
            ));
        }
    }
}
