//! Tests of the whole pipeline: document parsing, defaulting, unsupported fields, flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn parse(body: &str) -> Result<Loaded, ConfigError> {
    KubeletConfig::from_yaml_str(&format!("{HEADER}{body}"))
}

fn parse_ok(body: &str) -> Loaded {
    parse(body).unwrap_or_else(|e| panic!("{e}"))
}

fn error_text(body: &str) -> String {
    parse(body).expect_err("expected an error").to_string()
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defaults_match_upstream() {
    let c = KubeletConfig::default();
    assert!(c.enable_server);
    assert_eq!(c.static_pod_path, None);
    assert_eq!(c.sync_frequency, secs(60));
    assert_eq!(c.file_check_frequency, secs(20));
    assert_eq!(c.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(c.port, 10250);
    assert_eq!(c.read_only_port, 0);
    assert_eq!(c.tls_cert_file, None);
    assert_eq!(c.tls_private_key_file, None);
    assert_eq!(c.authentication.x509_client_ca_file, None);
    assert!(c.authentication.webhook_enabled);
    assert_eq!(c.authentication.webhook_cache_ttl, secs(120));
    assert!(!c.authentication.anonymous_enabled);
    assert_eq!(c.authorization.mode, AuthorizationMode::Webhook);
    assert_eq!(c.authorization.webhook_cache_authorized_ttl, secs(300));
    assert_eq!(c.authorization.webhook_cache_unauthorized_ttl, secs(30));
    assert!(c.enable_debugging_handlers);
    assert_eq!(c.healthz_port, 10248);
    assert_eq!(c.healthz_bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(c.cluster_domain, "");
    assert!(c.cluster_dns.is_empty());
    assert_eq!(c.node_status_update_frequency, secs(10));
    assert_eq!(c.node_status_report_frequency, secs(300));
    assert_eq!(c.image_minimum_gc_age, secs(120));
    assert_eq!(c.image_gc_high_threshold_percent, 85);
    assert_eq!(c.image_gc_low_threshold_percent, 80);
    assert_eq!(c.cgroup_root, "/");
    assert!(c.cgroups_per_qos);
    assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
    assert_eq!(c.runtime_request_timeout, secs(120));
    assert_eq!(c.hairpin_mode, HairpinMode::PromiscuousBridge);
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.pods_per_core, 0);
    assert_eq!(c.pod_pids_limit, -1);
    assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    assert_eq!(c.pod_logs_dir, PathBuf::from("/var/log/pods"));
    assert!(c.cpu_cfs_quota);
    assert_eq!(c.cpu_cfs_quota_period, Duration::from_millis(100));
    assert!(c.serialize_image_pulls);
    assert_eq!(c.eviction_hard, default_eviction_hard());
    assert!(!c.merge_default_eviction_settings);
    assert_eq!(
        c.feature_gates,
        FeatureGates {
            memory_qos: false,
            custom_cpu_cfs_quota_period: false
        }
    );
    assert!(c.fail_swap_on);
    assert_eq!(c.container_log_max_size.value(), 10 * 1024 * 1024);
    assert_eq!(c.container_log_max_files, 5);
    assert!(c.system_reserved.is_empty() && c.kube_reserved.is_empty());
    assert_eq!(c.system_reserved_cgroup, None);
    assert_eq!(c.kube_reserved_cgroup, None);
    assert_eq!(
        c.enforce_node_allocatable,
        NodeAllocatableEnforcement {
            pods: true,
            kube_reserved: false,
            system_reserved: false
        }
    );
    assert_eq!(c.shutdown_grace_period, Duration::ZERO);
    assert_eq!(c.max_container_restart_period, secs(300));
    assert!((c.memory_throttling_factor - 0.9).abs() < f64::EPSILON);
    assert_eq!(
        c.container_runtime_endpoint,
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(c.image_service_endpoint, None);
    assert_eq!(c.image_endpoint(), "unix:///run/containerd/containerd.sock");
    assert_eq!(c.root_dir, PathBuf::from("/var/lib/kubelet"));
    assert_eq!(c.kubeconfig, None);
}

#[test]
fn a_bare_document_is_the_defaults() {
    let loaded = parse_ok("");
    assert_eq!(loaded.config, KubeletConfig::default());
    assert!(loaded.warnings.is_empty());
}

/// What `kubeadm init` writes to /var/lib/kubelet/config.yaml, with the values it sets away from
/// upstream's defaults (cgroupDriver: systemd, rotateCertificates: true) put back to defaults.
const KUBEADM_DEFAULTS: &str = r#"
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: cgroupfs
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
cpuManagerReconcilePeriod: 0s
crashLoopBackOff: {}
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
resolvConf: /run/systemd/resolve/resolv.conf
rotateCertificates: false
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
"#;

#[test]
fn kubeadm_style_config_with_default_values_parses() {
    let loaded = parse_ok(KUBEADM_DEFAULTS);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(
        c.static_pod_path,
        Some(PathBuf::from("/etc/kubernetes/manifests"))
    );
    assert_eq!(c.cluster_dns, [IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))]);
    assert_eq!(c.cluster_domain, "cluster.local");
    assert_eq!(
        c.authentication.x509_client_ca_file,
        Some(PathBuf::from("/etc/kubernetes/pki/ca.crt"))
    );
    // Zero durations and empty strings fall back to upstream's defaults.
    assert_eq!(c.sync_frequency, secs(60));
    assert_eq!(c.authentication.webhook_cache_ttl, secs(120));
    assert_eq!(c.authorization.webhook_cache_unauthorized_ttl, secs(30));
    assert_eq!(c.node_status_report_frequency, secs(300));
    assert_eq!(
        c.container_runtime_endpoint,
        DEFAULT_CONTAINER_RUNTIME_ENDPOINT
    );
}

#[test]
fn kubeadm_as_shipped_names_its_non_default_fields() {
    let body = KUBEADM_DEFAULTS
        .replace("cgroupDriver: cgroupfs", "cgroupDriver: systemd")
        .replace("rotateCertificates: false", "rotateCertificates: true");
    let error = parse(&body).expect_err("the systemd cgroup driver is unsupported");
    let fields: Vec<&str> = error
        .field_errors()
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["cgroupDriver"],
        "certificate rotation is supported"
    );
    let text = error.to_string();
    assert!(
        text.contains("field cgroupDriver: unsupported value \"systemd\""),
        "{text}"
    );
    let rotating = parse_ok(&KUBEADM_DEFAULTS.replace(
        "rotateCertificates: false",
        "rotateCertificates: true\nserverTLSBootstrap: true",
    ));
    assert!(rotating.config.cluster.rotate_certificates);
    assert!(rotating.config.cluster.server_tls_bootstrap);
}

