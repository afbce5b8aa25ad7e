//! The settings of cluster mode (`--kubeconfig`): how the node registers and reports itself.
//!
//! Upstream: `registerNode`, `registerWithTaints`, `rotateCertificates`, `serverTLSBootstrap`, `nodeLeaseDurationSeconds` and
//! `nodeStatusMaxImages`, `eventRecordQPS`/`eventBurst` and `kubeAPIQPS`/`kubeAPIBurst` of
//! `KubeletConfiguration` v1beta1, and the flags `--node-labels`,
//! `--register-with-taints` and `--register-node` (`cmd/kubelet/app/options`). The labels a
//! kubelet may set on its own Node are those upstream's `IsKubeletLabel` allows: the
//! `NodeRestriction` admission plugin refuses the others, so the node would never register.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::reader::{Reader, get, set};

/// What a node registers and reports, in cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `registerNode` / `--register-node`: create the Node object (or adopt an existing one).
    pub register_node: bool,
    /// `registerWithTaints` / `--register-with-taints`: the taints a new Node is created with.
    pub register_with_taints: Vec<Taint>,
    /// `--node-labels`: extra labels of the Node, on top of the well-known ones.
    pub node_labels: BTreeMap<String, String>,
    /// `nodeLeaseDurationSeconds`; the Lease is renewed every quarter of it.
    pub node_lease_duration: Duration,
    /// `nodeStatusMaxImages`: how many images `status.images` lists; `None` for no cap (`-1`).
    pub node_status_max_images: Option<usize>,
    /// `eventRecordQPS` and `eventBurst`: event writes per second and their burst; a rate of 0
    /// is no limit.
    pub event_rate: ApiRate,
    /// `kubeAPIQPS` and `kubeAPIBurst`: every request to the API server.
    pub api_rate: ApiRate,
    /// `rotateCertificates` / `--rotate-certificates`: renew the client certificate through
    /// the certificates API before it expires.
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap` / `--rotate-server-certificates`: request the kubelet port's
    /// certificate through the certificates API (and renew it), instead of `tlsCertFile` or a
    /// self-signed one.
    pub server_tls_bootstrap: bool,
}

/// A request rate and its burst, as client-go's token-bucket limiter takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRate {
    pub qps: u32,
    pub burst: u32,
}

impl ApiRate {
    /// `kubeAPIQPS`/`kubeAPIBurst` as client-go applies them: zero means its defaults, 5 and 10.
    #[must_use]
    pub fn client(self) -> Self {
        Self {
            qps: if self.qps == 0 { 5 } else { self.qps },
            burst: if self.burst == 0 { 10 } else { self.burst },
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            register_node: true,
            register_with_taints: Vec::new(),
            node_labels: BTreeMap::new(),
            node_lease_duration: Duration::from_secs(40),
            node_status_max_images: Some(50),
            event_rate: ApiRate {
                qps: 50,
                burst: 100,
            },
            api_rate: ApiRate {
                qps: 50,
                burst: 100,
            },
            rotate_certificates: false,
            server_tls_bootstrap: false,
        }
    }
}

/// A Node taint (`core/v1` `Taint` without `timeAdded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// The `kubernetes.io`/`k8s.io` labels a kubelet may set (upstream `kubeletLabels` and
/// `kubeletLabelNamespaces` of `k8s.io/kubelet/pkg/apis`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Whether a kubelet may set label `key` on its Node (upstream `IsKubeletLabel`): any label
/// outside the `kubernetes.io` and `k8s.io` namespaces, and the listed ones within.
#[must_use]
pub fn is_kubelet_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let namespaced = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !namespaced("kubernetes.io") && !namespaced("k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

/// Parses one taint of `--register-with-taints`: `key=value:Effect` or `key:Effect`.
pub(super) fn parse_taint(spec: &str) -> Result<Taint, String> {
    let spec = spec.trim();
    let (key_value, effect) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {spec:?}: expected key=value:effect"))?;
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    taint(key, value, effect).map_err(|reason| format!("taint {spec:?}: {reason}"))
}

fn taint(key: &str, value: &str, effect: &str) -> Result<Taint, String> {
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if !EFFECTS.contains(&effect) {
        return Err(format!(
            "effect {effect:?} is not one of {}",
            EFFECTS.join(", ")
        ));
    }
    Ok(Taint {
        key: key.to_owned(),
        value: value.to_owned(),
        effect: effect.to_owned(),
    })
}

/// Parses `--node-labels`: `key=value` pairs, comma-separated; refuses the `kubernetes.io` and
/// `k8s.io` labels a kubelet may not set, as upstream does at start.
pub(super) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (key, value) = pair
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?}: expected key=value"))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let refused: Vec<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|key| !is_kubelet_label(key))
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {refused:?} \
             (--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix \
             ({}) or be in the specifically allowed set ({}))",
            KUBELET_LABEL_NAMESPACES.join(", "),
            KUBELET_LABELS.join(", ")
        ));
    }
    Ok(labels)
}

