//! The one place where library errors become CNI codes.
//!
//! ```text
//!  tether_netlink::Error ──── nl("what") ────┐
//!  tether_netfilter::Error ── nf("what") ────┤
//!  std::io::Error ─────────── io("what") ────┼──► cni::Error { code, msg: "what: cause" }
//!  kit Error (host-local, tuning, bandwidth) ┤
//!  cni::netns::NetnsError ───────────────────┘    (codes of CNI_NETNS: decided in cni::netns,
//!                                                  which the skel applies before any plugin runs)
//! ```
//!
//! The rule behind the codes: what the runtime or the user must fix gets the spec's code for it
//! (config 7, unsupported key 2, environment 4, container gone 3, exhausted pool 50, local files
//! 5, a lease another process has not provided yet 11); a kernel or `iptables` operation that failed, or a CHECK that found a difference, is 999.
//! [`CODES`] says the same for README, which a test keeps equal to it.

use std::fmt::Display;

use cni::ErrorCode;
use cni::netns::NetnsError;

/// What to do about the one I/O error an operator can fix: a full disk (or quota) under a
/// plugin's files (host-local's lease store in `ipam.dataDir`, tuning's saved values). A failed
/// ADD keeps none of what it wrote, so a retry after freeing space starts clean.
fn disk_full_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            " (the filesystem is full: free some space and retry; a failed ADD keeps nothing it wrote)"
        }
        _ => "",
    }
}

