//! Command-line flags, with the upstream kubelet's names (`cmd/kubelet/app/options`).
//!
//! Flags that mirror a config-file field are `Option`s: only a flag actually given on the command
//! line overrides the file, as upstream's flag precedence does. Boolean flags take the Go form
//! `--cgroups-per-qos` or `--cgroups-per-qos=false`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;

use super::fields::enforcement;
use super::{ConfigError, DEFAULT_ROOT_DIR, KubeletConfig};

/// The kubelet flags kernlet understands. Use it as the binary's parser (`Flags::parse()`) or
/// flatten it into a larger one.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(name = "kernlet", about = "A Kubernetes node agent")]
pub struct Flags {
    /// A `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`) file, YAML or JSON. Flags given
    /// on the command line override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Use this name as the node name instead of the machine's hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,

    /// Directory for kubelet state (pods, volumes, plugins).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT_DIR)]
    pub root_dir: PathBuf,

    /// The CRI endpoint, e.g. `unix:///run/containerd/containerd.sock` [config:
    /// containerRuntimeEndpoint].
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,

    /// Directory or file of static pod manifests [config: staticPodPath].
    #[arg(long, value_name = "PATH")]
    pub pod_manifest_path: Option<PathBuf>,

    /// Kubeconfig for the API server; without it the agent runs standalone.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig with bootstrap credentials: when --kubeconfig holds no valid client
    /// certificate, one is requested through a certificate signing request with them, and
    /// --kubeconfig is written to use it.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_kubeconfig: Option<PathBuf>,

    /// The node's IP address, or a comma-separated dual-stack pair.
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,

    /// Log verbosity.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 0)]
    pub v: u32,

    /// Create `QoS` and pod cgroups [config: cgroupsPerQOS].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub cgroups_per_qos: Option<bool>,

    /// Root cgroup for pods [config: cgroupRoot].
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_root: Option<String>,

    /// Maximum number of pods on this node [config: maxPods].
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,

    /// Port of the kubelet server [config: port].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// IP address of the kubelet server [config: address].
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,

    /// Comma-separated node-allocatable enforcements: pods, kube-reserved, system-reserved or
    /// none; an empty value enforces nothing [config: enforceNodeAllocatable].
    #[arg(long, value_name = "LIST")]
    pub enforce_node_allocatable: Option<String>,

    /// How often container stats are collected, e.g. `1s` (cAdvisor's flag; kernlet's default
    /// is 1s where the kubelet's embedded cAdvisor uses 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_housekeeping)]
    pub housekeeping_interval: Option<std::time::Duration>,

    /// Comma-separated metric kinds not to serve on /metrics/cadvisor: cAdvisor's names (`cpu`,
    /// `cpuLoad`, `memory`, `network`, `disk`, `diskIO`, `process`, `oom_event`, `pressure` ...)
    /// and `kernlet` for the eBPF families (cAdvisor's `--disable_metrics`; no config field).
    #[arg(long, value_name = "LIST", value_parser = parse_metric_kinds)]
    pub disable_metrics: Option<super::MetricKinds>,

    /// Directory of the self-signed serving certificate generated when no `tlsCertFile` is
    /// given (default `<root-dir>/pki`).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// The serving certificate (with its chain) [config: tlsCertFile].
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The serving certificate's private key [config: tlsPrivateKeyFile].
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,

    /// CA bundle that client certificates must chain to [config:
    /// authentication.x509.clientCAFile].
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Serve requests that carry no credentials as `system:anonymous` [config:
    /// authentication.anonymous.enabled].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub anonymous_auth: Option<bool>,

    /// Authenticate bearer tokens with `TokenReview`s [config: authentication.webhook.enabled].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub authentication_token_webhook: Option<bool>,

    /// `AlwaysAllow` or `Webhook` [config: authorization.mode].
    #[arg(long, value_name = "MODE", value_parser = ["AlwaysAllow", "Webhook"])]
    pub authorization_mode: Option<String>,

    /// Plain-HTTP read-only port, 0 to disable [config: readOnlyPort].
    #[arg(long, value_name = "PORT")]
    pub read_only_port: Option<u16>,

    /// Labels to register the node with, `key=value,...` (cluster mode).
    #[arg(long, value_name = "LABELS", value_parser = super::cluster::parse_labels)]
    pub node_labels: Option<std::collections::BTreeMap<String, String>>,

    /// Taints to register the node with, `key=value:Effect,...` [config: registerWithTaints].
    #[arg(
        long,
        value_name = "TAINTS",
        value_delimiter = ',',
        value_parser = super::cluster::parse_taint
    )]
    pub register_with_taints: Option<Vec<super::Taint>>,

    /// Register the node with the API server [config: registerNode].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub register_node: Option<bool>,

    /// Renew the client certificate through the certificates API before it expires [config:
    /// rotateCertificates].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub rotate_certificates: Option<bool>,

    /// Request the serving certificate through the certificates API and renew it [config:
    /// serverTLSBootstrap].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub rotate_server_certificates: Option<bool>,
}

