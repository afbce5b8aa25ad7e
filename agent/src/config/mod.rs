//! Node agent configuration: the upstream kubelet's `KubeletConfiguration` file
//! (`kubelet.config.k8s.io/v1beta1`) and command-line flags, merged into one typed
//! [`KubeletConfig`].
//!
//! kernlet is meant to be a drop-in for the upstream kubelet where users touch it, so this module
//! follows upstream's own reference: field names, types and defaults come from
//! `staging/src/k8s.io/kubelet/config/v1beta1/types.go` and
//! `pkg/kubelet/apis/config/v1beta1/defaults.go` (plus `pkg/kubelet/eviction/defaults_linux.go`
//! for `evictionHard`), range checks from `pkg/kubelet/apis/config/validation/validation.go`, and
//! flag names and precedence (a flag given on the command line beats the file) from
//! `cmd/kubelet/app`. As upstream, a zero value for a non-pointer field means "use the default"
//! (`syncFrequency: 0s` is one minute), relative paths in the file are resolved against the file's
//! directory, and `cgroupRoot: ""` means `/` when `cgroupsPerQOS` is on.
//!
//! Every upstream field is classified:
//! - supported fields are typed into [`KubeletConfig`];
//! - fields kernlet does not implement yet are accepted only with their upstream default value
//!   (kubeadm writes many of them out), anything else is an error naming each such field;
//! - keys that are not upstream fields at all come back as warnings in [`Loaded::warnings`].

mod cluster;
mod configz;
mod duration;
mod eviction;
mod fields;
mod flags;
mod metric_kinds;
mod quantity;
mod reader;
mod server;
#[cfg(test)]
mod tests;
mod unsupported;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster::{ApiRate, ClusterSettings, Taint, is_kubelet_label};
pub use configz::configz;
pub use duration::{DurationError, format_duration, parse_duration};
pub use eviction::{
    DEFAULT_EVICTION_HARD, EvictionSignal, EvictionThreshold, default_eviction_hard,
    parse_threshold,
};
pub use flags::{Flags, resolve_node_name};
pub use metric_kinds::{MetricKind, MetricKinds, UnknownMetricKind};
pub use quantity::{Quantity, QuantityError};
pub use server::{Authentication, Authorization, AuthorizationMode, GO_CIPHER_SUITES, TlsVersion};

