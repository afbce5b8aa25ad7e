//! Per-container and per-node statistics: cgroupfs readers, eBPF counters, the stats store, and
//! the upstream schemas they are served in. See `docs/architecture.md`, decisions 6 and 8.
pub mod cgroupfs;
pub mod collect;
mod fsusage;
pub mod host;
pub mod index;
pub mod metrics;
pub mod model;
pub mod store;
pub mod summary;