impl Reader<'_> {
    /// Reads the cluster-mode fields into `c`.
    pub(super) fn read_cluster(&mut self, root: &Map<String, Value>, c: &mut ClusterSettings) {
        set(&mut c.register_node, self.bool(root, "registerNode"));
        set(
            &mut c.rotate_certificates,
            self.bool(root, "rotateCertificates"),
        );
        set(
            &mut c.server_tls_bootstrap,
            self.bool(root, "serverTLSBootstrap"),
        );
        if let Some(seconds) = self
            .int(root, "nodeLeaseDurationSeconds", 0, i64::from(i32::MAX))
            .filter(|&seconds| seconds != 0)
        {
            c.node_lease_duration = Duration::from_secs(seconds.unsigned_abs());
        }
        if let Some(max) = self.int(root, "nodeStatusMaxImages", -1, i64::from(i32::MAX)) {
            c.node_status_max_images = usize::try_from(max).ok();
        }
        let mut rate = |name: &str, into: &mut u32| {
            if let Some(value) = self.int(root, name, 0, i64::from(i32::MAX)) {
                *into = u32::try_from(value).unwrap_or(u32::MAX);
            }
        };
        rate("eventRecordQPS", &mut c.event_rate.qps);
        rate("eventBurst", &mut c.event_rate.burst);
        rate("kubeAPIQPS", &mut c.api_rate.qps);
        rate("kubeAPIBurst", &mut c.api_rate.burst);
        let Some(value) = get(root, "registerWithTaints") else {
            return;
        };
        let Some(items) = value.as_array() else {
            self.invalid("registerWithTaints", value, "expected a list of taints");
            return;
        };
        c.register_with_taints.clear();
        for (index, item) in items.iter().enumerate() {
            let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default();
            match taint(field("key"), field("value"), field("effect")) {
                Ok(taint) => c.register_with_taints.push(taint),
                Err(reason) => self.invalid(&format!("registerWithTaints[{index}]"), item, reason),
            }
        }
    }
}

