//! `GET /metrics/resource`, after upstream's
//! `pkg/kubelet/metrics/collectors/resource_metrics.go`: the CPU, memory and swap numbers of the
//! CPU-and-memory summary, each sample stamped with its stats' time in milliseconds (which
//! metrics-server uses as the sample time).
//!
//! As upstream: a metric whose stats or value is absent is skipped; `container_start_time_seconds`
//! has no timestamp and is skipped for a start time at or before the epoch;
//! `container_swap_limit_bytes` is available plus usage; `node_swap_usage_bytes` carries the
//! node's memory time (falling back to the swap time where upstream would dereference a nil
//! memory). HELP texts carry component-base's stability prefix (`[STABLE] `, `[ALPHA] `).
//! `resource_scrape_error` is 1 when the summary could not be had, 0 otherwise.
//!
//! The deprecated `scrape_error` (deprecated in 1.29.0) is not written: component-base hides a
//! metric deprecated before the running minor version, so kubelets from 1.30 on do not serve it.
use super::{Desc, Families, MetricsError};
use crate::stats::summary::{StatsError, Summary};

const NODE_CPU: Desc = Desc::counter(
    "node_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
);
const NODE_MEMORY: Desc = Desc::gauge(
    "node_memory_working_set_bytes",
    "[STABLE] Current working set of the node in bytes",
);
const NODE_SWAP: Desc = Desc::gauge(
    "node_swap_usage_bytes",
    "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
);
const CONTAINER_CPU: Desc = Desc::counter(
    "container_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
);
const CONTAINER_MEMORY: Desc = Desc::gauge(
    "container_memory_working_set_bytes",
    "[STABLE] Current working set of the container in bytes",
);
const CONTAINER_SWAP: Desc = Desc::gauge(
    "container_swap_usage_bytes",
    "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems",
);
const CONTAINER_SWAP_LIMIT: Desc = Desc::gauge(
    "container_swap_limit_bytes",
    "[ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems",
);
const CONTAINER_START: Desc = Desc::gauge(
    "container_start_time_seconds",
    "[STABLE] Start time of the container since unix epoch in seconds",
);
const POD_CPU: Desc = Desc::counter(
    "pod_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
);
const POD_MEMORY: Desc = Desc::gauge(
    "pod_memory_working_set_bytes",
    "[STABLE] Current working set of the pod in bytes",
);
const POD_SWAP: Desc = Desc::gauge(
    "pod_swap_usage_bytes",
    "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
);
const SCRAPE_ERROR: Desc = Desc::gauge(
    "resource_scrape_error",
    "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
);

/// Core-nanoseconds as core-seconds.
fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn float(value: u64) -> f64 {
    value as f64
}

/// The `/metrics/resource` body for a summary (the full one is fine: only CPU, memory, swap
/// and start times are read) or the error that kept it from being had.
pub fn render(summary: Result<&Summary, &StatsError>) -> Result<String, MetricsError> {
    let mut out = Families::default();
    let Ok(summary) = summary else {
        out.sample(&SCRAPE_ERROR, Vec::new(), 1.0, None);
        return out.encode();
    };
    out.sample(&SCRAPE_ERROR, Vec::new(), 0.0, None);

    let node = &summary.node;
    if let Some(cpu) = &node.cpu
        && let Some(used) = cpu.usage_core_nano_seconds
    {
        out.sample(&NODE_CPU, Vec::new(), seconds(used), cpu.time.0);
    }
    if let Some(memory) = &node.memory
        && let Some(working_set) = memory.working_set_bytes
    {
        out.sample(&NODE_MEMORY, Vec::new(), float(working_set), memory.time.0);
    }
    if let Some(swap) = &node.swap
        && let Some(used) = swap.swap_usage_bytes
    {
        let time = node.memory.as_ref().map_or(swap.time, |memory| memory.time);
        out.sample(&NODE_SWAP, Vec::new(), float(used), time.0);
    }

    for pod in &summary.pods {
        let name = &pod.pod_ref.name;
        let namespace = &pod.pod_ref.namespace;
        for container in &pod.containers {
            let labels = || {
                vec![
                    ("container", container.name.clone()),
                    ("pod", name.clone()),
                    ("namespace", namespace.clone()),
                ]
            };
            if let Some(start) = container.start_time.unix_seconds_f64()
                && container
                    .start_time
                    .unix_millis()
                    .is_some_and(|ms| ms >= 1000)
            {
                out.sample(&CONTAINER_START, labels(), start, None);
            }
            if let Some(cpu) = &container.cpu
                && let Some(used) = cpu.usage_core_nano_seconds
            {
                out.sample(&CONTAINER_CPU, labels(), seconds(used), cpu.time.0);
            }
            if let Some(memory) = &container.memory
                && let Some(working_set) = memory.working_set_bytes
            {
                out.sample(
                    &CONTAINER_MEMORY,
                    labels(),
                    float(working_set),
                    memory.time.0,
                );
            }
            if let Some(swap) = &container.swap {
                if let Some(used) = swap.swap_usage_bytes {
                    out.sample(&CONTAINER_SWAP, labels(), float(used), swap.time.0);
                }
                if let Some(available) = swap.swap_available_bytes {
                    let limit = float(available) + float(swap.swap_usage_bytes.unwrap_or(0));
                    out.sample(&CONTAINER_SWAP_LIMIT, labels(), limit, swap.time.0);
                }
            }
        }
        let labels = || vec![("pod", name.clone()), ("namespace", namespace.clone())];
        if let Some(cpu) = &pod.cpu
            && let Some(used) = cpu.usage_core_nano_seconds
        {
            out.sample(&POD_CPU, labels(), seconds(used), cpu.time.0);
        }
        if let Some(memory) = &pod.memory
            && let Some(working_set) = memory.working_set_bytes
        {
            out.sample(&POD_MEMORY, labels(), float(working_set), memory.time.0);
        }
        if let Some(swap) = &pod.swap
            && let Some(used) = swap.swap_usage_bytes
        {
            out.sample(&POD_SWAP, labels(), float(used), swap.time.0);
        }
    }
    out.encode()
}
