//! `tether overlay agent`: one per host and network, in the foreground.
//!
//! ```text
//!  start   iface → etcd (deadline) → config → lease grant → claim a subnet (txn)
//!          → tvx-<vni> → lease.json, agent.pid → sync
//!  sync    keep-alive (lease still alive? else grant + claim again) → list subnets at rev
//!          → program peers (diff) → peers.json → watch from rev+1
//!  loop    watch event ──────────────► add/remove one peer, peers.json
//!          every ttl/3 ──────────────► keep-alive
//!          every 300 ms ─────────────► reconcile: device, neighbours, FDB, routes (fix by hand-deletes)
//!          etcd error/lost watch ────► offline: data plane kept as is; sync again with backoff
//!          SIGTERM/SIGINT ───────────► revoke lease, delete tvx-<vni> (its entries go with it), files
//! ```
//!
//! Offline, the agent changes nothing in the kernel except what reconcile restores: traffic
//! between hosts that were programmed keeps flowing while etcd is down.

use crate::config::{Backend, NetworkConfig, SubnetRecord, parse_subnet_key, vtep_mac};
use crate::dataplane::{self, Dataplane, PeerEntry};
use crate::error::{Error, Result};
use crate::store::{CALL_TIMEOUT, Entry, Store};
use etcd_client::{EventType, LeaseKeepAliveStream, LeaseKeeper, WatchResponse, WatchStream};
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tether_overlay_state::{HostLease, NetworkDir, Peer};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, interval, sleep_until, timeout};
use tracing::{error, info, warn};

/// How often the kernel state is compared with the peers (the "restored within a second" bound).
const RECONCILE_EVERY: Duration = Duration::from_millis(300);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub network: String,
    pub etcd: String,
    pub iface: String,
    pub lease_ttl: i64,
    pub state_dir: PathBuf,
    /// Keep retrying while etcd is unreachable at start (boot ordering) instead of failing.
    pub wait_for_etcd: bool,
}

/// A live etcd session: the watch and the lease keep-alive.
struct Session {
    watch: WatchStream,
    keeper: LeaseKeeper,
    ka: LeaseKeepAliveStream,
}

struct Agent {
    o: AgentOptions,
    store: Store,
    cfg: NetworkConfig,
    dir: NetworkDir,
    dp: Dataplane,
    record: SubnetRecord,
    lease: i64,
    subnet: Ipv4Network,
    peers: BTreeMap<Ipv4Network, PeerEntry>,
}

pub async fn run(o: AgentOptions) -> Result<()> {
    tether_overlay_state::validate_name(&o.network)?;
    if !(2..=86_400).contains(&o.lease_ttl) {
        return Err(Error::invalid(format!(
            "--lease-ttl {}: must be 2..=86400 seconds",
            o.lease_ttl
        )));
    }
    let dir = NetworkDir::new(&o.state_dir, &o.network)?;
    let h = dataplane::connect()?;
    let underlay = dataplane::underlay(&h, &o.iface).await?;
    let store = connect(&o).await?;
    let cfg = store.config().await?;
    cfg.validate()?;
    let under_net =
        Ipv4Network::new(underlay.addr.network(), underlay.addr.prefix()).expect("prefix");
    if under_net.contains(cfg.subnet.network()) || cfg.subnet.contains(under_net.network()) {
        return Err(Error::invalid(format!(
            "overlay subnet {} of network {:?} overlaps the underlay network {under_net} of {}",
            cfg.subnet, o.network, o.iface
        )));
    }
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::invalid(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::invalid(format!("SIGINT handler: {e}")))?;
    let public_ip = underlay.addr.ip();
    let record = SubnetRecord {
        public_ip,
        backend: cfg.backend,
        vtep_mac: (cfg.backend == Backend::Vxlan).then(|| format_mac(vtep_mac(public_ip))),
    };
    // flannel's order: the subnet etcd says is ours, else the one in our local file, else a free
    // one. Our local file is gone after a clean stop (SIGTERM removes lease.json), but the
    // plugin's records still name the subnet of the containers left on tob-<vni>: ask for it.
    let previous = previous_subnet(&dir, &cfg);
    let lease = store.grant(o.lease_ttl).await?;
    let subnet = match acquire(&store, &cfg, &o.network, &record, lease, previous).await {
        Ok(s) => s,
        Err(e) => {
            let _ = store.revoke(lease).await;
            return Err(e);
        }
    };
    info!(network = %o.network, %subnet, %public_ip, lease = format!("{lease:x}"), "leased host subnet");
    if let Some(p) = previous.filter(|p| *p != subnet)
        && dir.attached_subnets().is_ok_and(|v| !v.is_empty())
    {
        error!(previous = %p, %subnet, "another host took the subnet this host's containers are on: they must be re-attached");
    }
    let dp = Dataplane::new(h, &cfg, underlay, subnet);
    let mut a = Agent {
        o,
        store,
        cfg,
        dir,
        dp,
        record,
        lease,
        subnet,
        peers: BTreeMap::new(),
    };
    if let Err(e) = a.start().await {
        a.teardown().await;
        return Err(e);
    }
    a.main_loop(&mut term, &mut int).await;
    a.teardown().await;
    Ok(())
}

