//! Events in cluster mode: what pod workers, probes and the node record becomes `core/v1` Events
//! in the API server, as the upstream kubelet's event broadcaster writes them (source
//! `kubelet` on this host, `reportingComponent` `kubelet`, the involved object's namespace, or
//! `default` for the node).
//!
//! [`ApiEvents`] only queues (1000 events, upstream's queue length; beyond it events are dropped
//! rather than making a pod worker wait). [`EventWriter`] correlates them
//! ([`super::correlate`]) and creates or patches them through a client of its own, limited by
//! `eventRecordQPS`/`eventBurst` as upstream's event client is; a failed write is tried again up to 12 times, 10 s apart (upstream's
//! `maxTriesPerEvent` and sleep), except for answers no retry can change (already exists, a
//! refusal, an invalid object).
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event as ApiEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::correlate::{Correlator, Write};
use crate::event::{Event, EventSink};
use crate::stats::metrics::Metrics;

const QUEUE: usize = 1000;
const TRIES: u32 = 12;
const RETRY_EVERY: Duration = Duration::from_secs(10);
const COMPONENT: &str = "kubelet";

/// The node's event sink in cluster mode.
#[derive(Debug)]
pub struct ApiEvents {
    queue: mpsc::Sender<Event>,
}

impl EventSink for ApiEvents {
    fn record(&self, event: Event) {
        if let Err(error) = self.queue.try_send(event) {
            let event = match error {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            tracing::debug!(reason = %event.reason, name = %event.involved.name,
                "event dropped: the event queue is full");
        }
    }
}

/// Writes the queued events.
pub struct EventWriter {
    pub client: kube::Client,
    pub node_name: String,
    pub metrics: Arc<Metrics>,
    queue: Mutex<mpsc::Receiver<Event>>,
}

/// A sink and the writer draining it.
#[must_use]
pub fn channel(
    client: kube::Client,
    node_name: String,
    metrics: Arc<Metrics>,
) -> (ApiEvents, EventWriter) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = EventWriter {
        client,
        node_name,
        metrics,
        queue: Mutex::new(rx),
    };
    (ApiEvents { queue: tx }, writer)
}

fn now() -> (Timestamp, i64) {
    let wall = crate::clock::wall();
    let stamp = Timestamp::try_from(wall).unwrap_or(Timestamp::UNIX_EPOCH);
    let nanos = i64::try_from(stamp.as_nanosecond()).unwrap_or(i64::MAX);
    (stamp, nanos)
}

impl EventWriter {
    /// Drains the queue until cancelled (a restart of this task keeps the queue).
    pub async fn run(&self, cancel: &CancellationToken) {
        let mut queue = self.queue.lock().await;
        let mut correlator = Correlator::default();
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = queue.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let (stamp, nanos) = now();
            let Some(write) = correlator.observe(event, tokio::time::Instant::now(), nanos) else {
                continue;
            };
            if cancel
                .run_until_cancelled(self.write_with_retries(&write, stamp))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    async fn write_with_retries(&self, write: &Write, stamp: Timestamp) {
        for attempt in 1..=TRIES {
            let result = self.write(write, stamp).await;
            self.metrics.count_api_request("event", result.is_ok());
            match result {
                Ok(()) => return,
                Err(error) if !retriable(&error) => {
                    tracing::debug!(%error, "event not written");
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, "writing an event failed; trying again");
                    if attempt < TRIES {
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                }
            }
        }
    }

    async fn write(&self, write: &Write, stamp: Timestamp) -> Result<(), kube::Error> {
        match write {
            Write::Create { name, event } => self.create(name, event, 1, stamp, stamp).await,
            Write::Update {
                name,
                event,
                count,
                first_seen,
            } => {
                let api = self.api(event);
                let patch = serde_json::json!({
                    "count": count,
                    "lastTimestamp": Time(stamp),
                    "message": event.message,
                });
                let patched = api
                    .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await;
                match patched {
                    Ok(_) => Ok(()),
                    // Gone (expired, deleted): upstream creates it again.
                    Err(error) if super::is_status(&error, 404) => {
                        let first =
                            Timestamp::from_nanosecond(i128::from(*first_seen)).unwrap_or(stamp);
                        self.create(name, event, *count, first, stamp).await
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }

    fn api(&self, event: &Event) -> Api<ApiEvent> {
        let namespace = event_namespace(event);
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn create(
        &self,
        name: &str,
        event: &Event,
        count: u32,
        first: Timestamp,
        last: Timestamp,
    ) -> Result<(), kube::Error> {
        let object = api_event(&self.node_name, name, event, count, (first, last));
        self.api(event)
            .create(&PostParams::default(), &object)
            .await
            .map(|_| ())
    }
}

/// Where an event about `event.involved` lives: its namespace, or `default`.
fn event_namespace(event: &Event) -> &str {
    if event.involved.namespace.is_empty() {
        "default"
    } else {
        &event.involved.namespace
    }
}

/// Whether a failed write may succeed later: not after the API server refused or rejected it.
fn retriable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// The `core/v1` Event the upstream kubelet would write.
#[must_use]
pub fn api_event(
    node: &str,
    name: &str,
    event: &Event,
    count: u32,
    (first, last): (Timestamp, Timestamp),
) -> ApiEvent {
    let involved = &event.involved;
    let some = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    ApiEvent {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(event_namespace(event).to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some(involved.kind.to_owned()),
            namespace: some(&involved.namespace),
            name: some(&involved.name),
            uid: some(&involved.uid),
            field_path: some(&involved.field_path),
            resource_version: None,
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: Some(node.to_owned()),
        }),
        first_timestamp: Some(Time(first)),
        last_timestamp: Some(Time(last)),
        count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
        type_: Some(event.kind.as_str().to_owned()),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(node.to_owned()),
        ..ApiEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Involved};

    #[test]
    fn events_have_upstream_fields() {
        let event = Event {
            involved: Involved::node("n1"),
            kind: EventType::Normal,
            reason: "NodeReady".to_owned(),
            message: "Node n1 status is now: NodeReady".to_owned(),
        };
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let object = serde_json::to_value(api_event("n1", "n1.abc", &event, 2, (t, t))).unwrap();
        assert_eq!(object["metadata"]["namespace"], "default");
        assert_eq!(
            object["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n1"})
        );
        assert_eq!(
            object["source"],
            serde_json::json!({"component": "kubelet", "host": "n1"})
        );
        assert_eq!(object["count"], 2);
        assert_eq!(object["type"], "Normal");
        assert_eq!(object["reportingComponent"], "kubelet");
        assert_eq!(object["firstTimestamp"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let api = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        assert!(retriable(&api(503)));
        assert!(retriable(&api(429)));
        assert!(!retriable(&api(409)));
        assert!(!retriable(&api(403)));
    }
}
