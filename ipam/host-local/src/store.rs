//! The lease store, byte-compatible with the reference host-local's disk backend, so that a host
//! can switch between the two (in either direction) without losing or duplicating leases:
//!
//! - `<dataDir>/<network>/` (mode 0755), one directory per network;
//! - one file per leased address, named by the address (`10.1.0.5`, `fd00::5`), created with
//!   `O_CREAT|O_EXCL` (mode 0644), holding `<containerID>\r\n<ifname>`; files from older versions
//!   hold only the container id;
//! - `last_reserved_ip.<N>` holding the last address handed out from range set `N`;
//! - `lock`, `flock`-ed by every operation. The reference locks it around each range set; we hold
//!   it for a whole operation, which excludes the reference just the same.
//!
//! Beside them we keep `.tether/`, an index of our own that the reference ignores (see
//! [`crate::index`]), and mark the directory's and the lock's mtimes to know whether that index is
//! still complete.

use crate::Error;
use crate::range::RangeSet;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, FileTimes, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";
/// Lease files are a few dozen bytes; a file that fills this buffer is not a lease.
const MAX_LEASE_FILE: usize = 4096;

/// Who holds a lease, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<id>\r\n<ifname>`: the current format (both implementations write it).
    Attachment { id: String, ifname: String },
    /// `<id>` alone: written by host-local before it recorded the interface.
    Legacy { id: String },
    /// An empty file: a writer died between creating and filling it.
    Empty,
    /// A directory entry named like an address that we cannot read as a lease (not a regular
    /// file, unreadable). Its address counts as taken and it is never removed.
    Foreign,
}

impl Owner {
    pub fn attachment(id: &str, ifname: &str) -> Owner {
        Owner::Attachment {
            id: id.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// Reads a lease file's content. The reference compares `TrimSpace(content)` with
    /// `id + "\r\n" + ifname` or with `id`; splitting into trimmed lines accepts exactly those.
    pub fn parse(content: &str) -> Owner {
        let mut lines = content.trim().lines().map(str::trim);
        match (lines.next(), lines.next()) {
            (None, _) | (Some(""), _) => Owner::Empty,
            (Some(id), None) => Owner::Legacy { id: id.into() },
            (Some(id), Some(ifname)) => Owner::attachment(id, ifname),
        }
    }

    /// Does this lease belong to `(id, ifname)`? `legacy` also accepts a lease that names only the
    /// container.
    fn matches(&self, id: &str, ifname: &str, legacy: bool) -> bool {
        match self {
            Owner::Attachment { id: i, ifname: n } => i == id && n == ifname,
            Owner::Legacy { id: i } => legacy && i == id,
            Owner::Empty | Owner::Foreign => false,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Attachment { id, ifname } => write!(f, "container {id} interface {ifname}"),
            Owner::Legacy { id } => write!(f, "container {id}"),
            Owner::Empty => f.write_str("an empty lease file"),
            Owner::Foreign => f.write_str("an unreadable entry"),
        }
    }
}

/// Every lease of a network, read under the lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases(pub BTreeMap<IpAddr, Owner>);

impl Leases {
    pub fn get(&self, ip: IpAddr) -> Option<&Owner> {
        self.0.get(&ip)
    }

    /// The addresses leased to `(id, ifname)`. Legacy (id-only) leases count only when there is no
    /// current-format lease for the pair, as in the reference's release: with a current-format
    /// lease present, an id-only file cannot be this interface's.
    pub fn held_by(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        self.holding(id, ifname).ips
    }

    /// [`Leases::held_by`], saying which kind of lease it found.
    pub fn holding(&self, id: &str, ifname: &str) -> Held {
        let pick = |legacy: bool| -> Vec<IpAddr> {
            self.0
                .iter()
                .filter(|(_, o)| o.matches(id, ifname, legacy))
                .map(|(ip, _)| *ip)
                .collect()
        };
        let current = pick(false);
        if current.is_empty() {
            Held {
                ips: pick(true),
                legacy: true,
            }
        } else {
            Held {
                ips: current,
                legacy: false,
            }
        }
    }

    /// How many addresses of `set` are still free.
    pub fn free_in(&self, set: &RangeSet) -> u128 {
        let used = self.0.keys().filter(|ip| set.allocatable(**ip)).count() as u128;
        set.capacity().saturating_sub(used)
    }
}

/// The leases of one attachment: its current-format leases, or (when it has none) the id-only
/// leases of its container, flagged `legacy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub ips: Vec<IpAddr>,
    pub legacy: bool,
}

/// How an operation uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// ADD: create the directory if needed; exclusive lock.
    Create,
    /// DEL, GC: only an existing directory; exclusive lock.
    Modify,
    /// CHECK, STATUS: only an existing directory; shared lock.
    Read,
}

