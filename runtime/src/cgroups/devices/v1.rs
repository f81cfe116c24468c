//! cgroup v1 `devices`: deny all, then allow the rules. Written by tether (host root) into the
//! container's new cgroup before its init joins it, so the init is confined from its first step.

use super::Rule;
use crate::cgroups::fsutil::write;
use crate::error::Result;
use std::path::Path;

pub(super) fn apply(dir: &Path, rules: &[Rule]) -> Result<()> {
    write(dir, "devices.deny", "a")?;
    for r in rules {
        write(dir, "devices.allow", &r.to_string())?;
    }
    Ok(())
}