/// The only `apiVersion` accepted for the config file.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only `kind` accepted for the config file.
pub const KIND: &str = "KubeletConfiguration";
/// Upstream's default `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Upstream's default `containerRuntimeEndpoint`.
pub const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The effective configuration: upstream defaults, then the config file, then flags.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "mirrors upstream's KubeletConfiguration, whose switches are independent booleans"
)]
pub struct KubeletConfig {
    /// `--hostname-override`, else the machine's hostname; trimmed and lower-cased. Empty in
    /// [`KubeletConfig::default`] and [`KubeletConfig::from_yaml_str`], which read no flags.
    pub node_name: String,
    /// `--root-dir`.
    pub root_dir: PathBuf,
    /// `--kubeconfig`; `None` means standalone mode (no API server).
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig`: credentials to request the client certificate with when
    /// `kubeconfig` has no valid one.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// How the node registers and reports itself in cluster mode.
    pub cluster: ClusterSettings,
    /// `--node-ip`: none, one, or a dual-stack pair of different families.
    pub node_ips: Vec<IpAddr>,
    /// `--v` / `-v` log verbosity.
    pub verbosity: u32,
    /// `--config`, made absolute.
    pub config_file: Option<PathBuf>,

    /// `enableServer`.
    pub enable_server: bool,
    /// `staticPodPath` / `--pod-manifest-path`; `None` for `""`.
    pub static_pod_path: Option<PathBuf>,
    /// `podLogsDir`: where container logs go (`<dir>/<namespace>_<name>_<uid>/<container>/`).
    pub pod_logs_dir: PathBuf,
    /// `syncFrequency`.
    pub sync_frequency: Duration,
    /// `fileCheckFrequency`.
    pub file_check_frequency: Duration,
    /// `address` / `--address`.
    pub address: IpAddr,
    /// `port` / `--port`, 1–65535.
    pub port: u16,
    /// `readOnlyPort`; 0 disables the read-only server.
    pub read_only_port: u16,
    /// `tlsCertFile`.
    pub tls_cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`.
    pub tls_private_key_file: Option<PathBuf>,
    /// `tlsCipherSuites`: Go's names; empty for the TLS library's defaults.
    pub tls_cipher_suites: Vec<String>,
    /// `tlsMinVersion`; `None` for the TLS library's default (TLS 1.2).
    pub tls_min_version: Option<TlsVersion>,
    /// `--cert-dir`: where the self-signed serving certificate is generated when `tlsCertFile`
    /// is not given; `<root-dir>/pki` by default.
    pub cert_dir: PathBuf,
    /// `authentication`.
    pub authentication: Authentication,
    /// `authorization`.
    pub authorization: Authorization,
    /// `enableDebuggingHandlers`.
    pub enable_debugging_handlers: bool,
    /// `healthzPort`; 0 disables the healthz server.
    pub healthz_port: u16,
    /// `healthzBindAddress`.
    pub healthz_bind_address: IpAddr,
    /// `clusterDomain`; empty when unset.
    pub cluster_domain: String,
    /// `clusterDNS`; entries that are not IP addresses are skipped with a warning, as upstream.
    pub cluster_dns: Vec<IpAddr>,
    /// `nodeStatusUpdateFrequency`.
    pub node_status_update_frequency: Duration,
    /// `nodeStatusReportFrequency`; defaults to `nodeStatusUpdateFrequency` when only that is set.
    pub node_status_report_frequency: Duration,
    /// `imageMinimumGCAge`.
    pub image_minimum_gc_age: Duration,
    /// `imageGCHighThresholdPercent`, 0–100.
    pub image_gc_high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`, 0–100 and below the high threshold.
    pub image_gc_low_threshold_percent: u8,
    /// `cgroupRoot` / `--cgroup-root`; `"/"` when empty and `cgroupsPerQOS` is on.
    pub cgroup_root: String,
    /// `cgroupsPerQOS` / `--cgroups-per-qos`.
    pub cgroups_per_qos: bool,
    /// `cgroupDriver`.
    pub cgroup_driver: CgroupDriver,
    /// `runtimeRequestTimeout`.
    pub runtime_request_timeout: Duration,
    /// `hairpinMode`.
    pub hairpin_mode: HairpinMode,
    /// `maxPods` / `--max-pods`.
    pub max_pods: u32,
    /// `podsPerCore`; 0 means no per-core limit.
    pub pods_per_core: u32,
    /// `podPidsLimit`; -1 (any negative value in the file) means no pod-level limit.
    pub pod_pids_limit: i64,
    /// `resolvConf`; `None` when set to `""`, which disables host DNS inheritance.
    pub resolv_conf: Option<PathBuf>,
    /// `cpuCFSQuota`.
    pub cpu_cfs_quota: bool,
    /// `cpuCFSQuotaPeriod`.
    pub cpu_cfs_quota_period: Duration,
    /// `serializeImagePulls`.
    pub serialize_image_pulls: bool,
    /// `evictionHard` after upstream defaulting; disabled (`0%`/`100%`) signals are absent.
    pub eviction_hard: BTreeMap<EvictionSignal, EvictionThreshold>,
    /// `mergeDefaultEvictionSettings` (already applied to `eviction_hard`).
    pub merge_default_eviction_settings: bool,
    /// `featureGates` that kernlet knows.
    pub feature_gates: FeatureGates,
    /// `failSwapOn`.
    pub fail_swap_on: bool,
    /// `containerLogMaxSize`; use [`Quantity::value`] for bytes.
    pub container_log_max_size: Quantity,
    /// `containerLogMaxFiles`, at least 2.
    pub container_log_max_files: u32,
    /// `systemReserved`.
    pub system_reserved: BTreeMap<ReservedResource, Quantity>,
    /// `kubeReserved`.
    pub kube_reserved: BTreeMap<ReservedResource, Quantity>,
    /// `systemReservedCgroup`.
    pub system_reserved_cgroup: Option<String>,
    /// `kubeReservedCgroup`.
    pub kube_reserved_cgroup: Option<String>,
    /// `enforceNodeAllocatable`.
    pub enforce_node_allocatable: NodeAllocatableEnforcement,
    /// `shutdownGracePeriod`; zero disables graceful node shutdown.
    pub shutdown_grace_period: Duration,
    /// `crashLoopBackOff.maxContainerRestartPeriod`, 1s–300s.
    pub max_container_restart_period: Duration,
    /// `memoryThrottlingFactor`, in (0, 1].
    pub memory_throttling_factor: f64,
    /// `containerRuntimeEndpoint` / `--container-runtime-endpoint`.
    pub container_runtime_endpoint: String,
    /// `imageServiceEndpoint`; `None` means the runtime endpoint serves images too.
    pub image_service_endpoint: Option<String>,
    /// `--housekeeping-interval`: how often stats are collected (not a config file field).
    pub housekeeping_interval: Duration,
    /// `--disable-metrics`: metric kinds `/metrics/cadvisor` leaves out (not a config file field).
    pub disabled_metrics: MetricKinds,
}

impl Default for KubeletConfig {
    /// Upstream's defaults for every supported field.
    fn default() -> Self {
        Self {
            node_name: String::new(),
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            cluster: ClusterSettings::default(),
            node_ips: Vec::new(),
            verbosity: 0,
            config_file: None,
            enable_server: true,
            static_pod_path: None,
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            sync_frequency: Duration::from_mins(1),
            file_check_frequency: Duration::from_secs(20),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 10250,
            read_only_port: 0,
            tls_cert_file: None,
            tls_private_key_file: None,
            tls_cipher_suites: Vec::new(),
            tls_min_version: None,
            cert_dir: PathBuf::from(DEFAULT_ROOT_DIR).join("pki"),
            authentication: Authentication::default(),
            authorization: Authorization::default(),
            enable_debugging_handlers: true,
            healthz_port: 10248,
            healthz_bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cluster_domain: String::new(),
            cluster_dns: Vec::new(),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_mins(5),
            image_minimum_gc_age: Duration::from_mins(2),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            cgroup_root: "/".to_owned(),
            cgroups_per_qos: true,
            cgroup_driver: CgroupDriver::Cgroupfs,
            runtime_request_timeout: Duration::from_mins(2),
            hairpin_mode: HairpinMode::PromiscuousBridge,
            max_pods: 110,
            pods_per_core: 0,
            pod_pids_limit: -1,
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            cpu_cfs_quota: true,
            cpu_cfs_quota_period: Duration::from_millis(100),
            serialize_image_pulls: true,
            eviction_hard: default_eviction_hard(),
            merge_default_eviction_settings: false,
            feature_gates: FeatureGates::default(),
            fail_swap_on: true,
            container_log_max_size: Quantity::from_units(10 * 1024 * 1024),
            container_log_max_files: 5,
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            system_reserved_cgroup: None,
            kube_reserved_cgroup: None,
            enforce_node_allocatable: NodeAllocatableEnforcement::default(),
            shutdown_grace_period: Duration::ZERO,
            max_container_restart_period: Duration::from_mins(5),
            memory_throttling_factor: 0.9,
            container_runtime_endpoint: DEFAULT_CONTAINER_RUNTIME_ENDPOINT.to_owned(),
            image_service_endpoint: None,
            housekeeping_interval: Duration::from_secs(1),
            disabled_metrics: MetricKinds::NONE,
        }
    }
}

impl KubeletConfig {
    /// Parses a `KubeletConfiguration` document (YAML or JSON) on its own, without flags: the
    /// node name stays empty and relative paths stay relative.
    pub fn from_yaml_str(text: &str) -> Result<Loaded, ConfigError> {
        let origin = "(inline text)";
        let (mut config, warnings) = fields::parse_document(text, origin, None)?;
        config.finalize();
        validate::check(&config, origin)?;
        Ok(Loaded { config, warnings })
    }

    /// The endpoint that serves the CRI image service.
    #[must_use]
    pub fn image_endpoint(&self) -> &str {
        self.image_service_endpoint
            .as_deref()
            .unwrap_or(&self.container_runtime_endpoint)
    }

    /// The defaults before [`KubeletConfig::finalize`]: upstream's raw `cgroupRoot` is `""`.
    fn unfinalized() -> Self {
        Self {
            cgroup_root: String::new(),
            ..Self::default()
        }
    }

    /// Applies the defaulting that upstream does after flags are merged.
    fn finalize(&mut self) {
        if self.cgroups_per_qos && self.cgroup_root.is_empty() {
            "/".clone_into(&mut self.cgroup_root);
        }
    }
}

/// The result of loading: the effective config and warnings for the caller to log.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: KubeletConfig,
    /// Ignored keys (not upstream fields), unknown feature gates, skipped `clusterDNS` entries.
    pub warnings: Vec<String>,
}

/// Loads the effective configuration: upstream defaults, then `--config` if given, then every
/// flag given on the command line; then resolves the node name and validates the result.
pub fn load(flags: &Flags) -> Result<Loaded, ConfigError> {
    let (mut config, warnings, origin) = match &flags.config {
        Some(path) => {
            let absolute = std::path::absolute(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let text = std::fs::read_to_string(&absolute).map_err(|source| ConfigError::Read {
                path: absolute.clone(),
                source,
            })?;
            let origin = format!("file {}", absolute.display());
            let base = absolute.parent().unwrap_or_else(|| Path::new("/"));
            let (mut config, warnings) = fields::parse_document(&text, &origin, Some(base))?;
            config.config_file = Some(absolute);
            (config, warnings, origin)
        }
        None => (
            KubeletConfig::default(),
            Vec::new(),
            "from flags".to_owned(),
        ),
    };
    flags::apply(flags, &mut config)?;
    config.node_name = resolve_node_name(flags.hostname_override.as_deref(), flags::read_hostname)?;
    config.finalize();
    validate::check(&config, &origin)?;
    Ok(Loaded { config, warnings })
}

/// `cgroupDriver`. Upstream also has `systemd`, which kernlet rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
}

/// `hairpinMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HairpinMode {
    /// `promiscuous-bridge`.
    PromiscuousBridge,
    /// `hairpin-veth`.
    HairpinVeth,
    /// `none`.
    None,
}

/// A resource name accepted in `systemReserved` / `kubeReserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReservedResource {
    /// `cpu`, in cores (use [`Quantity::milli_value`] for millicores).
    Cpu,
    /// `memory`, in bytes.
    Memory,
    /// `ephemeral-storage`, in bytes.
    EphemeralStorage,
    /// `pid`, a process count.
    Pid,
}

