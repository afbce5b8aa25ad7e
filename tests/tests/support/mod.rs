//! Helpers shared by the `host_lifecycle` and `host_runtime_restart` tests: manifests, status
//! accessors and a CRI view of what the runtime holds for a pod.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use kernlet_cri::v1::{
    ContainerFilter, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
    runtime_service_client::RuntimeServiceClient,
};
use kernlet_tests::node::TestNode;
use serde_json::Value;
use tonic::transport::Channel;

pub mod cluster;

pub const IMAGE: &str = "kernlet.local/busybox:1";
/// How long a test waits for a state kernlet must reach (pods running, gone, restarted). An
/// upper bound for failing, never a pause: generous, since a loaded machine is slow, not wrong.
pub const WAIT: Duration = Duration::from_mins(2);
/// The same inside the node VM, where qemu's TCG on a busy host makes every container start
/// several times slower (10 pod sandboxes took 40 s in one loaded CI run).
pub const VM_WAIT: Duration = Duration::from_mins(5);
/// The label every kubelet-managed sandbox and container carries.
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// A container of a manifest: `name`, a shell `script`, and extra YAML lines (already indented
/// for a container's fields, e.g. `"    volumeMounts: ..."`).
pub fn container(name: &str, script: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    image: {IMAGE}\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", {script:?}]\n{extra}"
    )
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

/// The status of app container `name`.
pub fn status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    named(&pod["status"]["containerStatuses"], name)
}

/// The status of init container `name`.
pub fn init_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    named(&pod["status"]["initContainerStatuses"], name)
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .unwrap_or(&Value::Null)
}

pub fn waiting_reason(status: &Value) -> &str {
    status["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
}

/// The waiting reasons kernlet logged for container `name` of pod `uid`, in order, without
/// repeats. kernlet writes a "container cannot start" line each time it records a reason, so a
/// reason that shows for half a second is there as surely as one that shows for a minute;
/// sampling `/pods` would catch the first only by luck.
pub fn logged_waiting_reasons(log: &str, uid: &str, name: &str) -> Vec<String> {
    let (uid, name) = (format!("uid={uid}"), format!("container={name}"));
    let mut reasons: Vec<String> = Vec::new();
    for line in log.lines().map(strip_ansi) {
        if !line.contains("container cannot start") {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.contains(&uid.as_str()) || !fields.contains(&name.as_str()) {
            continue;
        }
        if let Some(reason) = fields.iter().find_map(|f| f.strip_prefix("reason="))
            && reasons.last().is_none_or(|last| last != reason)
        {
            reasons.push(reason.to_owned());
        }
    }
    reasons
}

/// `line` without terminal colour sequences (`ESC [ ... m`), which kernlet's log may carry.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence: its final byte is a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A status time (`2006-01-02T15:04:05Z`, as the API serialises seconds-truncated times) as Unix
/// seconds.
pub fn seconds(time: &Value) -> Result<i64> {
    let text = time
        .as_str()
        .with_context(|| format!("not a time: {time}"))?;
    let parse = || -> Option<i64> {
        let (date, clock) = text.strip_suffix('Z')?.split_once('T')?;
        let mut date = date.splitn(3, '-').map(str::parse::<i64>);
        let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
        let mut clock = clock.splitn(3, ':').map(str::parse::<i64>);
        let (hour, minute, second) = (
            clock.next()?.ok()?,
            clock.next()?.ok()?,
            clock.next()?.ok()?,
        );
        // Days since the epoch from the civil date (Howard Hinnant's `days_from_civil`).
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
    };
    parse().with_context(|| format!("not an RFC 3339 UTC time in seconds: {text}"))
}

/// What the runtime holds for one pod, through CRI (not through kernlet).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeView {
    /// Sandbox ids with their CRI state (0 ready, 1 not ready).
    pub sandboxes: Vec<(String, i32)>,
    /// Container ids with their container name label and CRI state.
    pub containers: Vec<(String, String, i32)>,
}

/// Runs `calls` against `node`'s containerd through a CRI client of the test's own (not
/// kernlet's), on a runtime of its own.
pub fn with_cri<T>(
    node: &TestNode,
    calls: impl AsyncFnOnce(&mut RuntimeServiceClient<Channel>) -> Result<T>,
) -> Result<T> {
    let endpoint = node
        .fixture
        .as_ref()
        .context("the node has no runtime fixture")?
        .endpoint_uri();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let channel = kernlet_cri::connect(&endpoint, Duration::from_secs(5)).await?;
            let mut client = RuntimeServiceClient::new(channel)
                .max_decoding_message_size(kernlet_cri::MAX_MESSAGE_SIZE);
            calls(&mut client).await
        })
}

/// The CRI filter for everything labelled with pod `uid`.
pub fn pod_selector(uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())])
}

/// The runtime's containers matching `selector` (see [`pod_selector`]).
pub async fn pod_containers(
    client: &mut RuntimeServiceClient<Channel>,
    selector: HashMap<String, String>,
) -> Result<Vec<kernlet_cri::v1::Container>> {
    Ok(client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers)
}

/// Lists the sandboxes and containers labelled with pod `uid` on `node`'s containerd.
pub fn runtime_view(node: &TestNode, uid: &str) -> Result<RuntimeView> {
    let selector = pod_selector(uid);
    with_cri(node, async move |client| {
        let sandboxes = client
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let containers = pod_containers(client, selector).await?;
        Ok(RuntimeView {
            sandboxes: sandboxes.into_iter().map(|s| (s.id, s.state)).collect(),
            containers: containers
                .into_iter()
                .map(|c| {
                    let name = c
                        .labels
                        .get("io.kubernetes.container.name")
                        .cloned()
                        .unwrap_or_default();
                    (c.id, name, c.state)
                })
                .collect(),
        })
    })
}
