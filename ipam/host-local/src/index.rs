//! Our index of which attachment holds which lease, so that ADD and DEL look up one container
//! instead of reading every lease file (the reference reads them all on every ADD and DEL, which
//! makes both grow with the number of containers). The lease files stay the truth; the index
//! only says where to look:
//!
//! - `<network>/.tether/<id>@<ifname>` lists the addresses leased to that attachment, and
//!   `<network>/.tether/<id>@` those of id-only (legacy) leases of the container. `@` never
//!   occurs in a container id, so a name means one thing. The reference ignores the directory
//!   except that its ADD and DEL read every file below `<network>`, recursively, looking for
//!   the content `<id>\r\n<ifname>` or `<id>`; an index file starts with a comment line holding
//!   spaces, so it can never match (and be taken for a lease, or removed).
//! - Every address listed is checked against its lease file before it is used, so an entry that
//!   went stale only costs one read.
//! - The index is complete only while nobody but us changed the lease directory since we last
//!   brought it up to date; [`Store::in_sync`] tells (from the directory's and the lock's
//!   mtimes). When it is not, the operation reads every lease once and rebuilds the index:
//!   after the reference ran, after a crash halfway through, or after someone edited the
//!   directory by hand. So a lease the reference made is found by a repeated ADD and by DEL
//!   just as before; only filesystems that cannot store our mark (coarse timestamps) keep
//!   reading everything, as before. What the mark cannot see is a lease file rewritten in
//!   place (no create or unlink): neither implementation does that.
//!
//! Every function here needs the exclusive lock ([`crate::store::Access::Create`] or
//! [`crate::store::Access::Modify`]). A failure to write the index never fails an operation:
//! the directory is then not marked, and the next operation rebuilds.

use crate::Error;
use crate::store::{Held, Leases, Owner, Store};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub const INDEX_DIR: &str = ".tether";
const HEADER: &str = "# tether host-local index: the lease files named below hold the truth\n";

/// The index file name of `(id, ifname)`, or of `id`'s legacy leases when `ifname` is `None`.
/// `None` for names we cannot (or need not) index: requests always carry valid ones (the skel
/// checks them), so such a name can only come from a lease file no request can match, and a
/// request that still had one would read every lease instead.
pub fn key(id: &str, ifname: Option<&str>) -> Option<String> {
    let ifname = match ifname {
        Some("") => return None,
        Some(n) => n,
        None => "",
    };
    let name = format!("{id}@{ifname}");
    // 255 is the usual limit for a name; leave room for the temporary file's `.` and `.tmp`.
    (cni::types::valid_id(id) && !ifname.contains(['/', '\0']) && name.len() <= 250).then_some(name)
}

/// The index of one locked [`Store`].
pub struct Index<'a> {
    store: &'a Store,
    /// Cleared when the index may have missed a change (a failed write, a lease we could not
    /// release): the directory then stays unmarked and the next operation rebuilds.
    trusted: bool,
}

impl<'a> Index<'a> {
    /// The index of `store`, rebuilt first when the directory changed behind our back.
    pub fn open(store: &'a Store) -> Result<Index<'a>, Error> {
        if store.in_sync() {
            return Ok(Index {
                store,
                trusted: true,
            });
        }
        tracing::debug!(dir = %store.dir().display(), "lease directory changed since our last operation: rebuilding the index");
        Ok(Index::rebuild(store, &store.leases()?))
    }

    /// Rewrites the index to list exactly `leases` (all leases of the directory, as read under
    /// the lock), touching only the files that differ.
    pub fn rebuild(store: &'a Store, leases: &Leases) -> Index<'a> {
        let mut ix = Index {
            store,
            trusted: true,
        };
        let mut want: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for (ip, owner) in &leases.0 {
            let name = match owner {
                Owner::Attachment { id, ifname } => key(id, Some(ifname)),
                Owner::Legacy { id } => key(id, None),
                Owner::Empty | Owner::Foreign => None,
            };
            if let Some(name) = name {
                want.entry(name).or_default().push(*ip);
            }
        }
        match std::fs::read_dir(ix.dir()) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    match want.get(&name) {
                        Some(ips) => {
                            if ix.read(&name).ok().as_ref() == Some(ips) {
                                want.remove(&name);
                            }
                        }
                        // A stale entry, or a temporary file left by a crash.
                        None => ix.remove_path(&e.path()),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => ix.distrust("cannot list the lease index", &e),
        }
        for (name, ips) in want {
            ix.write(&name, ips);
        }
        ix.tidy();
        ix
    }

    fn dir(&self) -> PathBuf {
        self.store.dir().join(INDEX_DIR)
    }

    fn distrust(&mut self, what: &str, e: &dyn std::fmt::Display) {
        tracing::warn!(dir = %self.dir().display(), error = %e, "{what}: the next operation reads every lease");
        self.trusted = false;
    }

    /// Marks the index as possibly incomplete (see [`Index::finish`]).
    pub fn mark_incomplete(&mut self, why: &str) {
        self.trusted = false;
        tracing::debug!("{why}: the next operation rebuilds the lease index");
    }

    /// The addresses an index file lists, sorted.
    fn read(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        let text = match std::fs::read_to_string(self.dir().join(name)) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            r => r?,
        };
        let mut ips: Vec<IpAddr> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    /// Replaces an index file (atomically: a crash leaves the old one or the new one), or
    /// removes it when `ips` is empty.
    fn write(&mut self, name: &str, mut ips: Vec<IpAddr>) {
        if ips.is_empty() {
            return self.remove_path(&self.dir().join(name));
        }
        ips.sort();
        ips.dedup();
        let mut text = String::from(HEADER);
        for ip in &ips {
            text.push_str(&ip.to_string());
            text.push('\n');
        }
        let dir = self.dir();
        let tmp = dir.join(format!(".{name}.tmp"));
        let put = || -> std::io::Result<()> {
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, dir.join(name))
        };
        let result = match put() {
            Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .or_else(|e| match e.kind() {
                    ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| put()),
            r => r,
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            self.distrust("cannot write the lease index", &e);
        }
    }

    fn remove_path(&mut self, path: &Path) {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                self.distrust("cannot remove a lease index entry", &e);
            }
            _ => {}
        }
    }

