//! What each CNI command does with a locked [`Store`].

use crate::Error;
use crate::config::Config;
use crate::index::Index;
use crate::range::RangeSet;
use crate::store::{Leases, Owner, Store};
use cni::{Attachment, CniResult, IpConfig};
use std::net::IpAddr;

/// ADD: one address per range set for `(id, ifname)`.
///
/// A pair that already holds an address in a set keeps it (a repeated ADD returns the same
/// result instead of failing or leaking, unlike the reference, which refuses with "duplicate
/// allocation is not allowed"). Requested addresses go to the set that contains them. On any
/// failure the addresses this call created are released again; earlier leases stay.
///
/// The cost does not grow with the number of leases: the pair's leases come from the
/// [`Index`], and a free address is found by creating candidate lease files with `O_EXCL`.
pub fn add(cfg: &Config, store: &Store, id: &str, ifname: &str) -> Result<Vec<IpConfig>, Error> {
    let mut index = Index::open(store)?;
    let held = index.held_by(id, ifname)?;
    let mut created = Vec::new();
    let result = add_sets(cfg, store, &held.ips, id, ifname, &mut created);
    match &result {
        Err(e) => {
            for &ip in &created {
                if let Err(e) = store.release(ip) {
                    tracing::warn!(%ip, error = %e, "cannot undo lease of failed ADD");
                    index.mark_incomplete("a lease of a failed ADD is left");
                }
            }
            // A write that failed midway (a full disk, an I/O error) may have left something
            // we could not take back: the next operation reads every lease rather than trust
            // an index that may not know of it.
            if matches!(e, Error::Io { .. }) {
                index.mark_incomplete("a write to the lease store failed");
            }
        }
        Ok(_) if !created.is_empty() => index.added(id, ifname, &held, &created),
        Ok(_) => {}
    }
    index.finish();
    result
}

