//! The measuring driver, run inside the node VM (by `cargo xtask bench density` through a hidden
//! `--inside` flag, and by the VM tier's `vm_density` smoke test directly). Every run gets a
//! fresh fixture and a fresh agent in a fresh cgroup; each result is printed as one
//! [`RESULT_PREFIX`] JSON line for the host to collect from the console.
use std::{
    fmt::Write as _,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    super::{
        poll,
        startup::{replace_file, running_pods, with_fixture},
        stats::{CpuCgroup, latency, v2_mount},
    },
    agent::{Agent, AgentDirs, AgentKind, Binaries, NODE_NAME, config, create_cgroup_root},
    clues,
    report::{Endpoint, RunResult},
};
use crate::{cmd, images::TEST_IMAGE, runtime::RuntimeFixture};

/// The line prefix of a result on the console.
pub const RESULT_PREFIX: &str = "density-result: ";
/// The endpoints whose latency and size are measured.
pub const ENDPOINTS: [&str; 3] = ["/stats/summary", "/metrics/cadvisor", "/metrics/resource"];
/// Idle time once every pod runs, before the CPU window opens.
const SETTLE: Duration = Duration::from_secs(5);
/// How often `/pods` is polled while waiting for all pods to run (each poll costs the agent
/// CPU, so not too often).
const STARTUP_POLL: Duration = Duration::from_millis(100);
/// How often `/pods` is polled after a spec change or a container exit.
const CHANGE_POLL: Duration = Duration::from_millis(10);

/// What one VM boot measures.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pods: usize,
    /// Containers per pod; each count is a run series of its own.
    pub containers: Vec<usize>,
    /// Rounds of kubelet, kernlet (interleaved).
    pub rounds: usize,
    /// kernlet's extra `--housekeeping-interval` (seconds), run once (in the first round).
    pub slow_kernlet: Option<u64>,
    pub window: Duration,
    pub requests: usize,
    /// Containers killed, one per pod, for the exit-to-status latency.
    pub exits: usize,
    /// Longest wait for all pods running, or for a changed pod.
    pub timeout: Duration,
    pub binaries: Binaries,
}

/// Runs the plan: for each container count, `rounds` × (kubelet, kernlet), plus the slow
/// kernlet after the first round's kernlet. Prints progress and each result line.
pub fn run(plan: &Plan) -> Result<Vec<RunResult>> {
    let mount = v2_mount()?;
    let mut results = Vec::new();
    for &containers in &plan.containers {
        for round in 1..=plan.rounds {
            let mut agents = vec![AgentKind::Kubelet, AgentKind::Kernlet { housekeeping_s: 1 }];
            if let (1, Some(housekeeping_s)) = (round, plan.slow_kernlet) {
                agents.push(AgentKind::Kernlet { housekeeping_s });
            }
            for agent in agents {
                println!(
                    "density: {} pods × {containers} containers, round {round}/{}: {agent}",
                    plan.pods, plan.rounds
                );
                let started = Instant::now();
                let result = one_run(plan, &mount, agent, containers, round)
                    .with_context(|| format!("{agent}, {} pods × {containers}", plan.pods))?;
                println!(
                    "density: {agent} done in {:.0} s: all running after {:.1} s, {:.3} cores, \
                     {:.1} MiB",
                    started.elapsed().as_secs_f64(),
                    result.startup_s,
                    result.cpu_cores,
                    result.rss_mib
                );
                println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
                results.push(result);
            }
        }
    }
    Ok(results)
}

fn one_run(
    plan: &Plan,
    mount: &Path,
    kind: AgentKind,
    containers: usize,
    round: usize,
) -> Result<RunResult> {
    with_fixture(|fixture| {
        let cgroup_root = create_cgroup_root(mount, fixture)?;
        let cgroup = CpuCgroup::create(mount, &format!("bench-agent-{}", fixture.id()))?;
        let dirs = AgentDirs::create(fixture)?;
        for index in 0..plan.pods {
            write_pod(&dirs.manifests(), index, containers, 3600)?;
        }
        let text = config(&dirs, &fixture.endpoint_uri(), &cgroup_root);
        let mut agent = Agent::spawn(kind, &plan.binaries, &dirs, &text, &cgroup.dir)?;
        let run = RunResult {
            agent: kind,
            pods: plan.pods,
            containers,
            round,
            ..RunResult::default()
        };
        let result = measure(&mut agent, fixture, &dirs, &cgroup, plan, run);
        let result = result.map_err(|error| {
            anyhow::anyhow!("{error:#}\n{kind} log tail:\n{}", agent.log_tail(40))
        });
        // A slow exit does not spoil what was measured: say so, and let teardown clean up.
        if let Err(error) = agent.stop() {
            eprintln!("density: stopping {kind}: {error:#}");
        }
        result
    })
}