#[test]
fn unsupported_non_default_values_are_errors_naming_each_field() {
    let text = error_text("cpuManagerPolicy: static\nregistryPullQPS: 0\nmaxPods: 20\n");
    assert!(
        text.contains("field cpuManagerPolicy: unsupported value \"static\""),
        "{text}"
    );
    assert!(text.contains("\"none\""), "{text}");
    assert!(
        text.contains("field registryPullQPS: unsupported value 0"),
        "{text}"
    );
    assert!(!text.contains("maxPods"), "{text}");
}

#[test]
fn unknown_fields_are_warnings_naming_each() {
    let loaded = parse_ok(
        "fooBar: 1\nMaxPods: 3\nauthentication:\n  anonymous:\n    enabled: true\n    bogus: 1\n",
    );
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("unknown field fooBar"))
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("unknown field MaxPods"))
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("authentication.anonymous.bogus"))
    );
    assert_eq!(loaded.config.max_pods, 110);
    assert!(loaded.config.authentication.anonymous_enabled);
}

#[test]
fn wrong_or_missing_kind_and_api_version_are_errors() {
    let cases = [
        (
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n",
            "kind is \"Pod\"",
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1beta1\n",
            "kind is missing",
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n",
            "apiVersion is \"kubelet.config.k8s.io/v1\"",
        ),
        ("kind: KubeletConfiguration\n", "apiVersion is missing"),
        ("", "empty"),
        ("- a\n", "mapping"),
        ("kind: [\n", "not valid yaml"),
    ];
    for (text, want) in cases {
        let error = KubeletConfig::from_yaml_str(text)
            .expect_err(text)
            .to_string();
        assert!(error.contains(want), "{text:?}: {error}");
    }
}

