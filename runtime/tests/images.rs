//! Images: import of both archive formats, overlayfs roots per container, diff, commit, rm,
//! rmi, prune; every container with --net=none in the test's own host.

mod common;

use common::Env;
use common::archive::{self, Layer};
use common::images::{
    forced_rmi_keeps_layers_until_the_container_goes, import_test_image, layer_dirs, refused,
    tmp_entries, write,
};
use std::path::Path;

#[test]
fn both_archive_formats_import_to_shared_layers_and_run_with_the_image_config() {
    let env = Env::new();
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    let docker = write(
        &env,
        "d.tar",
        &archive::docker_archive(&layers, &cfg, Some("bb:docker"), true),
    );
    let oci = write(&env, "o.tar", &archive::oci_archive(&layers, &cfg, false));
    let id = env
        .tether(&["image", "import", &docker])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id, archive::sha(&cfg));
    let id2 = env
        .tether(&["image", "import", "--name", "bb:oci", &oci])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id, id2, "same config, same image id");
    // One copy of each layer, shared by both names.
    assert_eq!(layer_dirs(&env).len(), 2);
    let list = env.tether(&["images"]).ok().to_string();
    assert!(list.starts_with("REPOSITORY"), "{list}");
    assert!(
        list.contains("bb") && list.contains("docker") && list.contains("oci"),
        "{list}"
    );
    assert!(list.contains(&id[7..19]), "{list}");

    // Cmd, Env and WorkingDir from the image; the second layer replaced old.txt.
    let out = env.tether(&["run", "--rm", "--net=none", "bb:docker"]);
    assert_eq!(out.ok(), "hello\nnew\n/data\n");
    // CMD replaces Cmd; the whiteout and the opaque directory hide the first layer's files.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "bb:oci",
        "sh",
        "-c",
        "ls /data; echo --; ls /olddir",
    ]);
    assert_eq!(out.ok(), "added.txt\nkeep.txt\nold.txt\n--\nc\n");
    // --entrypoint replaces the Entrypoint and drops Cmd; -w and -e override the image's.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "-w",
        "/olddir",
        "-e",
        "GREETING=bye",
        "--entrypoint",
        "sh",
        "bb:oci",
        "-c",
        "echo $GREETING $(pwd)",
    ]);
    assert_eq!(out.ok(), "bye /olddir\n");
    // After `--` the word is a host command as before, not an image.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--",
        "sh",
        "-c",
        "test -e /data/old.txt || echo host",
    ]);
    assert_eq!(out.ok(), "host\n");
    let inspect = env.tether(&["image", "inspect", "bb:oci"]).ok().to_string();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"], id);
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    env.tether(&["run", "--net=none", "no-such-image"])
        .fails_with("no such image");
    assert_eq!(tmp_entries(&env), 0);
    env.assert_clean();
}

#[test]
fn containers_of_one_image_see_only_their_own_writes_and_rm_drops_them() {
    let env = Env::new();
    import_test_image(&env, "bb");
    let script =
        "rm /data/keep.txt; echo mine > /data/$(hostname); echo changed > /data/old.txt; sleep 60";
    let a = env.tether(&[
        "run",
        "-d",
        "--name",
        "a",
        "--net=none",
        "--hostname",
        "a",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    a.ok();
    let b = env.tether(&[
        "run",
        "-d",
        "--name",
        "b",
        "--net=none",
        "--hostname",
        "b",
        "bb",
        "sleep",
        "60",
    ]);
    b.ok();
    // Wait for a's writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.tether(&["exec", "a", "test", "-e", "/data/a"]).code != Some(0) {
        assert!(std::time::Instant::now() < deadline, "a never wrote");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let in_b = env.tether(&["exec", "b", "sh", "-c", "ls /data; cat /data/old.txt"]);
    assert_eq!(
        in_b.ok(),
        "added.txt\nkeep.txt\nold.txt\nnew\n",
        "b sees none of a's changes"
    );
    let diff = env.tether(&["diff", "a"]).ok().to_string();
    assert_eq!(
        diff,
        "C /data\nA /data/a\nD /data/keep.txt\nC /data/old.txt\n"
    );
    assert_eq!(env.tether(&["diff", "b"]).ok(), "");
    // The image's layers are untouched by either.
    let lowers: Vec<String> = layer_dirs(&env);
    for l in &lowers {
        assert!(
            !env.image_root()
                .join("layers")
                .join(l)
                .join("fs/data/a")
                .exists()
        );
    }
    let keeps = |l: &String| {
        let d = env.image_root().join("layers").join(l).join("fs/data");
        d.join("keep.txt").exists()
    };
    assert!(lowers.iter().any(keeps), "the base layer keeps keep.txt");

    let committed = env.tether(&["commit", "a", "bb:a"]).ok().trim().to_string();
    assert!(committed.starts_with("sha256:"));
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "bb:a",
        "sh",
        "-c",
        "ls /data; cat /data/old.txt",
    ]);
    assert_eq!(out.ok(), "a\nadded.txt\nold.txt\nchanged\n");

    let a_dir = env.inspect("a")["id"].as_str().unwrap().to_string();
    let upper = env.root.join("containers").join(&a_dir).join("upper");
    assert!(upper.join("data/a").exists());
    env.tether(&["rm", "-f", "a", "b"]).ok();
    assert!(!upper.exists(), "rm removes the writable layer");
    let out = env.tether(&["run", "--rm", "--net=none", "bb", "cat", "/data/keep.txt"]);
    assert_eq!(out.ok(), "keep\n", "the image is as it was");
    env.assert_clean();
}

