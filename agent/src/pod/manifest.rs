//! Parsing and validating one static pod manifest.
//!
//! A manifest holds one `v1` `Pod` as YAML or JSON (JSON is YAML). [`parse_manifest`] decodes it,
//! applies upstream's API defaults and static-pod treatment (see [`super::defaults`]) and rejects
//! what upstream's `tryDecodeSinglePod` (`pkg/kubelet/config/common.go`) would: a missing name
//! before defaulting, then `ValidatePodCreate` on the defaulted pod (the subset a node agent
//! needs to refuse clearly), then references to API objects, which static pods may not make
//! (`PreventStaticPodAPIReferences`, beta and on by default since v1.34).
//!
//! Every error names the file and, where there is one, the field path in upstream's form
//! (`spec.containers[1].image`); YAML syntax and type errors carry line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::defaults::{apply_api_defaults, apply_static_pod_defaults, static_pod_uid};
use super::validation::{reject_api_references, validate};

/// Upstream reads at most this many bytes of a manifest (`maxConfigLength`, 10 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// What is wrong with one manifest file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", .path.display(), FieldPrefix(.field.as_deref()), .message)]
pub struct ManifestError {
    /// The manifest file (or the static pod path itself when it cannot be read).
    pub path: PathBuf,
    /// The field path in upstream's notation, e.g. `spec.containers[1].image`.
    pub field: Option<String>,
    /// What is wrong, lower-case.
    pub message: String,
}

impl ManifestError {
    pub fn new(path: &Path, field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            field,
            message: message.into(),
        }
    }

    fn field(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, Some(field.into()), message)
    }
}

struct FieldPrefix<'a>(Option<&'a str>);

impl fmt::Display for FieldPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(field) => write!(f, "{field}: "),
            None => Ok(()),
        }
    }
}