fn parse_metric_kinds(text: &str) -> Result<super::MetricKinds, String> {
    super::MetricKinds::parse(text.split(',')).map_err(|e| e.to_string())
}

fn parse_housekeeping(text: &str) -> Result<std::time::Duration, String> {
    let interval = super::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

impl Default for Flags {
    /// No flags given.
    fn default() -> Self {
        Self {
            config: None,
            hostname_override: None,
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            container_runtime_endpoint: None,
            pod_manifest_path: None,
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            node_ip: Vec::new(),
            v: 0,
            cgroups_per_qos: None,
            cgroup_root: None,
            max_pods: None,
            port: None,
            address: None,
            enforce_node_allocatable: None,
            housekeeping_interval: None,
            disable_metrics: None,
            cert_dir: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            anonymous_auth: None,
            authentication_token_webhook: None,
            authorization_mode: None,
            read_only_port: None,
            node_labels: None,
            register_with_taints: None,
            register_node: None,
            rotate_certificates: None,
            rotate_server_certificates: None,
        }
    }
}

/// Overrides `config` with every flag given on the command line.
pub(super) fn apply(flags: &Flags, config: &mut KubeletConfig) -> Result<(), ConfigError> {
    if let (Some(bootstrap), None) = (&flags.bootstrap_kubeconfig, &flags.kubeconfig) {
        return Err(ConfigError::Flag {
            flag: "bootstrap-kubeconfig",
            value: bootstrap.display().to_string(),
            reason: "needs --kubeconfig, the file the issued credentials are written to".to_owned(),
        });
    }
    if let [first, second] = flags.node_ip[..]
        && first.is_ipv4() == second.is_ipv4()
    {
        return Err(ConfigError::Flag {
            flag: "node-ip",
            value: format!("{first},{second}"),
            reason: "a dual-stack pair needs one IPv4 and one IPv6 address".to_owned(),
        });
    }
    if flags.node_ip.len() > 2 {
        let value = flags
            .node_ip
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let reason = "at most two addresses (one per IP family) are allowed".to_owned();
        return Err(ConfigError::Flag {
            flag: "node-ip",
            value,
            reason,
        });
    }
    config.node_ips.clone_from(&flags.node_ip);
    config.root_dir.clone_from(&flags.root_dir);
    config.kubeconfig.clone_from(&flags.kubeconfig);
    config
        .bootstrap_kubeconfig
        .clone_from(&flags.bootstrap_kubeconfig);
    config.verbosity = flags.v;
    if let Some(endpoint) = &flags.container_runtime_endpoint {
        config.container_runtime_endpoint.clone_from(endpoint);
    }
    if let Some(path) = &flags.pod_manifest_path {
        config.static_pod_path = Some(path.clone()).filter(|p| !p.as_os_str().is_empty());
    }
    if let Some(enabled) = flags.cgroups_per_qos {
        config.cgroups_per_qos = enabled;
    }
    if let Some(root) = &flags.cgroup_root {
        config.cgroup_root.clone_from(root);
    }
    if let Some(max) = flags.max_pods {
        config.max_pods = max;
    }
    if let Some(port) = flags.port {
        config.port = port;
    }
    if let Some(interval) = flags.housekeeping_interval {
        config.housekeeping_interval = interval;
    }
    if let Some(disabled) = flags.disable_metrics {
        config.disabled_metrics = disabled;
    }
    if let Some(address) = flags.address {
        config.address = address;
    }
    apply_server(flags, config);
    if config.cluster.server_tls_bootstrap && config.kubeconfig.is_none() {
        return Err(ConfigError::Flag {
            flag: "rotate-server-certificates",
            value: "true (serverTLSBootstrap)".to_owned(),
            reason: "the serving certificate is requested from the API server: needs --kubeconfig"
                .to_owned(),
        });
    }
    if let Some(list) = &flags.enforce_node_allocatable {
        let items: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut errors = Vec::new();
        config.enforce_node_allocatable = enforcement(&items, &mut errors);
        if !errors.is_empty() {
            let reason = errors
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let value = list.clone();
            return Err(ConfigError::Flag {
                flag: "enforce-node-allocatable",
                value,
                reason,
            });
        }
    }
    Ok(())
}

/// The server's flags: TLS files, authentication, authorization, the read-only port.
fn apply_server(flags: &Flags, config: &mut KubeletConfig) {
    config.cert_dir = flags
        .cert_dir
        .clone()
        .unwrap_or_else(|| flags.root_dir.join("pki"));
    if let Some(file) = &flags.tls_cert_file {
        config.tls_cert_file = Some(file.clone());
    }
    if let Some(file) = &flags.tls_private_key_file {
        config.tls_private_key_file = Some(file.clone());
    }
    if let Some(file) = &flags.client_ca_file {
        config.authentication.x509_client_ca_file = Some(file.clone());
    }
    if let Some(enabled) = flags.anonymous_auth {
        config.authentication.anonymous_enabled = enabled;
    }
    if let Some(enabled) = flags.authentication_token_webhook {
        config.authentication.webhook_enabled = enabled;
    }
    match flags.authorization_mode.as_deref() {
        Some("AlwaysAllow") => config.authorization.mode = super::AuthorizationMode::AlwaysAllow,
        Some("Webhook") => config.authorization.mode = super::AuthorizationMode::Webhook,
        _ => {}
    }
    if let Some(port) = flags.read_only_port {
        config.read_only_port = port;
    }
    if let Some(labels) = &flags.node_labels {
        config.cluster.node_labels.clone_from(labels);
    }
    if let Some(taints) = &flags.register_with_taints {
        config.cluster.register_with_taints.clone_from(taints);
    }
    if let Some(register) = flags.register_node {
        config.cluster.register_node = register;
    }
    if let Some(rotate) = flags.rotate_certificates {
        config.cluster.rotate_certificates = rotate;
    }
    if let Some(bootstrap) = flags.rotate_server_certificates {
        config.cluster.server_tls_bootstrap = bootstrap;
    }
}

/// The node name: the override if given, else the machine's hostname from `hostname`; trimmed
/// and lower-cased either way, as upstream's `GetHostname` does.
pub fn resolve_node_name(
    hostname_override: Option<&str>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, ConfigError> {
    let raw = match hostname_override.filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => hostname()
            .map_err(|e| ConfigError::NodeName(format!("reading the machine's hostname: {e}")))?,
    };
    let name = raw.trim();
    if name.is_empty() {
        return Err(ConfigError::NodeName(
            "the hostname is empty; set --hostname-override".into(),
        ));
    }
    Ok(name.to_lowercase())
}

/// The kernel's hostname (what `os.Hostname` returns on Linux).
pub(super) fn read_hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser as _;

    use super::super::load;
    use super::*;

    const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    fn write_config(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("kubelet.yaml");
        std::fs::write(&path, format!("{HEADER}{body}")).unwrap();
        path
    }

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("kernlet").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_parse_with_upstream_spellings() {
        let f = flags(&[
            "--config=/etc/k.yaml",
            "--hostname-override",
            "Node-A",
            "--cgroups-per-qos=false",
            "--v=4",
            "--node-ip",
            "10.0.0.5,fd00::5",
            "--max-pods",
            "30",
        ]);
        assert_eq!(f.config, Some(PathBuf::from("/etc/k.yaml")));
        assert_eq!(f.cgroups_per_qos, Some(false));
        assert_eq!(f.v, 4);
        assert_eq!(f.node_ip.len(), 2);
        assert_eq!(f.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(flags(&["-v", "2"]).v, 2);
        assert_eq!(flags(&["--cgroups-per-qos"]).cgroups_per_qos, Some(true));
        assert_eq!(flags(&[]), Flags::default());
        assert!(Flags::try_parse_from(["kernlet", "--port", "0"]).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            &dir,
            "maxPods: 50\nport: 10260\nstaticPodPath: manifests\ntlsCertFile: /abs/cert.pem\n\
             containerRuntimeEndpoint: unix:///file.sock\nfooBar: 1\n",
        );
        let file_only = load(&Flags {
            config: Some(path.clone()),
            hostname_override: Some(" Worker-1 ".into()),
            ..Flags::default()
        })
        .unwrap();
        let c = &file_only.config;
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.port, 10260);
        assert_eq!(c.node_name, "worker-1");
        assert_eq!(
            c.static_pod_path,
            Some(dir.path().join("manifests")),
            "relative to the file"
        );
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/abs/cert.pem")));
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(file_only.warnings.len(), 1);
        assert!(file_only.warnings[0].contains(&path.display().to_string()));

        let path_arg = format!("--config={}", path.display());
        let c = load(&flags(&[
            &path_arg,
            "--hostname-override=x",
            "--max-pods=7",
            "--pod-manifest-path=/srv/static",
            "--container-runtime-endpoint=unix:///flag.sock",
            "--kubeconfig=/etc/kubelet.conf",
            "--bootstrap-kubeconfig=/etc/bootstrap.conf",
            "--root-dir=/tmp/kl",
            "--cgroup-root=/pods",
            "--rotate-certificates",
            "--rotate-server-certificates=true",
        ]))
        .unwrap()
        .config;
        assert_eq!(c.max_pods, 7);
        assert_eq!(
            c.port, 10260,
            "not given on the command line, so the file wins"
        );
        assert_eq!(c.static_pod_path, Some(PathBuf::from("/srv/static")));
        assert_eq!(c.container_runtime_endpoint, "unix:///flag.sock");
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kubelet.conf")));
        let bootstrap = Some(PathBuf::from("/etc/bootstrap.conf"));
        assert_eq!(c.bootstrap_kubeconfig, bootstrap);
        assert_eq!(c.root_dir, PathBuf::from("/tmp/kl"));
        assert!(c.cluster.rotate_certificates && c.cluster.server_tls_bootstrap);
        let alone = load(&flags(&["--bootstrap-kubeconfig=/etc/bootstrap.conf"])).unwrap_err();
        assert!(alone.to_string().contains("needs --kubeconfig"), "{alone}");
        let standalone = load(&flags(&["--rotate-server-certificates"])).unwrap_err();
        assert!(
            standalone.to_string().contains("needs --kubeconfig"),
            "{standalone}"
        );
        assert_eq!(c.cgroup_root, "/pods");
    }

    #[test]
    fn flags_are_validated_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, "cgroupsPerQOS: true\n");
        let path_arg = format!("--config={}", path.display());
        let error = load(&flags(&[
            &path_arg,
            "--hostname-override=x",
            "--cgroups-per-qos=false",
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("cgroupsPerQOS"), "{error}");
        let ok = load(&flags(&[
            &path_arg,
            "--hostname-override=x",
            "--cgroups-per-qos=false",
            "--enforce-node-allocatable=",
        ]));
        assert!(ok.is_ok(), "{ok:?}");
        let bad = load(&flags(&[
            "--hostname-override=x",
            "--node-ip=10.0.0.1,10.0.0.2",
        ]));
        assert!(bad.unwrap_err().to_string().contains("flag --node-ip"));
    }

    #[test]
    fn missing_file_names_it() {
        let error = load(&flags(&["--config=/nonexistent/kubelet.yaml"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/kubelet.yaml"), "{error}");
    }

    #[test]
    fn node_name_is_the_lower_cased_override_or_hostname() {
        let unused = || -> std::io::Result<String> { unreachable!() };
        assert_eq!(resolve_node_name(Some("Node-A"), unused).unwrap(), "node-a");
        assert_eq!(
            resolve_node_name(None, || Ok("My-Host\n".into())).unwrap(),
            "my-host"
        );
        assert_eq!(resolve_node_name(Some(""), || Ok("h".into())).unwrap(), "h");
        assert!(resolve_node_name(None, || Ok("  \n".into())).is_err());
        let failing = || Err(std::io::Error::other("no hostname"));
        assert!(
            resolve_node_name(None, failing)
                .unwrap_err()
                .to_string()
                .contains("no hostname")
        );
    }

    #[test]
    fn flags_flatten_into_a_larger_parser() {
        #[derive(clap::Parser)]
        struct Binary {
            #[command(flatten)]
            flags: Flags,
            #[arg(long)]
            extra: bool,
        }
        let parsed = Binary::try_parse_from(["kernlet", "--extra", "--max-pods=3"]).unwrap();
        assert!(parsed.extra);
        assert_eq!(parsed.flags.max_pods, Some(3));
    }
}