impl ReservedResource {
    pub const ALL: [Self; 4] = [Self::Cpu, Self::Memory, Self::EphemeralStorage, Self::Pid];

    /// The upstream spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::EphemeralStorage => "ephemeral-storage",
            Self::Pid => "pid",
        }
    }
}

/// `enforceNodeAllocatable`: which cgroups get node-allocatable limits. `["none"]` and `[]` both
/// turn everything off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAllocatableEnforcement {
    /// `pods`.
    pub pods: bool,
    /// `kube-reserved` (needs `kubeReservedCgroup`).
    pub kube_reserved: bool,
    /// `system-reserved` (needs `systemReservedCgroup`).
    pub system_reserved: bool,
}

impl Default for NodeAllocatableEnforcement {
    fn default() -> Self {
        Self {
            pods: true,
            kube_reserved: false,
            system_reserved: false,
        }
    }
}

/// The feature gates kernlet acts on; both default to upstream's (alpha, off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureGates {
    /// `MemoryQoS`: set `memory.high` / `memory.min` from requests and limits.
    pub memory_qos: bool,
    /// `CustomCPUCFSQuotaPeriod`: required for a `cpuCFSQuotaPeriod` other than 100ms.
    pub custom_cpu_cfs_quota_period: bool,
}

impl FeatureGates {
    /// Gate names kernlet knows; any other name in `featureGates` is ignored with a warning.
    pub const KNOWN: [&'static str; 2] = ["MemoryQoS", "CustomCPUCFSQuotaPeriod"];
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the file, e.g. `authentication.webhook.cacheTTL`.
    pub field: String,
    /// The offending value, rendered as JSON.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
    /// True when the value is valid upstream but kernlet does not support it.
    pub unsupported: bool,
}

impl FieldError {
    fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
            unsupported: false,
        }
    }

    fn unsupported(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
            unsupported: true,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.unsupported {
            "unsupported"
        } else {
            "invalid"
        };
        write!(
            f,
            "field {}: {kind} value {}: {}",
            self.field, self.value, self.reason
        )
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading kubelet config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet config {origin}: not valid yaml or json: {message}")]
    Syntax { origin: String, message: String },
    #[error("kubelet config {origin}: {reason}")]
    Document { origin: String, reason: String },
    #[error("kubelet config {origin}: kind is {}, expected {KIND:?}", describe(.found.as_deref()))]
    Kind {
        origin: String,
        found: Option<String>,
    },
    #[error(
        "kubelet config {origin}: apiVersion is {}, expected {API_VERSION:?}",
        describe(.found.as_deref())
    )]
    ApiVersion {
        origin: String,
        found: Option<String>,
    },
    #[error("kubelet config {origin}: {}", join_errors(.errors))]
    Invalid {
        origin: String,
        errors: Vec<FieldError>,
    },
    #[error("flag --{flag}: invalid value {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("node name: {0}")]
    NodeName(String),
}

impl ConfigError {
    /// The per-field problems, for [`ConfigError::Invalid`]; empty otherwise.
    #[must_use]
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

fn describe(found: Option<&str>) -> String {
    found.map_or_else(|| "missing".to_owned(), |value| format!("{value:?}"))
}

fn join_errors(errors: &[FieldError]) -> String {
    let joined = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > 1 {
        format!("{} problems: {joined}", errors.len())
    } else {
        joined
    }
}
