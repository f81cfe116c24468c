//! Host-wide collection: `tether network prune` and `tether network rm`. Both send GC through the
//! same conflist executor as `tether cni gc` ([`cni::runtime::Invoker::gc`]): DEL for every
//! cached attachment that is not valid, then (spec 1.1.0) the plugins' own GC with the valid set,
//! with which they collect what no cache entry remembers (leases, veths, rules, a network's
//! bridge and masquerading once nothing of it is valid).

use crate::container;
use crate::error::{Context, Error, Result, at};
use crate::network;
use crate::paths::Paths;
use crate::state::{ContainerState, Status, Store};
use cni::runtime::ConfList;

/// `tether network prune`: cleans up after containers whose `tether` died, sweeps what a `tether`
/// killed while creating left, then GCs every network (the built-in `bridge` too) with the
/// attachments of running containers as the valid set. Returns one line per thing done.
pub fn prune(paths: &Paths) -> Result<Vec<String>> {
    let store = Store { paths };
    let mut report = Vec::new();
    let mut first_err = None;
    for st in store.list() {
        if st.effective_status() == Status::Dead
            || st.state.status == Status::Exited && !st.state.cleaned
        {
            match container::finalize(paths, &st.id, None, None) {
                Ok(()) => report.push(format!("cleaned up after container {}", st.name)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    match crate::orphans::sweep(paths) {
        Ok(lines) => report.extend(lines),
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    let all = store.list();
    let running: Vec<&ContainerState> = all.iter().filter(|s| s.is_running()).collect();
    let mut lists: Vec<ConfList> = network::list_networks(paths)
        .into_iter()
        .map(|(l, _)| network::gc_list(paths, l))
        .collect();
    // A network whose file is gone is still collected with the list its containers recorded.
    for st in &all {
        if !lists.iter().any(|x| x.name == st.network.name()) {
            lists.push(st.network.conflist.clone());
        }
    }
    let invoker = paths.invoker();
    for l in lists {
        let valid: Vec<cni::Attachment> = running
            .iter()
            .filter(|s| s.network.name() == l.name)
            .map(|s| s.network.attachment(&s.id))
            .collect();
        let stale = invoker
            .cached_attachments(&l.name)
            .iter()
            .filter(|c| !valid.iter().any(|v| v.container_id == c.container_id))
            .count();
        if stale == 0 && !cni::version::at_least(&l.cni_version, "1.1.0") {
            continue;
        }
        match invoker.gc(&l, &valid) {
            Ok(()) => {
                if stale > 0 {
                    report.push(format!(
                        "network {}: removed {stale} stale attachment(s)",
                        l.name
                    ));
                }
            }
            Err(e) => {
                first_err.get_or_insert(Error::cni(format!("network {}: GC failed", l.name), e));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The running containers attached to network `name`.
pub fn users(paths: &Paths, name: &str) -> Vec<ContainerState> {
    Store { paths }
        .list()
        .into_iter()
        .filter(|s| s.network.name() == name && s.is_running())
        .collect()
}

/// `tether network rm NAME`: refused (naming them) while running containers use the network;
/// otherwise GC with no valid attachment, so the plugins remove the network's state (its
/// attachments, its masquerading, the bridge if they made it), then the conflist. A failed GC
/// keeps the conflist, so that `network rm` can be run again.
pub fn remove_network(paths: &Paths, name: &str) -> Result<()> {
    let file = network::network_file(paths, name)?;
    let users: Vec<String> = users(paths, name).into_iter().map(|s| s.name).collect();
    if !users.is_empty() {
        return Err(Error::usage(format!(
            "network {name} is in use by {}: remove those containers first",
            users.join(", ")
        )));
    }
    let list = network::gc_list(paths, network::load_network(paths, name)?);
    paths.invoker().gc(&list, &[]).ctx(format!(
        "network {name}: GC failed, so its config {} is kept; fix the cause and run `tether network rm {name}` again",
        file.display()
    ))?;
    std::fs::remove_file(&file).ctx(at("remove", &file))
}
