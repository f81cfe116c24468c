//! What a `tether` killed while creating a container can leave without a record that leads to it,
//! and its sweep (run by `tether network prune`).
//!
//! ```text
//! tether run, in order                      killed here leaves          swept as
//! mkdir containers/<id>/          (root lock) an empty dir               a dir without state.json
//! write .state.json.<pid>.tmp     (root lock) a dir with only that file  a dir without state.json
//! rename to state.json: the record, status "creating", naming the pin <root>/netns/<id>
//! cgroup, clone, pin file, bind mount         a record                   rm / prune (dead creating)
//! ```
//!
//! Because the record names the pin before the pin exists, a pin whose record is missing was left
//! by a killed `tether` (a live one never has a pin without its record), and so was a container
//! directory without a record: records are made under the root lock, which the sweep holds too.
//! A record that exists is never swept here: `rm` and prune's cleanup of dead containers finish
//! those, and a record whose creating `tether` (pid and start time) is alive is left alone.

use crate::error::Result;
use crate::paths::Paths;
use crate::state::{self, Store};
use std::path::Path;

/// Removes half-made container directories, lock files of removed containers and pinned
/// namespaces that no record owns. Returns one line per thing removed.
pub fn sweep(paths: &Paths) -> Result<Vec<String>> {
    let _root = state::root_lock(paths)?;
    let store = Store { paths };
    let mut report = Vec::new();
    let containers = paths.containers();
    for name in entries(&containers) {
        if let Some(id) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".lock")) {
            if !containers.join(id).exists() {
                let _ = std::fs::remove_file(containers.join(&name));
            }
            continue;
        }
        let dir = containers.join(&name);
        if dir.is_dir() && !dir.join("state.json").exists() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.push(format!("removed the half-made container directory {name}")),
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "not removed"),
            }
        }
    }
    for id in entries(&paths.netns_dir()) {
        let pin = paths.netns_dir().join(&id);
        let owned = store.load(&id).is_ok_and(|st| {
            st.network.netns_path.as_deref() == Some(pin.as_path())
                || st.state.supervisor.is_some_and(|s| s.alive())
        });
        if owned {
            continue;
        }
        crate::netns::unpin(&pin)?;
        report.push(format!("removed the orphaned network namespace pin {id}"));
    }
    Ok(report)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_made_dirs_and_stale_locks_go_records_stay() {
        let (_d, p) = crate::network::test_paths();
        let c = p.containers();
        std::fs::create_dir_all(c.join("empty")).unwrap();
        std::fs::create_dir_all(c.join("tmponly")).unwrap();
        std::fs::write(c.join("tmponly/.state.json.1.tmp"), "{").unwrap();
        std::fs::create_dir_all(c.join("kept")).unwrap();
        std::fs::write(c.join("kept/state.json"), "{}").unwrap();
        std::fs::write(c.join(".gone.lock"), "").unwrap();
        std::fs::write(c.join(".kept.lock"), "").unwrap();
        std::fs::create_dir_all(p.netns_dir()).unwrap();
        // An empty pin file (killed between its creation and the mount) without a record.
        std::fs::write(p.netns_dir().join("empty"), "").unwrap();
        let report = sweep(&p).unwrap();
        assert_eq!(report.len(), 3, "{report:?}");
        let mut left = entries(&c);
        left.sort();
        assert_eq!(left, [".kept.lock", "kept"]);
        assert_eq!(entries(&p.netns_dir()), Vec::<String>::new());
    }
}
