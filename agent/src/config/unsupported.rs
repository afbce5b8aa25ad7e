//! Upstream `KubeletConfiguration` fields that kernlet does not implement yet.
//!
//! Each one is accepted only when its value is what upstream would use anyway: `null`, the
//! documented default, or the zero value where upstream's defaulting turns zero into the default
//! (non-pointer fields). kubeadm writes many of these fields out with such values. Anything else
//! is an error, so a setting is never silently ignored. Defaults are from upstream's
//! `types.go` / `defaults.go` (see the module doc of `config`).

use serde_json::Value;

use super::FieldError;
use super::duration::parse_duration;

/// What values of an unsupported field are equivalent to upstream's default.
#[derive(Debug, Clone, Copy)]
pub(super) enum Accepts {
    /// Exactly this boolean.
    Bool(bool),
    /// Any boolean: the setting cannot change kernlet's behaviour.
    AnyBool,
    /// Any of these integers.
    Int(&'static [i64]),
    /// Any of these strings.
    Str(&'static [&'static str]),
    /// Any duration equal to one of these.
    Duration(&'static [&'static str]),
    /// An empty list or mapping.
    Empty,
    /// Only `null` (or absence).
    Null,
    /// `memorySwap`: `{}` or `swapBehavior` `""` / `"NoSwap"`.
    MemorySwap,
    /// `userNamespaces`: `{}` or `idsPerPod: 65536`.
    UserNamespaces,
}

/// An unsupported field: its name, the values accepted, and the default shown in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unsupported {
    pub name: &'static str,
    pub accepts: Accepts,
    pub default: &'static str,
}

const fn field(name: &'static str, accepts: Accepts, default: &'static str) -> Unsupported {
    Unsupported {
        name,
        accepts,
        default,
    }
}

use Accepts::{AnyBool, Bool, Duration, Empty, Int, MemorySwap, Null, Str, UserNamespaces};

