//! The `/metrics/cadvisor` families: names, HELP texts and types as cAdvisor's
//! `metrics/prometheus.go` declares them.
use super::Desc;

macro_rules! counter {
    ($name:literal, $help:literal) => {
        Desc::counter($name, $help)
    };
}
macro_rules! gauge {
    ($name:literal, $help:literal) => {
        Desc::gauge($name, $help)
    };
}

pub(super) const SCRAPE_ERROR: Desc = gauge!(
    "container_scrape_error",
    "1 if there was an error while getting container metrics, 0 otherwise"
);
pub(super) const LAST_SEEN: Desc = gauge!(
    "container_last_seen",
    "Last time a container was seen by the exporter"
);
pub(super) const START_TIME: Desc = gauge!(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds."
);
pub(super) const SPEC_CPU_PERIOD: Desc =
    gauge!("container_spec_cpu_period", "CPU period of the container.");
pub(super) const SPEC_CPU_QUOTA: Desc =
    gauge!("container_spec_cpu_quota", "CPU quota of the container.");
pub(super) const SPEC_CPU_SHARES: Desc =
    gauge!("container_spec_cpu_shares", "CPU share of the container.");
pub(super) const SPEC_MEMORY_LIMIT: Desc = gauge!(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container."
);
pub(super) const SPEC_SWAP_LIMIT: Desc = gauge!(
    "container_spec_memory_swap_limit_bytes",
    "Memory swap limit for the container."
);
pub(super) const SPEC_MEMORY_RESERVATION: Desc = gauge!(
    "container_spec_memory_reservation_limit_bytes",
    "Memory reservation limit for the container."
);

pub(super) const CPU_USER: Desc = counter!(
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds."
);
pub(super) const CPU_SYSTEM: Desc = counter!(
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds."
);
pub(super) const CPU_USAGE: Desc = counter!(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds."
);
pub(super) const CFS_PERIODS: Desc = counter!(
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals."
);
pub(super) const CFS_THROTTLED_PERIODS: Desc = counter!(
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals."
);
pub(super) const CFS_THROTTLED_SECONDS: Desc = counter!(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled."
);
pub(super) const LOAD_AVERAGE: Desc = gauge!(
    "container_cpu_load_average_10s",
    "Value of container cpu load average over the last 10 seconds."
);
pub(super) const TASKS_STATE: Desc =
    gauge!("container_tasks_state", "Number of tasks in given state");

pub(super) const MEMORY_CACHE: Desc = gauge!(
    "container_memory_cache",
    "Number of bytes of page cache memory."
);
pub(super) const MEMORY_RSS: Desc = gauge!("container_memory_rss", "Size of RSS in bytes.");
pub(super) const MEMORY_KERNEL: Desc = gauge!(
    "container_memory_kernel_usage",
    "Size of kernel memory allocated in bytes."
);
pub(super) const MEMORY_MAPPED: Desc = gauge!(
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes."
);
pub(super) const MEMORY_SWAP: Desc =
    gauge!("container_memory_swap", "Container swap usage in bytes.");
pub(super) const MEMORY_FAILCNT: Desc = counter!(
    "container_memory_failcnt",
    "Number of memory usage hits limits"
);
pub(super) const MEMORY_USAGE: Desc = gauge!(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed"
);
pub(super) const MEMORY_MAX_USAGE: Desc = gauge!(
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes"
);
pub(super) const MEMORY_WORKING_SET: Desc = gauge!(
    "container_memory_working_set_bytes",
    "Current working set in bytes."
);
pub(super) const MEMORY_ACTIVE_FILE: Desc = gauge!(
    "container_memory_total_active_file_bytes",
    "Current total active file in bytes."
);
pub(super) const MEMORY_INACTIVE_FILE: Desc = gauge!(
    "container_memory_total_inactive_file_bytes",
    "Current total inactive file in bytes."
);
pub(super) const MEMORY_FAILURES: Desc = counter!(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures."
);
// The next six are recent cAdvisor families (names as served by current kubelets); their HELP
// texts are kernlet's own wording.
pub(super) const MEMORY_FILE_DIRTY: Desc = gauge!(
    "container_memory_file_dirty_bytes",
    "Size of file-backed memory waiting to be written back to disk in bytes."
);
pub(super) const MEMORY_FILE_WRITEBACK: Desc = gauge!(
    "container_memory_file_writeback_bytes",
    "Size of file-backed memory being written back to disk in bytes."
);
pub(super) const MEMORY_PGSCAN: Desc = counter!(
    "container_memory_pgscan_total",
    "Cumulative count of pages scanned by memory reclaim."
);
pub(super) const MEMORY_PGSTEAL: Desc = counter!(
    "container_memory_pgsteal_total",
    "Cumulative count of pages reclaimed."
);
pub(super) const MEMORY_REFAULT_FILE: Desc = counter!(
    "container_memory_workingset_refault_file_total",
    "Cumulative count of refaults of previously evicted file pages."
);
pub(super) const MEMORY_REFAULT_ANON: Desc = counter!(
    "container_memory_workingset_refault_anon_total",
    "Cumulative count of refaults of previously evicted anonymous pages."
);
pub(super) const OOM_EVENTS: Desc = counter!(
    "container_oom_events_total",
    "Count of out of memory events observed for the container"
);