#[test]
fn json_documents_parse() {
    let text = r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "maxPods": 42, "evictionHard": {"memory.available": "1Gi"}, "featureGates": {"MemoryQoS": true}}"#;
    let c = KubeletConfig::from_yaml_str(text).unwrap().config;
    let flow =
        "{apiVersion: kubelet.config.k8s.io/v1beta1, kind: KubeletConfiguration, maxPods: 42}";
    assert_eq!(
        KubeletConfig::from_yaml_str(flow).unwrap().config.max_pods,
        42
    );
    assert_eq!(c.max_pods, 42);
    assert!(c.feature_gates.memory_qos);
    assert_eq!(c.eviction_hard.len(), 1);
}

#[test]
fn supported_fields_are_typed() {
    let loaded = parse_ok(
        r#"
syncFrequency: 1m30s
port: 10260
address: "::"
readOnlyPort: 10255
maxPods: 0
podPidsLimit: -7
resolvConf: ""
cgroupRoot: /kubepods.slice
hairpinMode: hairpin-veth
authorization:
  mode: AlwaysAllow
systemReserved:
  cpu: 500m
  memory: 1.5Gi
kubeReserved:
  cpu: 1
  pid: "1000"
kubeReservedCgroup: /kube
enforceNodeAllocatable: [pods, kube-reserved]
containerLogMaxSize: 50Mi
nodeStatusUpdateFrequency: 20s
crashLoopBackOff:
  maxContainerRestartPeriod: 10s
featureGates:
  MemoryQoS: true
  SomethingNew: true
memoryThrottlingFactor: 0.8
clusterDNS: [10.0.0.10, not-an-ip, "fd00::10"]
imageServiceEndpoint: unix:///run/images.sock
"#,
    );
    let c = loaded.config;
    assert_eq!(c.sync_frequency, secs(90));
    assert_eq!(c.port, 10260);
    assert_eq!(c.address, "::".parse::<IpAddr>().unwrap());
    assert_eq!(c.read_only_port, 10255);
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.pod_pids_limit, -1);
    assert_eq!(c.resolv_conf, None);
    assert_eq!(c.cgroup_root, "/kubepods.slice");
    assert_eq!(c.hairpin_mode, HairpinMode::HairpinVeth);
    assert_eq!(c.authorization.mode, AuthorizationMode::AlwaysAllow);
    assert_eq!(c.system_reserved[&ReservedResource::Cpu].milli_value(), 500);
    assert_eq!(
        c.system_reserved[&ReservedResource::Memory].value(),
        1_610_612_736
    );
    assert_eq!(c.kube_reserved[&ReservedResource::Cpu].milli_value(), 1000);
    assert_eq!(c.kube_reserved[&ReservedResource::Pid].value(), 1000);
    assert!(c.enforce_node_allocatable.kube_reserved);
    assert_eq!(c.container_log_max_size.value(), 50 << 20);
    assert_eq!(c.node_status_update_frequency, secs(20));
    assert_eq!(
        c.node_status_report_frequency,
        secs(20),
        "follows an explicit update frequency"
    );
    assert_eq!(c.max_container_restart_period, secs(10));
    assert!(c.feature_gates.memory_qos);
    assert!((c.memory_throttling_factor - 0.8).abs() < f64::EPSILON);
    assert_eq!(c.cluster_dns.len(), 2);
    assert_eq!(c.image_endpoint(), "unix:///run/images.sock");
    let warnings = loaded.warnings.join("\n");
    assert!(warnings.contains("featureGates.SomethingNew"), "{warnings}");
    assert!(warnings.contains("\"not-an-ip\""), "{warnings}");
}

