//! Reads a `KubeletConfiguration` document into a [`KubeletConfig`], field by field, applying
//! upstream's defaulting rules (`SetDefaults_KubeletConfiguration`): for a non-pointer upstream
//! field a zero value (`0`, `""`, `0s`) means "use the default", for a pointer field any present
//! value is used as given, and `null` is the same as absent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::eviction::resolve_eviction_hard;
use super::quantity::Quantity;
use super::reader::{Reader, get, set};
use super::unsupported;
use super::{
    API_VERSION, AuthorizationMode, ConfigError, FeatureGates, FieldError, GO_CIPHER_SUITES,
    HairpinMode, KIND, KubeletConfig, NodeAllocatableEnforcement, ReservedResource, TlsVersion,
};

/// Upstream fields that kernlet reads into [`KubeletConfig`].
pub(super) const SUPPORTED: [&str; 63] = [
    "podLogsDir",
    "enableServer",
    "staticPodPath",
    "syncFrequency",
    "fileCheckFrequency",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsMinVersion",
    "authentication",
    "authorization",
    "enableDebuggingHandlers",
    "healthzPort",
    "healthzBindAddress",
    "clusterDomain",
    "clusterDNS",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "imageMinimumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podsPerCore",
    "podPidsLimit",
    "resolvConf",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "serializeImagePulls",
    "evictionHard",
    "mergeDefaultEvictionSettings",
    "featureGates",
    "failSwapOn",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "systemReserved",
    "kubeReserved",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "logging",
    "shutdownGracePeriod",
    "crashLoopBackOff",
    "memoryThrottlingFactor",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "registerNode",
    "rotateCertificates",
    "serverTLSBootstrap",
    "registerWithTaints",
    "nodeLeaseDurationSeconds",
    "nodeStatusMaxImages",
    "eventRecordQPS",
    "eventBurst",
    "kubeAPIQPS",
    "kubeAPIBurst",
];

const I32_MAX: i64 = i32::MAX as i64;

/// Parses and defaults a document; returns the config and the warnings, or every field error.
pub(super) fn parse_document(
    text: &str,
    origin: &str,
    base_dir: Option<&Path>,
) -> Result<(KubeletConfig, Vec<String>), ConfigError> {
    // JSON is read as JSON (YAML parsers differ on some JSON corners); anything else, including
    // a YAML flow mapping that is not valid JSON, as YAML.
    let json = text
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str(text).ok());
    let parsed: Result<Value, String> = match json.flatten() {
        Some(value) => Ok(value),
        None => serde_yaml::from_str(text).map_err(|e| e.to_string()),
    };
    let root = match parsed {
        Ok(Value::Object(root)) => root,
        Ok(Value::Null) => {
            let reason = "the document is empty".to_owned();
            return Err(ConfigError::Document {
                origin: origin.to_owned(),
                reason,
            });
        }
        Ok(other) => {
            let reason = format!("the top level must be a mapping, found {other}");
            return Err(ConfigError::Document {
                origin: origin.to_owned(),
                reason,
            });
        }
        Err(message) => {
            return Err(ConfigError::Syntax {
                origin: origin.to_owned(),
                message,
            });
        }
    };
    check_type_meta(&root, origin)?;

    let mut reader = Reader {
        errors: Vec::new(),
        warnings: Vec::new(),
        origin,
        base_dir,
    };
    for (key, value) in &root {
        if key == "apiVersion" || key == "kind" || SUPPORTED.contains(&key.as_str()) {
            continue;
        }
        match unsupported::check(key, value) {
            Some(Ok(())) => {}
            Some(Err(error)) => reader.errors.push(error),
            None => reader.warn(&format!(
                "unknown field {key} ignored: it is not a {API_VERSION} {KIND} field"
            )),
        }
    }
    let config = reader.read(&root);
    if reader.errors.is_empty() {
        Ok((config, reader.warnings))
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            errors: reader.errors,
        })
    }
}

