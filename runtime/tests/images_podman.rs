//! Images both ways with a real client: Podman (its own --root/--runroot/--tmpdir in the test's
//! temp dir, vfs, no network) saves, tether imports and runs; tether exports, Podman loads and
//! runs. Each podman command runs in a throwaway mount, network and pid namespace
//! (`podman.sh`), which also hides the cgroup v2 half of a hybrid host from crun.

mod common;

use common::Env;
use common::archive::{self, Layer};
use std::path::{Path, PathBuf};
use std::process::Command;

const PODMAN_SH: &str = r#"set -eu
D=$1; shift
mount --make-rprivate /
if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then
    umount /sys/fs/cgroup/unified
fi
mount -t tmpfs tether-run /run
export CONTAINERS_CONF=$D/containers.conf CONTAINERS_STORAGE_CONF=$D/storage.conf
exec podman --root $D/root --runroot $D/run --tmpdir $D/tmp --storage-driver vfs \
    --cgroup-manager cgroupfs --events-backend file "$@"
"#;

struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(env: &Env) -> Podman {
        let dir = env.host.dir().join("podman");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("podman.sh"), PODMAN_SH).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ncgroups = \"disabled\"\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
                dir.display()
            ),
        )
        .unwrap();
        Podman { dir }
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("unshare")
            .args(["--mount", "--net", "--pid", "--fork", "sh"])
            .arg(self.dir.join("podman.sh"))
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("podman is installed (scripts/setup.sh)");
        assert!(
            out.status.success(),
            "podman {args:?}: {out:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn path(&self, n: &str) -> String {
        self.dir.join(n).display().to_string()
    }
}

fn write(p: &Path, data: &[u8]) -> String {
    std::fs::write(p, data).unwrap();
    p.display().to_string()
}

#[test]
fn podman_saved_images_import_and_run_in_both_formats() {
    let env = Env::new();
    let pm = Podman::new(&env);
    let rootfs = Layer::new()
        .busybox()
        .file("hello", b"hi from podman\n", 0o644)
        .tar();
    let f = write(&pm.dir.join("rootfs.tar"), &rootfs);
    pm.run(&[
        "import",
        "--change",
        r#"CMD ["cat", "/hello"]"#,
        &f,
        "localhost/pm:1",
    ]);
    pm.run(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        &pm.path("d.tar"),
        "localhost/pm:1",
    ]);
    pm.run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &pm.path("o.tar"),
        "localhost/pm:1",
    ]);
    let a = env
        .tether(&["image", "import", &pm.path("d.tar")])
        .ok()
        .trim()
        .to_string();
    let b = env
        .tether(&["image", "import", "--name", "pm:oci", &pm.path("o.tar")])
        .ok()
        .trim()
        .to_string();
    assert_eq!(a, b, "the same config in both formats");
    assert_eq!(
        env.tether(&["run", "--rm", "--net=none", "pm:1"]).ok(),
        "hi from podman\n"
    );
    assert_eq!(
        env.tether(&["run", "--rm", "--net=none", "pm:oci"]).ok(),
        "hi from podman\n"
    );
    env.assert_clean();
}

#[test]
fn tether_exported_images_and_commits_load_and_run_in_podman() {
    let env = Env::new();
    let pm = Podman::new(&env);
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    let f = write(
        &env.host.dir().join("two.tar"),
        &archive::docker_archive(&layers, &cfg, None, true),
    );
    env.tether(&["image", "import", "--name", "bb:two", &f])
        .ok();
    env.tether(&[
        "run",
        "--name",
        "w",
        "--net=none",
        "bb:two",
        "sh",
        "-c",
        "rm /data/keep.txt; echo c > /data/c",
    ])
    .ok();
    env.tether(&["commit", "w", "bb:c"]).ok();
    env.tether(&["rm", "w"]).ok();
    env.tether(&["image", "export", "bb:two", &pm.path("two.tar")])
        .ok();
    env.tether(&["image", "export", "bb:c", &pm.path("c.tar")])
        .ok();
    pm.run(&["load", "-i", &pm.path("two.tar")]);
    pm.run(&["load", "-i", &pm.path("c.tar")]);
    // The image's Cmd, Env and WorkingDir, and both layers' whiteouts, as Podman reads them.
    assert_eq!(
        pm.run(&["run", "--rm", "--network", "none", "localhost/bb:two"]),
        "hello\nnew\n/data\n"
    );
    let ls = "ls /data; echo --; ls /olddir";
    assert_eq!(
        pm.run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/bb:two",
            "sh",
            "-c",
            ls
        ]),
        "added.txt\nkeep.txt\nold.txt\n--\nc\n"
    );
    // The committed layer's deletion is an OCI whiteout Podman honours.
    assert_eq!(
        pm.run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/bb:c",
            "sh",
            "-c",
            ls
        ]),
        "added.txt\nc\nold.txt\n--\nc\n"
    );
    env.assert_clean();
}
