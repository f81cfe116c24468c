//! The cluster store: etcd, through the `etcd-client` crate (gRPC, etcd's v3 API). Every call
//! has a deadline, so an unreachable etcd is an error naming its URL within seconds, never a
//! hang. Subnets are claimed by transactions, so two hosts can never hold one:
//!
//! ```text
//!  claim a free subnet     txn  if version(key) == 0        then put(key, record, lease)
//!  take back our own       txn  if mod_revision(key) == r   then put(key, record, lease)
//!  init                    txn  if version(config) == 0     then put(config)  else get(config)
//! ```

use crate::config::{
    NetworkConfig, SubnetRecord, config_key, parse_subnet_key, subnet_key, subnets_prefix,
};
use crate::error::{Error, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use ipnetwork::Ipv4Network;
use std::future::Future;
use std::time::Duration;

/// How long one etcd request may take before it counts as "etcd unreachable".
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// One host subnet as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub subnet: Ipv4Network,
    pub record: SubnetRecord,
    pub mod_revision: i64,
    pub lease: i64,
}

/// An etcd connection for one overlay network.
#[derive(Clone)]
pub struct Store {
    pub url: String,
    network: String,
    client: Client,
}

/// `http://host:port` as given, `etcd://host:port` (Docker's `--cluster-store` spelling) as http.
pub fn endpoint(url: &str) -> Result<String> {
    let bad = || {
        Error::invalid(format!(
            "--etcd {url:?}: expected http://HOST:PORT (or etcd://HOST:PORT)"
        ))
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("etcd://"))
        .ok_or_else(bad)?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains(['/', ' ', '?', '#']) {
        return Err(bad());
    }
    Ok(format!("http://{hostport}"))
}

impl Store {
    /// Connects and proves etcd answers (one read), all within [`CALL_TIMEOUT`].
    pub async fn connect(url: &str, network: &str) -> Result<Store> {
        let ep = endpoint(url)?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = deadline(url, "connect", Client::connect([ep.as_str()], Some(opts))).await?;
        let s = Store {
            url: url.to_string(),
            network: network.to_string(),
            client,
        };
        s.get_config().await?;
        Ok(s)
    }

    /// The stored definition, `None` if the network was never initialised.
    pub async fn get_config(&self) -> Result<Option<NetworkConfig>> {
        let mut c = self.client.clone();
        let key = config_key(&self.network);
        let r = deadline(&self.url, "read config", c.get(key.clone(), None)).await?;
        match r.kvs().first() {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(kv.value()).map(Some).map_err(|e| {
                Error::etcd(&self.url, format!("{key}: not a network definition: {e}"))
            }),
        }
    }

    /// The definition, or the error telling how to create it.
    pub async fn config(&self) -> Result<NetworkConfig> {
        self.get_config()
            .await?
            .ok_or_else(|| Error::NotInitialised {
                name: self.network.clone(),
                url: self.url.clone(),
            })
    }

    /// Stores `cfg` unless a definition exists: `true` if it was created, `false` if the same
    /// one was there, a conflict error if another one was.
    pub async fn init(&self, cfg: &NetworkConfig) -> Result<bool> {
        let key = config_key(&self.network);
        let value = serde_json::to_vec(cfg).expect("config serializes");
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut c = self.client.clone();
        let r = deadline(&self.url, "store config", c.txn(txn)).await?;
        if r.succeeded() {
            return Ok(true);
        }
        let stored = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let stored: Option<NetworkConfig> = stored.and_then(|v| serde_json::from_slice(&v).ok());
        match stored {
            Some(s) if s == *cfg => Ok(false),
            s => Err(Error::Conflict {
                name: self.network.clone(),
                stored: s.map_or("(unreadable)".into(), |s| {
                    serde_json::to_string(&s).expect("config serializes")
                }),
                requested: serde_json::to_string(cfg).expect("config serializes"),
            }),
        }
    }

    /// Every leased subnet, and the revision the list is consistent at (watch from `rev + 1`).
    pub async fn list(&self) -> Result<(i64, Vec<Entry>)> {
        let mut c = self.client.clone();
        let prefix = subnets_prefix(&self.network);
        let r = deadline(
            &self.url,
            "list subnets",
            c.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        let entries = r
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let subnet = parse_subnet_key(&self.network, key)?;
                match serde_json::from_slice::<SubnetRecord>(kv.value()) {
                    Ok(record) => Some(Entry {
                        subnet,
                        record,
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                    }),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "ignoring a subnet record that does not parse");
                        None
                    }
                }
            })
            .collect();
        Ok((rev, entries))
    }

    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        let mut c = self.client.clone();
        let r = deadline(&self.url, "grant lease", c.lease_grant(ttl, None)).await?;
        Ok(r.id())
    }

    pub async fn revoke(&self, lease: i64) -> Result<()> {
        let mut c = self.client.clone();
        deadline(&self.url, "revoke lease", c.lease_revoke(lease)).await?;
        Ok(())
    }

    /// Puts `record` at `subnet`'s key under `lease` if `cmp` holds; `true` if it did.
    async fn put_if(
        &self,
        subnet: Ipv4Network,
        record: &SubnetRecord,
        lease: i64,
        cmp: Compare,
    ) -> Result<bool> {
        let key = subnet_key(&self.network, subnet);
        let value = serde_json::to_vec(record).expect("record serializes");
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let mut c = self.client.clone();
        Ok(deadline(&self.url, "claim subnet", c.txn(txn))
            .await?
            .succeeded())
    }

    /// Claims `subnet` if nobody holds it.
    pub async fn claim(
        &self,
        subnet: Ipv4Network,
        record: &SubnetRecord,
        lease: i64,
    ) -> Result<bool> {
        let key = subnet_key(&self.network, subnet);
        self.put_if(
            subnet,
            record,
            lease,
            Compare::version(key, CompareOp::Equal, 0),
        )
        .await
    }

    /// Moves an entry we published before (same public IP) onto `lease`, if it is unchanged.
    pub async fn take_over(&self, e: &Entry, record: &SubnetRecord, lease: i64) -> Result<bool> {
        let key = subnet_key(&self.network, e.subnet);
        let cmp = Compare::mod_revision(key, CompareOp::Equal, e.mod_revision);
        self.put_if(e.subnet, record, lease, cmp).await
    }

    pub async fn keep_alive(&self, lease: i64) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        let mut c = self.client.clone();
        deadline(
            &self.url,
            "open lease keep-alive",
            c.lease_keep_alive(lease),
        )
        .await
    }

    /// Watches the subnets from `rev` on.
    pub async fn watch(&self, rev: i64) -> Result<WatchStream> {
        let mut c = self.client.clone();
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev);
        deadline(
            &self.url,
            "watch subnets",
            c.watch(subnets_prefix(&self.network), Some(opts)),
        )
        .await
    }
}

/// `f` within [`CALL_TIMEOUT`], its error naming etcd's URL and what was being done.
pub async fn deadline<T>(
    url: &str,
    what: &str,
    f: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::etcd(url, format!("{what}: {e}"))),
        Err(_) => Err(Error::etcd(
            url,
            format!("{what}: no answer within {} s", CALL_TIMEOUT.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_http_and_docker_spelling_only() {
        assert_eq!(
            endpoint("http://10.0.0.1:2379").unwrap(),
            "http://10.0.0.1:2379"
        );
        assert_eq!(
            endpoint("etcd://10.0.0.1:2379/").unwrap(),
            "http://10.0.0.1:2379"
        );
        for bad in ["10.0.0.1:2379", "https://x:1", "http://", "http://a/b"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
