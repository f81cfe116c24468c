//! `--net` values. [`NetMode`] is parsed from what the user typed and written back (in the
//! container's record, in `ps`) by its `Display`; the two are tested to be inverses.

use super::DEFAULT_NETWORK;
use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// Own namespace, loopback only.
    None,
    /// The host's namespace.
    Host,
    /// Another container's namespace.
    Container(String),
    /// A bridge network: the default `bridge` or one made with `tether network create`.
    Network(String),
}

impl NetMode {
    pub fn parse(s: &str) -> Result<NetMode> {
        Ok(match s {
            "none" => NetMode::None,
            "host" => NetMode::Host,
            "" | "default" => NetMode::Network(DEFAULT_NETWORK.into()),
            s if s.starts_with("container:") => {
                let name = &s["container:".len()..];
                if name.is_empty() {
                    return Err(Error::usage(
                        "--net=container: needs a container name, for example --net=container:web",
                    ));
                }
                NetMode::Container(name.to_string())
            }
            s => NetMode::Network(s.to_string()),
        })
    }

    /// Whether the container gets a network namespace of its own.
    pub fn own_netns(&self) -> bool {
        matches!(self, NetMode::None | NetMode::Network(_))
    }
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetMode::None => f.write_str("none"),
            NetMode::Host => f.write_str("host"),
            NetMode::Container(n) => write!(f, "container:{n}"),
            NetMode::Network(n) => f.write_str(n),
        }
    }
}

/// In a record, the mode is the string `--net` takes.
impl Serialize for NetMode {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NetMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<NetMode, D::Error> {
        let s = String::deserialize(d)?;
        NetMode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(NetMode::parse("none").unwrap(), NetMode::None);
        assert_eq!(
            NetMode::parse("container:a").unwrap(),
            NetMode::Container("a".into())
        );
        assert_eq!(
            NetMode::parse("default").unwrap(),
            NetMode::Network("bridge".into())
        );
        assert!(NetMode::parse("container:").is_err());
    }

    #[test]
    fn display_is_the_inverse_of_parse() {
        for s in ["none", "host", "container:web", "bridge", "blue"] {
            let m = NetMode::parse(s).unwrap();
            assert_eq!(m.to_string(), s);
            assert_eq!(NetMode::parse(&m.to_string()).unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<NetMode>(&json).unwrap(), m);
        }
        assert!(serde_json::from_str::<NetMode>("\"container:\"").is_err());
    }
}
