//! kernlet: a Kubernetes node agent. It drives pods through CRI, enforces resources by writing
//! cgroup v2, and measures every container with eBPF probes. See `docs/architecture.md` for the
//! architecture and the module layers (modules import only modules below them; `cargo xtask
//! layers` checks it); each module's doc names its kernel or Kubernetes reference.

pub mod cgroup;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod ebpf;
pub mod event;
pub mod logs;
pub mod node;
pub mod pod;
pub mod probe;
pub mod reconcile;
pub mod resources;
pub mod server;
pub mod stats;
pub mod status;
pub mod supervise;
