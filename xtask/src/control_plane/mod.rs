//! A real Kubernetes control plane on loopback for cluster-mode tests: etcd and kube-apiserver
//! from the upstream binaries ([`crate::k8s`]), with freshly generated PKI, the `Node,RBAC`
//! authorizers and the `NodeRestriction` admission plugin, as a production cluster has them.
//! Every permission mistake kernlet makes fails here as it would there.
//!
//! The flags are those `../shared/k8s/README.md` verified (service-account keys and issuer are
//! required; `--advertise-address=127.0.0.1` keeps the `kubernetes` Service on loopback).
//! Credentials are issued by [`ControlPlane::issue`]: a client certificate signed by the cluster
//! CA, e.g. `system:node:<name>` in `system:nodes` for kernlet. Processes are killed on drop.
//!
//! [`ControlPlane::start_controllers`] adds kube-controller-manager (Deployments and replica sets,
//! service accounts, CSR approval and signing with the cluster CA, node lifecycle, garbage
//! collection) and kube-scheduler, with the README's flags, for tests that need them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::http::{TlsClient, free_port};
use crate::pki::ClientPki;

/// The cluster CA and its key, kept to issue client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

mod external;

/// The environment variable naming an external cluster's admin kubeconfig: the cluster tests
/// then run against it instead of a local control plane ([`ControlPlane::external`]).
pub const E2E_KUBECONFIG: &str = "KERNLET_E2E_KUBECONFIG";