fn measure(
    agent: &mut Agent,
    fixture: &RuntimeFixture,
    dirs: &AgentDirs,
    cgroup: &CpuCgroup,
    plan: &Plan,
    mut run: RunResult,
) -> Result<RunResult> {
    let pods = plan.pods;
    poll("all pods run", STARTUP_POLL, plan.timeout, || {
        agent.check_alive()?;
        let body = agent.get("/pods").unwrap_or_default();
        Ok((running_pods(&body) >= pods).then_some(()))
    })?;
    run.startup_s = agent.spawned.elapsed().as_secs_f64();
    let clues = clues::start_clues(
        &agent.get("/metrics").unwrap_or_default(),
        &agent.get("/pods").unwrap_or_default(),
        &agent.log_text(),
    );
    for line in clues {
        println!("density: {} at start: {line}", agent.kind);
    }
    thread::sleep(SETTLE);

    let (cpu, opened) = (cgroup.usage()?, Instant::now());
    thread::sleep(plan.window);
    let (used, wall) = (cgroup.usage()?.saturating_sub(cpu), opened.elapsed());
    agent.check_alive()?;
    run.cpu_cores = used.as_secs_f64() / wall.as_secs_f64();
    run.rss_mib = agent.rss_mib()?;

    for path in ENDPOINTS {
        let measured = latency(|p| agent.get(p), path, plan.requests)?;
        run.endpoints.push(Endpoint {
            path: path.to_owned(),
            p50_ms: measured.p50_ms,
            p99_ms: measured.p99_ms,
            bytes: measured.bytes,
        });
    }

    run.spec_change_s = spec_change(agent, dirs, plan)?;
    let own_before = OwnExits::read(&agent.get("/metrics").unwrap_or_default());
    let mut polls = PollCost::default();
    for index in exit_victims(pods, plan.exits) {
        run.exit_ms.push(exit_latency(
            agent,
            fixture,
            index,
            plan.timeout,
            &mut polls,
        )?);
    }
    run.exit_poll_ms = polls.mean_ms();
    let own_after = OwnExits::read(&agent.get("/metrics").unwrap_or_default());
    if let Some(after) = own_after {
        let own = after.since(&own_before.unwrap_or_default());
        run.own_exit_ms = own.mean_ms();
        run.own_exit_p99_ms = own.p99_ms();
    }
    Ok(run)
}

/// Static pod `bench-<index>`: `containers` busybox containers `sleep <seconds>` with requests
/// and limits (Burstable), restart policy Always.
#[must_use]
pub fn pod_manifest(index: usize, containers: usize, seconds: u64) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{index}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  restartPolicy: Always\n  containers:\n"
    );
    for c in 0..containers {
        let _ = write!(
            text,
            "  - name: c{c}\n    image: {TEST_IMAGE}\n    imagePullPolicy: Never\n    \
             command: [\"sleep\", \"{seconds}\"]\n    resources:\n      \
             requests: {{cpu: 10m, memory: 16Mi}}\n      limits: {{cpu: 50m, memory: 32Mi}}\n"
        );
    }
    text
}

fn write_pod(dir: &Path, index: usize, containers: usize, seconds: u64) -> Result<()> {
    replace_file(
        dir,
        &format!("bench-{index}.yaml"),
        &pod_manifest(index, containers, seconds),
    )
}

/// Pod `bench-<index>` in a `/pods` body.
fn find_pod(body: &str, index: usize) -> Option<Value> {
    let name = format!("bench-{index}-{NODE_NAME}");
    let list: Value = serde_json::from_str(body).ok()?;
    list["items"]
        .as_array()?
        .iter()
        .find(|pod| pod["metadata"]["name"] == name.as_str())
        .cloned()
}

