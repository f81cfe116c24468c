//! A small image builder for the tests: layer tars made with the tar crate from
//! busybox-static, wrapped as docker-archive or OCI layout archives.
//!
//! ```text
//! Layer::new().busybox().file("data/a", "x", 0o644).whiteout("data/b").opaque("dir").tar()
//! docker_archive(&[layer…], &config, tag, gzip)   manifest.json, <hex>.json, <hex>.tar
//! oci_archive(&[layer…], &config, gzip)           oci-layout, index.json, blobs/sha256/…
//! ```
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::Write;

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

pub const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "rm", "mkdir", "touch", "id", "test", "stat", "sleep", "true", "wc",
    "printenv", "pwd", "mv",
];

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }
    pub fn dir(mut self, p: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.b.append_data(&mut h, p, std::io::empty()).unwrap();
        self
    }
    pub fn file(mut self, p: &str, data: &[u8], mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    /// A file with PAX `SCHILY.xattr.NAME` records, as `tar --xattrs` and Docker write them.
    pub fn xattr_file(
        mut self,
        p: &str,
        data: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> Layer {
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        self.b
            .append_pax_extensions(
                keys.iter()
                    .map(String::as_str)
                    .zip(xattrs.iter().map(|(_, v)| *v)),
            )
            .unwrap();
        self.file(p, data, mode)
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    pub fn hardlink(mut self, p: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    /// An entry with a raw name (the tar crate's setters refuse `..` and absolute paths).
    pub fn raw_name(mut self, name: &str, data: &[u8]) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    pub fn raw_link(mut self, name: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }
    pub fn device(mut self, p: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        self.b.append_data(&mut h, p, std::io::empty()).unwrap();
        self
    }
    /// A GNU sparse entry claiming `real` bytes with no data.
    pub fn sparse_claim(mut self, p: &str, real: u64) -> Layer {
        let mut h = Self::header(tar::EntryType::GNUSparse, 0o644, 0);
        h.set_path(p).unwrap();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.realsize
            .copy_from_slice(format!("{real:012o}").as_bytes());
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }
    /// A regular entry whose header claims `claim` bytes but carries `data`.
    pub fn short_file(mut self, p: &str, claim: u64, data: &[u8]) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, claim);
        h.set_path(p).unwrap();
        h.set_cksum();
        self.b.get_mut().extend_from_slice(h.as_bytes());
        self.b.get_mut().extend_from_slice(data);
        self
    }
    pub fn whiteout(self, p: &str) -> Layer {
        let (d, n) = p.rsplit_once('/').unwrap_or(("", p));
        let w = if d.is_empty() {
            format!(".wh.{n}")
        } else {
            format!("{d}/.wh.{n}")
        };
        self.file(&w, b"", 0o644)
    }
    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }
    /// busybox-static as /bin/busybox with a few applets, /etc/passwd and /etc/group.
    pub fn busybox(self) -> Layer {
        let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
        let mut l = self.dir("bin").file("bin/busybox", &bb, 0o755);
        for a in APPLETS {
            l = l.symlink(&format!("bin/{a}"), "busybox");
        }
        l.dir("etc")
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nbob:x:1234:4321::/:/bin/sh\n",
                0o644,
            )
            .file("etc/group", b"root:x:0:\nstaff:x:4321:\n", 0o644)
    }
    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// An image config for `layers` (uncompressed tars) with `run` as its "config".
pub fn config(layers: &[Vec<u8>], run: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()},
    }))
    .unwrap()
}

pub fn outer(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, n, d.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn docker_archive(layers: &[Vec<u8>], cfg: &[u8], tag: Option<&str>, gz: bool) -> Vec<u8> {
    let id = sha(cfg)[7..].to_string();
    let mut m = vec![(format!("{id}.json"), cfg.to_vec())];
    let mut names = Vec::new();
    for l in layers {
        let n = format!("{}.tar", &sha(l)[7..]);
        m.push((n.clone(), if gz { gzip(l) } else { l.clone() }));
        names.push(n);
    }
    let manifest = serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": tag.into_iter().collect::<Vec<_>>(), "Layers": names}]);
    m.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    outer(&m)
}

pub fn oci_archive(layers: &[Vec<u8>], cfg: &[u8], gz: bool) -> Vec<u8> {
    outer(&oci_members(layers, cfg, gz))
}

/// The members of an OCI layout archive, to tamper with.
pub fn oci_members(layers: &[Vec<u8>], cfg: &[u8], gz: bool) -> Vec<(String, Vec<u8>)> {
    let mut m = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let blob = |d: &[u8]| (format!("blobs/sha256/{}", &sha(d)[7..]), d.to_vec());
    let mut descs = Vec::new();
    for l in layers {
        let b = if gz { gzip(l) } else { l.clone() };
        let mt = if gz {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descs.push(serde_json::json!({"mediaType": mt, "digest": sha(&b), "size": b.len()}));
        m.push(blob(&b));
    }
    m.push(blob(cfg));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    m.push(blob(&manifest));
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len()}]});
    m.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    m
}

/// The two-layer test image: the second layer deletes, replaces and hides files of the first.
pub fn two_layers() -> Vec<Vec<u8>> {
    let base = Layer::new()
        .busybox()
        .dir("data")
        .file("data/keep.txt", b"keep\n", 0o644)
        .file("data/old.txt", b"old\n", 0o644)
        .file("data/gone.txt", b"gone\n", 0o644)
        .dir("olddir")
        .file("olddir/a", b"a\n", 0o644)
        .file("olddir/b", b"b\n", 0o644)
        .tar();
    let top = Layer::new()
        .dir("data")
        .whiteout("data/gone.txt")
        .file("data/old.txt", b"new\n", 0o644)
        .file("data/added.txt", b"added\n", 0o644)
        .dir("olddir")
        .opaque("olddir")
        .file("olddir/c", b"c\n", 0o644)
        .tar();
    vec![base, top]
}

pub fn run_config() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Cmd": ["sh", "-c", "echo $GREETING; cat old.txt; pwd"],
        "WorkingDir": "/data",
    })
}
