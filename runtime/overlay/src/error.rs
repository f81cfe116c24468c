//! The agent's one error type: every message names what failed (the etcd URL, the interface,
//! the network) so that a person reading stderr knows what to fix.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input or a definition that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// etcd could not be reached or refused a request.
    #[error("etcd at {url}: {what}")]
    Etcd { url: String, what: String },
    /// The network has no definition in etcd.
    #[error(
        "overlay network {name:?} is not initialised in etcd at {url}: run `tether overlay init {name} --etcd {url} --subnet CIDR` first"
    )]
    NotInitialised { name: String, url: String },
    /// `init` again with other values.
    #[error(
        "overlay network {name:?} already exists in etcd with a different definition: stored {stored}, requested {requested}"
    )]
    Conflict {
        name: String,
        stored: String,
        requested: String,
    },
    /// Every host subnet is leased.
    #[error(
        "overlay network {name:?} is full: all {count} host subnets /{host_prefix} of {subnet} are leased by other hosts"
    )]
    Full {
        name: String,
        subnet: String,
        host_prefix: u8,
        count: usize,
    },
    /// A kernel (netlink) operation failed.
    #[error("{0}")]
    Netlink(String),
    #[error(transparent)]
    State(#[from] tether_overlay_state::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
    pub fn etcd(url: &str, what: impl std::fmt::Display) -> Error {
        Error::Etcd {
            url: url.to_string(),
            what: what.to_string(),
        }
    }
    pub fn netlink(what: impl std::fmt::Display) -> Error {
        Error::Netlink(what.to_string())
    }
}