/// Whether every container of `pod` runs.
fn all_running(pod: &Value) -> bool {
    pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|c| c["state"]["running"].is_object()))
}

/// Seconds from rewriting `bench-0` with another `sleep` argument (so a new pod UID) until the
/// agent shows the new pod with all its containers running.
fn spec_change(agent: &mut Agent, dirs: &AgentDirs, plan: &Plan) -> Result<f64> {
    let before = find_pod(&agent.get("/pods")?, 0).context("no pod bench-0")?;
    let old_uid = before["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let containers = before["spec"]["containers"].as_array().map_or(1, Vec::len);
    let changed = Instant::now();
    write_pod(&dirs.manifests(), 0, containers, 3601)?;
    poll("the changed pod runs", CHANGE_POLL, plan.timeout, || {
        agent.check_alive()?;
        let pod = find_pod(&agent.get("/pods").unwrap_or_default(), 0);
        Ok(pod
            .filter(|p| p["metadata"]["uid"].as_str() != Some(old_uid.as_str()) && all_running(p))
            .map(|_| ()))
    })?;
    Ok(changed.elapsed().as_secs_f64())
}

/// The pods whose first container is killed: the last `exits`, never `bench-0` (just changed)
/// unless it is the only one.
fn exit_victims(pods: usize, exits: usize) -> Vec<usize> {
    let first = usize::from(pods > 1);
    (first..pods).rev().take(exits).collect()
}

/// Milliseconds from killing (`SIGKILL`) container `c0` of pod `bench-<index>` until `/pods` says it
/// exited (state terminated, a higher restart count or another container id). Each `/pods` poll's
/// own time (the GET and its parse) goes into `polls`: it bounds how finely this can measure.
fn exit_latency(
    agent: &mut Agent,
    fixture: &RuntimeFixture,
    index: usize,
    timeout: Duration,
    polls: &mut PollCost,
) -> Result<f64> {
    let pod = find_pod(&agent.get("/pods")?, index).with_context(|| format!("no bench-{index}"))?;
    let status = first_container(&pod).context("no status of c0")?;
    let id = container_id(&status).context("c0 has no container id")?;
    let restarts = status["restartCount"].as_u64().unwrap_or_default();
    let pid = task_pid(&cmd::capture(fixture.ctr().args(["tasks", "ls"]))?, &id)
        .with_context(|| format!("no task for container {id}"))?;
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing {pid}"))?;
    // The clock stops when the answer that shows the exit arrived, not after parsing it: the
    // parse is the driver's cost, not the agent's. An answer equal to the one before is not
    // parsed again, so polls come as often as the agent answers.
    let mut last = String::new();
    let answered = poll("the exit shows", CHANGE_POLL, timeout, || {
        agent.check_alive()?;
        let started = Instant::now();
        let body = agent.get("/pods").unwrap_or_default();
        let answered = Instant::now();
        let shown = body != last && shows_exit(&body, index, &id, restarts);
        last = body;
        polls.add(started.elapsed());
        Ok(shown.then_some(answered))
    })?;
    Ok(answered.duration_since(killed).as_secs_f64() * 1e3)
}

/// Just what an exit poll reads of a `/pods` body; parsing into these rather than a
/// `serde_json::Value` keeps each poll cheap, so polls come often.
#[derive(Deserialize)]
struct PodList {
    items: Vec<ListedPod>,
}

#[derive(Deserialize)]
struct ListedPod {
    metadata: ListedMeta,
    #[serde(default)]
    status: ListedStatus,
}

#[derive(Deserialize)]
struct ListedMeta {
    name: String,
}

#[derive(Deserialize, Default)]
struct ListedStatus {
    #[serde(default, rename = "containerStatuses")]
    container_statuses: Vec<Value>,
}

/// Whether `/pods` body `body` shows container `c0` of `bench-<index>` (id `id`, restarted
/// `restarts` times) exited.
fn shows_exit(body: &str, index: usize, id: &str, restarts: u64) -> bool {
    let name = format!("bench-{index}-{NODE_NAME}");
    let Ok(list) = serde_json::from_str::<PodList>(body) else {
        return false;
    };
    list.items
        .iter()
        .filter(|pod| pod.metadata.name == name)
        .flat_map(|pod| &pod.status.container_statuses)
        .any(|c| c["name"] == "c0" && exited(c, id, restarts))
}

/// The time the exit polls themselves took.
#[derive(Debug, Default)]
struct PollCost {
    total: Duration,
    count: u32,
}

impl PollCost {
    fn add(&mut self, took: Duration) {
        self.total += took;
        self.count += 1;
    }

    fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total.as_secs_f64() * 1e3 / f64::from(self.count))
    }
}

