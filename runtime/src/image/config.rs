//! The image config (OCI image config / Docker's image JSON), as far as tether reads it: what a
//! container runs (Entrypoint, Cmd, Env, WorkingDir, User) and the layers' diff_ids. Rewrites
//! (commit, export) edit the JSON value itself, so fields tether does not know survive.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

impl ImageConfig {
    pub fn parse(b: &[u8]) -> crate::Result<ImageConfig> {
        serde_json::from_slice(b)
            .map_err(|e| crate::Error::usage(format!("image config is not valid JSON: {e}")))
    }
    pub fn run(&self) -> RunConfig {
        self.config.clone().unwrap_or_default()
    }
}

/// The command Docker runs: `--entrypoint` replaces the image's Entrypoint (and drops its Cmd);
/// a CMD on the command line replaces Cmd. The result is Entrypoint followed by Cmd.
pub fn command(rc: &RunConfig, entrypoint: Option<&str>, cli_cmd: &[String]) -> Vec<String> {
    let (ep, default_cmd): (Vec<String>, Vec<String>) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (
            rc.entrypoint.clone().unwrap_or_default(),
            rc.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if cli_cmd.is_empty() {
        default_cmd
    } else {
        cli_cmd.to_vec()
    };
    ep.into_iter().chain(cmd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(ep: &[&str], cmd: &[&str]) -> RunConfig {
        let v = |x: &[&str]| (!x.is_empty()).then(|| x.iter().map(|s| s.to_string()).collect());
        RunConfig {
            entrypoint: v(ep),
            cmd: v(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = rc(&["/bin/ep"], &["a", "b"]);
        assert_eq!(command(&c, None, &[]), s(&["/bin/ep", "a", "b"]));
        assert_eq!(command(&c, None, &s(&["x"])), s(&["/bin/ep", "x"]));
        assert_eq!(command(&c, Some("/bin/sh"), &[]), s(&["/bin/sh"]));
        assert_eq!(
            command(&c, Some("/bin/sh"), &s(&["-c", "id"])),
            s(&["/bin/sh", "-c", "id"])
        );
        assert_eq!(command(&rc(&[], &["sh"]), None, &[]), s(&["sh"]));
        assert_eq!(command(&c, Some(""), &s(&["true"])), s(&["true"]));
    }
}