    /// Removes `.tether` once it is empty, so that a network without containers holds only the
    /// reference's files.
    fn tidy(&mut self) {
        match std::fs::remove_dir(self.dir()) {
            Err(e) if !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {
                tracing::warn!(dir = %self.dir().display(), error = %e, "cannot remove the empty lease index");
            }
            _ => {}
        }
    }

    /// The listed addresses of `name` whose lease file still names `owner`.
    fn verified(&mut self, name: &str, owner: &Owner) -> Option<Vec<IpAddr>> {
        match self.read(name) {
            Ok(ips) => Some(
                ips.into_iter()
                    .filter(|ip| self.store.owner(*ip).as_ref() == Some(owner))
                    .collect(),
            ),
            Err(e) => {
                self.distrust("cannot read the lease index", &e);
                None
            }
        }
    }

    /// What `(id, ifname)` holds, as [`Leases::holding`] would say after reading every lease.
    pub fn held_by(&mut self, id: &str, ifname: &str) -> Result<Held, Error> {
        if self.trusted
            && let (Some(current), Some(legacy)) = (key(id, Some(ifname)), key(id, None))
        {
            let mine = Owner::attachment(id, ifname);
            if let Some(ips) = self.verified(&current, &mine) {
                if !ips.is_empty() {
                    return Ok(Held { ips, legacy: false });
                }
                let old = Owner::Legacy { id: id.into() };
                if let Some(ips) = self.verified(&legacy, &old) {
                    return Ok(Held { ips, legacy: true });
                }
            }
        }
        Ok(self.store.leases()?.holding(id, ifname))
    }

    /// ADD gave `(id, ifname)` the new leases `created` next to what it `held`.
    pub fn added(&mut self, id: &str, ifname: &str, held: &Held, created: &[IpAddr]) {
        let Some(name) = key(id, Some(ifname)) else {
            return;
        };
        // New leases are current-format; legacy ones stay listed under the container id.
        let mut ips = if held.legacy {
            Vec::new()
        } else {
            held.ips.clone()
        };
        ips.extend_from_slice(created);
        self.write(&name, ips);
    }

    /// DEL released everything `(id, ifname)` `held`.
    pub fn released(&mut self, id: &str, ifname: &str, held: &Held) {
        // The attachment's entry lists nothing valid any more: either we released what it
        // listed, or (legacy) it had nothing verified.
        if let Some(name) = key(id, Some(ifname)) {
            self.write(&name, Vec::new());
        }
        if held.legacy
            && let Some(name) = key(id, None)
        {
            self.write(&name, Vec::new());
        }
        self.tidy();
    }