fn add_sets(
    cfg: &Config,
    store: &Store,
    held: &[IpAddr],
    id: &str,
    ifname: &str,
    created: &mut Vec<IpAddr>,
) -> Result<Vec<IpConfig>, Error> {
    let mut requested = cfg.requested.clone();
    let mut ips = Vec::with_capacity(cfg.range_sets.len());
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        let want = requested
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| requested.remove(i));
        let mine = held.iter().copied().find(|ip| set.contains(*ip));
        let ip = match mine {
            Some(ip) => keep_existing(ip, want, id, ifname)?,
            None => allocate_in_set(store, idx, set, id, ifname, want, created)
                .map_err(|e| e.context(format!("failed to allocate for range set {idx}")))?,
        };
        let range = set
            .range_for(ip)
            .expect("address was chosen inside the set");
        ips.push(IpConfig {
            address: range.with_prefix(ip),
            gateway: Some(range.gateway),
            interface: None,
        });
    }
    if let Some(&ip) = requested.first() {
        let why = match cfg.range_sets.iter().position(|s| s.contains(ip)) {
            Some(i) => format!(
                "range set {i} gives one address per ADD and another requested address already takes it"
            ),
            None => format!(
                "it is not inside any range of network {} ({})",
                cfg.network,
                cfg.range_sets
                    .iter()
                    .map(RangeSet::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        return Err(Error::Request(format!(
            "failed to allocate all requested IPs: {ip}: {why}"
        )));
    }
    Ok(ips)
}

fn keep_existing(
    ip: IpAddr,
    want: Option<IpAddr>,
    id: &str,
    ifname: &str,
) -> Result<IpAddr, Error> {
    match want {
        Some(w) if w != ip => Err(Error::Request(format!(
            "container {id} interface {ifname} already holds {ip}, so it cannot also take the requested {w} from the same range set: DEL it first"
        ))),
        _ => {
            tracing::info!(%ip, "ADD repeated for the same container and interface: returning its lease");
            Ok(ip)
        }
    }
}

/// Takes one address of `set`. Every lease file it creates goes into `created` the moment it
/// exists, before anything else can fail (the cursor write below can, on a full disk), so that
/// the caller's rollback knows of it.
fn allocate_in_set(
    store: &Store,
    idx: usize,
    set: &RangeSet,
    id: &str,
    ifname: &str,
    want: Option<IpAddr>,
    created: &mut Vec<IpAddr>,
) -> Result<IpAddr, Error> {
    let cursor = store.last_reserved(idx);
    if let Some(ip) = want {
        let range = set
            .range_for(ip)
            .expect("requested address was matched to this set");
        if ip == range.gateway {
            return Err(Error::Request(format!(
                "requested IP {ip} is the gateway of range {range}"
            )));
        }
        if !store.reserve(ip, id, ifname)? {
            let by = store.owner(ip).unwrap_or(Owner::Foreign);
            return Err(Error::Request(format!(
                "requested IP address {ip} is not available in range set {set}: it is leased to {by}"
            )));
        }
        created.push(ip);
        store.set_last_reserved(idx, cursor, ip)?;
        return Ok(ip);
    }
    // As the reference: the `O_EXCL` create of each candidate is both the test and the
    // reservation, so no listing is needed. Every failed candidate is an existing file, so the
    // walk ends after at most (leases + 1) candidates even in a /64, and after the whole set
    // when it is exhausted.
    for (_, ip) in set.candidates(cursor) {
        if store.reserve(ip, id, ifname)? {
            created.push(ip);
            store.set_last_reserved(idx, cursor, ip)?;
            return Ok(ip);
        }
    }
    Err(Error::Exhausted(format!(
        "no IP addresses available in range set {set}: all {} usable addresses are leased (DEL or GC stale containers)",
        set.capacity()
    )))
}

/// DEL: releases every address of `(id, ifname)`, whichever range set (or older config) it came
/// from. Returns what was released.
pub fn release(store: &Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>, Error> {
    let mut index = Index::open(store)?;
    let held = index.held_by(id, ifname)?;
    let result = release_all(store, &held.ips);
    match result {
        Ok(()) => index.released(id, ifname, &held),
        Err(_) => index.mark_incomplete("a lease could not be released"),
    }
    index.finish();
    result.map(|()| held.ips)
}

/// Releases all of `ips`, trying every one before reporting the first error.
fn release_all(store: &Store, ips: &[IpAddr]) -> Result<(), Error> {
    let mut first_err = None;
    for &ip in ips {
        if let Err(e) = store.release(ip) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// GC: releases every lease whose `(id, ifname)` is not in `valid`. An id-only lease stays while
/// any attachment of its container is valid; empty files (a writer died mid-create) go. It reads
/// every lease anyway, so it also rebuilds the index (dropping entries of vanished leases).
pub fn gc(store: &Store, valid: &[Attachment]) -> Result<Vec<IpAddr>, Error> {
    let mut leases = store.leases()?;
    let stale: Vec<IpAddr> = leases
        .0
        .iter()
        .filter(|(_, owner)| match owner {
            Owner::Attachment { id, ifname } => !valid
                .iter()
                .any(|a| &a.container_id == id && &a.ifname == ifname),
            Owner::Legacy { id } => !valid.iter().any(|a| &a.container_id == id),
            Owner::Empty => true,
            Owner::Foreign => false,
        })
        .map(|(ip, _)| *ip)
        .collect();
    let result = release_all(store, &stale);
    for ip in &stale {
        leases.0.remove(ip);
    }
    let mut index = Index::rebuild(store, &leases);
    if result.is_err() {
        index.mark_incomplete("a stale lease could not be released");
    }
    index.finish();
    result.map(|()| stale)
}

/// CHECK: `(id, ifname)` holds a lease in every range set, and every `prevResult` address that
/// lies in one of our ranges is one of its leases.
pub fn check(
    cfg: &Config,
    leases: &Leases,
    id: &str,
    ifname: &str,
    prev: Option<&CniResult>,
) -> Result<(), Error> {
    let held = leases.held_by(id, ifname);
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        if !held.iter().any(|ip| set.contains(*ip)) {
            return Err(Error::Mismatch(format!(
                "host-local: no address in range set {idx} ({set}) is leased to container {id} interface {ifname} in network {}",
                cfg.network
            )));
        }
    }
    for ipc in prev.map(|p| p.ips.as_slice()).unwrap_or_default() {
        let ip = ipc.address.ip();
        if cfg.range_sets.iter().any(|s| s.contains(ip)) && !held.contains(&ip) {
            let by = leases
                .get(ip)
                .map_or("nobody".to_string(), Owner::to_string);
            return Err(Error::Mismatch(format!(
                "host-local: prevResult address {ip} is not leased to container {id} interface {ifname} (its lease belongs to {by})"
            )));
        }
    }
    Ok(())
}

/// STATUS: every range set must have a free address.
pub fn status(cfg: &Config, leases: &Leases) -> Result<(), Error> {
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        if leases.free_in(set) == 0 {
            return Err(Error::Exhausted(format!(
                "host-local: range set {idx} ({set}) of network {} has no free address: all {} usable addresses are leased",
                cfg.network,
                set.capacity()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Access;
    use serde_json::{Value, json};

    struct Fixture {
        _tmp: tempfile::TempDir,
        cfg: Config,
    }

    fn fixture(ipam: Value) -> Fixture {
        fixture_req(ipam, json!({}))
    }

    fn fixture_req(mut ipam: Value, extra: Value) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        ipam["dataDir"] = json!(tmp.path());
        let mut raw = json!({"ipam": ipam});
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        let cfg = Config::parse(&raw, "net", "1.1.0", None).unwrap();
        Fixture { _tmp: tmp, cfg }
    }

    impl Fixture {
        fn store(&self) -> Store {
            Store::open(&self.cfg.data_dir, "net", Access::Create)
                .unwrap()
                .unwrap()
        }
        fn add(&self, id: &str) -> Result<Vec<String>, Error> {
            add(&self.cfg, &self.store(), id, "eth0")
                .map(|v| v.iter().map(|c| c.address.to_string()).collect())
        }
        /// The reference's files (our index aside).
        fn files(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.cfg.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != crate::index::INDEX_DIR)
                .collect();
            v.sort();
            v
        }
    }

    #[test]
    fn round_robin_then_exhaustion_then_reuse() {
        let f = fixture(json!({"subnet": "10.0.0.0/29"}));
        for (i, want) in [
            "10.0.0.2/29",
            "10.0.0.3/29",
            "10.0.0.4/29",
            "10.0.0.5/29",
            "10.0.0.6/29",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(f.add(&format!("c{i}")).unwrap(), [*want]);
        }
        let e = f.add("c9").unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "{e}");
        assert!(
            e.to_string()
                .contains("no IP addresses available in range set 10.0.0.1-10.0.0.6")
        );
        let leases = f.store().leases().unwrap();
        assert!(status(&f.cfg, &leases).is_err());
        // Freeing .3 makes it the only candidate; the cursor (.6) wraps around to it.
        assert_eq!(release(&f.store(), "c1", "eth0").unwrap().len(), 1);
        status(&f.cfg, &f.store().leases().unwrap()).unwrap();
        assert_eq!(f.add("c9").unwrap(), ["10.0.0.3/29"]);
        // Round robin: with .2 and .6 free, the next lease continues after the cursor (.3)
        // instead of reusing the lowest free address.
        release(&f.store(), "c0", "eth0").unwrap();
        release(&f.store(), "c4", "eth0").unwrap();
        assert_eq!(f.add("c10").unwrap(), ["10.0.0.6/29"]);
    }

    #[test]
    fn repeated_add_returns_the_same_lease() {
        let f =
            fixture(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
        let first = f.add("c1").unwrap();
        assert_eq!(first, ["10.0.0.2/24", "fd00::2/64"]);
        assert_eq!(f.add("c1").unwrap(), first);
        assert_eq!(add(&f.cfg, &f.store(), "c1", "eth1").unwrap().len(), 2);
        assert_eq!(
            f.files(),
            [
                "10.0.0.2",
                "10.0.0.3",
                "fd00::2",
                "fd00::3",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
        );
        // DEL of one interface leaves the other.
        release(&f.store(), "c1", "eth0").unwrap();
        assert_eq!(
            f.store().leases().unwrap().held_by("c1", "eth1"),
            [
                "10.0.0.3".parse::<IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn requested_ips() {
        let f = fixture_req(
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
            json!({"runtimeConfig": {"ips": ["fd00::99/64", "10.0.0.77"]}}),
        );
        assert_eq!(f.add("c1").unwrap(), ["10.0.0.77/24", "fd00::99/64"]);
        // Same container again: the same addresses, also when requested again.
        assert_eq!(f.add("c1").unwrap(), ["10.0.0.77/24", "fd00::99/64"]);
        // Another container asking for the same: refused, and nothing leaks.
        let e = f.add("c2").unwrap_err().to_string();
        assert!(
            e.contains("requested IP address 10.0.0.77 is not available")
                && e.contains("container c1 interface eth0"),
            "{e}"
        );
        assert_eq!(f.store().leases().unwrap().0.len(), 2);

        let bad = |ips: Value| {
            let f = fixture_req(
                json!({"subnet": "10.0.0.0/24"}),
                json!({"args": {"cni": {"ips": ips}}}),
            );
            let e = f.add("c1").unwrap_err();
            assert!(matches!(e, Error::Request(_)), "{e}");
            assert_eq!(f.store().leases().unwrap().0.len(), 0, "leaked on: {e}");
            e.to_string()
        };
        assert!(bad(json!(["10.0.0.1"])).contains("is the gateway"));
        assert!(bad(json!(["10.9.0.1"])).contains("not inside any range"));
        assert!(bad(json!(["10.0.0.5", "10.0.0.6"])).contains("gives one address per ADD"));
    }

    #[test]
    fn failed_add_releases_only_what_it_took() {
        // Set 1 is exhausted: the address taken from set 0 is given back.
        let f =
            fixture(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]}));
        assert_eq!(f.add("c1").unwrap().len(), 2);
        let e = f.add("c2").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("failed to allocate for range set 1: no IP addresses"),
            "{e}"
        );
        assert!(f.store().leases().unwrap().held_by("c2", "eth0").is_empty());
        assert_eq!(f.store().leases().unwrap().0.len(), 2);
    }

    #[test]
    fn a_failed_cursor_write_undoes_the_lease_and_leaves_the_index_unmarked() {
        let f = fixture(json!({"subnet": "10.0.0.0/29"}));
        assert_eq!(f.add("c0").unwrap(), ["10.0.0.2/29"]);
        // A cursor that cannot be written (as on a full disk): the lease file was created
        // first, and must go again.
        let cursor = f.cfg.dir().join("last_reserved_ip.0");
        std::fs::remove_file(&cursor).unwrap();
        std::fs::create_dir(&cursor).unwrap();
        let e = f.add("c1").unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains("last_reserved_ip.0"),
            "{e}"
        );
        let leases = f.store().leases().unwrap();
        assert_eq!(leases.0.len(), 1, "{leases:?}");
        assert!(leases.held_by("c1", "eth0").is_empty());
        // After a failed write nothing vouches for the index: the next operation rebuilds it.
        assert!(!f.store().in_sync());
        std::fs::remove_dir(&cursor).unwrap();
        assert_eq!(f.add("c1").unwrap(), ["10.0.0.3/29"]);
        assert!(f.store().in_sync());
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let f = fixture(json!({"subnet": "10.0.0.0/24"}));
        for id in ["a", "b", "c"] {
            f.add(id).unwrap();
        }
        let s = f.store();
        std::fs::write(s.dir().join("10.0.0.50"), "legacy-live").unwrap();
        std::fs::write(s.dir().join("10.0.0.51"), "legacy-dead").unwrap();
        std::fs::write(s.dir().join("10.0.0.52"), "").unwrap();
        let valid = [
            Attachment {
                container_id: "a".into(),
                ifname: "eth0".into(),
            },
            Attachment {
                container_id: "b".into(),
                ifname: "eth1".into(),
            },
            Attachment {
                container_id: "legacy-live".into(),
                ifname: "eth0".into(),
            },
        ];
        let mut gone: Vec<String> = gc(&s, &valid)
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect();
        gone.sort();
        assert_eq!(gone, ["10.0.0.3", "10.0.0.4", "10.0.0.51", "10.0.0.52"]);
        let left: Vec<IpAddr> = s.leases().unwrap().0.into_keys().collect();
        assert_eq!(
            left,
            [
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "10.0.0.50".parse().unwrap()
            ]
        );
    }

    #[test]
    fn check_and_status() {
        let f = fixture(json!({"subnet": "10.0.0.0/30"}));
        let leases = || f.store().leases().unwrap();
        status(&f.cfg, &leases()).unwrap();
        assert!(check(&f.cfg, &leases(), "c1", "eth0", None).is_err());
        f.add("c1").unwrap();
        check(&f.cfg, &leases(), "c1", "eth0", None).unwrap();
        assert!(check(&f.cfg, &leases(), "c1", "eth1", None).is_err());
        let prev = |addr: &str| CniResult {
            ips: vec![IpConfig {
                address: addr.parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..Default::default()
        };
        check(&f.cfg, &leases(), "c1", "eth0", Some(&prev("10.0.0.2/30"))).unwrap();
        // Addresses outside our ranges belong to someone else; ours must match.
        check(
            &f.cfg,
            &leases(),
            "c1",
            "eth0",
            Some(&prev("192.168.1.1/24")),
        )
        .unwrap();
        std::fs::write(f.cfg.dir().join("10.0.0.2"), "c1\r\neth0").unwrap();
        let e = status(&f.cfg, &leases()).unwrap_err();
        assert!(
            matches!(e, Error::Exhausted(_)) && e.to_string().contains("no free address"),
            "{e}"
        );
        let g = fixture(json!({"subnet": "10.0.0.0/24"}));
        g.add("c1").unwrap();
        let e = check(
            &g.cfg,
            &g.store().leases().unwrap(),
            "c1",
            "eth0",
            Some(&prev("10.0.0.9/24")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("10.0.0.9 is not leased"), "{e}");
    }

    #[test]
    fn exhausted_v6_is_reported_without_walking() {
        // A /126 has 3 candidates; the count check, not a walk, decides.
        let f = fixture(json!({"subnet": "fd00::/126"}));
        assert_eq!(f.add("a").unwrap(), ["fd00::2/126"]);
        assert_eq!(f.add("b").unwrap(), ["fd00::3/126"]);
        assert!(matches!(f.add("c").unwrap_err(), Error::Exhausted(_)));
        // A /64 allocates in O(leases), not O(range).
        let f = fixture(json!({"subnet": "fd00::/64"}));
        assert_eq!(f.add("a").unwrap(), ["fd00::2/64"]);
    }
}