/// Every upstream field that is neither typed by kernlet nor `apiVersion`/`kind`.
pub(super) const UNSUPPORTED: [Unsupported; 63] = [
    field("httpCheckFrequency", Duration(&["0s", "20s"]), "\"20s\""),
    field("staticPodURL", Str(&[""]), "\"\""),
    field("staticPodURLHeader", Empty, "unset"),
    field("tlsCurvePreferences", Empty, "unset"),
    field("registryPullQPS", Int(&[5]), "5"),
    field("registryBurst", Int(&[0, 10]), "10"),
    field(
        "imagePullCredentialsVerificationPolicy",
        Str(&["", "NeverVerifyPreloadedImages"]),
        "\"NeverVerifyPreloadedImages\"",
    ),
    field("preloadedImagesVerificationAllowlist", Empty, "unset"),
    field("enableContentionProfiling", Bool(false), "false"),
    field("oomScoreAdj", Int(&[-999]), "-999"),
    field(
        "streamingConnectionIdleTimeout",
        Duration(&["0s", "4h"]),
        "\"4h\"",
    ),
    field("imageMaximumGCAge", Duration(&["0s"]), "\"0s\""),
    field("volumeStatsAggPeriod", Duration(&["0s", "1m"]), "\"1m\""),
    field("kubeletCgroups", Str(&[""]), "\"\""),
    field("systemCgroups", Str(&[""]), "\"\""),
    field("cpuManagerPolicy", Str(&["", "none"]), "\"none\""),
    // Unset means "decided by the host"; on cgroup v2 that is false.
    field(
        "singleProcessOOMKill",
        Bool(false),
        "unset (false on cgroup v2)",
    ),
    field("cpuManagerPolicyOptions", Empty, "unset"),
    field(
        "cpuManagerReconcilePeriod",
        Duration(&["0s", "10s"]),
        "\"10s\"",
    ),
    field(
        "draManagerReconcilePeriod",
        Duration(&["0s", "60s"]),
        "\"60s\"",
    ),
    field("memoryManagerPolicy", Str(&["", "None"]), "\"None\""),
    field("topologyManagerPolicy", Str(&["", "none"]), "\"none\""),
    field(
        "topologyManagerScope",
        Str(&["", "container"]),
        "\"container\"",
    ),
    field("topologyManagerPolicyOptions", Empty, "unset"),
    field("qosReserved", Empty, "unset"),
    field("podCIDR", Str(&[""]), "\"\""),
    field("runOnce", Bool(false), "false"),
    field("maxOpenFiles", Int(&[0, 1_000_000]), "1000000"),
    field(
        "contentType",
        Str(&["", "application/vnd.kubernetes.protobuf"]),
        "\"application/vnd.kubernetes.protobuf\"",
    ),
    // One parallel pull is serial pulling, which is what kernlet does by default.
    field("maxParallelImagePulls", Int(&[1]), "unset"),
    field("evictionSoft", Empty, "unset"),
    field("evictionSoftGracePeriod", Empty, "unset"),
    field(
        "evictionPressureTransitionPeriod",
        Duration(&["0s", "5m"]),
        "\"5m\"",
    ),
    field("evictionMaxPodGracePeriod", Int(&[0]), "0"),
    field("evictionMinimumReclaim", Empty, "unset"),
    field("enableControllerAttachDetach", Bool(true), "true"),
    field("protectKernelDefaults", Bool(false), "false"),
    field("makeIPTablesUtilChains", Bool(true), "true"),
    field("iptablesMasqueradeBit", Int(&[14]), "14"),
    field("iptablesDropBit", Int(&[15]), "15"),
    field("memorySwap", MemorySwap, "{} (swapBehavior \"NoSwap\")"),
    field("containerLogMaxWorkers", Int(&[1]), "1"),
    field("containerLogMonitorInterval", Duration(&["10s"]), "\"10s\""),
    field(
        "configMapAndSecretChangeDetectionStrategy",
        Str(&["", "Watch"]),
        "\"Watch\"",
    ),
    field("reservedSystemCPUs", Str(&[""]), "\"\""),
    field("showHiddenMetricsForVersion", Str(&[""]), "\"\""),
    field("allowedUnsafeSysctls", Empty, "unset"),
    field(
        "volumePluginDir",
        Str(&[
            "",
            "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/",
            "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
        ]),
        "\"/usr/libexec/kubernetes/kubelet-plugins/volume/exec/\"",
    ),
    field("providerID", Str(&[""]), "\"\""),
    field("kernelMemcgNotification", Bool(false), "false"),
    field("enableSystemLogHandler", Bool(true), "true"),
    field("enableSystemLogQuery", Bool(false), "false"),
    field(
        "shutdownGracePeriodCriticalPods",
        Duration(&["0s"]),
        "\"0s\"",
    ),
    field("shutdownGracePeriodByPodPriority", Empty, "unset"),
    field("reservedMemory", Empty, "unset"),
    field("enableProfilingHandler", Bool(true), "true"),
    field("enableDebugFlagsHandler", Bool(true), "true"),
    field("seccompDefault", Bool(false), "false"),
    field("memoryReservationPolicy", Str(&["", "None"]), "\"None\""),
    field("tracing", Null, "unset"),
    field("localStorageCapacityIsolation", Bool(true), "true"),
    // kernlet only runs on cgroup v2, where this setting changes nothing.
    field("failCgroupV1", AnyBool, "true"),
    field("userNamespaces", UserNamespaces, "unset (idsPerPod 65536)"),
];

/// `None` when `name` is not an unsupported upstream field; otherwise whether `value` is accepted.
pub(super) fn check(name: &str, value: &Value) -> Option<Result<(), FieldError>> {
    let field = UNSUPPORTED.iter().find(|field| field.name == name)?;
    if value.is_null() || accepts(field.accepts, value) {
        return Some(Ok(()));
    }
    Some(Err(FieldError::unsupported(
        name,
        value.to_string(),
        format!(
            "kernlet does not implement {name} yet and accepts only upstream's default, {}",
            field.default
        ),
    )))
}