/// The fields' `/configz` values.
pub(super) fn configz_fields(c: &ClusterSettings, out: &mut Map<String, Value>) {
    out.insert("registerNode".to_owned(), c.register_node.into());
    // Both are `omitempty` upstream: shown only when true.
    if c.rotate_certificates {
        out.insert("rotateCertificates".to_owned(), true.into());
    }
    if c.server_tls_bootstrap {
        out.insert("serverTLSBootstrap".to_owned(), true.into());
    }
    if !c.register_with_taints.is_empty() {
        let taints: Vec<Value> = c
            .register_with_taints
            .iter()
            .map(|taint| {
                let mut object = Map::new();
                object.insert("key".to_owned(), taint.key.clone().into());
                if !taint.value.is_empty() {
                    object.insert("value".to_owned(), taint.value.clone().into());
                }
                object.insert("effect".to_owned(), taint.effect.clone().into());
                Value::Object(object)
            })
            .collect();
        out.insert("registerWithTaints".to_owned(), taints.into());
    }
    let lease = c.node_lease_duration.as_secs();
    out.insert("nodeLeaseDurationSeconds".to_owned(), lease.into());
    let images = c
        .node_status_max_images
        .map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX));
    out.insert("nodeStatusMaxImages".to_owned(), images.into());
    out.insert("eventRecordQPS".to_owned(), c.event_rate.qps.into());
    out.insert("eventBurst".to_owned(), c.event_rate.burst.into());
    out.insert("kubeAPIQPS".to_owned(), c.api_rate.qps.into());
    out.insert("kubeAPIBurst".to_owned(), c.api_rate.burst.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_as_the_flag_writes_them() {
        let taint = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (taint.key.as_str(), taint.value.as_str()),
            ("dedicated", "gpu")
        );
        let taint = parse_taint(" spot:PreferNoSchedule").unwrap();
        assert_eq!(
            (taint.value.as_str(), taint.effect.as_str()),
            ("", "PreferNoSchedule")
        );
        assert!(parse_taint("a=b").unwrap_err().contains("key=value:effect"));
        assert!(
            parse_taint("a=b:Sometimes")
                .unwrap_err()
                .contains("NoExecute")
        );
        assert!(
            parse_taint("=b:NoSchedule")
                .unwrap_err()
                .contains("key is empty")
        );
    }

    #[test]
    fn flags_set_the_cluster_settings() {
        use clap::Parser as _;
        let flags = crate::config::Flags::try_parse_from([
            "kernlet",
            "--node-labels=team=a,pool=b",
            "--register-with-taints=dedicated=gpu:NoSchedule,spot:NoExecute",
            "--register-node=false",
        ])
        .unwrap();
        let mut config = crate::config::KubeletConfig::default();
        crate::config::flags::apply(&flags, &mut config).unwrap();
        let c = &config.cluster;
        assert_eq!(c.node_labels.len(), 2);
        assert_eq!(c.register_with_taints.len(), 2);
        assert_eq!(c.register_with_taints[1].effect, "NoExecute");
        assert!(!c.register_node);
        let refused = crate::config::Flags::try_parse_from([
            "kernlet",
            "--node-labels=node-role.kubernetes.io/control-plane=",
        ]);
        assert!(refused.is_err());
    }

    #[test]
    fn the_file_sets_the_cluster_settings() {
        let text = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                    registerNode: false\nnodeLeaseDurationSeconds: 60\nnodeStatusMaxImages: -1\n\
                    registerWithTaints: [{key: a, value: b, effect: NoSchedule}]\n\
                    eventRecordQPS: 0\neventBurst: 7\nkubeAPIQPS: 20\nkubeAPIBurst: 40\n";
        let config = crate::config::KubeletConfig::from_yaml_str(text)
            .unwrap()
            .config;
        let c = &config.cluster;
        assert!(!c.register_node);
        assert_eq!(c.node_lease_duration, Duration::from_mins(1));
        assert_eq!(c.node_status_max_images, None);
        assert_eq!(c.register_with_taints[0].value, "b");
        assert_eq!((c.event_rate.qps, c.event_rate.burst), (0, 7));
        assert_eq!((c.api_rate.qps, c.api_rate.burst), (20, 40));
        let zero = ApiRate { qps: 0, burst: 0 }.client();
        assert_eq!((zero.qps, zero.burst), (5, 10), "client-go's defaults");
        let negative = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                        kubeAPIQPS: -1\n";
        let error = crate::config::KubeletConfig::from_yaml_str(negative).unwrap_err();
        assert!(error.to_string().contains("kubeAPIQPS"), "{error}");
        let bad = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                   registerWithTaints: [{key: a, effect: Never}]\n";
        let error = crate::config::KubeletConfig::from_yaml_str(bad).unwrap_err();
        assert!(
            error.to_string().contains("registerWithTaints[0]"),
            "{error}"
        );
        let configz = crate::config::configz(&config);
        assert_eq!(configz["kubeletconfig"]["nodeLeaseDurationSeconds"], 60);
        assert_eq!(configz["kubeletconfig"]["eventBurst"], 7);
        assert_eq!(configz["kubeletconfig"]["kubeAPIQPS"], 20);
        assert_eq!(
            configz["kubeletconfig"]["registerWithTaints"][0]["key"],
            "a"
        );
    }

    #[test]
    fn labels_a_kubelet_may_not_set_are_refused() {
        let labels = parse_labels("team=a,node.kubernetes.io/pool=x,topology.kubernetes.io/zone=z");
        assert_eq!(labels.unwrap().len(), 3);
        let error = parse_labels("node-role.kubernetes.io/worker=").unwrap_err();
        assert!(error.contains("node-role.kubernetes.io/worker"), "{error}");
        assert!(parse_labels("example.k8s.io/x=1").is_err());
        assert!(parse_labels("novalue").unwrap_err().contains("key=value"));
        assert!(is_kubelet_label("a.kubelet.kubernetes.io/b"));
        assert!(is_kubelet_label("example.com/k8s.io"));
    }
}
