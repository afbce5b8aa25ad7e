//! The pods a collection round reads, kept across rounds and keyed by pod UID and the status
//! store's revision of that pod: a round asks the store only for the revisions, and fetches (and
//! digests into cgroup paths, labels and cAdvisor specs) only the pods whose status changed. The
//! store's revision is the node-side twin of `metadata.generation`: it moves whenever the pod's
//! status does, which is when containers start, stop or are replaced.
//!
//! Without it every round cloned every `Pod` and rebuilt each container's spec (~52 µs per
//! container per round, of which the cgroup reads were ~4.5 µs; issue 10).
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time as MetaTime};

use super::{host, metrics::cadvisor::ContainerSpec, summary::PodReference};
use crate::status::store::PodsProvider;

/// What a round needs of one running container.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedContainer {
    pub name: String,
    /// The runtime's container id.
    pub id: String,
    pub image: String,
    pub start_time: Option<SystemTime>,
    pub spec: ContainerSpec,
}

/// What a round needs of one pod: its running containers, digested once per revision.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedPod {
    pub revision: u64,
    pub pod_ref: PodReference,
    pub start_time: Option<SystemTime>,
    /// Its pod cgroup (relative to the cgroup mount) when kernlet manages pod cgroups.
    pub cgroup: Option<String>,
    pub containers: Vec<IndexedContainer>,
}

/// The pods by UID, in `(namespace, name)` order for the snapshot.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, IndexedPod>,
    order: Vec<String>,
    /// Pods digested since the index was made (the cost the index saves is the rest).
    pub digested: u64,
}

impl PodIndex {
    /// Brings the index up to date with `provider`; `pod_cgroup` names a pod's cgroup when pod
    /// cgroups are kernlet's. A provider without revisions (a test's closure) is read whole.
    pub fn refresh(
        &mut self,
        provider: &dyn PodsProvider,
        pod_cgroup: &dyn Fn(&Pod) -> Option<String>,
    ) {
        let Some(revisions) = provider.revisions() else {
            self.pods.clear();
            for pod in provider.pods() {
                self.insert(&pod, 0, pod_cgroup);
            }
            self.reorder();
            return;
        };
        let live: HashSet<&str> = revisions.iter().map(|(uid, _)| uid.as_str()).collect();
        let before = self.pods.len();
        self.pods.retain(|uid, _| live.contains(uid.as_str()));
        let mut changed = self.pods.len() != before;
        for (uid, revision) in &revisions {
            if self.pods.get(uid).is_some_and(|p| p.revision == *revision) {
                continue;
            }
            // Gone between the two calls: the next round drops it.
            if let Some(pod) = provider.pod(uid) {
                self.insert(&pod, *revision, pod_cgroup);
                changed = true;
            }
        }
        if changed {
            self.reorder();
        }
    }

    /// The pods in `(namespace, name)` order.
    pub fn pods(&self) -> impl Iterator<Item = &IndexedPod> {
        self.order.iter().filter_map(|uid| self.pods.get(uid))
    }

    fn insert(&mut self, pod: &Pod, revision: u64, pod_cgroup: &dyn Fn(&Pod) -> Option<String>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.digested += 1;
        let indexed = digest(pod, uid.clone(), revision, pod_cgroup);
        self.pods.insert(uid, indexed);
    }

    fn reorder(&mut self) {
        let mut order: Vec<(&str, &str, &String)> = self
            .pods
            .iter()
            .map(|(uid, p)| (p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str(), uid))
            .collect();
        order.sort();
        self.order = order.into_iter().map(|(_, _, uid)| uid.clone()).collect();
    }
}

/// One pod as a round reads it: only containers that run and have a runtime id.
fn digest(
    pod: &Pod,
    uid: String,
    revision: u64,
    pod_cgroup: &dyn Fn(&Pod) -> Option<String>,
) -> IndexedPod {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|container| {
            let running = container.state.as_ref()?.running.as_ref()?;
            Some(IndexedContainer {
                name: container.name.clone(),
                id: host::runtime_id(container)?.to_owned(),
                image: container.image.clone(),
                start_time: running.started_at.as_ref().map(to_system_time),
                spec: container_spec(pod, &container.name),
            })
        })
        .collect();
    IndexedPod {
        revision,
        pod_ref: PodReference {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid,
        },
        start_time: status
            .and_then(|s| s.start_time.as_ref())
            .map(to_system_time),
        cgroup: pod_cgroup(pod),
        containers,
    }
}

