//! Kubernetes events: what happened to a pod, a container or the node, with upstream's reasons
//! and messages (`pkg/kubelet/events/event.go` and the call sites that record them), handed to
//! an [`EventSink`].
//!
//! Recording never blocks and never fails: the code that acts (a pod worker, a probe) must not
//! wait for an API server. In standalone mode there is nowhere to store events, as for the
//! upstream kubelet without a client, so [`LogSink`] writes them to the log at debug level
//! (`RUST_LOG=kernlet::event=debug`); in cluster mode the `cluster` layer's sink correlates,
//! rate-limits and writes them as `core/v1` Events.
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

/// Upstream's reasons (`pkg/kubelet/events`).
pub mod reason {
    pub const CREATED: &str = "Created";
    pub const STARTED: &str = "Started";
    pub const FAILED: &str = "Failed";
    pub const KILLING: &str = "Killing";
    pub const BACK_OFF: &str = "BackOff";
    pub const PULLING: &str = "Pulling";
    pub const PULLED: &str = "Pulled";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const PROBE_WARNING: &str = "ProbeWarning";
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    /// A volume could not be set up (about the pod; its containers wait in
    /// `ContainerCreating`).
    pub const FAILED_MOUNT: &str = "FailedMount";
    pub const STARTING: &str = "Starting";
}

/// `Normal` or `Warning`, as `core/v1` Event `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// The object an event is about: the fields of upstream's `ObjectReference` the kubelet fills.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Involved {
    /// `Pod` or `Node`.
    pub kind: &'static str,
    /// Empty for the node.
    pub namespace: String,
    pub name: String,
    /// The pod's UID; for the node, its name (as upstream's node reference).
    pub uid: String,
    /// `spec.containers{name}`, `spec.initContainers{name}`, or empty for the object itself.
    pub field_path: String,
}

impl Involved {
    /// The pod itself.
    #[must_use]
    pub fn pod(pod: &Pod) -> Self {
        Self {
            kind: "Pod",
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: String::new(),
        }
    }

    /// One container of the pod, by name: its field path says which list it is in.
    #[must_use]
    pub fn container(pod: &Pod, container: &str) -> Self {
        let spec = pod.spec.as_ref();
        let is_init = spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|list| list.iter().any(|c| c.name == container));
        let list = if is_init {
            "initContainers"
        } else {
            "containers"
        };
        Self {
            field_path: format!("spec.{list}{{{container}}}"),
            ..Self::pod(pod)
        }
    }

    /// The node named `name`.
    #[must_use]
    pub fn node(name: &str) -> Self {
        Self {
            kind: "Node",
            namespace: String::new(),
            name: name.to_owned(),
            uid: name.to_owned(),
            field_path: String::new(),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub involved: Involved,
    pub kind: EventType,
    pub reason: String,
    pub message: String,
}

/// Where events go. `record` must return at once: it is called from pod workers and probes.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: Event);
}

/// Standalone mode's sink: the log.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn record(&self, event: Event) {
        let Event {
            involved,
            kind,
            reason,
            message,
        } = event;
        tracing::debug!(target: "kernlet::event", kind = involved.kind,
            namespace = %involved.namespace, name = %involved.name,
            field_path = %involved.field_path, r#type = kind.as_str(), %reason, "{message}");
    }
}

/// A cheap handle to the node's event sink, with upstream's shapes of events.
#[derive(Debug, Clone)]
pub struct Recorder {
    sink: Arc<dyn EventSink>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(Arc::new(LogSink))
    }
}

impl Recorder {
    #[must_use]
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        Self { sink }
    }

    /// Records an event about `involved`.
    pub fn record(
        &self,
        involved: Involved,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.sink.record(Event {
            involved,
            kind,
            reason: reason.to_owned(),
            message: message.into(),
        });
    }

    /// An event about the pod itself.
    pub fn pod(&self, pod: &Pod, kind: EventType, reason: &str, message: impl Into<String>) {
        self.record(Involved::pod(pod), kind, reason, message);
    }

    /// An event about container `container` of `pod`.
    pub fn container(
        &self,
        pod: &Pod,
        container: &str,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record(Involved::container(pod, container), kind, reason, message);
    }

    /// A recorder of events about `involved` only.
    #[must_use]
    pub fn about(&self, involved: Involved) -> Scoped<'_> {
        Scoped {
            recorder: self,
            involved,
        }
    }
}

