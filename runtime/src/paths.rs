//! Where the runtime keeps things: the state root, the network configs and the plugin search path,
//! as resolved once from the flags, the environment and the config file (`cli/dispatch.rs`).

use std::path::PathBuf;

/// Where the runtime keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State root (`/run/tether`).
    pub root: PathBuf,
    /// Network configs (`/etc/tether/net.d`).
    pub config_dir: PathBuf,
    /// Plugin search path, in order.
    pub cni_path: Vec<PathBuf>,
}

impl Paths {
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    /// The CNI result cache used for DEL, CHECK and GC.
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni")
    }
    /// host-local's lease store for the networks tether writes.
    pub fn ipam_dir(&self) -> PathBuf {
        self.root.join("ipam")
    }
    /// Pinned network namespaces (bind mounts), one per container with its own namespace.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    pub fn invoker(&self) -> cni::runtime::Invoker {
        cni::runtime::Invoker::new(self.cni_path.clone(), self.cni_cache())
    }
}