pub(super) const NET_RX_BYTES: Desc = counter!(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received"
);
pub(super) const NET_RX_PACKETS: Desc = counter!(
    "container_network_receive_packets_total",
    "Cumulative count of packets received"
);
pub(super) const NET_RX_DROPPED: Desc = counter!(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving"
);
pub(super) const NET_RX_ERRORS: Desc = counter!(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving"
);
pub(super) const NET_TX_BYTES: Desc = counter!(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted"
);
pub(super) const NET_TX_PACKETS: Desc = counter!(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted"
);
pub(super) const NET_TX_DROPPED: Desc = counter!(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting"
);
pub(super) const NET_TX_ERRORS: Desc = counter!(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting"
);

pub(super) const FS_INODES_FREE: Desc =
    gauge!("container_fs_inodes_free", "Number of available Inodes");
pub(super) const FS_INODES: Desc = gauge!("container_fs_inodes_total", "Number of Inodes");
pub(super) const FS_LIMIT: Desc = gauge!(
    "container_fs_limit_bytes",
    "Number of bytes that can be consumed by the container on this filesystem."
);
pub(super) const FS_USAGE: Desc = gauge!(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem."
);
pub(super) const FS_READ_BYTES: Desc = counter!(
    "container_fs_reads_bytes_total",
    "Cumulative count of bytes read"
);
pub(super) const FS_READS: Desc = counter!(
    "container_fs_reads_total",
    "Cumulative count of reads completed"
);
pub(super) const FS_WRITE_BYTES: Desc = counter!(
    "container_fs_writes_bytes_total",
    "Cumulative count of bytes written"
);
pub(super) const FS_WRITES: Desc = counter!(
    "container_fs_writes_total",
    "Cumulative count of writes completed"
);
pub(super) const BLKIO_USAGE: Desc = counter!(
    "container_blkio_device_usage_total",
    "Blkio Device bytes usage"
);

pub(super) const PROCESSES: Desc = gauge!(
    "container_processes",
    "Number of processes running inside the container."
);
pub(super) const FILE_DESCRIPTORS: Desc = gauge!(
    "container_file_descriptors",
    "Number of open file descriptors for the container."
);
pub(super) const SOCKETS: Desc = gauge!(
    "container_sockets",
    "Number of open sockets for the container."
);
pub(super) const THREADS: Desc = gauge!(
    "container_threads",
    "Number of threads running inside the container"
);
pub(super) const THREADS_MAX: Desc = gauge!(
    "container_threads_max",
    "Maximum number of threads allowed inside the container, infinity if value is zero"
);

pub(super) const CPU_STALLED: Desc = counter!(
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion."
);
pub(super) const CPU_WAITING: Desc = counter!(
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion."
);
pub(super) const MEMORY_STALLED: Desc = counter!(
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion."
);
pub(super) const MEMORY_WAITING: Desc = counter!(
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion."
);
pub(super) const IO_STALLED: Desc = counter!(
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion."
);
pub(super) const IO_WAITING: Desc = counter!(
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion."
);