/// Decodes, defaults and validates the manifest `data` read from `path`, for node `node_name`.
///
/// The returned pod has every field [`super::defaults`] fills except `config.seen`, which the
/// source adds when it first sees the UID. On failure the vector holds at least one error.
pub fn parse_manifest(
    path: &Path,
    data: &[u8],
    node_name: &str,
) -> Result<Pod, Vec<ManifestError>> {
    let one = |field: Option<&str>, message: String| {
        vec![ManifestError::new(path, field.map(str::to_owned), message)]
    };

    // First as an untyped document: syntax errors, and kind/apiVersion checked with clear words
    // before k8s-openapi's own, terser, checks.
    let document: serde_yaml::Value = match serde_yaml::from_slice(data) {
        Ok(document) => document,
        Err(e) => return Err(one(None, format!("invalid yaml: {e}"))),
    };
    let mapping = match &document {
        serde_yaml::Value::Mapping(mapping) => mapping,
        serde_yaml::Value::Null => return Err(one(None, "empty manifest".to_owned())),
        _ => return Err(one(None, "manifest is not an object".to_owned())),
    };
    for (field, wanted) in [("kind", "Pod"), ("apiVersion", "v1")] {
        match mapping.get(field) {
            None => return Err(one(Some(field), "required value".to_owned())),
            Some(serde_yaml::Value::String(value)) if value == wanted => {}
            Some(serde_yaml::Value::String(value)) => {
                return Err(one(
                    Some(field),
                    format!("unsupported value {value:?}: supported values: {wanted:?}"),
                ));
            }
            Some(_) => return Err(one(Some(field), format!("must be the string {wanted:?}"))),
        }
    }

    // Then typed, from the text again so type errors keep their line and column. serde_yaml
    // prefixes them with the field path.
    let mut pod: Pod = match serde_yaml::from_slice(data) {
        Ok(pod) => pod,
        Err(e) => return Err(one(None, format!("invalid pod: {e}"))),
    };
    if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(one(Some("metadata.name"), "required value".to_owned()));
    }

    apply_api_defaults(&mut pod);
    let uid = match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => static_pod_uid(&pod, node_name, path),
    };
    apply_static_pod_defaults(&mut pod, uid, node_name);

    let mut errors = Vec::new();
    validate(&pod, &mut |field, message| {
        errors.push(ManifestError::field(path, field, message));
    });
    if errors.is_empty() {
        reject_api_references(&pod, &mut |field, message| {
            errors.push(ManifestError::field(path, field, message));
        });
    }
    if errors.is_empty() {
        Ok(pod)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::defaults::{
        CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION, DEFAULT_SCHEDULER_NAME,
    };
    use super::super::validation::DNS1123_SUBDOMAIN_RULE;
    use super::*;
    use k8s_openapi::api::core::v1::PodSecurityContext;

    const NODE: &str = "Node-1";
    const WEB: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports:
    - containerPort: 80
  - name: sidecar
    image: busybox
";

    fn path() -> PathBuf {
        PathBuf::from("/etc/kubernetes/manifests/web.yaml")
    }

    fn parse(text: &str) -> Result<Pod, Vec<ManifestError>> {
        parse_manifest(&path(), text.as_bytes(), NODE)
    }

    fn first_error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("manifest should be rejected"),
            Err(errors) => errors[0].to_string(),
        }
    }

    fn uid(pod: &Pod) -> String {
        pod.metadata.uid.clone().unwrap_or_default()
    }

    #[test]
    fn name_namespace_node_and_annotations() {
        let pod = parse(WEB).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], uid(&pod));
        assert_eq!(uid(&pod).len(), 32);
        assert!(uid(&pod).bytes().all(|b| b.is_ascii_hexdigit()));
        let toleration = &spec.tolerations.as_ref().unwrap()[0];
        assert_eq!(toleration.operator.as_deref(), Some("Exists"));
        assert_eq!(toleration.effect.as_deref(), Some("NoExecute"));
        assert!(toleration.key.is_none());
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Pending")
        );
        // A namespace the manifest gives is kept.
        let pod = parse(&WEB.replace("  name: web\n", "  name: web\n  namespace: kube-system\n"))
            .unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn uid_is_deterministic_and_follows_content_node_and_path() {
        let a = uid(&parse(WEB).unwrap());
        assert_eq!(a, uid(&parse(WEB).unwrap()));
        let changed = uid(&parse(&WEB.replace("nginx:1.27", "nginx:1.28")).unwrap());
        assert_ne!(a, changed);
        let label = uid(&parse(&WEB.replace("app: web", "app: web2")).unwrap());
        assert_ne!(a, label);
        let other_node = parse_manifest(&path(), WEB.as_bytes(), "node-2").unwrap();
        assert_ne!(a, uid(&other_node));
        let other_path = parse_manifest(
            Path::new("/etc/kubernetes/manifests/w.yaml"),
            WEB.as_bytes(),
            NODE,
        )
        .unwrap();
        assert_ne!(a, uid(&other_path));
        // Spelling a default out does not change the pod, so it does not change the UID.
        let explicit = WEB.replace("spec:\n", "spec:\n  restartPolicy: Always\n");
        assert_eq!(a, uid(&parse(&explicit).unwrap()));
    }

    #[test]
    fn manifest_uid_is_kept() {
        let text = WEB.replace("  name: web\n", "  name: web\n  uid: my-own-uid\n");
        let pod = parse(&text).unwrap();
        assert_eq!(uid(&pod), "my-own-uid");
        let annotations = pod.metadata.annotations.unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "my-own-uid");
    }

    #[test]
    fn json_and_yaml_give_the_same_pod() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},
            "spec":{"containers":[{"name":"nginx","image":"nginx:1.27","ports":[{"containerPort":80}]},
            {"name":"sidecar","image":"busybox"}]}}"#;
        assert_eq!(parse(json).unwrap(), parse(WEB).unwrap());
    }

    #[test]
    fn api_defaults_are_filled() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostNetwork: true
  volumes:
  - name: cfg
    hostPath:
      path: /etc/web
  containers:
  - name: nginx
    image: nginx
    ports:
    - containerPort: 8080
    resources:
      limits:
        cpu: 500m
    livenessProbe:
      httpGet:
        port: 8080
    env:
    - name: NODE
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
";
        let pod = parse(text).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some(DEFAULT_SCHEDULER_NAME));
        assert_eq!(spec.security_context, Some(PodSecurityContext::default()));
        assert_eq!(spec.enable_service_links, Some(true));
        assert_eq!(spec.priority, Some(0));
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            volume.host_path.as_ref().unwrap().type_.as_deref(),
            Some("")
        );
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.host_port, Some(8080));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "500m");
        let probe = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http_get = probe.http_get.as_ref().unwrap();
        assert_eq!(http_get.path.as_deref(), Some("/"));
        assert_eq!(http_get.scheme.as_deref(), Some("HTTP"));
        let env = &c.env.as_ref().unwrap()[0];
        let field_ref = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field_ref.api_version.as_deref(), Some("v1"));
        // A tagged image pulls IfNotPresent.
        let pod = parse(WEB).unwrap();
        let policy = pod.spec.unwrap().containers[0].image_pull_policy.clone();
        assert_eq!(policy.as_deref(), Some("IfNotPresent"));
    }

    #[test]
    fn validation_names_file_and_field() {
        let p = "/etc/kubernetes/manifests/web.yaml";
        assert_eq!(
            first_error(&WEB.replace("  name: web\n", "")),
            format!("{p}: metadata.name: required value")
        );
        assert_eq!(
            first_error(&WEB.replace("    image: busybox\n", "")),
            format!("{p}: spec.containers[1].image: required value")
        );
        assert_eq!(
            first_error(&WEB.replace("  - name: sidecar\n", "  - name: nginx\n")),
            format!("{p}: spec.containers[1].name: duplicate value \"nginx\"")
        );
        assert_eq!(
            first_error(&WEB.replace(
                "  - name: sidecar\n    image: busybox\n",
                "  - image: busybox\n"
            )),
            format!("{p}: spec.containers[1].name: required value")
        );
        assert_eq!(
            first_error(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n"
            ),
            format!("{p}: spec.containers: required value")
        );
        assert_eq!(
            first_error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"),
            format!("{p}: spec.containers: required value")
        );
        assert_eq!(
            first_error(&WEB.replace("spec:\n", "spec:\n  restartPolicy: Sometimes\n")),
            format!(
                "{p}: spec.restartPolicy: unsupported value \"Sometimes\": supported values: \
                 \"Always\", \"OnFailure\", \"Never\""
            )
        );
        assert_eq!(
            first_error(&WEB.replace("kind: Pod", "kind: Deployment")),
            format!("{p}: kind: unsupported value \"Deployment\": supported values: \"Pod\"")
        );
        assert_eq!(
            first_error(&WEB.replace("apiVersion: v1", "apiVersion: apps/v1")),
            format!("{p}: apiVersion: unsupported value \"apps/v1\": supported values: \"v1\"")
        );
        assert_eq!(
            first_error(&WEB.replace("kind: Pod\n", "")),
            format!("{p}: kind: required value")
        );
        assert_eq!(first_error(""), format!("{p}: empty manifest"));
        assert_eq!(
            first_error(&WEB.replace("  name: web\n", "  name: Web_1\n")),
            format!("{p}: metadata.name: invalid value \"Web_1-node-1\": {DNS1123_SUBDOMAIN_RULE}")
        );
        assert!(
            first_error(&WEB.replace("spec:\n", "spec:\n  serviceAccountName: robot\n")).ends_with(
                "spec.serviceAccountName: static pods may not reference serviceaccounts"
            )
        );
    }

    #[test]
    fn all_validation_errors_are_reported() {
        let text = WEB
            .replace("    image: busybox\n", "")
            .replace("spec:\n", "spec:\n  restartPolicy: Sometimes\n");
        let errors = parse(&text).unwrap_err();
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["spec.restartPolicy", "spec.containers[1].image"]);
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let error = first_error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n");
        assert!(
            error.starts_with("/etc/kubernetes/manifests/web.yaml: invalid yaml: "),
            "{error}"
        );
        assert!(error.contains("line "), "{error}");
        assert!(error.contains("column "), "{error}");
        let error = first_error(&WEB.replace("containerPort: 80", "containerPort: eighty"));
        assert!(
            error.contains("spec.containers[0].ports[0].containerPort"),
            "{error}"
        );
        assert!(error.contains("line 12 column"), "{error}");
    }

    #[test]
    fn api_object_references_are_refused() {
        let text = WEB.replace(
            "  - name: sidecar\n",
            "  - name: sidecar\n    envFrom:\n    - configMapRef:\n        name: cfg\n",
        );
        let errors = parse(&text).unwrap_err();
        assert_eq!(
            errors[0].field.as_deref(),
            Some("spec.containers[1].envFrom[0].configMapRef")
        );
        assert_eq!(
            errors[0].message,
            "static pods may not reference configmaps"
        );
        let text = format!("{WEB}  volumes:\n  - name: s\n    secret:\n      secretName: s\n");
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors[0].field.as_deref(), Some("spec.volumes[0].secret"));
        assert_eq!(
            errors[0].message,
            "static pods may not reference secrets (via secret volumes)"
        );
    }
}
