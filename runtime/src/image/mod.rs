//! Images on a union filesystem: a content-addressed layer store, imports of the archives
//! `docker save`, `podman save` and `skopeo copy` write, and the operations on containers'
//! writable layers (diff, commit). The container's overlayfs root itself is mounted by its init
//! (`process/rootfs.rs`) from the record's [`crate::state::ImageMount`].
//!
//! ```text
//! store.rs       the store layout (diagram there), lock, refs, prune
//! reference.rs   NAME[:TAG] rules
//! digest.rs      sha256 digests, hashing reader/writer
//! import/        outer.rs (archive index) · docker_archive.rs · oci_layout.rs · mod.rs (verify, stage, commit)
//! unpack.rs      layer tar → directory, hostile entries refused
//! whiteout.rs    OCI ⇄ overlayfs whiteouts
//! xattr.rs       PAX SCHILY.xattr.* ⇄ xattrs, which names cross
//! pack.rs        directory → layer tar (export, commit)
//! export.rs      docker-archive writer
//! diff.rs        upper dir → A/C/D
//! config.rs      the image config; Entrypoint/Cmd rule
//! ops.rs         commands: images, inspect, rmi, prune, diff, commit (what cli/ calls)
//! cmd.rs         clap types of `tether image …`
//! ```
//! Dependencies point down: cmd → ops → import, export, diff → unpack, pack → whiteout, digest →
//! store; `run/image.rs` uses ops' resolve for `tether run IMAGE`.

pub mod cmd;
pub mod config;
pub mod diff;
pub mod digest;
pub mod export;
pub mod import;
pub mod ops;
pub mod pack;
pub mod reference;
pub mod store;
pub mod unpack;
pub mod whiteout;
pub mod xattr;

pub use store::Store;
