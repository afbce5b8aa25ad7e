//! Smoke of `cargo xtask bench density` (issue 10) in the node VM, so the bench cannot rot: the
//! same in-VM driver the bench runs, at 2 pods, one round and a short window, must give every
//! metric a real positive number for both the upstream kubelet and kernlet. Skipped (with a
//! printed reason) where the kubelet binaries are absent.
use std::time::Duration;

use anyhow::{Result, ensure};
use kernlet_tests::{node::kernlet_binary, skip};
use xtask::{
    bench::density::{agent::Binaries, inside, report},
    k8s::{self, K8sBin},
};

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd, runc and the upstream kubelet; run by cargo xtask test in the node VM"]
fn density_bench_measures_both_agents() -> Result<()> {
    let kubelet = match k8s::find()? {
        K8sBin::Found(dir) => dir.join("kubelet"),
        K8sBin::Missing(reason) => {
            skip("density_bench_measures_both_agents", &reason);
            return Ok(());
        }
    };
    let plan = inside::Plan {
        pods: 2,
        containers: vec![1],
        rounds: 1,
        slow_kernlet: None,
        window: Duration::from_secs(5),
        requests: 5,
        exits: 2,
        timeout: Duration::from_mins(5),
        binaries: Binaries {
            kernlet: kernlet_binary()?,
            kubelet,
        },
    };
    let results = inside::run(&plan)?;
    println!("{}", report::tables(&results));
    ensure!(results.len() == 2, "expected 2 runs, got {results:#?}");
    let problems = report::missing_values(&results);
    ensure!(problems.is_empty(), "missing values: {problems:#?}");
    Ok(())
}
