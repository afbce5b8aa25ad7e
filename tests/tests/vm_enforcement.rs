//! Resource enforcement by kernlet's own cgroup v2 writes, in the node VM (pure cgroup v2, every
//! controller, real containerd and runc): memory limits and OOM kills, node allocatable on
//! `kubepods`, CPU quota and weights, `podPidsLimit`, and `MemoryQoS`.
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real kernel and runtime"
)]
mod support;

use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use kernlet_tests::node::TestNode;
use serde_json::Value;
use support::{VM_WAIT as WAIT, container, phase, status, uid};

const MI: u64 = 1 << 20;

/// The node config every test here starts from: kernlet's hierarchy in the fixture's subtree.
const QOS_CONFIG: &str = "cgroupsPerQOS: true\ncgroupRoot: {cgroup_root}\n";

fn manifest(name: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n{containers}"
    )
}

/// `resources:` lines for a container: requests and limits as `(cpu, memory)`.
fn resources(requests: (&str, &str), limits: (&str, &str)) -> String {
    let map = |(cpu, memory): (&str, &str)| {
        let mut entries = Vec::new();
        if !cpu.is_empty() {
            entries.push(format!("cpu: {cpu}"));
        }
        if !memory.is_empty() {
            entries.push(format!("memory: {memory}"));
        }
        format!("{{{}}}", entries.join(", "))
    };
    format!(
        "    resources:\n      requests: {}\n      limits: {}\n",
        map(requests),
        map(limits)
    )
}

