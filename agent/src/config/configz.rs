//! The `/configz` document: the effective configuration in upstream's JSON shape.
//!
//! Upstream (`cmd/kubelet/app/server.go` `initConfigz` / `setConfigz`, and
//! `staging/src/k8s.io/component-base/configz`) registers `configz.New("kubeletconfig")`, converts
//! its internal, defaulted `KubeletConfiguration` into a fresh `v1beta1.KubeletConfiguration` and
//! serves `json.Marshal` of the registry: `{"kubeletconfig": {...}}`. The conversion leaves the
//! `TypeMeta` empty, so the inner object has no `kind` / `apiVersion` (the documented recipe for
//! turning `/configz` into a config file adds both with `jq`).
//!
//! The inner object follows `staging/src/k8s.io/kubelet/config/v1beta1/types.go` and Go's
//! `encoding/json`: fields tagged `omitempty` are left out when they are `""`, `0`, `false`, or an
//! empty list or map; struct-typed fields (every `metav1.Duration`, `authentication`, `logging`,
//! `memorySwap`, `crashLoopBackOff`) are always present; pointer fields, which the internal type
//! holds as plain values, are always present too. Durations are Go duration strings (`"1m0s"`).
//! Fields kernlet does not implement are emitted with the value upstream's defaulting gives them,
//! which is the only value kernlet accepts for them (see `unsupported.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::duration::format_duration;
use super::eviction::DEFAULT_EVICTION_HARD;
use super::{
    Authentication, Authorization, AuthorizationMode, CgroupDriver, EvictionSignal,
    EvictionThreshold, HairpinMode, KubeletConfig, Quantity, ReservedResource,
};

/// The `/configz` response body for `config`: `{"kubeletconfig": {<v1beta1 fields>}}`.
#[must_use]
pub fn configz(config: &KubeletConfig) -> Value {
    let mut fields = Map::new();
    server_fields(config, &mut fields);
    node_fields(config, &mut fields);
    runtime_fields(config, &mut fields);
    resource_fields(config, &mut fields);
    super::cluster::configz_fields(&config.cluster, &mut fields);
    unsupported_defaults(&mut fields);
    json!({ "kubeletconfig": Value::Object(fields) })
}

fn put(out: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    out.insert(key.to_owned(), value.into());
}

/// A string field tagged `omitempty`.
fn put_nonempty(out: &mut Map<String, Value>, key: &str, text: &str) {
    if !text.is_empty() {
        put(out, key, text);
    }
}

/// A path field tagged `omitempty`, `None` standing for `""`.
fn put_path(out: &mut Map<String, Value>, key: &str, path: Option<&Path>) {
    if let Some(path) = path {
        put_nonempty(out, key, &path.to_string_lossy());
    }
}

fn duration(value: Duration) -> Value {
    Value::String(format_duration(value))
}

fn path_text(path: &Path) -> Value {
    Value::String(path.to_string_lossy().into_owned())
}

fn server_fields(c: &KubeletConfig, out: &mut Map<String, Value>) {
    put(out, "enableServer", c.enable_server);
    put(out, "address", c.address.to_string());
    put(out, "port", c.port);
    if c.read_only_port != 0 {
        put(out, "readOnlyPort", c.read_only_port);
    }
    put_path(out, "tlsCertFile", c.tls_cert_file.as_deref());
    put_path(out, "tlsPrivateKeyFile", c.tls_private_key_file.as_deref());
    if !c.tls_cipher_suites.is_empty() {
        put(out, "tlsCipherSuites", c.tls_cipher_suites.clone());
    }
    if let Some(version) = c.tls_min_version {
        put(out, "tlsMinVersion", version.name());
    }

    put(out, "authentication", authentication(&c.authentication));
    put(out, "authorization", authorization(&c.authorization));

    put(out, "enableDebuggingHandlers", c.enable_debugging_handlers);
    put(out, "healthzPort", c.healthz_port);
    let healthz_address = c.healthz_bind_address.to_string();
    put(out, "healthzBindAddress", healthz_address);
}

fn authentication(a: &Authentication) -> Value {
    let mut x509 = Map::new();
    put_path(&mut x509, "clientCAFile", a.x509_client_ca_file.as_deref());
    json!({
        "x509": x509,
        "webhook": { "enabled": a.webhook_enabled, "cacheTTL": duration(a.webhook_cache_ttl) },
        "anonymous": { "enabled": a.anonymous_enabled },
    })
}