    /// Marks the directory as indexed, unless something went wrong.
    pub fn finish(self) {
        if self.trusted {
            self.store.mark_in_sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::{add, gc, release};
    use crate::config::Config;
    use crate::store::Access;
    use cni::Attachment;
    use serde_json::json;

    struct Fixture {
        _tmp: tempfile::TempDir,
        cfg: Config,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let raw = json!({"ipam": {"subnet": "10.0.0.0/24", "dataDir": tmp.path()}});
        let cfg = Config::parse(&raw, "net", "1.1.0", None).unwrap();
        Fixture { _tmp: tmp, cfg }
    }

    impl Fixture {
        fn store(&self) -> Store {
            Store::open(&self.cfg.data_dir, "net", Access::Create)
                .unwrap()
                .unwrap()
        }
        fn add(&self, id: &str, ifname: &str) -> String {
            let ips = add(&self.cfg, &self.store(), id, ifname).unwrap();
            assert_eq!(ips.len(), 1);
            ips[0].address.ip().to_string()
        }
        fn dir(&self) -> PathBuf {
            self.cfg.dir()
        }
        /// The index's file names, `None` when `.tether` is absent.
        fn index(&self) -> Option<Vec<String>> {
            let mut v: Vec<String> = std::fs::read_dir(self.dir().join(INDEX_DIR))
                .ok()?
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            Some(v)
        }
        fn listed(&self, name: &str) -> Vec<String> {
            std::fs::read_to_string(self.dir().join(INDEX_DIR).join(name))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        }
        fn in_sync(&self) -> bool {
            self.store().in_sync()
        }
        /// What the reference (or an admin) does: a lease file created behind our back.
        fn foreign_lease(&self, ip: &str, content: &str) {
            std::fs::create_dir_all(self.dir()).unwrap();
            std::fs::write(self.dir().join(ip), content).unwrap();
        }
    }

    #[test]
    fn add_records_and_answers_from_the_index_alone() {
        let f = fixture();
        assert_eq!(f.add("c1", "eth0"), "10.0.0.2");
        assert_eq!(f.add("c2", "eth0"), "10.0.0.3");
        assert!(f.in_sync());
        assert_eq!(f.index().unwrap(), ["c1@eth0", "c2@eth0"]);
        assert_eq!(f.listed("c2@eth0"), ["10.0.0.3"]);
        let content = std::fs::read_to_string(f.dir().join(INDEX_DIR).join("c2@eth0")).unwrap();
        assert!(content.starts_with("# "), "{content:?}");
        // The repeated ADD reads c2's entry and c2's lease file, nothing else: with the entry
        // emptied (in `.tether`, so the lease directory is unchanged and still marked) it no
        // longer knows about 10.0.0.3 and takes another address. A scan would have found it.
        std::fs::write(f.dir().join(INDEX_DIR).join("c2@eth0"), HEADER).unwrap();
        assert!(f.in_sync());
        assert_eq!(f.add("c2", "eth0"), "10.0.0.4");
        assert_eq!(f.listed("c2@eth0"), ["10.0.0.4"]);
        // An entry listing an address whose lease belongs to someone else is not believed.
        std::fs::write(
            f.dir().join(INDEX_DIR).join("c3@eth0"),
            format!("{HEADER}10.0.0.2\n"),
        )
        .unwrap();
        assert_eq!(f.add("c3", "eth0"), "10.0.0.5");
        assert_eq!(f.add("c1", "eth0"), "10.0.0.2");
    }

    #[test]
    fn a_change_by_someone_else_rebuilds_the_index() {
        let f = fixture();
        f.add("c1", "eth0");
        assert!(f.in_sync());
        // The reference's ADD for r1: it has no index entry, but the directory changed, so our
        // repeated ADD reads every lease, finds r1's and indexes it.
        f.foreign_lease("10.0.0.50", "r1\r\neth0");
        assert!(!f.in_sync());
        assert_eq!(f.add("r1", "eth0"), "10.0.0.50");
        assert!(f.in_sync());
        assert_eq!(f.index().unwrap(), ["c1@eth0", "r1@eth0"]);
        // The reference's DEL of c1: our stale entry goes at the next operation.
        std::fs::remove_file(f.dir().join("10.0.0.2")).unwrap();
        assert!(!f.in_sync());
        assert_eq!(f.add("c9", "eth0"), "10.0.0.3");
        assert_eq!(f.index().unwrap(), ["c9@eth0", "r1@eth0"]);
        // Deleting the whole index is a change of the lease directory too.
        std::fs::remove_dir_all(f.dir().join(INDEX_DIR)).unwrap();
        assert!(!f.in_sync());
        assert_eq!(f.add("c9", "eth0"), "10.0.0.3");
        assert_eq!(f.index().unwrap(), ["c9@eth0", "r1@eth0"]);
        // A lease whose names cannot be indexed (no request passes the skel with such an id)
        // stays out of the index, and is still found by reading every lease.
        f.foreign_lease("10.0.0.60", "bad id!\r\neth0");
        release(&f.store(), "c9", "eth0").unwrap();
        assert!(f.in_sync());
        assert_eq!(f.index().unwrap(), ["r1@eth0"]);
        assert_eq!(f.add("bad id!", "eth0"), "10.0.0.60");
    }

    #[test]
    fn del_uses_the_index_and_leaves_no_index_behind() {
        let f = fixture();
        f.add("a", "eth0");
        f.add("a", "eth1");
        f.add("b", "eth0");
        assert_eq!(
            release(&f.store(), "a", "eth0").unwrap(),
            ["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(f.in_sync());
        assert_eq!(f.index().unwrap(), ["a@eth1", "b@eth0"]);
        // DEL finds what the index lists, not more: a lease of b the index does not know
        // (behind the mark's back) stays, which shows that DEL did not read every lease.
        std::fs::write(f.dir().join("10.0.0.77"), "b\r\neth0").unwrap();
        f.store().mark_in_sync();
        assert_eq!(release(&f.store(), "b", "eth0").unwrap().len(), 1);
        assert!(f.dir().join("10.0.0.77").exists());
        std::fs::remove_file(f.dir().join("10.0.0.77")).unwrap();
        // A repeated DEL, and a DEL of an unknown container, change nothing.
        assert!(release(&f.store(), "b", "eth0").unwrap().is_empty());
        assert!(release(&f.store(), "nobody", "eth0").unwrap().is_empty());
        release(&f.store(), "a", "eth1").unwrap();
        assert_eq!(f.index(), None, "`.tether` goes with the last lease");
        let mut left: Vec<String> = std::fs::read_dir(f.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["last_reserved_ip.0", "lock"]);
        assert!(f.in_sync());
    }

    #[test]
    fn legacy_leases_are_indexed_by_container() {
        let f = fixture();
        f.foreign_lease("10.0.0.50", "old\n");
        f.add("x", "eth0");
        assert_eq!(f.index().unwrap(), ["old@", "x@eth0"]);
        assert_eq!(f.listed("old@"), ["10.0.0.50"]);
        // Any interface of the container finds the id-only lease, as the reference's DEL does.
        assert!(f.in_sync());
        assert_eq!(f.add("old", "eth3"), "10.0.0.50");
        assert_eq!(
            release(&f.store(), "old", "eth3").unwrap(),
            ["10.0.0.50".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(f.index().unwrap(), ["x@eth0"]);
    }

    #[test]
    fn gc_rebuilds_the_index() {
        let f = fixture();
        for id in ["a", "b", "c"] {
            f.add(id, "eth0");
        }
        let ix = f.dir().join(INDEX_DIR);
        std::fs::write(ix.join("zz@eth0"), format!("{HEADER}10.0.0.99\n")).unwrap();
        std::fs::write(ix.join(".a@eth0.tmp"), "half").unwrap();
        let valid = |ids: &[&str]| -> Vec<Attachment> {
            ids.iter()
                .map(|id| Attachment {
                    container_id: id.to_string(),
                    ifname: "eth0".into(),
                })
                .collect()
        };
        assert_eq!(gc(&f.store(), &valid(&["a"])).unwrap().len(), 2);
        assert_eq!(f.index().unwrap(), ["a@eth0"]);
        assert!(f.in_sync());
        gc(&f.store(), &valid(&[])).unwrap();
        assert_eq!(f.index(), None);
        assert!(f.in_sync());
    }

    #[test]
    fn a_fresh_directory_is_not_trusted() {
        let f = fixture();
        // A lock created with the directory (by the reference or by us) carries no mark.
        drop(f.store());
        assert!(!f.in_sync());
        f.add("a", "eth0");
        assert!(f.in_sync());
        // Rewriting the lock file (as nobody should) does not fake the mark either.
        std::fs::remove_file(f.dir().join("lock")).unwrap();
        assert!(!f.in_sync());
    }

    #[test]
    fn keys() {
        assert_eq!(key("c1", Some("eth0")).as_deref(), Some("c1@eth0"));
        assert_eq!(key("c1", None).as_deref(), Some("c1@"));
        // Interface names may hold `@` (ids cannot): the first `@` still separates them.
        assert_eq!(key("c1", Some("a@b")).as_deref(), Some("c1@a@b"));
        assert_eq!(key("c1", Some("")), None);
        assert_eq!(key("c1", Some("a/b")), None);
        assert_eq!(key("../x", Some("eth0")), None);
        assert_eq!(key("", None), None);
        assert_eq!(key(&"a".repeat(300), None), None);
    }
}