/// etcd and kube-apiserver, running until dropped; or an external cluster's API server.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// The cluster CA's key, which only a local control plane has.
    ca: Option<Ca>,
    /// The API server's host: `127.0.0.1` locally.
    host: String,
    /// The name its serving certificate is verified against.
    server_name: String,
    bin: PathBuf,
    etcd_port: u16,
    children: Vec<(&'static str, Child)>,
    /// kube-apiserver's secure port on 127.0.0.1.
    pub port: u16,
    /// A `system:masters` client (`kubernetes-admin`).
    pub admin: ClientPki,
    /// A bearer token the API server knows as `admin` in `system:masters` (its token file).
    pub admin_token: String,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from the binaries in `bin` and waits until `/readyz` says
    /// ok.
    pub fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kernlet-control-plane-")
            .tempdir()?;
        let ca = new_ca()?;
        fs::write(dir.path().join("ca.crt"), ca.cert.pem())?;
        let mut plane = Self {
            admin: ClientPki {
                ca: dir.path().join("ca.crt"),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
            ca: Some(ca),
            host: "127.0.0.1".to_owned(),
            server_name: "localhost".to_owned(),
            bin: bin.to_owned(),
            etcd_port: 0,
            children: Vec::new(),
            port: free_port()?,
            admin_token: format!("{:032x}", rand_u128()),
        };
        plane.admin = plane.issue("admin", "kubernetes-admin", &["system:masters"])?;
        plane.write_serving_pki()?;
        plane.etcd_port = plane.start_etcd(bin)?;
        plane.start_apiserver()?;
        plane.wait_ready(Duration::from_mins(2))?;
        Ok(plane)
    }

    /// The API server's URL.
    #[must_use]
    pub fn server(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// Whether this is an external cluster ([`E2E_KUBECONFIG`]): nothing of it can be
    /// stopped, reconfigured or stood in front of on loopback.
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.ca.is_none()
    }

    /// The cluster CA certificate (PEM file).
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A client certificate for user `cn` in groups `orgs`, signed by the cluster CA, written
    /// as `<name>.crt` / `<name>.key`.
    /// An external cluster signs it through a CSR its admin approves.
    pub fn issue(&self, name: &str, cn: &str, orgs: &[&str]) -> Result<ClientPki> {
        let Some(ca) = &self.ca else {
            return external::issue(self, name, cn, orgs);
        };
        let key = KeyPair::generate()?;
        let cert = client_params(cn, orgs)?.signed_by(&key, &ca.cert, &ca.key)?;
        self.write_client(name, cert.pem().as_bytes(), &key)
    }

    /// Writes a client's certificate and key as `<name>.crt` / `<name>.key`.
    fn write_client(&self, name: &str, cert: &[u8], key: &KeyPair) -> Result<ClientPki> {
        let pki = ClientPki {
            ca: self.ca_file(),
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        fs::write(&pki.cert, cert)?;
        fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }

    /// A kubeconfig for `pki`'s user, written as `<name>.kubeconfig`.
    pub fn kubeconfig(&self, name: &str, pki: &ClientPki) -> Result<PathBuf> {
        self.kubeconfig_to(name, pki, &self.server())
    }

    /// As [`ControlPlane::kubeconfig`], with the server at `port` on loopback instead (a
    /// [`crate::fault_proxy::FaultProxy`] in front of the API server; the server's certificate
    /// names 127.0.0.1, so TLS verifies through it).
    pub fn kubeconfig_at(&self, name: &str, pki: &ClientPki, port: u16) -> Result<PathBuf> {
        self.kubeconfig_to(name, pki, &format!("https://127.0.0.1:{port}"))
    }

    fn kubeconfig_to(&self, name: &str, pki: &ClientPki, server: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
             server: {server}\n    certificate-authority: {ca}\nusers:\n\
             - name: {name}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
             contexts:\n- name: {name}\n  context:\n    cluster: local\n    user: {name}\n\
             current-context: {name}\n",
            ca = self.ca_file().display(),
            cert = pki.cert.display(),
            key = pki.key.display(),
        );
        fs::write(&path, text)?;
        Ok(path)
    }

    /// The API server's serving certificate and key (PEM files), for a proxy that stands in
    /// for it ([`crate::api_fault::ApiFaultProxy`]).
    #[must_use]
    pub fn serving_pair(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        (dir.join("apiserver.crt"), dir.join("apiserver.key"))
    }

    /// A kubeconfig that authenticates with bearer `token`, written as `<name>.kubeconfig`.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
             server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  \
             user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    \
             cluster: local\n    user: {name}\ncurrent-context: {name}\n",
            server = self.server(),
            ca = self.ca_file().display(),
        );
        fs::write(&path, text)?;
        Ok(path)
    }

    /// What kubeadm sets up for kubelet TLS bootstrapping: a bootstrap token (returned as
    /// `<id>.<secret>`), its group allowed to create node CSRs and have them approved
    /// automatically (`nodeclient`), and nodes allowed to renew their own (`selfnodeclient`).
    pub fn bootstrap_token(&self) -> Result<String> {
        let id = format!("{:06x}", rand_u128() % 0x100_0000);
        let secret = format!("{:016x}", rand_u128() as u64);
        let admin = self.client(&self.admin);
        let group = "system:bootstrappers:kernlet";
        let token = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "token-id": id, "token-secret": secret,
                "usage-bootstrap-authentication": "true", "auth-extra-groups": group,
            }
        });
        let (code, body) = admin.send(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            &token.to_string(),
        )?;
        if code != 201 {
            bail!("creating the bootstrap token: {code} {body}");
        }
        let prefix = "system:certificates.k8s.io:certificatesigningrequests";
        for (name, subject, role) in [
            (
                "kubelet-bootstrap",
                group,
                "system:node-bootstrapper".to_owned(),
            ),
            (
                "node-autoapprove-bootstrap",
                group,
                format!("{prefix}:nodeclient"),
            ),
            (
                "node-autoapprove-rotation",
                "system:nodes",
                format!("{prefix}:selfnodeclient"),
            ),
        ] {
            let binding = serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": subject}]
            });
            let (code, body) = admin.send(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                &binding.to_string(),
            )?;
            if code != 201 && code != 409 {
                bail!("creating cluster role binding {name}: {code} {body}");
            }
        }
        Ok(format!("{id}.{secret}"))
    }

    /// Creates the `default` service account of namespace `default` (the controller manager
    /// would; the `ServiceAccount` admission plugin wants it before any pod is created there).
    pub fn default_service_account(&self) -> Result<()> {
        let (code, body) = self.client(&self.admin).send(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            r#"{"metadata": {"name": "default"}}"#,
        )?;
        if code != 201 && code != 409 {
            bail!("creating the default service account: {code} {body}");
        }
        Ok(())
    }

    /// An HTTPS client of the API server with `pki`'s certificate.
    #[must_use]
    pub fn client(&self, pki: &ClientPki) -> TlsClient {
        TlsClient {
            host: self.host.clone(),
            port: self.port,
            pki: pki.clone(),
            server_ca: self.ca_file(),
            server_name: self.server_name.clone(),
        }
    }

    /// `GET path` as the admin, parsed as JSON.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let body = self.client(&self.admin).get(path)?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
    }

    /// `GET path` as the admin: the status and the body, whatever the status.
    pub fn request(&self, path: &str) -> Result<(u16, String)> {
        self.client(&self.admin).request(path)
    }

    /// The log of `component` (`etcd`, `kube-apiserver`), for failure messages.
    #[must_use]
    pub fn log(&self, component: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{component}.log"))).unwrap_or_default()
    }

    fn write_serving_pki(&self) -> Result<()> {
        let ca = self
            .ca
            .as_ref()
            .context("a local control plane has its CA")?;
        let key = KeyPair::generate()?;
        let names: Vec<String> = [
            "127.0.0.1",
            "10.96.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
        let dir = self.dir.path();
        fs::write(dir.join("apiserver.crt"), cert.pem())?;
        fs::write(dir.join("apiserver.key"), key.serialize_pem())?;
        // The service-account token keys (ECDSA: the API server signs ES256).
        let sa = KeyPair::generate()?;
        fs::write(dir.join("sa.key"), sa.serialize_pem())?;
        fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
        fs::write(
            dir.join("tokens.csv"),
            format!("{},admin,admin-uid,system:masters\n", self.admin_token),
        )?;
        let client = self.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        debug_assert!(client.cert.exists());
        Ok(())
    }

    fn spawn(&mut self, component: &'static str, command: &mut Command) -> Result<()> {
        let log = fs::File::create(self.dir.path().join(format!("{component}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {component}"))?;
        self.children.push((component, child));
        Ok(())
    }

    fn start_etcd(&mut self, bin: &Path) -> Result<u16> {
        let client = free_port()?;
        // Nothing holds the first port yet, so the kernel may hand it out again.
        let mut peer = free_port()?;
        while peer == client || peer == self.port {
            peer = free_port()?;
        }
        let data = self.dir.path().join("etcd-data");
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        self.spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .args(["--name", "default", "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("default={peer_url}")])
                // Tests need no durability; fsync under a loaded CI machine only slows them.
                .arg("--unsafe-no-fsync"),
        )?;
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if crate::http::get(client, "/health").is_ok_and(|body| body.contains("true")) {
                break;
            }
            self.check_running("etcd")?;
            if Instant::now() > deadline {
                bail!("etcd not healthy after 1 minute:\n{}", self.log("etcd"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(client)
    }

    /// Starts kube-controller-manager and kube-scheduler, each with its own client certificate
    /// (`system:kube-controller-manager`, `system:kube-scheduler`, which RBAC's bootstrap roles
    /// know), and waits until the controllers work: the `default` namespace has its `default`
    /// service account.
    pub fn start_controllers(&mut self) -> Result<()> {
        self.start_controllers_signing(None)
    }

    /// [`Self::start_controllers`] with the signer's certificates valid for `duration` (the
    /// controller manager's `--cluster-signing-duration`, e.g. `3m`; its default is a year).
    /// An external cluster runs its own: nothing is started, and its signing duration cannot
    /// be set.
    pub fn start_controllers_signing(&mut self, duration: Option<&str>) -> Result<()> {
        let Some(ca) = &self.ca else {
            if let Some(duration) = duration {
                bail!("an external cluster's signing duration is its own (asked for {duration})");
            }
            return Ok(());
        };
        let dir = self.dir.path().to_owned();
        fs::write(dir.join("ca.key"), ca.key.serialize_pem())?;
        let file = |name: &str| dir.join(name).display().to_string();
        let controllers =
            self.issue("controller-manager", "system:kube-controller-manager", &[])?;
        let controllers = self.kubeconfig("controller-manager", &controllers)?;
        let scheduler = self.issue("scheduler", "system:kube-scheduler", &[])?;
        let scheduler = self.kubeconfig("scheduler", &scheduler)?;
        let flag = |name: &str, value: &str| format!("--{name}={value}");
        let kubeconfig_flags = |path: &Path| {
            let path = path.display().to_string();
            [
                "kubeconfig",
                "authentication-kubeconfig",
                "authorization-kubeconfig",
            ]
            .map(|name| flag(name, &path))
        };
        let bin = self.bin.clone();
        let (kcm_port, scheduler_port) = (free_port()?, free_port()?);
        self.spawn(
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager"))
                .args(kubeconfig_flags(&controllers))
                .args([
                    flag("bind-address", "127.0.0.1"),
                    flag("secure-port", &kcm_port.to_string()),
                    flag("leader-elect", "false"),
                    flag("cluster-signing-cert-file", &file("ca.crt")),
                    flag("cluster-signing-key-file", &file("ca.key")),
                    flag("root-ca-file", &file("ca.crt")),
                    flag("service-account-private-key-file", &file("sa.key")),
                    flag("use-service-account-credentials", "true"),
                    flag("controllers", "*,bootstrapsigner,tokencleaner"),
                ])
                .args(duration.map(|d| flag("cluster-signing-duration", d))),
        )?;
        self.spawn(
            "kube-scheduler",
            Command::new(bin.join("kube-scheduler"))
                .args(kubeconfig_flags(&scheduler))
                .args([
                    flag("bind-address", "127.0.0.1"),
                    flag("secure-port", &scheduler_port.to_string()),
                    flag("leader-elect", "false"),
                ]),
        )?;
        let deadline = Instant::now() + Duration::from_mins(2);
        let path = "/api/v1/namespaces/default/serviceaccounts/default";
        while self.request(path)?.0 != 200 {
            self.check_running("kube-controller-manager")?;
            self.check_running("kube-scheduler")?;
            if Instant::now() > deadline {
                bail!(
                    "the controllers made no default service account in 2 minutes:\n{}",
                    tail(&self.log("kube-controller-manager"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Kills kube-apiserver (an outage: etcd and its data stay).
    pub fn stop_apiserver(&mut self) -> Result<()> {
        if self.is_external() {
            bail!("an external cluster's API server cannot be stopped");
        }
        for (name, child) in &mut self.children {
            if *name == "kube-apiserver" {
                child.kill()?;
                child.wait()?;
            }
        }
        self.children.retain(|(name, _)| *name != "kube-apiserver");
        Ok(())
    }

    /// Starts kube-apiserver again after [`ControlPlane::stop_apiserver`], on the same port and
    /// store, and waits until it is ready.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        self.start_apiserver()?;
        self.wait_ready(Duration::from_mins(2))
    }

    fn start_apiserver(&mut self) -> Result<()> {
        let (bin, etcd) = (self.bin.clone(), self.etcd_port);
        let dir = self.dir.path().to_owned();
        let file = |name: &str| dir.join(name).display().to_string();
        let flag = |name: &str, value: String| format!("--{name}={value}");
        self.spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver")).args([
                flag("etcd-servers", format!("http://127.0.0.1:{etcd}")),
                flag("bind-address", "127.0.0.1".to_owned()),
                flag("advertise-address", "127.0.0.1".to_owned()),
                flag("secure-port", self.port.to_string()),
                flag("tls-cert-file", file("apiserver.crt")),
                flag("tls-private-key-file", file("apiserver.key")),
                flag("client-ca-file", file("ca.crt")),
                flag("token-auth-file", file("tokens.csv")),
                flag("service-account-key-file", file("sa.pub")),
                flag("service-account-signing-key-file", file("sa.key")),
                flag(
                    "service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local".to_owned(),
                ),
                flag(
                    "kubelet-client-certificate",
                    file("apiserver-kubelet-client.crt"),
                ),
                flag("kubelet-client-key", file("apiserver-kubelet-client.key")),
                flag("authorization-mode", "Node,RBAC".to_owned()),
                flag("enable-admission-plugins", "NodeRestriction".to_owned()),
                flag("service-cluster-ip-range", "10.96.0.0/16".to_owned()),
                flag("allow-privileged", "true".to_owned()),
                // Bootstrap tokens (`kube-system` secrets), as kubeadm's clusters have them.
                flag("enable-bootstrap-token-auth", "true".to_owned()),
            ]),
        )
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .request("/readyz")
                .is_ok_and(|(code, body)| code == 200 && body == "ok")
            {
                return Ok(());
            }
            self.check_running("kube-apiserver")?;
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?}:\n{}",
                    tail(&self.log("kube-apiserver"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Fails with the component's log when its process has exited.
    fn check_running(&mut self, component: &str) -> Result<()> {
        for (name, child) in &mut self.children {
            if *name == component
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{component} exited ({status}):\n{}",
                    tail(&self.log(component), 30)
                );
            }
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The API server first, then its store.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Deployment `name` in `default` with `replicas` pods for `node` (its `nodeSelector`, for a
/// cluster with other nodes) of one container that sleeps (the test image), small requests, and
/// no service account token (projected token volumes are not built yet). Labelled
/// `kernlet-test=true`, so an external cluster's next run can find and remove it.
#[must_use]
pub fn deployment(name: &str, replicas: u32, node: &str) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"kernlet-test": "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "app", "image": crate::images::TEST_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
                    }]
                }
            }
        }
    })
    .to_string()
}

/// A client certificate's parameters: user `cn` in groups `orgs`.
fn client_params(cn: &str, orgs: &[&str]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A self-signed cluster CA.
fn new_ca() -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kernlet-test-cluster-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert, key })
}

/// 128 random bits from the kernel, for the admin token.
fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut file) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut file, &mut bytes);
    }
    u128::from_le_bytes(bytes)
}