fn cgroup_file(cgroup: &str, file: &str) -> Result<String> {
    let path = PathBuf::from("/sys/fs/cgroup")
        .join(cgroup.trim_start_matches('/'))
        .join(file);
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// `key value` lines of a flat-keyed cgroup file (`cpu.stat`, `memory.events`, ...).
fn keyed(cgroup: &str, file: &str, key: &str) -> Result<u64> {
    let text = cgroup_file(cgroup, file)?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{key} missing from {cgroup}/{file}: {text}"))
}

fn running_pod(node: &TestNode, name: &str) -> Result<Value> {
    node.wait_until(&format!("{name} runs"), WAIT, |n| {
        Ok(n.pod(name)?.is_some_and(|p| phase(&p) == "Running"))
    })?;
    node.pod(name)?.context("pod vanished")
}

fn mem_total() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .context("no MemTotal")?;
    Ok(kib * 1024)
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn guaranteed_pod_past_its_memory_limit_is_oom_killed_and_restarted() -> Result<()> {
    let node = TestNode::start_with(
        &format!("{QOS_CONFIG}featureGates: {{MemoryQoS: true}}\n"),
        &[],
    )?;
    let limits = resources(("100m", "64Mi"), ("100m", "64Mi"));
    // busybox `tail` keeps the last lines of /dev/zero, which has no line end: it grows until
    // the cgroup's limit stops it.
    node.write_manifest(
        "hog.yaml",
        &manifest("hog", &container("main", "tail /dev/zero", &limits)),
    )?;
    let quiet = resources(("50m", "32Mi"), ("50m", "32Mi"));
    node.write_manifest(
        "quiet.yaml",
        &manifest("quiet", &container("main", "exec sleep 3600", &quiet)),
    )?;
    let neighbour = running_pod(&node, "quiet-testnode")?;
    let kubepods = format!("{}/kubepods", node.cgroup_root());
    let hog_cgroup = |node: &TestNode| -> Result<String> {
        let pod = node.pod("hog-testnode")?.context("no hog")?;
        Ok(format!("{kubepods}/pod{}", uid(&pod)))
    };
    node.wait_until(
        "hog is OOM-killed and restarted",
        Duration::from_mins(2),
        |n| {
            let Some(pod) = n.pod("hog-testnode")? else {
                return Ok(false);
            };
            let main = status(&pod, "main");
            Ok(main["restartCount"].as_u64().unwrap_or(0) >= 1
                && main["lastState"]["terminated"]["reason"] == "OOMKilled")
        },
    )?;
    let hog = node.pod("hog-testnode")?.context("no hog")?;
    let terminated = &status(&hog, "main")["lastState"]["terminated"];
    assert_eq!(terminated["exitCode"], 137, "{terminated}");
    let cgroup = hog_cgroup(&node)?;
    assert_eq!(cgroup_file(&cgroup, "memory.max")?, (64 * MI).to_string());
    let kills = keyed(&cgroup, "memory.events", "oom_kill")?;
    assert!(
        kills >= 1,
        "memory.events of {cgroup} counts {kills} OOM kills"
    );
    println!(
        "hog: {kills} OOM kills in {cgroup}, restarts {}",
        status(&hog, "main")["restartCount"]
    );

    // The neighbour is untouched.
    let now = node.pod("quiet-testnode")?.context("no quiet")?;
    assert_eq!(phase(&now), "Running");
    assert_eq!(status(&now, "main")["restartCount"], 0);
    assert_eq!(
        status(&now, "main")["containerID"],
        status(&neighbour, "main")["containerID"]
    );
    let quiet_cgroup = format!("{kubepods}/pod{}", uid(&now));
    assert_eq!(keyed(&quiet_cgroup, "memory.events", "oom_kill")?, 0);

    // MemoryQoS: memory.min from requests on the pod and its container; request == limit, so
    // no memory.high.
    assert_eq!(
        cgroup_file(&quiet_cgroup, "memory.min")?,
        (32 * MI).to_string()
    );
    let id = status(&now, "main")["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .context("container id")?
        .to_owned();
    let container_cgroup = format!("{quiet_cgroup}/{id}");
    assert_eq!(
        cgroup_file(&container_cgroup, "memory.min")?,
        (32 * MI).to_string()
    );
    assert_eq!(cgroup_file(&container_cgroup, "memory.high")?, "max");
    Ok(())
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn kubepods_holds_node_allocatable_and_contains_a_pod_that_exceeds_it() -> Result<()> {
    let total = mem_total()?;
    // Leave ~300 MiB allocatable whatever the VM's size.
    let reserved_mi = total / MI - 400;
    let node = TestNode::start_with(
        &format!(
            "{QOS_CONFIG}enforceNodeAllocatable: [pods]\nkubeReserved: {{memory: {reserved_mi}Mi, \
             cpu: 100m}}\nsystemReserved: {{memory: 50Mi}}\nevictionHard: {{memory.available: 50Mi}}\n"
        ),
        &[],
    )?;
    let kubepods = format!("{}/kubepods", node.cgroup_root());
    let allocatable = total - (reserved_mi + 100) * MI;
    assert_eq!(
        cgroup_file(&kubepods, "memory.max")?,
        allocatable.to_string()
    );
    println!("kubepods memory.max {allocatable} = {total} - {reserved_mi}Mi - 50Mi - 50Mi");

    // A Burstable pod with no memory limit grows until kubepods stops it.
    let requests = resources(("", "16Mi"), ("", ""));
    node.write_manifest(
        "big.yaml",
        &manifest("big", &container("main", "tail /dev/zero", &requests)),
    )?;
    node.wait_until("big is OOM-killed", Duration::from_mins(2), |n| {
        let Some(pod) = n.pod("big-testnode")? else {
            return Ok(false);
        };
        Ok(status(&pod, "main")["lastState"]["terminated"]["reason"] == "OOMKilled")
    })?;
    // The kill came from kubepods' own limit, not the pod's (it has none).
    let local_ooms = keyed(&kubepods, "memory.events.local", "oom")?;
    assert!(local_ooms >= 1, "kubepods never hit its limit");
    let pod = node.pod("big-testnode")?.context("no big")?;
    let pod_cgroup = format!("{kubepods}/burstable/pod{}", uid(&pod));
    assert_eq!(cgroup_file(&pod_cgroup, "memory.max")?, "max");
    assert!(keyed(&kubepods, "memory.events", "oom_kill")? >= 1);
    println!("kubepods: {local_ooms} OOMs at its own limit");
    // The node itself is fine: kernlet still serves.
    assert!(node.get("/healthz").is_ok());
    Ok(())
}

/// CPU time of `cgroup` (usage, throttled periods) over `window`.
fn cpu_over(cgroup: &str, window: Duration) -> Result<(u64, u64)> {
    let (usage, throttled) = (
        keyed(cgroup, "cpu.stat", "usage_usec")?,
        keyed(cgroup, "cpu.stat", "nr_throttled")?,
    );
    let start = Instant::now();
    thread::sleep(window);
    let elapsed = start.elapsed().as_micros() as u64;
    let used = keyed(cgroup, "cpu.stat", "usage_usec")? - usage;
    let throttled = keyed(cgroup, "cpu.stat", "nr_throttled")? - throttled;
    // Scale to exactly `window` in case the sleep overran.
    Ok((used * window.as_micros() as u64 / elapsed, throttled))
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn cpu_limits_throttle_and_weights_share() -> Result<()> {
    let node = TestNode::start_with(QOS_CONFIG, &[])?;
    let kubepods = format!("{}/kubepods", node.cgroup_root());
    let busy = "while :; do :; done";
    let limited = resources(("200m", "16Mi"), ("200m", "16Mi"));
    node.write_manifest(
        "limited.yaml",
        &manifest("limited", &container("main", busy, &limited)),
    )?;
    let pod = running_pod(&node, "limited-testnode")?;
    let cgroup = format!("{kubepods}/pod{}", uid(&pod));
    assert_eq!(cgroup_file(&cgroup, "cpu.max")?, "20000 100000");
    thread::sleep(Duration::from_secs(1));
    let (used, throttled) = cpu_over(&cgroup, Duration::from_secs(5))?;
    let cores = used as f64 / 5e6;
    println!("limited: {cores:.3} cores over 5 s, {throttled} throttled periods");
    assert!(
        (0.18..=0.22).contains(&cores),
        "200m pod used {cores:.3} cores"
    );
    assert!(throttled > 0, "no throttling in cpu.stat");
    node.remove_manifest("limited.yaml")?;
    node.wait_until("limited is gone", WAIT, |n| {
        Ok(n.pod("limited-testnode")?.is_none())
    })?;

    // Two busy loops per pod on two CPUs: the tiers compete on every CPU.
    let two = "while :; do :; done & while :; do :; done";
    let burstable = resources(("500m", "16Mi"), ("", ""));
    node.write_manifest(
        "burst.yaml",
        &manifest("burst", &container("main", two, &burstable)),
    )?;
    node.write_manifest("best.yaml", &manifest("best", &container("main", two, "")))?;
    running_pod(&node, "burst-testnode")?;
    running_pod(&node, "best-testnode")?;
    let (burst_tier, best_tier) = (
        format!("{kubepods}/burstable"),
        format!("{kubepods}/besteffort"),
    );
    let burst_weight: f64 = cgroup_file(&burst_tier, "cpu.weight")?.parse()?;
    let best_weight: f64 = cgroup_file(&best_tier, "cpu.weight")?.parse()?;
    // 500m -> 512 shares -> weight 20; BestEffort -> 1.
    assert_eq!((burst_weight, best_weight), (20.0, 1.0));
    thread::sleep(Duration::from_secs(1));
    let burst_before = keyed(&burst_tier, "cpu.stat", "usage_usec")?;
    let best_before = keyed(&best_tier, "cpu.stat", "usage_usec")?;
    thread::sleep(Duration::from_secs(5));
    let burst = (keyed(&burst_tier, "cpu.stat", "usage_usec")? - burst_before) as f64;
    let best = (keyed(&best_tier, "cpu.stat", "usage_usec")? - best_before) as f64;
    let share = burst / (burst + best);
    let expected = burst_weight / (burst_weight + best_weight);
    println!("burstable share {share:.3} (expected {expected:.3}): {burst} vs {best} usec");
    assert!(
        (share - expected).abs() <= 0.05,
        "burstable got {share:.3} of the CPU, weights give {expected:.3}"
    );
    Ok(())
}

/// `max` of `pids.events` summed over `cgroup` and its children: kernels before 6.8 count a
/// refused fork in the forking task's cgroup (the container's), not where the limit is.
fn pids_max_events(cgroup: &str) -> u64 {
    let dir = PathBuf::from("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    let children = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| format!("{cgroup}/{}", e.file_name().to_string_lossy()));
    std::iter::once(cgroup.to_owned())
        .chain(children)
        .map(|c| keyed(&c, "pids.events", "max").unwrap_or(0))
        .sum()
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn pod_pids_limit_stops_a_fork_bomb() -> Result<()> {
    let node = TestNode::start_with(&format!("{QOS_CONFIG}podPidsLimit: 20\n"), &[])?;
    let bomb = "i=0; while [ $i -lt 200 ]; do sleep 600 & i=$((i+1)); done; exec sleep 600";
    node.write_manifest("bomb.yaml", &manifest("bomb", &container("main", bomb, "")))?;
    let kubepods = format!("{}/kubepods", node.cgroup_root());
    node.wait_until("the bomb hits pids.max", WAIT, |n| {
        let Some(pod) = n.pod("bomb-testnode")? else {
            return Ok(false);
        };
        Ok(pids_max_events(&format!("{kubepods}/besteffort/pod{}", uid(&pod))) > 0)
    })?;
    let pod = node.pod("bomb-testnode")?.context("no bomb")?;
    let cgroup = format!("{kubepods}/besteffort/pod{}", uid(&pod));
    assert_eq!(cgroup_file(&cgroup, "pids.max")?, "20");
    let current: u64 = cgroup_file(&cgroup, "pids.current")?.parse()?;
    assert!(current <= 20, "pids.current {current} above the limit");
    // The node still starts pods.
    node.write_manifest(
        "after.yaml",
        &manifest("after", &container("main", "exec sleep 600", "")),
    )?;
    running_pod(&node, "after-testnode")?;
    println!(
        "bomb: pids.current {current}, refused forks {}",
        pids_max_events(&cgroup)
    );
    Ok(())
}