/// Events about one object (a container, while it is being started or stopped).
#[derive(Debug)]
pub struct Scoped<'a> {
    recorder: &'a Recorder,
    involved: Involved,
}

impl Scoped<'_> {
    pub fn normal(&self, reason: &str, message: impl Into<String>) {
        let involved = self.involved.clone();
        self.recorder
            .record(involved, EventType::Normal, reason, message);
    }

    pub fn warning(&self, reason: &str, message: impl Into<String>) {
        let involved = self.involved.clone();
        self.recorder
            .record(involved, EventType::Warning, reason, message);
    }
}

/// `d` as Go's `time.Duration` prints it (`523ms`, `15.981s`, `1m2.5s`), for upstream's
/// messages that carry durations.
#[must_use]
pub fn go_duration(d: std::time::Duration) -> String {
    fn fraction(whole: u128, rest: u128, width: usize) -> String {
        let digits = format!("{rest:0width$}");
        let digits = digits.trim_end_matches('0');
        if digits.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{digits}")
        }
    }
    let nanos = d.as_nanos();
    match nanos {
        0 => return "0s".to_owned(),
        1..1_000 => return format!("{nanos}ns"),
        1_000..1_000_000 => return format!("{}µs", fraction(nanos / 1_000, nanos % 1_000, 3)),
        1_000_000..1_000_000_000 => {
            return format!("{}ms", fraction(nanos / 1_000_000, nanos % 1_000_000, 6));
        }
        _ => {}
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let mut out = String::new();
    if hours > 0 {
        out = format!("{hours}h");
    }
    if secs >= 60 {
        out = format!("{out}{minutes}m");
    }
    let seconds = fraction(u128::from(secs % 60), u128::from(d.subsec_nanos()), 9);
    out.push_str(&seconds);
    out.push('s');
    out
}

/// A sink that keeps what it is given, for tests of the code that records.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Collected(pub std::sync::Mutex<Vec<Event>>);

#[cfg(test)]
impl EventSink for Collected {
    fn record(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}

#[cfg(test)]
impl Collected {
    /// `reason: message` of each event so far, in order.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map_or_else(
            |_| Vec::new(),
            |events| {
                events
                    .iter()
                    .map(|e| format!("{}: {}", e.reason, e.message))
                    .collect()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]}
        }))
        .unwrap()
    }

    #[test]
    fn container_references_name_their_list() {
        let pod = pod();
        assert_eq!(
            Involved::container(&pod, "app").field_path,
            "spec.containers{app}"
        );
        let init = Involved::container(&pod, "setup");
        assert_eq!(init.field_path, "spec.initContainers{setup}");
        assert_eq!((init.kind, init.uid.as_str()), ("Pod", "u1"));
        let node = Involved::node("n1");
        assert_eq!(
            (node.kind, node.uid.as_str(), node.namespace.as_str()),
            ("Node", "n1", "")
        );
    }

    #[test]
    fn durations_print_as_go_does() {
        use std::time::Duration;
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(250), "250ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(523), "523ms"),
            (Duration::from_millis(15_981), "15.981s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(62_500), "1m2.5s"),
            (Duration::from_hours(1), "1h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn recorder_hands_events_to_its_sink() {
        let sink = Arc::new(Collected::default());
        let recorder = Recorder::new(sink.clone());
        recorder.container(
            &pod(),
            "app",
            EventType::Normal,
            reason::STARTED,
            "Started container app",
        );
        assert_eq!(sink.lines(), ["Started: Started container app"]);
        assert_eq!(
            sink.0.lock().unwrap()[0].involved.field_path,
            "spec.containers{app}"
        );
    }
}