fn first_container(pod: &Value) -> Option<Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "c0")
        .cloned()
}

fn container_id(status: &Value) -> Option<String> {
    let id = status["containerID"].as_str()?;
    Some(id.split_once("://").map_or(id, |(_, id)| id).to_owned())
}

/// Whether a container status shows that container `id` (restarted `restarts` times) exited:
/// terminated; or waiting out a restart back-off with it as the last termination (as upstream
/// shows a crash loop, restart count unchanged until the restart); or already restarted.
fn exited(status: &Value, id: &str, restarts: u64) -> bool {
    let last = &status["lastState"]["terminated"]["containerID"];
    status["state"]["terminated"].is_object()
        || last.as_str().is_some_and(|last| last.ends_with(id))
        || status["restartCount"].as_u64().unwrap_or_default() > restarts
        || container_id(status).is_some_and(|now| now != id)
}

/// kernlet's `kernlet_pleg_exit_to_status_seconds` histogram as a `/metrics` body shows it.
#[derive(Debug, Default, Clone, PartialEq)]
struct OwnExits {
    sum: f64,
    count: f64,
    /// `(le, cumulative count)` in the body's order (ascending `le`, `+Inf` last).
    buckets: Vec<(f64, f64)>,
}

impl OwnExits {
    const NAME: &'static str = "kernlet_pleg_exit_to_status_seconds";

    /// The histogram in `metrics`, or `None` when the agent has none (the kubelet).
    fn read(metrics: &str) -> Option<Self> {
        let mut own = Self::default();
        let mut seen = false;
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(Self::NAME) else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series == "_sum" {
                own.sum = value;
                seen = true;
            } else if series == "_count" {
                own.count = value;
            } else if let Some(le) = series
                .strip_prefix("_bucket{le=\"")
                .and_then(|l| l.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                own.buckets.push((le, value));
            }
        }
        seen.then_some(own)
    }

    /// The observations made after `before` was read.
    fn since(&self, before: &Self) -> Self {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| b.to_bits() == le.to_bits())
                .map_or(0.0, |(_, c)| *c)
        };
        Self {
            sum: self.sum - before.sum,
            count: self.count - before.count,
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, c - earlier(le)))
                .collect(),
        }
    }

    fn mean_ms(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count * 1e3)
    }

    /// The upper bound of the bucket holding the 99th percentile (nearest rank), in ms: the
    /// histogram cannot say more precisely.
    fn p99_ms(&self) -> Option<f64> {
        let rank = (0.99 * self.count).ceil().max(1.0);
        (self.count > 0.0)
            .then(|| self.buckets.iter().find(|(_, c)| *c >= rank))?
            .map(|(le, _)| le * 1e3)
    }
}

/// The pid of task `id` in `ctr tasks ls` output (`TASK PID STATUS` columns).
fn task_pid(listing: &str, id: &str) -> Option<i32> {
    listing.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next()? == id).then(|| cols.next()?.parse().ok())?
    })
}