fn authorization(a: &Authorization) -> Value {
    let mode = match a.mode {
        AuthorizationMode::Webhook => "Webhook",
        AuthorizationMode::AlwaysAllow => "AlwaysAllow",
    };
    json!({
        "mode": mode,
        "webhook": {
            "cacheAuthorizedTTL": duration(a.webhook_cache_authorized_ttl),
            "cacheUnauthorizedTTL": duration(a.webhook_cache_unauthorized_ttl),
        },
    })
}

fn node_fields(c: &KubeletConfig, out: &mut Map<String, Value>) {
    put_path(out, "staticPodPath", c.static_pod_path.as_deref());
    put(out, "podLogsDir", path_text(&c.pod_logs_dir));
    put(out, "syncFrequency", duration(c.sync_frequency));
    put(out, "fileCheckFrequency", duration(c.file_check_frequency));
    put_nonempty(out, "clusterDomain", &c.cluster_domain);
    if !c.cluster_dns.is_empty() {
        let servers: Vec<String> = c.cluster_dns.iter().map(ToString::to_string).collect();
        put(out, "clusterDNS", servers);
    }
    // A pointer upstream: `""` (host DNS inheritance off) is written out, not omitted.
    let resolv_conf = c.resolv_conf.as_deref().map_or(Value::from(""), path_text);
    put(out, "resolvConf", resolv_conf);
    let update = duration(c.node_status_update_frequency);
    put(out, "nodeStatusUpdateFrequency", update);
    let report = duration(c.node_status_report_frequency);
    put(out, "nodeStatusReportFrequency", report);
    put(out, "imageMinimumGCAge", duration(c.image_minimum_gc_age));
    let high = c.image_gc_high_threshold_percent;
    put(out, "imageGCHighThresholdPercent", high);
    let low = c.image_gc_low_threshold_percent;
    put(out, "imageGCLowThresholdPercent", low);
    let timeout = duration(c.runtime_request_timeout);
    put(out, "runtimeRequestTimeout", timeout);
    let hairpin = match c.hairpin_mode {
        HairpinMode::PromiscuousBridge => "promiscuous-bridge",
        HairpinMode::HairpinVeth => "hairpin-veth",
        HairpinMode::None => "none",
    };
    put(out, "hairpinMode", hairpin);
    put(out, "serializeImagePulls", c.serialize_image_pulls);
    put(out, "failSwapOn", c.fail_swap_on);
    let log_size = c.container_log_max_size.to_string();
    put(out, "containerLogMaxSize", log_size);
    put(out, "containerLogMaxFiles", c.container_log_max_files);
    let shutdown = duration(c.shutdown_grace_period);
    put(out, "shutdownGracePeriod", shutdown);
}

fn runtime_fields(c: &KubeletConfig, out: &mut Map<String, Value>) {
    // Upstream fills this in only when its KubeletCrashLoopBackOffMax gate is on; kernlet always
    // applies a maximum, so it is always shown.
    let backoff = json!({
        "maxContainerRestartPeriod": duration(c.max_container_restart_period),
    });
    put(out, "crashLoopBackOff", backoff);
    // component-base's `SetRecommendedLoggingConfiguration`; verbosity is `--v`.
    let logging = json!({
        "format": "text", "flushFrequency": "5s", "verbosity": c.verbosity,
        "options": { "text": { "infoBufferSize": "0" }, "json": { "infoBufferSize": "0" } },
    });
    put(out, "logging", logging);
    // Only the gates kernlet knows can be shown; both default to off, so the enabled ones are
    // exactly those that differ from upstream's defaults.
    let mut gates = Map::new();
    if c.feature_gates.memory_qos {
        put(&mut gates, "MemoryQoS", true);
    }
    if c.feature_gates.custom_cpu_cfs_quota_period {
        put(&mut gates, "CustomCPUCFSQuotaPeriod", true);
    }
    if !gates.is_empty() {
        put(out, "featureGates", gates);
    }
    let endpoint = c.container_runtime_endpoint.as_str();
    put(out, "containerRuntimeEndpoint", endpoint);
    let image_endpoint = c.image_service_endpoint.as_deref().unwrap_or_default();
    put_nonempty(out, "imageServiceEndpoint", image_endpoint);
}