fn check_type_meta(root: &Map<String, Value>, origin: &str) -> Result<(), ConfigError> {
    let render = |value: &Value| {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)
    };
    let kind = root.get("kind").filter(|v| !v.is_null());
    if kind.and_then(Value::as_str) != Some(KIND) {
        return Err(ConfigError::Kind {
            origin: origin.to_owned(),
            found: kind.map(render),
        });
    }
    let api_version = root.get("apiVersion").filter(|v| !v.is_null());
    if api_version.and_then(Value::as_str) != Some(API_VERSION) {
        let found = api_version.map(render);
        return Err(ConfigError::ApiVersion {
            origin: origin.to_owned(),
            found,
        });
    }
    Ok(())
}

impl Reader<'_> {
    fn read(&mut self, root: &Map<String, Value>) -> KubeletConfig {
        let mut c = KubeletConfig::unfinalized();
        self.read_server(root, &mut c);
        self.read_node(root, &mut c);
        self.read_runtime(root, &mut c);
        self.read_resources(root, &mut c);
        self.read_cluster(root, &mut c.cluster);
        c
    }

    fn read_server(&mut self, root: &Map<String, Value>, c: &mut KubeletConfig) {
        set(&mut c.enable_server, self.bool(root, "enableServer"));
        set(&mut c.address, self.ip(root, "address"));
        match self.int(root, "port", 0, 65535) {
            Some(0) | None => {}
            Some(port) => c.port = port as u16,
        }
        set(
            &mut c.read_only_port,
            self.int(root, "readOnlyPort", 0, 65535).map(|p| p as u16),
        );
        self.path(root, "tlsCertFile", &mut c.tls_cert_file);
        self.path(root, "tlsPrivateKeyFile", &mut c.tls_private_key_file);
        self.read_tls(root, c);
        set(
            &mut c.enable_debugging_handlers,
            self.bool(root, "enableDebuggingHandlers"),
        );
        set(
            &mut c.healthz_port,
            self.int(root, "healthzPort", 0, 65535).map(|p| p as u16),
        );
        set(
            &mut c.healthz_bind_address,
            self.ip(root, "healthzBindAddress"),
        );

        let known = ["x509", "webhook", "anonymous"];
        if let Some(authn) = self.object(root, "authentication", Some(&known)) {
            let a = &mut c.authentication;
            let known = ["clientCAFile"];
            if let Some(x509) = self.object(authn, "authentication.x509", Some(&known)) {
                let path = "authentication.x509.clientCAFile";
                self.path(x509, path, &mut a.x509_client_ca_file);
            }
            let known = ["enabled", "cacheTTL"];
            if let Some(webhook) = self.object(authn, "authentication.webhook", Some(&known)) {
                set(
                    &mut a.webhook_enabled,
                    self.bool(webhook, "authentication.webhook.enabled"),
                );
                let ttl = self.nonzero_duration(webhook, "authentication.webhook.cacheTTL");
                set(&mut a.webhook_cache_ttl, ttl);
            }
            let known = ["enabled"];
            if let Some(anon) = self.object(authn, "authentication.anonymous", Some(&known)) {
                set(
                    &mut a.anonymous_enabled,
                    self.bool(anon, "authentication.anonymous.enabled"),
                );
            }
        }
        if let Some(authz) = self.object(root, "authorization", Some(&["mode", "webhook"])) {
            let a = &mut c.authorization;
            match self.nonempty_string(authz, "authorization.mode").as_deref() {
                None => {}
                Some("Webhook") => a.mode = AuthorizationMode::Webhook,
                Some("AlwaysAllow") => a.mode = AuthorizationMode::AlwaysAllow,
                Some(other) => self.invalid(
                    "authorization.mode",
                    &Value::from(other),
                    "must be \"Webhook\" or \"AlwaysAllow\"",
                ),
            }
            let known = ["cacheAuthorizedTTL", "cacheUnauthorizedTTL"];
            if let Some(webhook) = self.object(authz, "authorization.webhook", Some(&known)) {
                let path = "authorization.webhook.cacheAuthorizedTTL";
                set(
                    &mut a.webhook_cache_authorized_ttl,
                    self.nonzero_duration(webhook, path),
                );
                let path = "authorization.webhook.cacheUnauthorizedTTL";
                set(
                    &mut a.webhook_cache_unauthorized_ttl,
                    self.nonzero_duration(webhook, path),
                );
            }
        }
    }

    fn read_tls(&mut self, root: &Map<String, Value>, c: &mut KubeletConfig) {
        match self.nonempty_string(root, "tlsMinVersion").as_deref() {
            None => {}
            Some("VersionTLS12") => c.tls_min_version = Some(TlsVersion::Tls12),
            Some("VersionTLS13") => c.tls_min_version = Some(TlsVersion::Tls13),
            Some(old @ ("VersionTLS10" | "VersionTLS11")) => self.invalid(
                "tlsMinVersion",
                &Value::from(old),
                "kernlet's TLS library speaks TLS 1.2 and 1.3 only: use VersionTLS12 or VersionTLS13",
            ),
            Some(other) => self.invalid(
                "tlsMinVersion",
                &Value::from(other),
                "must be VersionTLS12 or VersionTLS13",
            ),
        }
        if let Some(names) = self.string_list(root, "tlsCipherSuites") {
            for name in &names {
                if !GO_CIPHER_SUITES.contains(&name.as_str()) {
                    self.invalid(
                        "tlsCipherSuites",
                        &Value::from(name.as_str()),
                        "not a cipher suite name (Go's crypto/tls names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                    );
                }
            }
            c.tls_cipher_suites = names;
        }
    }

    fn read_node(&mut self, root: &Map<String, Value>, c: &mut KubeletConfig) {
        self.path(root, "staticPodPath", &mut c.static_pod_path);
        let mut pod_logs_dir = None;
        self.path(root, "podLogsDir", &mut pod_logs_dir);
        set(&mut c.pod_logs_dir, pod_logs_dir);
        set(
            &mut c.sync_frequency,
            self.nonzero_duration(root, "syncFrequency"),
        );
        set(
            &mut c.file_check_frequency,
            self.nonzero_duration(root, "fileCheckFrequency"),
        );
        set(&mut c.cluster_domain, self.string(root, "clusterDomain"));
        if let Some(entries) = self.string_list(root, "clusterDNS") {
            c.cluster_dns.clear();
            for entry in entries {
                match entry.parse() {
                    Ok(ip) => c.cluster_dns.push(ip),
                    Err(_) => self.warn(&format!(
                        "clusterDNS entry {entry:?} is not an IP address; skipped"
                    )),
                }
            }
        }
        self.path(root, "resolvConf", &mut c.resolv_conf);
        let update = self.nonzero_duration(root, "nodeStatusUpdateFrequency");
        let report = self.nonzero_duration(root, "nodeStatusReportFrequency");
        // Upstream: an explicit update frequency also becomes the report frequency's default.
        set(&mut c.node_status_report_frequency, report.or(update));
        set(&mut c.node_status_update_frequency, update);
        set(
            &mut c.image_minimum_gc_age,
            self.nonzero_duration(root, "imageMinimumGCAge"),
        );
        set(
            &mut c.image_gc_high_threshold_percent,
            self.percent(root, "imageGCHighThresholdPercent"),
        );
        set(
            &mut c.image_gc_low_threshold_percent,
            self.percent(root, "imageGCLowThresholdPercent"),
        );
        set(
            &mut c.runtime_request_timeout,
            self.nonzero_duration(root, "runtimeRequestTimeout"),
        );
        match self.nonempty_string(root, "hairpinMode").as_deref() {
            None => {}
            Some("promiscuous-bridge") => c.hairpin_mode = HairpinMode::PromiscuousBridge,
            Some("hairpin-veth") => c.hairpin_mode = HairpinMode::HairpinVeth,
            Some("none") => c.hairpin_mode = HairpinMode::None,
            Some(other) => self.invalid(
                "hairpinMode",
                &Value::from(other),
                "must be \"promiscuous-bridge\", \"hairpin-veth\" or \"none\"",
            ),
        }
        set(
            &mut c.serialize_image_pulls,
            self.bool(root, "serializeImagePulls"),
        );
        set(&mut c.fail_swap_on, self.bool(root, "failSwapOn"));
        if let Some(size) = self.nonempty_quantity(root, "containerLogMaxSize") {
            c.container_log_max_size = size;
        }
        let files = self.int(root, "containerLogMaxFiles", i64::from(i32::MIN), I32_MAX);
        match files {
            Some(n) if n <= 1 => {
                self.invalid(
                    "containerLogMaxFiles",
                    &Value::from(n),
                    "must be greater than 1",
                );
            }
            Some(n) => c.container_log_max_files = n as u32,
            None => {}
        }
        set(
            &mut c.shutdown_grace_period,
            self.duration(root, "shutdownGracePeriod"),
        );
        let period = c.shutdown_grace_period;
        if !period.is_zero() && period < Duration::from_secs(1) {
            let value = Value::from(super::format_duration(period));
            self.invalid(
                "shutdownGracePeriod",
                &value,
                "must be either zero or at least 1s",
            );
        }
    }

    fn read_runtime(&mut self, root: &Map<String, Value>, c: &mut KubeletConfig) {
        let known = ["maxContainerRestartPeriod"];
        if let Some(backoff) = self.object(root, "crashLoopBackOff", Some(&known)) {
            let path = "crashLoopBackOff.maxContainerRestartPeriod";
            if let Some(max) = self.duration(backoff, path) {
                if (Duration::from_secs(1)..=Duration::from_mins(5)).contains(&max) {
                    c.max_container_restart_period = max;
                } else {
                    let value = Value::from(super::format_duration(max));
                    self.invalid(path, &value, "must be between 1s and 300s");
                }
            }
        }
        let known = [
            "format",
            "flushFrequency",
            "verbosity",
            "vmodule",
            "options",
        ];
        if let Some(logging) = self.object(root, "logging", Some(&known)) {
            let settings = Value::Object(logging.clone());
            tracing::debug!(
                %settings,
                "kubelet config logging settings are accepted and ignored; use --v for verbosity"
            );
        }
        if let Some(gates) = self.object(root, "featureGates", None) {
            for (name, value) in gates {
                let path = format!("featureGates.{name}");
                let Some(enabled) = value.as_bool() else {
                    self.invalid(&path, value, "expected true or false");
                    continue;
                };
                match name.as_str() {
                    "MemoryQoS" => c.feature_gates.memory_qos = enabled,
                    "CustomCPUCFSQuotaPeriod" => {
                        c.feature_gates.custom_cpu_cfs_quota_period = enabled;
                    }
                    _ => self.warn(&format!(
                        "{path}: kernlet does not know this feature gate and ignores it (known: {})",
                        FeatureGates::KNOWN.join(", ")
                    )),
                }
            }
        }
        set(
            &mut c.container_runtime_endpoint,
            self.nonempty_string(root, "containerRuntimeEndpoint"),
        );
        if let Some(endpoint) = self.string(root, "imageServiceEndpoint") {
            c.image_service_endpoint = Some(endpoint).filter(|e| !e.is_empty());
        }
    }

    fn read_resources(&mut self, root: &Map<String, Value>, c: &mut KubeletConfig) {
        set(&mut c.cgroup_root, self.string(root, "cgroupRoot"));
        set(&mut c.cgroups_per_qos, self.bool(root, "cgroupsPerQOS"));
        match self.nonempty_string(root, "cgroupDriver").as_deref() {
            None | Some("cgroupfs") => {}
            Some("systemd") => self.errors.push(FieldError::unsupported(
                "cgroupDriver",
                "\"systemd\"",
                "kernlet manages cgroups directly through cgroupfs; set cgroupDriver: cgroupfs",
            )),
            Some(other) => {
                self.invalid(
                    "cgroupDriver",
                    &Value::from(other),
                    "must be cgroupfs or systemd",
                );
            }
        }
        if let Some(max) = self.int(root, "maxPods", 0, I32_MAX).filter(|n| *n != 0) {
            c.max_pods = max as u32;
        }
        set(
            &mut c.pods_per_core,
            self.int(root, "podsPerCore", 0, I32_MAX).map(|n| n as u32),
        );
        set(
            &mut c.pod_pids_limit,
            self.int(root, "podPidsLimit", i64::MIN, i64::MAX)
                .map(|n| n.max(-1)),
        );
        set(&mut c.cpu_cfs_quota, self.bool(root, "cpuCFSQuota"));
        set(
            &mut c.cpu_cfs_quota_period,
            self.duration(root, "cpuCFSQuotaPeriod"),
        );
        if let Some(value) = get(root, "memoryThrottlingFactor") {
            match value.as_f64() {
                Some(factor) if factor > 0.0 && factor <= 1.0 => {
                    c.memory_throttling_factor = factor;
                }
                Some(_) => self.invalid(
                    "memoryThrottlingFactor",
                    value,
                    "must be greater than 0 and less than or equal to 1.0",
                ),
                None => self.invalid("memoryThrottlingFactor", value, "expected a number"),
            }
        }
        let merge = self
            .bool(root, "mergeDefaultEvictionSettings")
            .unwrap_or(false);
        c.merge_default_eviction_settings = merge;
        let entries = self.string_map(root, "evictionHard");
        c.eviction_hard = resolve_eviction_hard(entries.as_ref(), merge, &mut self.errors);
        set(
            &mut c.system_reserved,
            self.reserved(root, "systemReserved"),
        );
        set(&mut c.kube_reserved, self.reserved(root, "kubeReserved"));
        if let Some(cgroup) = self.string(root, "systemReservedCgroup") {
            c.system_reserved_cgroup = Some(cgroup).filter(|name| !name.is_empty());
        }
        if let Some(cgroup) = self.string(root, "kubeReservedCgroup") {
            c.kube_reserved_cgroup = Some(cgroup).filter(|name| !name.is_empty());
        }
        if let Some(list) = self.string_list(root, "enforceNodeAllocatable") {
            c.enforce_node_allocatable = enforcement(&list, &mut self.errors);
        }
    }
    fn reserved(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<BTreeMap<ReservedResource, Quantity>> {
        let entries = self.string_map(obj, path)?;
        let mut out = BTreeMap::new();
        for (name, text) in entries {
            let field = format!("{path}.{name}");
            let value = Value::String(text.clone());
            let Some(resource) = ReservedResource::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
            else {
                self.invalid(
                    &field,
                    &value,
                    format!(
                        "cannot reserve resource {name:?}; reservable resources are cpu, memory, \
                     ephemeral-storage and pid"
                    ),
                );
                continue;
            };
            match text.parse::<Quantity>() {
                Ok(quantity) if quantity.is_negative() => {
                    self.invalid(&field, &value, "a reservation cannot be negative");
                }
                Ok(quantity) => {
                    out.insert(resource, quantity);
                }
                Err(e) => self.invalid(&field, &value, e.to_string()),
            }
        }
        Some(out)
    }
}

/// Parses `enforceNodeAllocatable` entries; `[]` and `["none"]` enforce nothing.
pub(super) fn enforcement(
    list: &[String],
    errors: &mut Vec<FieldError>,
) -> NodeAllocatableEnforcement {
    let path = "enforceNodeAllocatable";
    let mut out = NodeAllocatableEnforcement {
        pods: false,
        kube_reserved: false,
        system_reserved: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    for item in list {
        let value = format!("{item:?}");
        if seen.contains(&item.as_str()) {
            errors.push(FieldError::invalid(path, value, "listed more than once"));
            continue;
        }
        seen.push(item);
        match item.as_str() {
            "pods" => out.pods = true,
            "kube-reserved" => out.kube_reserved = true,
            "system-reserved" => out.system_reserved = true,
            "none" if list.len() > 1 => errors.push(FieldError::invalid(
                path,
                value,
                "\"none\" cannot be combined with other options",
            )),
            "none" => {}
            "kube-reserved-compressible" | "system-reserved-compressible" => {
                errors.push(FieldError::unsupported(
                    path,
                    value,
                    "kernlet supports pods, kube-reserved, system-reserved and none",
                ));
            }
            _ => errors.push(FieldError::invalid(
                path,
                value,
                "valid options are pods, kube-reserved, system-reserved and none",
            )),
        }
    }
    out
}