/// The error type of plugin code that has a library of its own (host-local, tuning, bandwidth).
/// Each variant has exactly one code ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network config is invalid (code 7).
    #[error("{0}")]
    Config(String),
    /// A key or value this implementation does not support (code 2).
    #[error("{0}")]
    Unsupported(String),
    /// `CNI_ARGS` (or another `CNI_*` variable) holds something unusable (code 4).
    #[error("{0}")]
    Args(String),
    /// A pool has no free resource left (code 50: the plugin cannot serve ADDs for it).
    #[error("{0}")]
    Exhausted(String),
    /// What the plugin needs is not there yet, and another process will provide it: the
    /// overlay agent's lease of a host subnet (code 11, "try again later": the runtime retries,
    /// nothing was created).
    #[error("{0}")]
    TryAgain(String),
    /// Reading or writing a local file failed (code 5).
    #[error("{what}: {source}{}", disk_full_hint(source))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A kernel setting (a `/proc/sys` file) could not be read or written (code 999, as a
    /// sysctl through `tether-netlink`: the kernel refused, no local file is at fault).
    #[error("{what}: {source}")]
    Sysctl {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A raw rtnetlink request failed (code 999). The source is an `rtnetlink::Error`, boxed so
    /// that plugins which never talk raw rtnetlink (host-local) do not carry its formatting.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A `tether-netlink` call failed: entering a namespace, a netlink connection (see [`nl`]).
    #[error(transparent)]
    Netns(#[from] tether_netlink::Error),
    /// The container's namespace could not be opened (3 or 4, see [`cni::netns`]).
    #[error(transparent)]
    Namespace(#[from] NetnsError),
    /// A `tether-netfilter` call failed (see [`nf`]).
    #[error(transparent)]
    Netfilter(#[from] tether_netfilter::Error),
    /// Something that must exist does not (an interface, a qdisc) (code 999).
    #[error("{0}")]
    NotFound(String),
    /// CHECK found the state different from what ADD left (code 999).
    #[error("{0}")]
    Mismatch(String),
    /// A request that cannot be served, such as an address that is taken (code 999, as the
    /// reference).
    #[error("{0}")]
    Request(String),
    /// A long-running helper a plugin supervises could not be started or did not answer, such
    /// as dnsname's DNS server with port 53 of the gateway taken by someone else (code 999).
    #[error("{0}")]
    Server(String),
}

impl Error {
    /// The CNI code of this error: the table every plugin shares.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config(_) => ErrorCode::InvalidNetworkConfig,
            Error::Unsupported(_) => ErrorCode::UnsupportedField,
            Error::Args(_) => ErrorCode::InvalidEnvironment,
            Error::Exhausted(_) => ErrorCode::NotAvailable,
            Error::TryAgain(_) => ErrorCode::TryAgainLater,
            Error::Io { .. } => ErrorCode::IoFailure,
            Error::Netns(e) => netlink_code(e),
            Error::Namespace(e) => e.code(),
            Error::Netfilter(e) => netfilter_code(e),
            Error::Sysctl { .. }
            | Error::Netlink { .. }
            | Error::NotFound(_)
            | Error::Mismatch(_)
            | Error::Request(_)
            | Error::Server(_) => ErrorCode::Internal,
        }
    }

    /// Puts `what` in front of the message, keeping the kind (and so the code).
    pub fn context(self, what: impl Display) -> Error {
        let pre = |m: String| format!("{what}: {m}");
        match self {
            Error::Config(m) => Error::Config(pre(m)),
            Error::Unsupported(m) => Error::Unsupported(pre(m)),
            Error::Args(m) => Error::Args(pre(m)),
            Error::Exhausted(m) => Error::Exhausted(pre(m)),
            Error::TryAgain(m) => Error::TryAgain(pre(m)),
            Error::NotFound(m) => Error::NotFound(pre(m)),
            Error::Mismatch(m) => Error::Mismatch(pre(m)),
            Error::Request(m) => Error::Request(pre(m)),
            Error::Server(m) => Error::Server(pre(m)),
            Error::Io { what: w, source } => Error::Io {
                what: pre(w),
                source,
            },
            Error::Sysctl { what: w, source } => Error::Sysctl {
                what: pre(w),
                source,
            },
            Error::Netlink { what: w, source } => Error::Netlink {
                what: pre(w),
                source,
            },
            // Wrapped library errors carry their own context.
            e @ (Error::Netns(_) | Error::Namespace(_) | Error::Netfilter(_)) => e,
        }
    }
}

impl From<Error> for cni::Error {
    fn from(e: Error) -> cni::Error {
        cni::Error::new(e.code(), e.to_string())
    }
}

/// The code of a `tether-netlink` failure: a path that is not a network namespace is an invalid
/// `CNI_NETNS` (4), as [`cni::netns`] says; everything else the kernel refused is 999.
pub fn netlink_code(e: &tether_netlink::Error) -> ErrorCode {
    match e {
        tether_netlink::Error::NotANamespace(_) => ErrorCode::InvalidEnvironment,
        _ => ErrorCode::Internal,
    }
}

/// The code of a `tether-netfilter` failure: a value refused before anything ran came from the
/// config (7); a lock file that could not be taken is a local file failure (5); a failed
/// `iptables` run or CHECK is 999.
pub fn netfilter_code(e: &tether_netfilter::Error) -> ErrorCode {
    match e {
        tether_netfilter::Error::Invalid { .. } => ErrorCode::InvalidNetworkConfig,
        tether_netfilter::Error::Lock { .. } => ErrorCode::IoFailure,
        _ => ErrorCode::Internal,
    }
}

/// Maps a netlink failure to a CNI error that says what we were doing:
/// `.map_err(nl("set lo up"))`.
pub fn nl(what: impl Display) -> impl FnOnce(tether_netlink::Error) -> cni::Error {
    move |e| cni::Error::new(netlink_code(&e), format!("{what}: {e}"))
}

/// Maps a firewall failure likewise: `.map_err(nf("set up masquerading"))`.
pub fn nf(what: impl Display) -> impl FnOnce(tether_netfilter::Error) -> cni::Error {
    move |e| cni::Error::new(netfilter_code(&e), format!("{what}: {e}"))
}

/// Maps a local file failure (code 5) likewise.
pub fn io(what: impl Display) -> impl FnOnce(std::io::Error) -> cni::Error {
    move |e| cni::Error::new(ErrorCode::IoFailure, format!("{what}: {e}"))
}

/// Every code a Tether plugin answers with, and when. README's list under "The plugins" is this
/// table, line for line (tested below). Codes 1 and 6, and the 3 for a missing
/// `CNI_CONTAINERID`, are the protocol's (`cni::Request`, the skel).
pub const CODES: &[(ErrorCode, &str)] = &[
    (
        ErrorCode::IncompatibleVersion,
        "an unsupported version, with the supported list in `details`",
    ),
    (
        ErrorCode::UnsupportedField,
        "a config key this implementation refuses, named in the message",
    ),
    (
        ErrorCode::UnknownContainer,
        "the container is gone: `CNI_NETNS` does not exist (or `CNI_CONTAINERID` is missing)",
    ),
    (
        ErrorCode::InvalidEnvironment,
        "a missing or invalid environment variable, named in the message (a `CNI_NETNS` that is not a network namespace, bad `CNI_ARGS`, a `CNI_IFNAME` that is taken)",
    ),
    (
        ErrorCode::IoFailure,
        "a local file could not be read or written (the IPAM store, tuning's saved values, a lock)",
    ),
    (ErrorCode::DecodingFailure, "malformed JSON"),
    (
        ErrorCode::InvalidNetworkConfig,
        "an invalid config (also a value the firewall layer refuses)",
    ),
    (
        ErrorCode::TryAgainLater,
        "try again later: the overlay has no agent or no lease of a host subnet yet (nothing was created)",
    ),
    (
        ErrorCode::NotAvailable,
        "an exhausted pool, on ADD and STATUS (also STATUS of an overlay without a usable lease)",
    ),
    (
        ErrorCode::Internal,
        "anything else: a kernel or `iptables` operation failed, CHECK found a difference, or a server a plugin runs (dnsname's DNS server) could not start, say on a port someone else holds",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{CniResult, Plugin, Request};
    use std::path::Path;

    /// README's list, rendered from [`CODES`].
    fn rendered() -> Vec<String> {
        CODES
            .iter()
            .map(|(code, text)| format!("  - {}: {text}", *code as u32))
            .collect()
    }

    #[test]
    fn readme_lists_exactly_the_codes_of_this_module() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let start = readme
            .lines()
            .position(|l| l.starts_with("- **Errors**"))
            .expect("README: the \"- **Errors**\" bullet under \"The plugins\"");
        let listed: Vec<&str> = readme
            .lines()
            .skip(start + 1)
            .take_while(|l| l.starts_with("  - "))
            .collect();
        assert_eq!(
            listed,
            rendered(),
            "README.md's list of error codes differs from tether-kit's CODES; paste:\n{}",
            rendered().join("\n")
        );
    }

    struct Dummy;
    impl Plugin for Dummy {
        fn name(&self) -> &'static str {
            "dummy"
        }
        fn versions(&self) -> &'static [&'static str] {
            &["1.0.0"]
        }
        fn add(&self, _: &Request) -> Result<CniResult, cni::Error> {
            Ok(CniResult::default())
        }
        fn del(&self, _: &Request) -> Result<(), cni::Error> {
            Ok(())
        }
    }

    /// The code the skel answers with for `stdin` on a DEL (no netns needed).
    fn protocol_code(stdin: &str) -> u32 {
        let env = |k: &str| {
            Some(
                match k {
                    "CNI_COMMAND" => "DEL",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_IFNAME" => "eth0",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let out = cni::skel::dispatch(&Dummy, &env, stdin.as_bytes().to_vec());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["code"].as_u64().unwrap() as u32
    }

    fn io_err() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::PermissionDenied)
    }

    /// Every row of [`CODES`] is what real failures get, through the functions plugins call.
    #[test]
    fn every_listed_code_is_what_the_failures_get() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let netns_fail = |p: &Path| cni::Error::from(cni::netns::open(p).unwrap_err()).code;
        let nf_invalid = || tether_netfilter::Error::Invalid {
            what: "comment",
            value: "x".into(),
            reason: "r".into(),
        };
        let examples: Vec<(&str, u32)> = vec![
            (
                "unsupported version",
                protocol_code(r#"{"cniVersion":"0.4.0","name":"n","type":"dummy"}"#),
            ),
            (
                "unsupported key",
                cni::Error::from(Error::Unsupported("vlan".into())).code,
            ),
            (
                "netns missing",
                netns_fail(Path::new("/run/netns/tether-kit-test-missing")),
            ),
            (
                "netns missing, through the kit",
                crate::netns::open(Path::new("/nonexistent/ns"))
                    .unwrap_err()
                    .code,
            ),
            ("netns is a file", netns_fail(file.path())),
            (
                "netns is a file, through the kit",
                crate::netns::open(file.path()).unwrap_err().code,
            ),
            (
                "netlink: not a namespace",
                nl("x")(tether_netlink::Error::NotANamespace(file.path().into())).code,
            ),
            (
                "bad CNI_ARGS",
                cni::Error::from(Error::Args("IP".into())).code,
            ),
            ("io", io("read")(io_err()).code),
            (
                "io in a library",
                cni::Error::from(Error::Io {
                    what: "w".into(),
                    source: io_err(),
                })
                .code,
            ),
            (
                "netfilter lock",
                nf("lock")(tether_netfilter::Error::Lock {
                    action: "lock",
                    path: "/x".into(),
                    source: io_err(),
                })
                .code,
            ),
            ("bad JSON", protocol_code("{nope")),
            ("config", cni::Error::from(Error::Config("bad".into())).code),
            ("netfilter refuses a value", nf("x")(nf_invalid()).code),
            (
                "netfilter refuses a value, in a library",
                cni::Error::from(Error::Netfilter(nf_invalid())).code,
            ),
            (
                "no lease yet",
                cni::Error::from(Error::TryAgain("no lease".into())).code,
            ),
            (
                "exhausted",
                cni::Error::from(Error::Exhausted("full".into())).code,
            ),
            (
                "netlink",
                nl("x")(tether_netlink::Error::Exists("x".into())).code,
            ),
            (
                "netlink not found",
                nl("x")(tether_netlink::Error::NotFound("x".into())).code,
            ),
            (
                "iptables failed",
                nf("x")(tether_netfilter::Error::Check("x".into())).code,
            ),
            ("CHECK", cni::Error::from(Error::Mismatch("x".into())).code),
            (
                "server",
                cni::Error::from(Error::Server("port 53 taken".into())).code,
            ),
            (
                "sysctl",
                cni::Error::from(Error::Sysctl {
                    what: "w".into(),
                    source: io_err(),
                })
                .code,
            ),
        ];
        let listed: Vec<u32> = CODES.iter().map(|(c, _)| *c as u32).collect();
        for (what, code) in &examples {
            assert!(listed.contains(code), "{what}: code {code} is not in CODES");
        }
        let expect = |what: &str| examples.iter().find(|(w, _)| *w == what).unwrap().1;
        assert_eq!(expect("unsupported version"), 1);
        assert_eq!(expect("unsupported key"), 2);
        assert_eq!(expect("netns missing"), 3);
        assert_eq!(expect("netns missing, through the kit"), 3);
        assert_eq!(expect("netns is a file"), 4);
        assert_eq!(expect("netns is a file, through the kit"), 4);
        assert_eq!(expect("netlink: not a namespace"), 4);
        assert_eq!(expect("bad CNI_ARGS"), 4);
        assert_eq!(expect("io"), 5);
        assert_eq!(expect("io in a library"), 5);
        assert_eq!(expect("netfilter lock"), 5);
        assert_eq!(expect("bad JSON"), 6);
        assert_eq!(expect("config"), 7);
        assert_eq!(expect("netfilter refuses a value"), 7);
        assert_eq!(expect("netfilter refuses a value, in a library"), 7);
        assert_eq!(expect("no lease yet"), 11);
        assert_eq!(expect("exhausted"), 50);
        for what in [
            "netlink",
            "netlink not found",
            "iptables failed",
            "CHECK",
            "server",
            "sysctl",
        ] {
            assert_eq!(expect(what), 999, "{what}");
        }
        // And every listed code has a failure that gets it.
        for code in listed {
            assert!(
                examples.iter().any(|(_, c)| *c == code),
                "no failure gets code {code}"
            );
        }
    }

    #[test]
    fn context_keeps_the_code() {
        let e = Error::Config("bad".into()).context("range set 0");
        assert_eq!(e.to_string(), "range set 0: bad");
        assert_eq!(e.code(), ErrorCode::InvalidNetworkConfig);
        let e = Error::Io {
            what: "write".into(),
            source: io_err(),
        }
        .context("lease");
        assert_eq!(e.code(), ErrorCode::IoFailure);
        assert!(e.to_string().starts_with("lease: write: "), "{e}");
    }
}