/// One network's lease directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The directory itself, opened to read and set its mtime (see [`Store::in_sync`]).
    dir_file: File,
    lock: Flock<File>,
}

fn io_err(what: impl fmt::Display, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

impl Store {
    /// Opens and locks `<data_dir>/<network>`. `None` when the directory does not exist and
    /// `access` is not [`Access::Create`]: there is nothing stored for that network.
    pub fn open(data_dir: &Path, network: &str, access: Access) -> Result<Option<Store>, Error> {
        // The name becomes a path component: the skel checked it already, but a name like `..`
        // or `a/b` must never reach a join, whoever calls this.
        if !cni::types::valid_id(network) {
            return Err(Error::Config(format!(
                "invalid network name {network:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
            )));
        }
        let dir = data_dir.join(network);
        if access == Access::Create {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .map_err(io_err("cannot create lease directory", &dir))?;
        }
        let dir_file = match File::open(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && access != Access::Create => {
                return Ok(None);
            }
            Err(e) => return Err(io_err("cannot open lease directory", &dir)(e)),
        };
        // (Create made it a directory above, or failed.)
        if !dir_file
            .metadata()
            .map_err(io_err("cannot stat", &dir))?
            .is_dir()
        {
            return Ok(None);
        }
        let lock_path = dir.join(LOCK_FILE);
        // 0750 as the reference's go-filemutex creates it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&lock_path)
            .map_err(io_err("cannot open lock file", &lock_path))?;
        let arg = if access == Access::Read {
            FlockArg::LockShared
        } else {
            FlockArg::LockExclusive
        };
        let mut file = file;
        let lock = loop {
            match Flock::lock(file, arg) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => {
                    return Err(io_err("cannot lock", &lock_path)(std::io::Error::from(e)));
                }
            }
        };
        Ok(Some(Store {
            dir,
            dir_file,
            lock,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        // Rust and Go both print IPv6 addresses in RFC 5952 form, so both name a lease file the
        // same; the test `lease_file_names_match_go` pins the cases where spellings could differ.
        self.dir.join(ip.to_string())
    }

    /// Reads every lease: one directory listing plus one small read per file named like an
    /// address (`lock`, `last_reserved_ip.N` and anything else are skipped without opening).
    pub fn leases(&self) -> Result<Leases, Error> {
        let mut out = BTreeMap::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(io_err("cannot list leases in", &self.dir))?;
        let mut buf = [0u8; MAX_LEASE_FILE];
        for entry in entries {
            let entry = entry.map_err(io_err("cannot list leases in", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            let owner = if !is_file {
                Owner::Foreign
            } else {
                match read_owner(&entry.path(), &mut buf) {
                    Some(o) => o,
                    None => continue,
                }
            };
            out.insert(ip, owner);
        }
        Ok(Leases(out))
    }

    /// Who holds `ip`, from its lease file alone; `None` when there is no such file.
    pub fn owner(&self, ip: IpAddr) -> Option<Owner> {
        let path = self.lease_path(ip);
        // Not a regular file (a directory, a FIFO that would block an open, a symlink): an
        // address we leave alone, as `leases` does.
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Ok(m) if m.is_file() => read_owner(&path, &mut [0u8; MAX_LEASE_FILE]),
            _ => Some(Owner::Foreign),
        }
    }

    /// Creates the lease file for `ip`. `false` when it exists: the `O_EXCL` create is the
    /// reservation, whatever the listing said.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool, Error> {
        let path = self.lease_path(ip);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("cannot create lease file", &path)(e)),
        };
        if let Err(e) = f.write_all(format!("{id}\r\n{ifname}").as_bytes()) {
            // A full disk lets the create through and fails the write: the empty (or partial)
            // file must not stay behind as a lease nobody holds.
            if let Err(re) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %re, "cannot remove a lease file whose write failed");
            }
            return Err(io_err("cannot write lease file", &path)(e));
        }
        Ok(true)
    }

    /// Removes the lease file of `ip`; an absent file is already released.
    pub fn release(&self, ip: IpAddr) -> Result<(), Error> {
        let path = self.lease_path(ip);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(io_err("cannot remove lease file", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// The round-robin cursor of range set `set`; unreadable or garbage means "none" (we only
    /// lose the round-robin position once, as the reference does).
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Is the directory still as our last [`Store::mark_in_sync`] left it, apart from our own
    /// changes since (which kept the index up to date)? The mark is the directory's mtime lying
    /// exactly 1 ns after the lock file's: any create or unlink in the directory, by anyone,
    /// sets its mtime to the current time, which lies after the marked value (we mark it 1 ns
    /// before what the kernel last set), and a freshly created lock has the directory's time
    /// or an earlier one, never 1 ns less. A same-tick change cannot hide either, as it could
    /// with a plain "mtime unchanged" test on coarse (jiffy) timestamps.
    pub fn in_sync(&self) -> bool {
        match (self.dir_file.metadata(), self.lock.metadata()) {
            (Ok(d), Ok(l)) => mtime_ns(&d) == mtime_ns(&l) + 1,
            _ => false,
        }
    }

    /// Records that the index is complete for the directory as it is now. Best effort: when the
    /// times cannot be set (not our directory, a filesystem with coarse timestamps), the next
    /// operation just reads every lease again.
    pub fn mark_in_sync(&self) {
        let ns = Duration::from_nanos(1);
        let marked = (|| -> std::io::Result<()> {
            let d = self.dir_file.metadata()?;
            if mtime_ns(&d) == mtime_ns(&self.lock.metadata()?) + 1 {
                return Ok(());
            }
            let t = d.modified()? - ns;
            self.dir_file.set_times(FileTimes::new().set_modified(t))?;
            self.lock.set_times(FileTimes::new().set_modified(t - ns))
        })();
        if let Err(e) = marked {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot mark the lease index complete");
        }
    }

    /// Moves the round-robin cursor of range set `set` from `previous` (what
    /// [`Store::last_reserved`] read under this lock) to `ip`, in place as the reference does (a
    /// rewrite in place needs no more room than the file had, unlike a temporary file and a
    /// rename). When the write fails (a full disk) the file is put back: removed when there was
    /// no cursor, else given `previous` again when the room allows (if not, the cursor is lost
    /// once, which only moves the next ADD back to the start of the set).
    pub fn set_last_reserved(
        &self,
        set: usize,
        previous: Option<IpAddr>,
        ip: IpAddr,
    ) -> Result<(), Error> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| f.write_all(ip.to_string().as_bytes()));
        if let Err(e) = written {
            let undone = match previous {
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
                Some(p) => std::fs::write(&path, p.to_string()),
            };
            if let Err(ue) = undone {
                tracing::warn!(path = %path.display(), error = %ue, "cannot put the round-robin cursor back");
            }
            return Err(io_err("cannot write", &path)(e));
        }
        Ok(())
    }
}