fn resource_fields(c: &KubeletConfig, out: &mut Map<String, Value>) {
    put_nonempty(out, "cgroupRoot", &c.cgroup_root);
    put(out, "cgroupsPerQOS", c.cgroups_per_qos);
    let driver = match c.cgroup_driver {
        CgroupDriver::Cgroupfs => "cgroupfs",
    };
    put(out, "cgroupDriver", driver);
    put(out, "maxPods", c.max_pods);
    if c.pods_per_core != 0 {
        put(out, "podsPerCore", c.pods_per_core);
    }
    put(out, "podPidsLimit", c.pod_pids_limit);
    put(out, "cpuCFSQuota", c.cpu_cfs_quota);
    put(out, "cpuCFSQuotaPeriod", duration(c.cpu_cfs_quota_period));
    put(out, "memoryThrottlingFactor", c.memory_throttling_factor);
    put(out, "evictionHard", eviction_hard(&c.eviction_hard));
    let merge = c.merge_default_eviction_settings;
    put(out, "mergeDefaultEvictionSettings", merge);
    if !c.system_reserved.is_empty() {
        put(out, "systemReserved", reserved(&c.system_reserved));
    }
    if !c.kube_reserved.is_empty() {
        put(out, "kubeReserved", reserved(&c.kube_reserved));
    }
    let system_cgroup = c.system_reserved_cgroup.as_deref().unwrap_or_default();
    put_nonempty(out, "systemReservedCgroup", system_cgroup);
    let kube_cgroup = c.kube_reserved_cgroup.as_deref().unwrap_or_default();
    put_nonempty(out, "kubeReservedCgroup", kube_cgroup);
    let enforce = c.enforce_node_allocatable;
    let mut list: Vec<&str> = [
        (enforce.pods, "pods"),
        (enforce.system_reserved, "system-reserved"),
        (enforce.kube_reserved, "kube-reserved"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    // `[]` would be omitted and read back as the default `["pods"]`; upstream's spelling of
    // "nothing" is `["none"]`.
    if list.is_empty() {
        list.push("none");
    }
    put(out, "enforceNodeAllocatable", list);
}

/// The thresholds as signal to threshold text. A default signal switched off is written as
/// `"0%"`, upstream's way of disabling it, so that reading the document back (with or without
/// `mergeDefaultEvictionSettings`, and when nothing is left) gives the same thresholds.
fn eviction_hard(thresholds: &BTreeMap<EvictionSignal, EvictionThreshold>) -> Map<String, Value> {
    let mut out = Map::new();
    for (signal, _) in DEFAULT_EVICTION_HARD {
        if !thresholds.contains_key(&signal) {
            put(&mut out, signal.as_str(), "0%");
        }
    }
    for (signal, threshold) in thresholds {
        let text = match threshold {
            EvictionThreshold::Quantity(quantity) => quantity.to_string(),
            EvictionThreshold::Percentage(fraction) => percent_text(*fraction),
        };
        put(&mut out, signal.as_str(), text);
    }
    out
}

/// The shortest percentage text that reads back as exactly `fraction` (`0.15` is `"15%"`, where
/// a plain `0.15 * 100` would print `15.000000000000002`).
fn percent_text(fraction: f64) -> String {
    let percent = fraction * 100.0;
    for precision in 0..=17 {
        let fixed = format!("{percent:.precision$}");
        let text = if fixed.contains('.') {
            fixed.trim_end_matches('0').trim_end_matches('.')
        } else {
            fixed.as_str()
        };
        let exact = text
            .parse::<f64>()
            .is_ok_and(|p| (p / 100.0).to_bits() == fraction.to_bits());
        if exact {
            return format!("{text}%");
        }
    }
    format!("{percent}%")
}

fn reserved(amounts: &BTreeMap<ReservedResource, Quantity>) -> Map<String, Value> {
    amounts
        .iter()
        .map(|(resource, amount)| (resource.as_str().to_owned(), amount.to_string().into()))
        .collect()
}

/// The fields kernlet does not implement, as upstream's defaulted configuration has them
/// (`SetDefaults_KubeletConfiguration`, then the conversion from the internal type, which turns
/// plain values into always-set pointers). Those whose default is empty, zero, false or nil and
/// that are tagged `omitempty` (`staticPodURL`, `rotateCertificates`, `evictionSoft`, ...) or
/// that upstream leaves nil (`singleProcessOOMKill`, `maxParallelImagePulls`, `tracing`,
/// `userNamespaces`) are absent, as in upstream's output.
const UNSUPPORTED_DEFAULTS: &str = r#"{
    "httpCheckFrequency": "20s", "registryPullQPS": 5, "registryBurst": 10,
    "imagePullCredentialsVerificationPolicy": "NeverVerifyPreloadedImages",
    "oomScoreAdj": -999,
    "streamingConnectionIdleTimeout": "4h0m0s",
    "imageMaximumGCAge": "0s", "volumeStatsAggPeriod": "1m0s",
    "cpuManagerPolicy": "none", "cpuManagerReconcilePeriod": "10s",
    "draManagerReconcilePeriod": "1m0s", "memoryManagerPolicy": "None",
    "topologyManagerPolicy": "none", "topologyManagerScope": "container",
    "maxOpenFiles": 1000000,
    "contentType": "application/vnd.kubernetes.protobuf",
    "evictionPressureTransitionPeriod": "5m0s", "enableControllerAttachDetach": true,
    "makeIPTablesUtilChains": true, "iptablesMasqueradeBit": 14, "iptablesDropBit": 15,
    "memorySwap": {}, "containerLogMaxWorkers": 1, "containerLogMonitorInterval": "10s",
    "configMapAndSecretChangeDetectionStrategy": "Watch",
    "volumePluginDir": "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/",
    "enableSystemLogHandler": true, "enableSystemLogQuery": false,
    "shutdownGracePeriodCriticalPods": "0s", "enableProfilingHandler": true,
    "enableDebugFlagsHandler": true, "seccompDefault": false, "memoryReservationPolicy": "None",
    "localStorageCapacityIsolation": true, "failCgroupV1": true
}"#;

fn unsupported_defaults(out: &mut Map<String, Value>) {
    // Checked by the tests: it parses, and kernlet accepts every value.
    if let Ok(defaults) = serde_json::from_str::<Map<String, Value>>(UNSUPPORTED_DEFAULTS) {
        out.extend(defaults);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::SUPPORTED;
    use super::super::unsupported::{self, UNSUPPORTED};
    use super::*;
    use crate::config::{API_VERSION, KIND};

    fn inner(config: &KubeletConfig) -> Map<String, Value> {
        let document = configz(config);
        let object = document.as_object().expect("an object");
        assert_eq!(object.len(), 1, "{document}");
        object["kubeletconfig"]
            .as_object()
            .expect("an object")
            .clone()
    }

    /// `/configz`'s inner object as a config file: upstream's recipe adds `kind` / `apiVersion`.
    fn read_back(config: &KubeletConfig) -> KubeletConfig {
        let mut fields = inner(config);
        put(&mut fields, "kind", KIND);
        put(&mut fields, "apiVersion", API_VERSION);
        let text = Value::Object(fields).to_string();
        let loaded = KubeletConfig::from_yaml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(loaded.warnings, Vec::<String>::new());
        loaded.config
    }

    fn parse(body: &str) -> KubeletConfig {
        let text = format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{body}");
        KubeletConfig::from_yaml_str(&text)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    #[test]
    fn defaults_are_upstreams_defaults() {
        let fields = inner(&KubeletConfig::default());
        assert!(!fields.contains_key("kind") && !fields.contains_key("apiVersion"));
        let expected = json!({
            "enableServer": true, "port": 10250, "address": "0.0.0.0", "syncFrequency": "1m0s",
            "fileCheckFrequency": "20s", "podLogsDir": "/var/log/pods", "healthzPort": 10248,
            "healthzBindAddress": "127.0.0.1", "nodeStatusUpdateFrequency": "10s",
            "nodeStatusReportFrequency": "5m0s", "imageMinimumGCAge": "2m0s",
            "imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80,
            "cgroupRoot": "/", "cgroupsPerQOS": true, "cgroupDriver": "cgroupfs",
            "runtimeRequestTimeout": "2m0s", "hairpinMode": "promiscuous-bridge", "maxPods": 110,
            "podPidsLimit": -1, "resolvConf": "/etc/resolv.conf", "cpuCFSQuota": true,
            "cpuCFSQuotaPeriod": "100ms", "serializeImagePulls": true, "failSwapOn": true,
            "mergeDefaultEvictionSettings": false, "containerLogMaxSize": "10Mi",
            "containerLogMaxFiles": 5, "enforceNodeAllocatable": ["pods"],
            "shutdownGracePeriod": "0s", "memoryThrottlingFactor": 0.9,
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "evictionHard": {
                "memory.available": "100Mi", "nodefs.available": "10%",
                "nodefs.inodesFree": "5%", "imagefs.available": "15%", "imagefs.inodesFree": "5%",
            },
            "authentication": {
                "x509": {}, "webhook": { "enabled": true, "cacheTTL": "2m0s" },
                "anonymous": { "enabled": false },
            },
            "authorization": {
                "mode": "Webhook",
                "webhook": { "cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s" },
            },
            "oomScoreAdj": -999, "streamingConnectionIdleTimeout": "4h0m0s",
            "memorySwap": {},
        });
        for (key, value) in expected.as_object().expect("an object") {
            assert_eq!(fields.get(key), Some(value), "{key}");
        }
        // `omitempty` fields at their zero value are left out, as Go does.
        let omitted = "readOnlyPort staticPodPath tlsCertFile tlsPrivateKeyFile tlsCipherSuites \
            tlsMinVersion clusterDomain clusterDNS podsPerCore featureGates systemReserved \
            kubeReserved systemReservedCgroup kubeReservedCgroup imageServiceEndpoint \
            rotateCertificates podCIDR tracing singleProcessOOMKill userNamespaces";
        for key in omitted.split_whitespace() {
            assert!(!fields.contains_key(key), "{key}");
        }
    }

    #[test]
    fn every_key_is_an_upstream_field_and_every_supported_field_can_appear() {
        let defaults: Map<String, Value> =
            serde_json::from_str(UNSUPPORTED_DEFAULTS).expect("valid JSON");
        assert_eq!(defaults.len(), 35);
        let busy = inner(&busy());
        for fields in [inner(&KubeletConfig::default()), busy.clone()] {
            for (key, value) in &fields {
                let known = SUPPORTED.contains(&key.as_str())
                    || UNSUPPORTED.iter().any(|field| field.name == key);
                assert!(known, "{key}");
                if let Some(result) = unsupported::check(key, value) {
                    assert!(result.is_ok(), "{key}: {value}");
                }
            }
        }
        for name in SUPPORTED {
            assert!(busy.contains_key(name), "{name}");
        }
    }

    /// Every supported field away from its default, as a YAML flow mapping.
    const BUSY: &str = r#"{
        apiVersion: kubelet.config.k8s.io/v1beta1, kind: KubeletConfiguration,
        enableServer: true, staticPodPath: /etc/kubernetes/manifests, podLogsDir: /srv/pod-logs,
        syncFrequency: 30s, fileCheckFrequency: 1m30s, address: "::", port: 11250,
        readOnlyPort: 10255, tlsCertFile: /etc/kernlet/tls.crt,
        tlsPrivateKeyFile: /etc/kernlet/tls.key, tlsMinVersion: VersionTLS13,
        tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384],
        authentication: {
            x509: {clientCAFile: /etc/kubernetes/pki/ca.crt},
            webhook: {enabled: false, cacheTTL: 90s}, anonymous: {enabled: true} },
        authorization: {
            mode: AlwaysAllow, webhook: {cacheAuthorizedTTL: 1m, cacheUnauthorizedTTL: 1500ms} },
        enableDebuggingHandlers: false, healthzPort: 0, healthzBindAddress: 0.0.0.0,
        clusterDomain: cluster.example, clusterDNS: [10.96.0.10, "fd00::a"],
        nodeStatusUpdateFrequency: 20s, imageMinimumGCAge: 5m, imageGCHighThresholdPercent: 90,
        imageGCLowThresholdPercent: 70, cgroupRoot: /kubelet.slice, cgroupsPerQOS: true,
        cgroupDriver: cgroupfs, runtimeRequestTimeout: 4m, hairpinMode: hairpin-veth,
        maxPods: 250, podsPerCore: 12, podPidsLimit: 4096, resolvConf: "", cpuCFSQuota: false,
        cpuCFSQuotaPeriod: 50ms, serializeImagePulls: false, failSwapOn: false,
        evictionHard: {memory.available: 256Mi, nodefs.available: 7.5%,
            imagefs.inodesFree: 0%, pid.available: 15%},
        mergeDefaultEvictionSettings: true,
        featureGates: {MemoryQoS: true, CustomCPUCFSQuotaPeriod: true},
        containerLogMaxSize: 50Mi, containerLogMaxFiles: 3,
        systemReserved: {cpu: 500m, memory: 1Gi},
        kubeReserved: {cpu: "1", ephemeral-storage: 10Gi, pid: "1000"},
        systemReservedCgroup: /system.slice, kubeReservedCgroup: /kube.slice,
        enforceNodeAllocatable: [pods, kube-reserved, system-reserved],
        logging: {format: text, verbosity: 0}, shutdownGracePeriod: 45s,
        crashLoopBackOff: {maxContainerRestartPeriod: 1m}, memoryThrottlingFactor: 0.75,
        containerRuntimeEndpoint: "unix:///run/crio/crio.sock",
        imageServiceEndpoint: "unix:///run/images.sock", registerNode: false,
        registerWithTaints: [{key: dedicated, value: gpu, effect: NoSchedule}],
        nodeLeaseDurationSeconds: 60, nodeStatusMaxImages: 10,
        eventRecordQPS: 10, eventBurst: 20, kubeAPIQPS: 25, kubeAPIBurst: 50,
        rotateCertificates: true, serverTLSBootstrap: true }"#;

    fn busy() -> KubeletConfig {
        let loaded = KubeletConfig::from_yaml_str(BUSY).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.warnings, Vec::<String>::new());
        loaded.config
    }

    #[test]
    fn a_busy_config_round_trips() {
        let original = busy();
        let fields = inner(&original);
        assert_eq!(fields["resolvConf"], json!(""));
        assert_eq!(fields["healthzPort"], json!(0));
        assert_eq!(fields["address"], json!("::"));
        assert_eq!(fields["evictionHard"]["nodefs.available"], json!("7.5%"));
        assert_eq!(fields["evictionHard"]["imagefs.inodesFree"], json!("0%"));
        assert_eq!(
            fields["authentication"]["webhook"]["cacheTTL"],
            json!("1m30s")
        );
        assert_eq!(
            fields["authorization"]["webhook"]["cacheUnauthorizedTTL"],
            json!("1.5s")
        );
        assert_eq!(fields["tlsMinVersion"], json!("VersionTLS13"));
        assert_eq!(
            fields["enforceNodeAllocatable"],
            json!(["pods", "system-reserved", "kube-reserved"])
        );
        assert_eq!(read_back(&original), original);
    }

    #[test]
    fn defaults_round_trip() {
        let original = KubeletConfig::default();
        assert_eq!(read_back(&original), original);
        let parsed = parse("");
        assert_eq!(read_back(&parsed), parsed);
    }

    #[test]
    fn disabled_eviction_and_enforcement_round_trip() {
        for body in [
            "evictionHard: {}\nenforceNodeAllocatable: []\ncgroupsPerQOS: false\ncgroupRoot: \"\"\n",
            "evictionHard: {memory.available: 5%}\nenforceNodeAllocatable: [none]\n",
            "evictionHard: {nodefs.available: 0%}\nmergeDefaultEvictionSettings: true\n",
        ] {
            let original = parse(body);
            assert_eq!(read_back(&original), original, "{body}");
        }
        let nothing = parse("evictionHard: {}\nenforceNodeAllocatable: []\n");
        let fields = inner(&nothing);
        assert_eq!(fields["enforceNodeAllocatable"], json!(["none"]));
        assert_eq!(fields["evictionHard"]["memory.available"], json!("0%"));
    }

    #[test]
    fn percentages_print_exactly() {
        // As the parser reads them: the number before `%`, divided by 100.
        for (text, percent) in [("15%", 15.0), ("7.5%", 7.5), ("5%", 5.0), ("33.3%", 33.3)] {
            assert_eq!(percent_text(percent / 100.0), text);
        }
        assert_eq!(percent_text(0.333), "33.300000000000004%");
    }
}