#[test]
fn rmi_is_refused_while_a_container_uses_the_image_and_prune_frees_its_layers() {
    let env = Env::new();
    import_test_image(&env, "bb");
    env.tether(&["run", "--name", "c", "--net=none", "bb", "true"])
        .ok();
    env.tether(&["rmi", "bb"]).fails_with("used by container");
    assert_eq!(
        env.tether(&["image", "prune"]).ok(),
        "",
        "layers in use stay"
    );
    env.tether(&["rm", "c"]).ok();
    let out = env.tether(&["rmi", "bb"]).ok().to_string();
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(env.tether(&["images"]).ok().lines().count(), 1);
    let pruned = env.tether(&["image", "prune"]).ok().to_string();
    assert_eq!(pruned.lines().count(), 2, "{pruned}");
    assert_eq!(layer_dirs(&env), Vec::<String>::new());
    // -f removes an image a container still uses; the container's layers stay for it.
    import_test_image(&env, "bb");
    env.tether(&["run", "--name", "c", "--net=none", "bb", "true"])
        .ok();
    forced_rmi_keeps_layers_until_the_container_goes(&env);
    env.assert_clean();
}

#[test]
fn hostile_layer_entries_are_refused_and_nothing_is_written_outside_the_store() {
    let env = Env::new();
    let canary = env.host.dir().join("escaped");
    let rel = Path::new("../../../../../../..").join(canary.strip_prefix("/").unwrap());
    let good = Layer::new().file("ok", b"ok", 0o644).tar();
    refused(
        &env,
        &[
            good.clone(),
            Layer::new().raw_name(rel.to_str().unwrap(), b"x").tar(),
        ],
        "'..'",
    );
    refused(
        &env,
        &[Layer::new().raw_name(canary.to_str().unwrap(), b"x").tar()],
        "absolute",
    );
    let dir = env.host.dir().join("outside");
    std::fs::create_dir(&dir).unwrap();
    refused(
        &env,
        &[Layer::new()
            .symlink("link", dir.to_str().unwrap())
            .file("link/evil", b"x", 0o644)
            .tar()],
        "is a symlink",
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    refused(
        &env,
        &[Layer::new().raw_link("hl", "../../../etc/passwd").tar()],
        "'..'",
    );
    refused(
        &env,
        &[Layer::new().raw_link("hl", "/etc/shadow").tar()],
        "absolute",
    );
    refused(
        &env,
        &[Layer::new().hardlink("hl", "not/there").tar()],
        "not in the layer",
    );
    refused(
        &env,
        &[Layer::new().device("dev/mem").tar()],
        "device nodes are refused",
    );
    refused(
        &env,
        &[Layer::new().sparse_claim("big", 10 << 30).tar()],
        "sparse",
    );
    refused(
        &env,
        &[Layer::new().short_file("big", 10 << 30, b"tiny").tar()],
        "truncated",
    );
    assert!(!canary.exists());

    // Archive-level lies: a wrong layer digest, a missing blob, a truncated gzip layer.
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    let mut bad_cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    bad_cfg["rootfs"]["diff_ids"][1] = serde_json::json!(archive::sha(b"other"));
    let bad_cfg = serde_json::to_vec(&bad_cfg).unwrap();
    let f = write(
        &env,
        "bad.tar",
        &archive::docker_archive(&layers, &bad_cfg, Some("bad"), true),
    );
    env.tether(&["image", "import", &f]).fails_with("diff_id");
    let top = format!(
        "blobs/sha256/{}",
        &archive::sha(&archive::gzip(&layers[1]))[7..]
    );
    let mut members = archive::oci_members(&layers, &cfg, true);
    members.retain(|(n, _)| *n != top);
    let f = write(&env, "missing.tar", &archive::outer(&members));
    env.tether(&["image", "import", &f])
        .fails_with("does not contain");
    let mut members = archive::oci_members(&layers, &cfg, true);
    for (n, d) in members.iter_mut() {
        if *n == top {
            *d = archive::gzip(&Layer::new().file("other", b"x", 0o644).tar());
        }
    }
    let f = write(&env, "wrong.tar", &archive::outer(&members));
    env.tether(&["image", "import", &f])
        .fails_with(&format!("layer {top}"));
    let mut gz = archive::gzip(&layers[1]);
    gz.truncate(gz.len() / 2);
    let f = write(&env, "trunc.tar", &outer_with(&layers[0], &gz, &cfg));
    env.tether(&["image", "import", &f]).fails_with("layer");
    assert_eq!(env.tether(&["images"]).ok().lines().count(), 1);
    assert_eq!(
        layer_dirs(&env),
        Vec::<String>::new(),
        "no half-imported layer kept"
    );
    assert_eq!(tmp_entries(&env), 0);
    env.assert_clean();
}

/// A docker-archive whose second layer member is `top_raw` as given.
fn outer_with(base: &[u8], top_raw: &[u8], cfg: &[u8]) -> Vec<u8> {
    let id = &archive::sha(cfg)[7..];
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |n: &str, d: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, n, d).unwrap();
    };
    add(&format!("{id}.json"), cfg);
    add("l0.tar", base);
    add("l1.tar", top_raw);
    let m = serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": ["t:1"], "Layers": ["l0.tar", "l1.tar"]}]);
    add("manifest.json", &serde_json::to_vec(&m).unwrap());
    b.into_inner().unwrap()
}

