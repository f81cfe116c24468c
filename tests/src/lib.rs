//! Tether's workspace integration tests live in `tests/*.rs`: they drive the built plugin
//! binaries (`cargo build --workspace --bins` first) through the real CNI protocol inside
//! throwaway network namespaces. This library is intentionally empty.
