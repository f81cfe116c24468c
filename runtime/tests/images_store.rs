//! The image store's consistency and fidelity: a killed import's staging swept, `run` against
//! `rmi` + `image prune` (a deterministic interleaving with pause points), byte-stable export,
//! layer xattrs and directory mtimes. Containers use --net=none in the test's own host.

mod common;

use common::Env;
use common::archive::{self, Layer};
use common::images::{
    forced_rmi_keeps_layers_until_the_container_goes, import_test_image, layer_dirs, refused,
    tmp_entries, write,
};

#[test]
fn a_killed_imports_staging_is_swept_by_the_next_import_and_by_prune() {
    let env = Env::new();
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    let f = write(
        &env,
        "img.tar",
        &archive::docker_archive(&layers, &cfg, Some("bb"), true),
    );
    let killed = || {
        let mut c = env.cmd();
        c.env("TETHER_TEST_KILL_AT", "image-staged")
            .args(["image", "import", &f]);
        let r = common::run_with_timeout(c, std::time::Duration::from_secs(60));
        assert_eq!(r.code, None, "killed: {r:#?}");
        assert_eq!(
            tmp_entries(&env),
            1,
            "the dead import's staging dir is left"
        );
    };
    killed();
    env.tether(&["image", "prune"]).ok();
    assert_eq!(
        tmp_entries(&env),
        0,
        "prune swept it at once, not an hour later"
    );
    killed();
    env.tether(&["image", "import", &f]).ok();
    assert_eq!(tmp_entries(&env), 0, "the next import swept it");
    assert_eq!(layer_dirs(&env).len(), 2);
    env.assert_clean();
}

/// `tether run bb true`, paused at `step` until the returned file is removed.
fn paused_run(env: &Env, step: &str) -> (std::path::PathBuf, std::thread::JoinHandle<common::Run>) {
    let pause = env.host.dir().join(format!("pause-{step}"));
    let mut c = env.cmd();
    c.env("TETHER_TEST_PAUSE_AT", step)
        .env("TETHER_TEST_PAUSE_FILE", &pause)
        .args(["run", "--name", "c", "--net=none", "bb", "true"]);
    let t =
        std::thread::spawn(move || common::run_with_timeout(c, std::time::Duration::from_secs(90)));
    assert!(
        common::wait_for(std::time::Duration::from_secs(30), || pause.exists()),
        "run reached {step}"
    );
    (pause, t)
}

