//! Cross-field checks that upstream's `ValidateKubeletConfiguration` makes, run on the effective
//! configuration (after flags), so they cover values that came from either source.

use std::time::Duration;

use super::duration::format_duration;
use super::{ConfigError, FieldError, KubeletConfig};

pub(super) fn check(config: &KubeletConfig, origin: &str) -> Result<(), ConfigError> {
    let errors = problems(config);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            errors,
        })
    }
}

fn problems(c: &KubeletConfig) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if c.image_gc_low_threshold_percent >= c.image_gc_high_threshold_percent {
        errors.push(FieldError::invalid(
            "imageGCLowThresholdPercent",
            c.image_gc_low_threshold_percent.to_string(),
            format!(
                "must be less than imageGCHighThresholdPercent ({})",
                c.image_gc_high_threshold_percent
            ),
        ));
    }
    let period = c.cpu_cfs_quota_period;
    let quoted = || format!("{:?}", format_duration(period));
    if c.feature_gates.custom_cpu_cfs_quota_period {
        if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&period) {
            errors.push(FieldError::invalid(
                "cpuCFSQuotaPeriod",
                quoted(),
                "must be between 1ms and 1s, inclusive",
            ));
        }
    } else if period != Duration::from_millis(100) {
        errors.push(FieldError::invalid(
            "cpuCFSQuotaPeriod",
            quoted(),
            "a period other than 100ms requires feature gate CustomCPUCFSQuotaPeriod",
        ));
    }
    let enforce = c.enforce_node_allocatable;
    let any_enforced = enforce.pods || enforce.kube_reserved || enforce.system_reserved;
    if any_enforced && !c.cgroups_per_qos {
        errors.push(FieldError::invalid(
            "cgroupsPerQOS",
            "false",
            "must be true when enforceNodeAllocatable lists pods, kube-reserved or \
             system-reserved",
        ));
    }
    if enforce.kube_reserved && c.kube_reserved_cgroup.is_none() {
        errors.push(FieldError::invalid(
            "kubeReservedCgroup",
            "\"\"",
            "must be set when enforceNodeAllocatable lists kube-reserved",
        ));
    }
    if enforce.system_reserved && c.system_reserved_cgroup.is_none() {
        errors.push(FieldError::invalid(
            "systemReservedCgroup",
            "\"\"",
            "must be set when enforceNodeAllocatable lists system-reserved",
        ));
    }
    if c.container_runtime_endpoint.is_empty() {
        errors.push(FieldError::invalid(
            "containerRuntimeEndpoint",
            "\"\"",
            "must not be empty",
        ));
    }
    errors
}