#[test]
fn eviction_hard_follows_upstream_replacement_and_merge() {
    let only = parse_ok("evictionHard:\n  memory.available: 500Mi\n")
        .config
        .eviction_hard;
    assert_eq!(
        only.keys().copied().collect::<Vec<_>>(),
        [EvictionSignal::MemoryAvailable]
    );
    let merged =
        parse_ok("evictionHard:\n  memory.available: 500Mi\nmergeDefaultEvictionSettings: true\n")
            .config
            .eviction_hard;
    assert_eq!(merged.len(), 5);
    assert_eq!(
        merged[&EvictionSignal::MemoryAvailable],
        EvictionThreshold::Quantity(Quantity::from_units(500 << 20))
    );
    assert!(
        parse_ok("evictionHard: {}\n")
            .config
            .eviction_hard
            .is_empty()
    );
    assert_eq!(
        parse_ok("evictionHard: null\n").config.eviction_hard,
        default_eviction_hard()
    );
}

#[test]
fn invalid_values_name_field_value_and_reason() {
    let cases = [
        (
            "cgroupDriver: weird\n",
            "field cgroupDriver: invalid value \"weird\"",
        ),
        (
            "port: 70000\n",
            "field port: invalid value 70000: must be between",
        ),
        (
            "port: \"10250\"\n",
            "field port: invalid value \"10250\": expected an integer",
        ),
        (
            "syncFrequency: \"5\"\n",
            "field syncFrequency: invalid value \"5\": missing unit",
        ),
        ("syncFrequency: 60\n", "expected a duration string"),
        (
            "containerLogMaxSize: 10MB\n",
            "field containerLogMaxSize: invalid value \"10MB\"",
        ),
        ("containerLogMaxFiles: 1\n", "must be greater than 1"),
        ("systemReserved:\n  gpu: 1\n", "field systemReserved.gpu"),
        ("kubeReserved:\n  memory: -1Gi\n", "cannot be negative"),
        (
            "address: localhost\n",
            "field address: invalid value \"localhost\": not an IP address",
        ),
        (
            "imageGCLowThresholdPercent: 90\n",
            "must be less than imageGCHighThresholdPercent (85)",
        ),
        ("imageGCHighThresholdPercent: 101\n", "between 0 and 100"),
        (
            "cpuCFSQuotaPeriod: 50ms\n",
            "requires feature gate CustomCPUCFSQuotaPeriod",
        ),
        (
            "featureGates:\n  CustomCPUCFSQuotaPeriod: true\ncpuCFSQuotaPeriod: 2s\n",
            "between 1ms and 1s",
        ),
        (
            "enforceNodeAllocatable: [pods, none]\n",
            "cannot be combined",
        ),
        (
            "enforceNodeAllocatable: [system-reserved]\n",
            "systemReservedCgroup",
        ),
        (
            "enforceNodeAllocatable: [kube-reserved-compressible]\n",
            "unsupported value",
        ),
        (
            "cgroupsPerQOS: false\n",
            "field cgroupsPerQOS: invalid value false",
        ),
        ("memoryThrottlingFactor: 1.5\n", "memoryThrottlingFactor"),
        ("shutdownGracePeriod: 500ms\n", "zero or at least 1s"),
        (
            "crashLoopBackOff:\n  maxContainerRestartPeriod: 10m\n",
            "between 1s and 300s",
        ),
        ("authorization:\n  mode: RBAC\n", "authorization.mode"),
        (
            "evictionHard:\n  memory.available: 0\n",
            "evictionHard.memory.available",
        ),
        (
            "failSwapOn: yes\n",
            "field failSwapOn: invalid value \"yes\": expected true or false",
        ),
        ("featureGates:\n  MemoryQoS: 1\n", "featureGates.MemoryQoS"),
    ];
    for (body, want) in cases {
        let text = error_text(body);
        assert!(text.contains(want), "{body:?}: {text}");
        assert!(text.contains("(inline text)"), "{text}");
    }
}