#[test]
fn a_prune_between_a_runs_plan_and_its_record_never_leaves_it_mounting_missing_layers() {
    let env = Env::new();
    // rmi and prune after the run resolved the image: the run is refused before anything is made.
    import_test_image(&env, "bb");
    let (pause, run) = paused_run(&env, "image-planned");
    env.tether(&["rmi", "bb"]).ok();
    assert_eq!(env.tether(&["image", "prune"]).ok().lines().count(), 2);
    std::fs::remove_file(&pause).unwrap();
    run.join().unwrap().fails_with("was removed");
    assert_eq!(env.state_entries(), Vec::<String>::new());

    // Once the run holds the store lock, rmi -f and prune wait for its record, then keep the layers.
    import_test_image(&env, "bb");
    let (pause, run) = paused_run(&env, "image-saved");
    let mut c = env.cmd();
    c.args(["image", "prune"]);
    let prune =
        std::thread::spawn(move || common::run_with_timeout(c, std::time::Duration::from_secs(90)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !prune.is_finished(),
        "prune waits on the store lock the run holds"
    );
    std::fs::remove_file(&pause).unwrap();
    run.join().unwrap().ok();
    assert_eq!(
        prune.join().unwrap().ok(),
        "",
        "the record names the layers: kept"
    );
    forced_rmi_keeps_layers_until_the_container_goes(&env);
    env.assert_clean();
}

/// `tether image export bb <to>`: the image id it prints.
fn export(env: &Env, to: &std::path::Path) -> String {
    env.tether(&["image", "export", "bb", to.to_str().unwrap()])
        .ok()
        .trim()
        .to_string()
}

#[test]
fn an_export_is_byte_stable_and_its_reimport_has_the_id_the_export_printed() {
    let env = Env::new();
    import_test_image(&env, "bb");
    let e1 = env.host.dir().join("e1.tar");
    let e2 = env.host.dir().join("e2.tar");
    let e3 = env.host.dir().join("e3.tar");
    let id = export(&env, &e1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let id2 = export(&env, &e2);
    assert_eq!(id, id2);
    assert!(
        std::fs::read(&e1).unwrap() == std::fs::read(&e2).unwrap(),
        "same image, same bytes"
    );
    env.tether(&["rmi", "bb"]).ok();
    env.tether(&["image", "prune"]).ok();
    let back = env
        .tether(&["image", "import", e1.to_str().unwrap()])
        .ok()
        .trim()
        .to_string();
    assert_eq!(back, id, "re-import: the id the export printed");
    let id3 = export(&env, &e3);
    assert_eq!(id3, id);
    assert!(
        std::fs::read(&e1).unwrap() == std::fs::read(&e3).unwrap(),
        "re-export: same bytes"
    );
    env.assert_clean();
}

/// `cap_net_raw+ep`, as `setcap` writes it (VFS_CAP_REVISION_2).
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// (entry path, PAX key, value) of every xattr record in the layers of a docker-archive.
fn exported_xattrs(archive_bytes: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for m in tar::Archive::new(archive_bytes).entries().unwrap() {
        let mut m = m.unwrap();
        if !m.path().unwrap().to_string_lossy().ends_with(".tar") {
            continue;
        }
        let mut layer = Vec::new();
        std::io::Read::read_to_end(&mut m, &mut layer).unwrap();
        for e in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            for x in e.pax_extensions().unwrap().into_iter().flatten() {
                let x = x.unwrap();
                out.push((
                    p.clone(),
                    x.key().unwrap().to_string(),
                    x.value_bytes().to_vec(),
                ));
            }
        }
    }
    out
}

#[test]
fn layer_xattrs_and_directory_mtimes_cross_import_run_and_export_and_overlay_xattrs_are_refused() {
    let env = Env::new();
    let layer = Layer::new()
        .busybox()
        .dir("data")
        .xattr_file(
            "bin/ping",
            b"#!/bin/sh\n",
            0o755,
            &[
                ("security.capability", &CAP_NET_RAW),
                ("security.selinux", b"x_t"),
            ],
        )
        .xattr_file("data/n", b"n\n", 0o644, &[("user.note", b"hi")])
        .tar();
    let cfg = archive::config(std::slice::from_ref(&layer), archive::run_config());
    let f = write(
        &env,
        "x.tar",
        &archive::docker_archive(&[layer], &cfg, Some("x"), false),
    );
    env.tether(&["image", "import", &f]).ok();
    // Directories keep the archive's mtime (1700000000), though entries were written into them.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "x",
        "stat",
        "-c",
        "%Y",
        "/data",
        "/bin",
    ]);
    assert_eq!(out.ok(), "1700000000\n1700000000\n");
    let e = env.host.dir().join("e.tar");
    env.tether(&["image", "export", "x", e.to_str().unwrap()])
        .ok();
    assert_eq!(
        exported_xattrs(&std::fs::read(&e).unwrap()),
        [
            (
                "bin/ping".to_string(),
                "SCHILY.xattr.security.capability".to_string(),
                CAP_NET_RAW.to_vec()
            ),
            (
                "data/n".to_string(),
                "SCHILY.xattr.user.note".to_string(),
                b"hi".to_vec()
            ),
        ],
        "kept through the store; the SELinux label skipped"
    );
    env.tether(&["rmi", "x"]).ok();
    env.tether(&["image", "prune"]).ok();
    // An archive that forges an opaque directory with an xattr instead of .wh..wh..opq.
    let forged = Layer::new()
        .busybox()
        .xattr_file("f", b"", 0o644, &[("trusted.overlay.opaque", b"y")])
        .tar();
    refused(&env, &[forged], "xattr trusted.overlay.opaque is refused");
    env.assert_clean();
}