fn accepts(accepts: Accepts, value: &Value) -> bool {
    match accepts {
        Bool(expected) => value.as_bool() == Some(expected),
        AnyBool => value.is_boolean(),
        Int(allowed) => value.as_i64().is_some_and(|n| allowed.contains(&n)),
        Str(allowed) => value.as_str().is_some_and(|s| allowed.contains(&s)),
        Duration(allowed) => value
            .as_str()
            .and_then(|s| parse_duration(s).ok())
            .is_some_and(|d| {
                allowed
                    .iter()
                    .any(|text| parse_duration(text).is_ok_and(|default| default == d))
            }),
        Empty => match value {
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            _ => false,
        },
        Null => false,
        MemorySwap => only_keys(
            value,
            &[("swapBehavior", &|v| {
                v.is_null() || matches!(v.as_str(), Some("" | "NoSwap"))
            })],
        ),
        UserNamespaces => only_keys(
            value,
            &[("idsPerPod", &|v| v.is_null() || v.as_i64() == Some(65536))],
        ),
    }
}

type Predicate<'a> = &'a dyn Fn(&Value) -> bool;

/// A mapping whose keys are all listed and whose values all pass their predicate.
fn only_keys(value: &Value, allowed: &[(&str, Predicate<'_>)]) -> bool {
    value.as_object().is_some_and(|map| {
        map.iter().all(|(key, value)| {
            allowed
                .iter()
                .any(|(name, predicate)| *name == key && predicate(value))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::fields::SUPPORTED;
    use super::*;
    use serde_json::json;

    /// Every field of upstream's v1beta1 `KubeletConfiguration` (types.go), apart from the `TypeMeta`.
    const UPSTREAM_FIELDS: [&str; 126] = [
        "enableServer",
        "staticPodPath",
        "podLogsDir",
        "syncFrequency",
        "fileCheckFrequency",
        "httpCheckFrequency",
        "staticPodURL",
        "staticPodURLHeader",
        "address",
        "port",
        "readOnlyPort",
        "tlsCertFile",
        "tlsPrivateKeyFile",
        "tlsCipherSuites",
        "tlsCurvePreferences",
        "tlsMinVersion",
        "rotateCertificates",
        "serverTLSBootstrap",
        "authentication",
        "authorization",
        "registryPullQPS",
        "registryBurst",
        "imagePullCredentialsVerificationPolicy",
        "preloadedImagesVerificationAllowlist",
        "eventRecordQPS",
        "eventBurst",
        "enableDebuggingHandlers",
        "enableContentionProfiling",
        "healthzPort",
        "healthzBindAddress",
        "oomScoreAdj",
        "clusterDomain",
        "clusterDNS",
        "streamingConnectionIdleTimeout",
        "nodeStatusUpdateFrequency",
        "nodeStatusReportFrequency",
        "nodeLeaseDurationSeconds",
        "imageMinimumGCAge",
        "imageMaximumGCAge",
        "imageGCHighThresholdPercent",
        "imageGCLowThresholdPercent",
        "volumeStatsAggPeriod",
        "kubeletCgroups",
        "systemCgroups",
        "cgroupRoot",
        "cgroupsPerQOS",
        "cgroupDriver",
        "cpuManagerPolicy",
        "singleProcessOOMKill",
        "cpuManagerPolicyOptions",
        "cpuManagerReconcilePeriod",
        "draManagerReconcilePeriod",
        "memoryManagerPolicy",
        "topologyManagerPolicy",
        "topologyManagerScope",
        "topologyManagerPolicyOptions",
        "qosReserved",
        "runtimeRequestTimeout",
        "hairpinMode",
        "maxPods",
        "podCIDR",
        "podPidsLimit",
        "resolvConf",
        "runOnce",
        "cpuCFSQuota",
        "cpuCFSQuotaPeriod",
        "nodeStatusMaxImages",
        "maxOpenFiles",
        "contentType",
        "kubeAPIQPS",
        "kubeAPIBurst",
        "serializeImagePulls",
        "maxParallelImagePulls",
        "evictionHard",
        "evictionSoft",
        "evictionSoftGracePeriod",
        "evictionPressureTransitionPeriod",
        "evictionMaxPodGracePeriod",
        "evictionMinimumReclaim",
        "mergeDefaultEvictionSettings",
        "podsPerCore",
        "enableControllerAttachDetach",
        "protectKernelDefaults",
        "makeIPTablesUtilChains",
        "iptablesMasqueradeBit",
        "iptablesDropBit",
        "featureGates",
        "failSwapOn",
        "memorySwap",
        "containerLogMaxSize",
        "containerLogMaxFiles",
        "containerLogMaxWorkers",
        "containerLogMonitorInterval",
        "configMapAndSecretChangeDetectionStrategy",
        "systemReserved",
        "kubeReserved",
        "reservedSystemCPUs",
        "showHiddenMetricsForVersion",
        "systemReservedCgroup",
        "kubeReservedCgroup",
        "enforceNodeAllocatable",
        "allowedUnsafeSysctls",
        "volumePluginDir",
        "providerID",
        "kernelMemcgNotification",
        "logging",
        "enableSystemLogHandler",
        "enableSystemLogQuery",
        "shutdownGracePeriod",
        "shutdownGracePeriodCriticalPods",
        "shutdownGracePeriodByPodPriority",
        "crashLoopBackOff",
        "reservedMemory",
        "enableProfilingHandler",
        "enableDebugFlagsHandler",
        "seccompDefault",
        "memoryThrottlingFactor",
        "memoryReservationPolicy",
        "registerWithTaints",
        "registerNode",
        "tracing",
        "localStorageCapacityIsolation",
        "containerRuntimeEndpoint",
        "imageServiceEndpoint",
        "failCgroupV1",
        "userNamespaces",
    ];

    #[test]
    fn every_upstream_field_is_classified_exactly_once() {
        let unsupported: Vec<&str> = UNSUPPORTED.iter().map(|f| f.name).collect();
        for name in UPSTREAM_FIELDS {
            let count =
                usize::from(SUPPORTED.contains(&name)) + usize::from(unsupported.contains(&name));
            assert_eq!(count, 1, "{name}");
        }
        assert_eq!(SUPPORTED.len() + UNSUPPORTED.len(), UPSTREAM_FIELDS.len());
    }

    fn accepted(name: &str, value: &Value) -> bool {
        check(name, value).expect("an unsupported field").is_ok()
    }

    #[test]
    fn defaults_and_zero_values_are_accepted() {
        for (name, value) in [
            ("httpCheckFrequency", json!("0s")),
            ("httpCheckFrequency", json!("20s")),
            ("httpCheckFrequency", json!("0h0m20s")),
            ("registryBurst", json!(0)),
            ("registryBurst", json!(10)),
            ("oomScoreAdj", json!(-999)),
            ("cpuManagerPolicy", json!("none")),
            ("evictionSoft", json!({})),
            ("allowedUnsafeSysctls", json!([])),
            ("memorySwap", json!({})),
            ("memorySwap", json!({"swapBehavior": "NoSwap"})),
            ("userNamespaces", json!({"idsPerPod": 65536})),
            ("failCgroupV1", json!(false)),
            ("tracing", Value::Null),
        ] {
            assert!(accepted(name, &value), "{name}: {value}");
        }
    }

    #[test]
    fn other_values_are_rejected_with_the_default_named() {
        for (name, value) in [
            ("cpuManagerPolicy", json!("static")),
            ("registryPullQPS", json!(0)),
            ("streamingConnectionIdleTimeout", json!("5m")),
            ("enableSystemLogHandler", json!(false)),
            ("evictionSoft", json!({"memory.available": "1Gi"})),
            ("memorySwap", json!({"swapBehavior": "LimitedSwap"})),
            ("tracing", json!({})),
            ("failCgroupV1", json!("no")),
            ("registryBurst", json!("10")),
        ] {
            let error = check(name, &value)
                .expect("an unsupported field")
                .unwrap_err();
            assert!(error.unsupported);
            assert_eq!(error.field, name);
            assert!(error.to_string().contains(&value.to_string()), "{error}");
            assert!(error.to_string().contains("default"), "{error}");
        }
    }

    #[test]
    fn unknown_names_are_not_unsupported_fields() {
        assert!(check("fooBar", &json!(1)).is_none());
        assert!(check("maxPods", &json!(1)).is_none());
    }
}