fn to_system_time(time: &MetaTime) -> SystemTime {
    let ts = time.0;
    let secs = u64::try_from(ts.as_second()).unwrap_or(0);
    let nanos = u32::try_from(ts.subsec_nanosecond()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// The limits the pod spec gives container `name`, as cAdvisor reports a container's spec.
fn container_spec(pod: &Pod, name: &str) -> ContainerSpec {
    use crate::resources::{
        QUOTA_PERIOD_US, container_resources, milli_cpu_to_quota, milli_cpu_to_shares,
    };
    let Some(container) = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
    else {
        return ContainerSpec::default();
    };
    let Ok(resources) = container_resources(pod, container) else {
        return ContainerSpec::default();
    };
    let shares = resources
        .requests
        .cpu_millis
        .or(resources.limits.cpu_millis)
        .unwrap_or(0);
    let quota = resources
        .limits
        .cpu_millis
        .map(|m| milli_cpu_to_quota(m, QUOTA_PERIOD_US) as u64);
    ContainerSpec {
        cpu_period_us: Some(QUOTA_PERIOD_US as u64),
        cpu_quota_us: quota,
        cpu_shares: Some(milli_cpu_to_shares(shares) as u64),
        memory_limit: resources.limits.memory_bytes.map(|m| m as u64),
        ..ContainerSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::{
        api::core::v1::{
            Container, ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    /// A status store stand-in that counts the pods handed out.
    #[derive(Default)]
    struct Store {
        pods: Mutex<Vec<(Pod, u64)>>,
        fetched: Mutex<u64>,
    }

    impl PodsProvider for Store {
        fn pods(&self) -> Vec<Pod> {
            self.pods
                .lock()
                .unwrap()
                .iter()
                .map(|(p, _)| p.clone())
                .collect()
        }
        fn revisions(&self) -> Option<Vec<(String, u64)>> {
            let pods = self.pods.lock().unwrap();
            Some(
                pods.iter()
                    .map(|(p, r)| (p.metadata.uid.clone().unwrap(), *r))
                    .collect(),
            )
        }
        fn pod(&self, uid: &str) -> Option<Pod> {
            *self.fetched.lock().unwrap() += 1;
            let pods = self.pods.lock().unwrap();
            let found = pods
                .iter()
                .find(|(p, _)| p.metadata.uid.as_deref() == Some(uid));
            found.map(|(p, _)| p.clone())
        }
    }

    fn pod(name: &str, running: &[&str]) -> Pod {
        let status = |c: &&str| ContainerStatus {
            name: (*c).to_owned(),
            image: "busybox".to_owned(),
            container_id: Some(format!("containerd://{name}-{c}")),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: running
                    .iter()
                    .map(|c| Container {
                        name: (*c).to_owned(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(running.iter().map(status).collect()),
                ..PodStatus::default()
            }),
        }
    }

    fn names(index: &PodIndex) -> Vec<(String, usize)> {
        index
            .pods()
            .map(|p| (p.pod_ref.name.clone(), p.containers.len()))
            .collect()
    }

    #[test]
    fn only_pods_with_a_new_revision_are_fetched_again() {
        let store = Store::default();
        *store.pods.lock().unwrap() = vec![(pod("b", &["main"]), 1), (pod("a", &["x", "y"]), 2)];
        let cgroup = |p: &Pod| Some(format!("kubepods/pod{}", p.metadata.uid.as_deref()?));
        let mut index = PodIndex::default();
        index.refresh(&store, &cgroup);
        assert_eq!(names(&index), [("a".to_owned(), 2), ("b".to_owned(), 1)]);
        let a = index.pods().next().unwrap();
        assert_eq!(a.cgroup.as_deref(), Some("kubepods/poduid-a"));
        assert_eq!(a.containers[1].id, "a-y");
        assert_eq!(*store.fetched.lock().unwrap(), 2);

        // Nothing changed: no pod is fetched or digested.
        index.refresh(&store, &cgroup);
        assert_eq!((*store.fetched.lock().unwrap(), index.digested), (2, 2));

        // b's container stopped (new revision), a went away, c came.
        *store.pods.lock().unwrap() = vec![(pod("b", &[]), 3), (pod("c", &["main"]), 4)];
        index.refresh(&store, &cgroup);
        assert_eq!(names(&index), [("b".to_owned(), 0), ("c".to_owned(), 1)]);
        assert_eq!((*store.fetched.lock().unwrap(), index.digested), (4, 4));
    }

    #[test]
    fn a_provider_without_revisions_is_read_whole_each_time() {
        let pods = vec![pod("a", &["main"])];
        let provider: Box<dyn PodsProvider> = Box::new(move || pods.clone());
        let mut index = PodIndex::default();
        index.refresh(provider.as_ref(), &|_| None);
        index.refresh(provider.as_ref(), &|_| None);
        assert_eq!(names(&index), [("a".to_owned(), 1)]);
        assert_eq!(index.digested, 2);
        assert_eq!(index.pods().next().unwrap().cgroup, None);
    }
}
