//! Tests of the stats bench's parsing and tables.
use super::*;

#[test]
fn percentiles_are_nearest_rank() {
    let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
    assert!((percentile(&sorted, 50.0) - 100.0).abs() < f64::EPSILON);
    assert!((percentile(&sorted, 99.0) - 198.0).abs() < f64::EPSILON);
    assert!((percentile(&[3.0], 99.0) - 3.0).abs() < f64::EPSILON);
}

#[test]
fn reads_kernlet_metrics() {
    let text = "# HELP x\n\
        kernlet_ebpf_program_run_time_seconds_total{program=\"sched_switch\"} 0.5\n\
        kernlet_ebpf_program_runs_total{program=\"sched_switch\"} 1000000\n\
        kernlet_ebpf_program_runs_total{program=\"block_rq\"} 0\n\
        kernlet_stats_collection_duration_seconds_bucket{le=\"0.005\"} 3\n\
        kernlet_stats_collection_duration_seconds_sum 0.25\n\
        kernlet_stats_collection_duration_seconds_count 10\n";
    assert_eq!(rounds(text), Some((0.25, 10.0)));
    let costs = programs(text);
    assert_eq!(costs.len(), 2);
    assert_eq!(costs[1].name, "sched_switch");
    assert!((costs[1].seconds * 1e9 / costs[1].runs - 500.0).abs() < 1e-9);
    assert!(costs[0].runs.abs() < f64::EPSILON);
}

#[test]
fn reads_minor_faults_after_the_command() {
    let stat = "4242 (kernlet (x) y) S 1 4242 4242 0 -1 4194560 1234 0 5 0 10 3";
    assert_eq!(parse_minflt(stat), Some(1234));
    assert_eq!(parse_minflt("4242 (kernlet) S 1"), None);
}
