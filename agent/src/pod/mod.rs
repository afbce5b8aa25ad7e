//! Pods and where they come from.
//!
//! Every source hands the agent `k8s_openapi::api::core::v1::Pod`s, the one pod type of the design;
//! the pod store keys them by UID and one worker per UID reconciles each.
//!
//! - [`source`]: the static pod source. It reads `staticPodPath` (a directory of manifests or one
//!   file), watches it with inotify and publishes the full set of static pods on every change,
//!   as upstream's file source does (`pkg/kubelet/config/file.go`, `file_linux.go`).
//! - [`manifest`]: decoding and validating one manifest (`tryDecodeSinglePod` in
//!   `pkg/kubelet/config/common.go`).
//! - `validation`: what upstream refuses in a static pod (`ValidatePodCreate`, API references).
//! - [`defaults`]: upstream's core/v1 API defaults (`pkg/apis/core/v1/defaults.go`) and the
//!   static-pod treatment of `applyDefaults` (name, namespace, UID, annotations, toleration).
//! - [`store`]: the desired pods of every source by UID, with deletion state, a change feed and
//!   the sources-ready gate that keeps start-up from treating unlisted pods as orphans.
//! - `watch`: the inotify watches behind the source, coalesced into "re-read now" signals.

pub mod defaults;
pub mod manifest;
pub mod source;
pub mod store;
mod validation;
mod watch;

pub use manifest::ManifestError;
pub use source::{Snapshot, StaticPodSource};
pub use store::{DesiredPod, PodStore};