/// Fails unless the plan measures something (pods, rounds and containers above 0).
pub fn check_plan(plan: &Plan) -> Result<()> {
    if plan.pods == 0 || plan.rounds == 0 || plan.containers.contains(&0) {
        bail!("nothing to measure: give pods, rounds and containers above 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_carry_requests_limits_and_every_container() {
        let text = pod_manifest(4, 3, 3601);
        assert!(text.contains("name: bench-4\n"));
        assert_eq!(text.matches("image: kernlet.local/busybox:1").count(), 3);
        assert!(text.contains("- name: c2\n"));
        assert!(text.contains("[\"sleep\", \"3601\"]"));
        assert!(text.contains("limits: {cpu: 50m, memory: 32Mi}"));
        assert!(text.contains("imagePullPolicy: Never"));
    }

    #[test]
    fn the_agents_own_exits_are_read_off_metrics() {
        let before = OwnExits::read(
            "kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.01\"} 1\n\
             kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.1\"} 1\n\
             kernlet_pleg_exit_to_status_seconds_bucket{le=\"+Inf\"} 1\n\
             kernlet_pleg_exit_to_status_seconds_sum 0.002\n\
             kernlet_pleg_exit_to_status_seconds_count 1\n",
        )
        .unwrap();
        let after = OwnExits::read(
            "kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.01\"} 3\n\
             kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.1\"} 4\n\
             kernlet_pleg_exit_to_status_seconds_bucket{le=\"+Inf\"} 4\n\
             kernlet_pleg_exit_to_status_seconds_sum 0.092\n\
             kernlet_pleg_exit_to_status_seconds_count 4\n",
        )
        .unwrap();
        let run = after.since(&before);
        assert!((run.count - 3.0).abs() < 1e-9);
        assert!((run.mean_ms().unwrap() - 30.0).abs() < 1e-9);
        // Two of the three in the 10 ms bucket, the third in the 100 ms one: p99 is its bound.
        assert_eq!(run.p99_ms(), Some(100.0));
        assert_eq!(OwnExits::default().p99_ms(), None);
        assert_eq!(
            OwnExits::read("kubelet_pleg_relist_duration_seconds_count 9\n"),
            None
        );
    }

    #[test]
    fn exits_are_seen_three_ways() {
        let running = serde_json::json!({"name": "c0", "containerID": "containerd://abc",
            "restartCount": 0, "state": {"running": {}}});
        assert!(!exited(&running, "abc", 0));
        let terminated = serde_json::json!({"containerID": "containerd://abc",
            "restartCount": 0, "state": {"terminated": {"exitCode": 137}}});
        assert!(exited(&terminated, "abc", 0));
        let restarted = serde_json::json!({"containerID": "containerd://def",
            "restartCount": 1, "state": {"running": {}}});
        assert!(exited(&restarted, "abc", 0));
        let backing_off = serde_json::json!({"containerID": "containerd://abc",
            "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "containerID": "containerd://abc"}}});
        assert!(exited(&backing_off, "abc", 1));
        let earlier = serde_json::json!({"containerID": "containerd://abc",
            "restartCount": 1, "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 137, "containerID": "containerd://xyz"}}});
        assert!(!exited(&earlier, "abc", 1));
        assert_eq!(container_id(&running).as_deref(), Some("abc"));
    }

    #[test]
    fn finds_pods_and_task_pids() {
        let body = format!(
            r#"{{"items": [{{"metadata": {{"name": "bench-1-{NODE_NAME}", "uid": "u"}},
            "status": {{"containerStatuses": [{{"name": "c0", "state": {{"running": {{}}}}}}]}}}}]}}"#
        );
        let pod = find_pod(&body, 1).unwrap();
        assert!(all_running(&pod));
        assert!(find_pod(&body, 2).is_none());
        assert_eq!(first_container(&pod).unwrap()["name"], "c0");
        let exited_body = format!(
            r#"{{"items": [{{"metadata": {{"name": "bench-1-{NODE_NAME}"}}, "spec": {{}},
            "status": {{"containerStatuses": [{{"name": "c0", "containerID": "containerd://abc",
            "restartCount": 0, "state": {{"terminated": {{"exitCode": 137}}}}}}]}}}},
            {{"metadata": {{"name": "bench-2-{NODE_NAME}"}}}}]}}"#
        );
        assert!(shows_exit(&exited_body, 1, "abc", 0));
        assert!(!shows_exit(&exited_body, 2, "abc", 0));
        assert!(!shows_exit(&body, 1, "abc", 0));
        assert!(!shows_exit("{broken", 1, "abc", 0));
        let listing = "TASK    PID     STATUS\nabc     4242    RUNNING\ndef     7   RUNNING\n";
        assert_eq!(task_pid(listing, "def"), Some(7));
        assert_eq!(task_pid(listing, "xyz"), None);
    }

    #[test]
    fn the_changed_pod_is_never_a_victim() {
        assert_eq!(exit_victims(10, 3), [9, 8, 7]);
        assert_eq!(exit_victims(2, 3), [1]);
        assert_eq!(exit_victims(1, 3), [0]);
    }
}