#[test]
fn cgroups_per_qos_off_needs_enforcement_off() {
    let c = parse_ok("cgroupsPerQOS: false\nenforceNodeAllocatable: []\n").config;
    assert!(!c.cgroups_per_qos);
    assert_eq!(
        c.cgroup_root, "",
        "empty cgroupRoot means \"/\" only with cgroupsPerQOS"
    );
    let c = parse_ok("cgroupsPerQOS: false\nenforceNodeAllocatable: [none]\n").config;
    assert_eq!(
        c.enforce_node_allocatable,
        NodeAllocatableEnforcement {
            pods: false,
            kube_reserved: false,
            system_reserved: false
        }
    );
}

#[test]
fn reserved_map_keys_are_typed() {
    let c = parse_ok("systemReserved:\n  ephemeral-storage: 1Gi\n").config;
    let want: BTreeMap<_, _> = [(
        ReservedResource::EphemeralStorage,
        Quantity::from_units(1 << 30),
    )]
    .into();
    assert_eq!(c.system_reserved, want);
}

#[test]
fn pod_logs_dir_is_supported() {
    let text = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: /srv/logs\n";
    let loaded = KubeletConfig::from_yaml_str(text).unwrap();
    assert_eq!(loaded.config.pod_logs_dir, PathBuf::from("/srv/logs"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn tls_versions_and_cipher_suites_are_upstream_names() {
    let c = parse_ok(
        "tlsMinVersion: VersionTLS13\ntlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
         TLS_RSA_WITH_AES_128_CBC_SHA]\n",
    )
    .config;
    assert_eq!(c.tls_min_version, Some(super::TlsVersion::Tls13));
    assert_eq!(c.tls_cipher_suites.len(), 2);
    assert_eq!(
        parse_ok("tlsMinVersion: \"\"\n").config.tls_min_version,
        None
    );
    let error = error_text("tlsMinVersion: VersionTLS10\n");
    assert!(error.contains("TLS 1.2 and 1.3 only"), "{error}");
    let error = error_text("tlsMinVersion: TLS9\n");
    assert!(error.contains("VersionTLS12 or VersionTLS13"), "{error}");
    let error = error_text("tlsCipherSuites: [TLS_MADE_UP]\n");
    assert!(error.contains("TLS_MADE_UP"), "{error}");
}

#[test]
fn the_server_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        format!("{HEADER}authentication: {{anonymous: {{enabled: true}}}}\nreadOnlyPort: 10255\n"),
    )
    .unwrap();
    let flags = <Flags as clap::Parser>::try_parse_from([
        "kernlet",
        "--config",
        file.to_str().unwrap(),
        "--anonymous-auth=false",
        "--authentication-token-webhook=false",
        "--authorization-mode",
        "AlwaysAllow",
        "--client-ca-file",
        "/ca.crt",
        "--tls-cert-file",
        "/t.crt",
        "--tls-private-key-file",
        "/t.key",
        "--read-only-port",
        "0",
        "--root-dir",
        "/r",
        "--hostname-override",
        "n",
    ])
    .unwrap();
    let c = super::load(&flags).unwrap().config;
    assert!(!c.authentication.anonymous_enabled);
    assert!(!c.authentication.webhook_enabled);
    assert_eq!(c.authorization.mode, super::AuthorizationMode::AlwaysAllow);
    assert_eq!(
        c.authentication.x509_client_ca_file.as_deref(),
        Some(std::path::Path::new("/ca.crt"))
    );
    assert_eq!(
        c.tls_cert_file.as_deref(),
        Some(std::path::Path::new("/t.crt"))
    );
    assert_eq!(c.read_only_port, 0);
    assert_eq!(c.cert_dir, std::path::Path::new("/r/pki"));
}
