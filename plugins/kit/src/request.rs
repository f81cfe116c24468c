//! What ADD and CHECK require from a request, as CNI errors instead of panics.

use std::path::Path;

use cni::{CniResult, Error, Request};

/// Accessors for what a command requires. The skel already refused a request without them, so
/// the errors are for a plugin method called some other way (a test, a new dispatcher).
pub trait RequestExt {
    /// `CNI_NETNS`, required for ADD and CHECK (code 4, as the skel says, when absent).
    fn netns_required(&self) -> Result<&Path, Error>;

    /// `prevResult`, required by chained plugins and by CHECK: code 7 with `why` when absent.
    fn prev_result_required(&self, why: &str) -> Result<&CniResult, Error>;
}

impl RequestExt for Request {
    fn netns_required(&self) -> Result<&Path, Error> {
        self.netns.as_deref().ok_or_else(|| {
            Error::invalid_env(format!(
                "required env variables [CNI_NETNS] missing (needed for {})",
                self.command.as_str()
            ))
        })
    }

    fn prev_result_required(&self, why: &str) -> Result<&CniResult, Error> {
        self.prev_result
            .as_ref()
            .ok_or_else(|| Error::invalid_config(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;

    fn request(netns: Option<&str>, conf: &str) -> Request {
        let env = |k: &str| {
            Some(
                match k {
                    "CNI_CONTAINERID" => "c1",
                    "CNI_IFNAME" => "eth0",
                    "CNI_NETNS" => netns?,
                    _ => return None,
                }
                .to_string(),
            )
        };
        Request::from_env(Command::Del, &env, conf.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn missing_requirements_are_errors_not_panics() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#;
        let r = request(None, conf);
        let e = r.netns_required().unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        let e = r.prev_result_required("x must be chained").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "x must be chained"));

        let chained = r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]}}"#;
        let r = request(Some("/run/netns/x"), chained);
        assert_eq!(r.netns_required().unwrap(), Path::new("/run/netns/x"));
        assert_eq!(
            r.prev_result_required("x").unwrap().interfaces[0].name,
            "eth0"
        );
    }
}
