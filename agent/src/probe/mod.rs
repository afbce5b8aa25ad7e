//! Container probes: liveness, readiness and startup, run as upstream's prober runs them
//! (`pkg/kubelet/prober`, v1.34).
//!
//! One task per probe of each running container instance, started when the pod's worker first
//! sees the instance running and cancelled when it no longer does ([`PodProbes::sync`]); no
//! shared polling loop. A task waits out a jitter (only while the agent started less than a
//! period ago, as upstream), then `initialDelaySeconds` from the container's start, then probes
//! every `periodSeconds`:
//! - results are counted as upstream's worker counts them: the same result `failureThreshold`
//!   (or `successThreshold`) times in a row changes the result; a probe that errors (a named
//!   port that does not exist, a runtime call that fails) changes nothing;
//! - until the startup probe has succeeded, liveness and readiness are not run (the container
//!   is not started and not ready); once it has, the startup probe stops;
//! - readiness is unknown (not ready) before its first result;
//! - a liveness or startup failure asks for a kill ([`Kill`], with the probe's
//!   `terminationGracePeriodSeconds`) and the probe stops: the next instance gets new probes.
//!
//! Results change the pod's worker's view ([`PodProbes::results`]) and wake it: it kills an
//! unhealthy container and publishes readiness. Handlers: [`handler`] (exec through CRI
//! `ExecSync`, httpGet, tcpSocket, grpc).
mod counter;
pub mod handler;
mod http;
pub mod metrics;
mod runner;
mod set;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use handler::Outcome;
pub use metrics::ProbeMetrics;
pub use set::{Instance, PodProbes, Prober};

/// Which probe; the names are upstream's `probe_type` label values and log words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }

    /// The word of upstream's kill message: "Container app failed liveness probe".
    #[must_use]
    pub fn lower(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

/// A container instance that failed its liveness or startup probe: kill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// Liveness or Startup.
    pub kind: Kind,
    /// The probe's `terminationGracePeriodSeconds`; `None`: the pod's.
    pub grace: Option<Duration>,
}

/// What the prober last concluded for one container instance; `None`: no result yet (upstream
/// then treats a container with that probe as not started / not ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeResults {
    pub startup: Option<bool>,
    pub readiness: Option<bool>,
    /// Set once liveness or startup failed.
    pub kill: Option<Kill>,
}