fn mtime_ns(m: &Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// Reads one lease file; `None` when it is gone.
fn read_owner(path: &Path, buf: &mut [u8]) -> Option<Owner> {
    // One read: a regular file returns all of its (tiny) content at once.
    match File::open(path).and_then(|mut f| f.read(buf)) {
        Ok(n) if n < buf.len() => Some(Owner::parse(&String::from_utf8_lossy(&buf[..n]))),
        Ok(_) => Some(Owner::Foreign),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable lease file: treating its address as taken");
            Some(Owner::Foreign)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn owner_formats() {
        assert_eq!(Owner::parse("c1\r\neth0"), Owner::attachment("c1", "eth0"));
        assert_eq!(
            Owner::parse("  c1\r\neth0\n"),
            Owner::attachment("c1", "eth0")
        );
        assert_eq!(Owner::parse("c1\n"), Owner::Legacy { id: "c1".into() });
        assert_eq!(Owner::parse(" \n"), Owner::Empty);
        assert_eq!(Owner::parse(""), Owner::Empty);
    }

    #[test]
    fn lease_file_names_match_go() {
        // net.IP.String() output for the same addresses (RFC 5952: lower case, the longest run
        // of two or more zero groups compressed, the first one on a tie, single zero groups
        // kept).
        for (addr, go) in [
            ("10.0.0.1", "10.0.0.1"),
            ("FD00:0:0:0:0:0:0:A", "fd00::a"),
            ("2001:db8:0:1:0:0:0:5", "2001:db8:0:1::5"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("fd00:0:0:1::", "fd00:0:0:1::"),
            ("::1", "::1"),
        ] {
            assert_eq!(ip(addr).to_string(), go, "{addr}");
        }
    }

    #[test]
    fn reserve_release_and_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "net", Access::Create)
            .unwrap()
            .unwrap();
        assert!(s.reserve(ip("10.0.0.2"), "c1", "eth0").unwrap());
        assert!(!s.reserve(ip("10.0.0.2"), "c2", "eth0").unwrap());
        assert!(s.reserve(ip("fd00::2"), "c1", "eth0").unwrap());
        std::fs::write(s.dir().join("10.0.0.3"), "old\n").unwrap();
        std::fs::write(s.dir().join("10.0.0.4"), "").unwrap();
        std::fs::create_dir(s.dir().join("10.0.0.5")).unwrap();
        s.set_last_reserved(0, None, ip("10.0.0.2")).unwrap();
        assert_eq!(
            std::fs::read(s.dir().join("10.0.0.2")).unwrap(),
            b"c1\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(s.dir().join("last_reserved_ip.0")).unwrap(),
            "10.0.0.2"
        );
        assert_eq!(s.last_reserved(0), Some(ip("10.0.0.2")));
        assert_eq!(s.last_reserved(1), None);
        let l = s.leases().unwrap();
        assert_eq!(l.0.len(), 5, "{l:?}");
        assert_eq!(l.get(ip("10.0.0.4")), Some(&Owner::Empty));
        assert_eq!(l.get(ip("10.0.0.5")), Some(&Owner::Foreign));
        assert_eq!(l.held_by("c1", "eth0"), [ip("10.0.0.2"), ip("fd00::2")]);
        assert_eq!(l.held_by("old", "eth0"), [ip("10.0.0.3")]);
        assert!(l.held_by("c1", "eth1").is_empty());
        s.release(ip("10.0.0.2")).unwrap();
        s.release(ip("10.0.0.2")).unwrap();
        assert!(s.leases().unwrap().get(ip("10.0.0.2")).is_none());
    }

    #[test]
    fn open_checks_name_and_existence() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["..", "a/b", "", "../x"] {
            assert!(
                Store::open(tmp.path(), bad, Access::Create).is_err(),
                "{bad}"
            );
        }
        assert!(
            Store::open(tmp.path(), "net", Access::Modify)
                .unwrap()
                .is_none()
        );
        assert!(!tmp.path().join("net").exists());
        drop(Store::open(tmp.path(), "net", Access::Create).unwrap());
        assert!(
            Store::open(tmp.path(), "net", Access::Read)
                .unwrap()
                .is_some()
        );
    }
}