#[test]
fn a_killed_import_lists_no_image_and_its_layers_are_pruned_or_reused() {
    let env = Env::new();
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    // A gzipped archive (`podman save | gzip`) is read too.
    let f = write(
        &env,
        "img.tar.gz",
        &archive::gzip(&archive::docker_archive(&layers, &cfg, Some("bb"), false)),
    );
    for step in ["image-staged", "image-layers"] {
        let mut c = env.cmd();
        c.env("TETHER_TEST_KILL_AT", step)
            .args(["image", "import", &f]);
        let r = common::run_with_timeout(c, std::time::Duration::from_secs(60));
        assert_eq!(r.code, None, "{step}: killed: {r:#?}");
        assert_eq!(
            env.tether(&["images"]).ok().lines().count(),
            1,
            "{step}: no image listed"
        );
    }
    // The second kill left both layers in the store, without an image.
    assert_eq!(layer_dirs(&env).len(), 2);
    assert_eq!(env.tether(&["image", "prune"]).ok().lines().count(), 2);
    assert_eq!(layer_dirs(&env), Vec::<String>::new());
    env.tether(&["image", "import", &f]).ok();
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "--read-only",
        "bb",
        "sh",
        "-c",
        "cat old.txt; touch /x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out.ok(), "new\nro\n");
    env.assert_clean();
}

#[test]
fn a_renamed_image_directory_is_committed_whole() {
    let env = Env::new();
    import_test_image(&env, "bb");
    // overlayfs without redirect_dir answers EXDEV, and mv copies: the upper dir holds all of it.
    env.tether(&[
        "run",
        "--name",
        "mv",
        "--net=none",
        "bb",
        "mv",
        "/olddir",
        "/newdir",
    ])
    .ok();
    assert_eq!(
        env.tether(&["diff", "mv"]).ok(),
        "A /newdir\nA /newdir/c\nD /olddir\n"
    );
    env.tether(&["commit", "mv", "bb:mv"]).ok();
    env.tether(&["rm", "mv"]).ok();
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "bb:mv",
        "sh",
        "-c",
        "ls /newdir; ls /olddir 2>&1 || echo none",
    ]);
    assert!(out.ok().starts_with("c\n"), "{out:#?}");
    assert!(out.ok().ends_with("none\n"), "{out:#?}");
    env.assert_clean();
}

#[test]
fn setuid_files_keep_their_bit_inside_a_store_only_root_can_enter() {
    let env = Env::new();
    let l = Layer::new()
        .busybox()
        .file("bin/suid", b"#!/bin/sh\n", 0o4755)
        .tar();
    let cfg = archive::config(
        std::slice::from_ref(&l),
        serde_json::json!({"User": "bob:staff"}),
    );
    let f = write(
        &env,
        "s.tar",
        &archive::docker_archive(std::slice::from_ref(&l), &cfg, Some("s"), false),
    );
    env.tether(&["image", "import", &f]).ok();
    use std::os::unix::fs::PermissionsExt;
    let layer = env
        .image_root()
        .join("layers")
        .join(&archive::sha(&l)[7..])
        .join("fs");
    let mode = std::fs::metadata(layer.join("bin/suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
    let root_mode = std::fs::metadata(env.image_root())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700);
    // The image's User is looked up in its own /etc/passwd and /etc/group.
    let out = env.tether(&[
        "run",
        "--rm",
        "--net=none",
        "s",
        "sh",
        "-c",
        "id -u; id -g; stat -c %a /bin/suid",
    ]);
    assert_eq!(out.ok(), "1234\n4321\n4755\n");
    env.assert_clean();
}