/// The subnet this host had: lease.json's (a crash or SIGKILL left it), else the one the
/// plugin's attachment records are on (a clean stop removed lease.json, not the containers).
fn previous_subnet(dir: &NetworkDir, cfg: &NetworkConfig) -> Option<Ipv4Network> {
    let host_subnet = |n: IpNetwork| match n {
        IpNetwork::V4(s) if cfg.is_host_subnet(s) => Some(s),
        _ => None,
    };
    if let Ok(Some(l)) = dir.read_lease()
        && let Some(s) = host_subnet(l.subnet)
    {
        return Some(s);
    }
    let attached = dir.attached_subnets().unwrap_or_default();
    attached.into_iter().find_map(host_subnet)
}

/// The store, proven reachable; with `--wait-for-etcd`, retried with backoff (each failure
/// logged, naming the URL) until it answers.
async fn connect(o: &AgentOptions) -> Result<Store> {
    let mut backoff = BACKOFF_MIN;
    loop {
        match Store::connect(&o.etcd, &o.network).await {
            Ok(s) => return Ok(s),
            Err(e @ Error::Etcd { .. }) if o.wait_for_etcd => {
                backoff = (backoff * 2).min(BACKOFF_MAX);
                error!(
                    "{e}; --wait-for-etcd: retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Claims a subnet by transaction: ours from before (same public IP), the previous one, a free one.
async fn acquire(
    store: &Store,
    cfg: &NetworkConfig,
    network: &str,
    record: &SubnetRecord,
    lease: i64,
    previous: Option<Ipv4Network>,
) -> Result<Ipv4Network> {
    let seed = u64::from(u32::from(record.public_ip)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(std::process::id());
    // Each failed transaction means another host took a subnet: progress, so this ends.
    for _ in 0..=cfg.subnet_count() + 8 {
        let (_, entries) = store.list().await?;
        if let Some(e) = entries
            .iter()
            .find(|e| e.record.public_ip == record.public_ip && cfg.is_host_subnet(e.subnet))
        {
            if store.take_over(e, record, lease).await? {
                return Ok(e.subnet);
            }
            continue;
        }
        let taken: HashSet<_> = entries.iter().map(|e| e.subnet).collect();
        if let Some(p) = previous.filter(|p| !taken.contains(p))
            && store.claim(p, record, lease).await?
        {
            return Ok(p);
        }
        let Some(free) = cfg.pick_free(&taken, seed) else {
            return Err(Error::Full {
                name: network.to_string(),
                subnet: cfg.subnet.to_string(),
                host_prefix: cfg.host_prefix,
                count: cfg.subnet_count(),
            });
        };
        if store.claim(free, record, lease).await? {
            return Ok(free);
        }
    }
    Err(Error::etcd(
        &store.url,
        "could not claim a subnet: too many concurrent claims",
    ))
}

pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

impl Agent {
    async fn start(&mut self) -> Result<()> {
        self.dp.ensure_device().await?;
        // Packets from tvx to the containers' bridge are forwarded by this host.
        if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
            warn!(error = %e, "could not enable net.ipv4.ip_forward: the overlay needs it");
        }
        self.dir.write_pid(std::process::id())?;
        self.write_lease()?;
        Ok(())
    }

    fn write_lease(&self) -> Result<()> {
        self.dir.write_lease(&HostLease {
            network: self.o.network.clone(),
            overlay: IpNetwork::V4(self.cfg.subnet),
            subnet: IpNetwork::V4(self.subnet),
            mtu: self.dp.mtu,
            vni: self.cfg.vni,
            backend: self.cfg.backend.as_str().into(),
            public_ip: self.record.public_ip.into(),
            agent_pid: std::process::id(),
        })?;
        Ok(())
    }

    fn write_peers(&self) {
        let peers: Vec<Peer> = self
            .peers
            .values()
            .map(|p| Peer {
                public_ip: p.public_ip.into(),
                subnet: IpNetwork::V4(p.subnet),
                vtep_mac: (self.cfg.backend == Backend::Vxlan).then(|| format_mac(p.mac)),
            })
            .collect();
        if let Err(e) = self.dir.write_peers(&peers) {
            error!(error = %e, "could not write peers.json");
        }
    }

    fn peer_of(&self, e: &Entry) -> Option<PeerEntry> {
        if e.subnet == self.subnet || e.record.public_ip == self.record.public_ip {
            return None;
        }
        if e.record.backend != self.cfg.backend {
            warn!(subnet = %e.subnet, backend = e.record.backend.as_str(), "peer with another backend: ignored");
            return None;
        }
        if !self.dp.reaches(e.record.public_ip) {
            warn!(subnet = %e.subnet, public_ip = %e.record.public_ip, "host-gw peer not on this host's link: ignored");
            return None;
        }
        let mac = match self.cfg.backend {
            Backend::HostGw => [0; 6],
            Backend::Vxlan => match e.record.vtep_mac.as_deref().and_then(parse_mac) {
                Some(m) => m,
                None => {
                    warn!(subnet = %e.subnet, "peer record without a valid vtepMac: ignored");
                    return None;
                }
            },
        };
        Some(PeerEntry {
            subnet: e.subnet,
            public_ip: e.record.public_ip,
            mac,
        })
    }

    async fn upsert_peer(&mut self, p: PeerEntry) {
        if self.peers.get(&p.subnet) == Some(&p) {
            return;
        }
        if let Some(old) = self.peers.get(&p.subnet).cloned()
            && let Ok((idx, _)) = self.dp.ensure_device().await
        {
            let _ = self.dp.remove_peer(idx, &old).await;
        }
        match self.dp.ensure_device().await {
            Ok((idx, _)) => match self.dp.add_peer(idx, &p).await {
                Ok(()) => {
                    info!(subnet = %p.subnet, public_ip = %p.public_ip, "peer joined: programmed neighbour, FDB entry, route")
                }
                // Reconcile tries again within RECONCILE_EVERY.
                Err(e) => warn!(error = %e, "programming a peer failed; retrying"),
            },
            Err(e) => warn!(error = %e, "VXLAN device unavailable"),
        }
        self.peers.insert(p.subnet, p);
        self.write_peers();
    }

    async fn remove_peer(&mut self, subnet: Ipv4Network) {
        let Some(p) = self.peers.remove(&subnet) else {
            return;
        };
        if let Ok((idx, _)) = self.dp.ensure_device().await {
            match self.dp.remove_peer(idx, &p).await {
                Ok(()) => {
                    info!(%subnet, public_ip = %p.public_ip, "peer left: removed route, FDB entry, neighbour")
                }
                Err(e) => warn!(error = %e, "removing a peer failed; reconcile retries"),
            }
        }
        self.write_peers();
    }

    /// Makes etcd hold our lease and subnet, the kernel every peer, and opens a watch.
    async fn sync(&mut self) -> Result<Session> {
        let (mut keeper, mut ka) = self.store.keep_alive(self.lease).await?;
        let ttl = self.renew(&mut keeper, &mut ka).await?;
        if ttl <= 0 {
            warn!(
                lease = format!("{:x}", self.lease),
                "our lease expired while etcd was out of reach: taking a new one"
            );
            self.lease = self.store.grant(self.o.lease_ttl).await?;
            (keeper, ka) = self.store.keep_alive(self.lease).await?;
        }
        let (_, entries) = self.store.list().await?;
        let mine = entries.iter().find(|e| e.subnet == self.subnet);
        let ok = match mine {
            Some(e) if e.record == self.record && e.lease == self.lease => true,
            Some(e) if e.record.public_ip == self.record.public_ip => {
                self.store.take_over(e, &self.record, self.lease).await?
            }
            Some(_) => false,
            None => {
                self.store
                    .claim(self.subnet, &self.record, self.lease)
                    .await?
            }
        };
        if !ok {
            let s = acquire(
                &self.store,
                &self.cfg,
                &self.o.network,
                &self.record,
                self.lease,
                None,
            )
            .await?;
            error!(old = %self.subnet, new = %s, "another host holds our subnet now: moved to a new one (containers must be re-attached)");
            self.dp.set_subnet(s).await?;
            self.subnet = s;
            self.write_lease()?;
        }
        let (rev, entries) = self.store.list().await?;
        let want: BTreeMap<_, _> = entries
            .iter()
            .filter_map(|e| self.peer_of(e))
            .map(|p| (p.subnet, p))
            .collect();
        let gone: Vec<_> = self
            .peers
            .keys()
            .filter(|s| !want.contains_key(s))
            .copied()
            .collect();
        for s in gone {
            self.remove_peer(s).await;
        }
        for p in want.into_values() {
            self.upsert_peer(p).await;
        }
        self.write_peers();
        let watch = self.store.watch(rev + 1).await?;
        Ok(Session { watch, keeper, ka })
    }

    /// One keep-alive round trip: the lease's remaining TTL (0 when etcd no longer knows it).
    async fn renew(&self, keeper: &mut LeaseKeeper, ka: &mut LeaseKeepAliveStream) -> Result<i64> {
        let url = &self.store.url;
        crate::store::deadline(url, "renew lease", keeper.keep_alive()).await?;
        match crate::store::deadline(url, "renew lease", ka.message()).await? {
            Some(r) => Ok(r.ttl()),
            None => Err(Error::etcd(url, "lease keep-alive stream closed")),
        }
    }

    /// Applies one watch response; `Err` means the watch is lost and must be re-listed.
    async fn apply(&mut self, r: WatchResponse) -> std::result::Result<(), String> {
        if r.canceled() || r.compact_revision() != 0 {
            return Err(format!(
                "watch cancelled ({}; compacted at {})",
                r.cancel_reason(),
                r.compact_revision()
            ));
        }
        for ev in r.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(subnet) = kv
                .key_str()
                .ok()
                .and_then(|k| parse_subnet_key(&self.o.network, k))
            else {
                continue;
            };
            match ev.event_type() {
                EventType::Put => {
                    let Ok(record) = serde_json::from_slice::<SubnetRecord>(kv.value()) else {
                        continue;
                    };
                    if subnet == self.subnet && record.public_ip != self.record.public_ip {
                        return Err(format!(
                            "our subnet {subnet} was taken by {}",
                            record.public_ip
                        ));
                    }
                    let e = Entry {
                        subnet,
                        record,
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                    };
                    if let Some(p) = self.peer_of(&e) {
                        self.upsert_peer(p).await;
                    }
                }
                EventType::Delete => {
                    if subnet == self.subnet {
                        return Err(format!("our subnet's key {subnet} was deleted"));
                    }
                    self.remove_peer(subnet).await;
                }
            }
        }
        Ok(())
    }

    async fn main_loop(
        &mut self,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
    ) {
        let url = self.store.url.clone();
        let mut session = match self.sync().await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "initial sync failed; retrying");
                None
            }
        };
        // Until one sync has listed the peers, the peer map is not the truth: reconciling against
        // it would remove a restarted agent's still-valid entries.
        let mut synced = session.is_some();
        let mut backoff = BACKOFF_MIN;
        let mut retry_at = Instant::now() + backoff;
        let mut reconcile = interval(RECONCILE_EVERY);
        let renew_every = Duration::from_millis((self.o.lease_ttl as u64 * 1000 / 3).max(500));
        let mut renew = interval(renew_every);
        loop {
            let online = session.is_some();
            let lost: Option<String> = tokio::select! {
                _ = term.recv() => { info!("SIGTERM: leaving the overlay"); break }
                _ = int.recv() => { info!("SIGINT: leaving the overlay"); break }
                _ = reconcile.tick(), if synced => {
                    match self.dp.reconcile(&self.peers).await {
                        Ok(fixed) => for f in fixed { warn!("reconcile: {f}") },
                        Err(e) => warn!(error = %e, "reconcile failed; retrying"),
                    }
                    None
                }
                _ = renew.tick(), if online => {
                    let s = session.as_mut().expect("online");
                    match crate::store::deadline(&url, "renew lease", s.keeper.keep_alive()).await {
                        Ok(()) => None,
                        Err(e) => Some(e.to_string()),
                    }
                }
                ev = next_event(&mut session), if online => match ev {
                    Event::KeepAlive(Ok(Some(r))) if r.ttl() > 0 => None,
                    Event::KeepAlive(Ok(Some(_))) => Some("our lease expired".into()),
                    Event::KeepAlive(Ok(None)) => Some("lease keep-alive stream closed".into()),
                    Event::KeepAlive(Err(e)) => Some(format!("lease keep-alive: {e}")),
                    Event::Watch(Ok(Some(r))) => self.apply(r).await.err(),
                    Event::Watch(Ok(None)) => Some("watch stream closed".into()),
                    Event::Watch(Err(e)) => Some(format!("watch: {e}")),
                },
                _ = sleep_until(retry_at), if !online => {
                    match self.sync().await {
                        Ok(s) => {
                            info!(%url, peers = self.peers.len(), "etcd reachable again: resynced");
                            session = Some(s);
                            synced = true;
                            backoff = BACKOFF_MIN;
                        }
                        Err(e) => {
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            retry_at = Instant::now() + backoff;
                            warn!("etcd unreachable ({e}); keeping the data plane as is, retrying in {} ms", backoff.as_millis());
                        }
                    }
                    None
                }
            };
            if let Some(why) = lost {
                warn!(%url, "lost etcd session: {why}; keeping the data plane as is, re-listing");
                session = None;
                backoff = BACKOFF_MIN;
                retry_at = Instant::now() + backoff;
            }
        }
    }

    /// Revoke (peers drop us at once instead of after the TTL), then the device and the files.
    async fn teardown(&self) {
        match timeout(CALL_TIMEOUT, self.store.revoke(self.lease)).await {
            Ok(Ok(())) => info!("lease revoked"),
            Ok(Err(e)) => warn!(error = %e, "could not revoke the lease: it expires after its TTL"),
            Err(_) => warn!("revoking the lease timed out: it expires after its TTL"),
        }
        if let Err(e) = self.dp.remove_all(&self.peers).await {
            error!(error = %e, "could not remove {}", self.dp.device);
        }
        for r in [
            self.dir.remove_lease(),
            self.dir.remove_peers(),
            self.dir.remove_pid(),
        ] {
            if let Err(e) = r {
                error!(error = %e, "could not remove a state file");
            }
        }
    }
}

type EtcdResult<T> = std::result::Result<T, etcd_client::Error>;

/// What the etcd session said next.
enum Event {
    Watch(EtcdResult<Option<WatchResponse>>),
    KeepAlive(EtcdResult<Option<etcd_client::LeaseKeepAliveResponse>>),
}

/// The session's next message; never resolves offline (the select! branch is disabled then).
async fn next_event(s: &mut Option<Session>) -> Event {
    let Some(s) = s else {
        return std::future::pending().await;
    };
    tokio::select! {
        m = s.watch.message() => Event::Watch(m),
        m = s.ka.message() => Event::KeepAlive(m),
    }
}
