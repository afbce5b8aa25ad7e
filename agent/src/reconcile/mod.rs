//! Making the runtime match one pod: a pure [`plan::plan`] decides, a worker executes.
//!
//! The rules follow the upstream kubelet's `computePodActions` (pkg/kubelet/kuberuntime,
//! `kuberuntime_manager.go`): sandbox (re)creation, init containers in order, restart policies,
//! CrashLoopBackOff (`flowcontrol.Backoff`: 10 s doubling to 300 s, forgotten after 10 min), spec
//! changes by container hash, and termination.

pub mod backoff;
pub mod execute;
pub mod exits;
pub mod hooks;
pub mod images;
pub mod manager;
pub mod observe;
pub mod pidfd;
pub mod plan;
pub mod pleg;
pub mod spec;
pub mod state;
pub mod worker;

#[cfg(test)]
mod fake_runtime;
#[cfg(test)]
mod manager_tests;
#[cfg(test)]
mod observe_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod worker_tests;
