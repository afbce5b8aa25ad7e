//! An external cluster in place of the local control plane (`KERNLET_E2E_KUBECONFIG`): the
//! cluster tests run unchanged against it, as the admin of its kubeconfig.
//!
//! - The admin must authenticate with a client certificate (kind's and kubeadm's `admin.conf`
//!   do); the cluster CA of the kubeconfig is also taken as the CA of client certificates.
//! - Credentials ([`ControlPlane::issue`]) come from the cluster itself: a CSR (signer
//!   `kube-apiserver-client-kubelet` for a node, `kube-apiserver-client` for anyone else) that
//!   the admin approves and the cluster's controller manager signs.
//! - The admin's bearer token is a `TokenRequest` for service account `default/kernlet-e2e`,
//!   bound to `cluster-admin`.
//! - What earlier runs left is removed first: in namespace `default`, the pods bound to the test
//!   node (forced), the Deployments labelled `kernlet-test=true` and all Events; the test Node
//!   and its Lease. Use a throw-away cluster.
//! - Tests that stop the API server, set its signing duration or stand a proxy in front of it
//!   on loopback skip themselves with the reason ([`ControlPlane::is_external`]).
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rcgen::KeyPair;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;

use super::{ControlPlane, rand_u128};
use crate::pki::ClientPki;

/// The service account whose token stands for the admin's.
const ADMIN_ACCOUNT: &str = "kernlet-e2e";

impl ControlPlane {
    /// The cluster of admin kubeconfig `path`, cleared of what earlier runs left for `node`.
    pub fn external(path: &Path, node: &str) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading {} ({})", path.display(), super::E2E_KUBECONFIG))?;
        let config: Yaml = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a kubeconfig", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix("kernlet-e2e-cluster-")
            .tempdir()?;
        let (cluster, user) = current(&config)?;
        let server = field(cluster, "server").context("the cluster has no server")?;
        let (host, port) = host_port(server)?;
        let ca = dir.path().join("ca.crt");
        fs::write(&ca, material(cluster, "certificate-authority", base)?)?;
        let admin = ClientPki {
            ca: ca.clone(),
            cert: dir.path().join("admin.crt"),
            key: dir.path().join("admin.key"),
        };
        let cert = material(user, "client-certificate", base).with_context(|| {
            format!(
                "{}: the admin must use a client certificate",
                path.display()
            )
        })?;
        fs::write(&admin.cert, cert)?;
        fs::write(&admin.key, material(user, "client-key", base)?)?;
        let mut plane = Self {
            dir,
            ca: None,
            server_name: host.trim_matches(['[', ']']).to_owned(),
            host: host.trim_matches(['[', ']']).to_owned(),
            bin: PathBuf::new(),
            etcd_port: 0,
            children: Vec::new(),
            port,
            admin,
            admin_token: String::new(),
        };
        plane
            .get_json("/version")
            .with_context(|| format!("reaching the API server of {}", path.display()))?;
        plane.admin_token = admin_token(&plane)?;
        clean(&plane, node)?;
        Ok(plane)
    }
}

/// The current context's cluster and user entries.
fn current(config: &Yaml) -> Result<(&Yaml, &Yaml)> {
    let name = field(config, "current-context").context("no current-context")?;
    let named = |list: &str, wanted: &str| -> Result<&Yaml> {
        config[list]
            .as_sequence()
            .and_then(|items| {
                items
                    .iter()
                    .find(|item| item["name"].as_str() == Some(wanted))
            })
            .with_context(|| format!("no {list} entry named {wanted:?}"))
    };
    let context = &named("contexts", name)?["context"];
    let cluster = field(context, "cluster").context("the context names no cluster")?;
    let user = field(context, "user").context("the context names no user")?;
    Ok((
        &named("clusters", cluster)?["cluster"],
        &named("users", user)?["user"],
    ))
}

fn field<'a>(object: &'a Yaml, name: &str) -> Option<&'a str> {
    object[name].as_str()
}

/// `<name>-data` (base64) or the file `<name>` names (relative to the kubeconfig).
fn material(object: &Yaml, name: &str, base: &Path) -> Result<Vec<u8>> {
    if let Some(data) = field(object, &format!("{name}-data")) {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("{name}-data: not base64"));
    }
    let file = field(object, name).with_context(|| format!("no {name} or {name}-data"))?;
    fs::read(base.join(file)).with_context(|| format!("reading {name} {file}"))
}

/// `https://host:port` (port 443 when absent).
fn host_port(server: &str) -> Result<(String, u16)> {
    let rest = server
        .strip_prefix("https://")
        .with_context(|| format!("server {server}: only https is supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => Ok((host.to_owned(), port.parse()?)),
        _ => Ok((authority.to_owned(), 443)),
    }
}

/// A `cluster-admin` service account's token.
fn admin_token(plane: &ControlPlane) -> Result<String> {
    let admin = plane.client(&plane.admin);
    let account = json!({"metadata": {"name": ADMIN_ACCOUNT}});
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{ADMIN_ACCOUNT}-admin")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ADMIN_ACCOUNT, "namespace": "default"}]
    });
    for (path, body) in [
        ("/api/v1/namespaces/default/serviceaccounts", account),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            binding,
        ),
    ] {
        let (code, answer) = admin.send("POST", path, &body.to_string())?;
        if code != 201 && code != 409 {
            bail!("POST {path}: {code} {answer}");
        }
    }
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    });
    let path = format!("/api/v1/namespaces/default/serviceaccounts/{ADMIN_ACCOUNT}/token");
    let (code, answer) = admin.send("POST", &path, &request.to_string())?;
    if code != 201 {
        bail!("requesting a token: {code} {answer}");
    }
    let answer: Value = serde_json::from_str(&answer)?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the TokenRequest answer")
}

/// Removes what earlier runs left for `node` (see the module doc).
fn clean(plane: &ControlPlane, node: &str) -> Result<()> {
    let admin = plane.client(&plane.admin);
    for path in [
        format!(
            "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D{node}&gracePeriodSeconds=0"
        ),
        "/apis/apps/v1/namespaces/default/deployments?labelSelector=kernlet-test%3Dtrue\
         &propagationPolicy=Background"
            .to_owned(),
        "/api/v1/namespaces/default/events".to_owned(),
        format!("/api/v1/nodes/{node}"),
        format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"),
    ] {
        let (code, answer) = admin.send("DELETE", &path, "")?;
        if code != 200 && code != 404 {
            bail!("cleaning up: DELETE {path}: {code} {answer}");
        }
    }
    Ok(())
}

/// A client certificate for `cn` in `orgs` through a CSR the admin approves.
pub(super) fn issue(
    plane: &ControlPlane,
    name: &str,
    cn: &str,
    orgs: &[&str],
) -> Result<ClientPki> {
    let key = KeyPair::generate()?;
    let request = super::client_params(cn, orgs)?
        .serialize_request(&key)?
        .pem()?;
    let node = cn.starts_with("system:node:") && orgs == ["system:nodes"];
    let signer = if node {
        "kubernetes.io/kube-apiserver-client-kubelet"
    } else {
        "kubernetes.io/kube-apiserver-client"
    };
    let csr_name = format!("kernlet-e2e-{name}-{:08x}", rand_u128() as u32);
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": signer, "expirationSeconds": 86_400,
            "usages": ["digital signature", "client auth"]
        }
    });
    let admin = plane.client(&plane.admin);
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (code, answer) = admin.send("POST", csrs, &csr.to_string())?;
    if code != 201 {
        bail!("creating CSR {csr_name}: {code} {answer}");
    }
    approve(plane, &format!("{csrs}/{csr_name}"))?;
    let deadline = Instant::now() + Duration::from_mins(1);
    let certificate = loop {
        let object = plane.get_json(&format!("{csrs}/{csr_name}"))?;
        if let Some(data) = object["status"]["certificate"].as_str() {
            break base64::engine::general_purpose::STANDARD.decode(data)?;
        }
        if Instant::now() > deadline {
            bail!(
                "CSR {csr_name} not signed in a minute: does the controller manager sign {signer}?"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    plane.write_client(name, &certificate, &key)
}

/// Approves the CSR at `path` as the admin, unless the controller manager's approver did
/// already (it approves a node CSR whose requester, here the admin, may create it).
fn approve(plane: &ControlPlane, path: &str) -> Result<()> {
    let admin = plane.client(&plane.admin);
    for _ in 0..5 {
        let mut csr = plane.get_json(path)?;
        let approved = csr["status"]["conditions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["type"] == "Approved"));
        if approved {
            return Ok(());
        }
        csr["status"]["conditions"] = json!([{
            "type": "Approved", "status": "True",
            "reason": "KernletE2E", "message": "credentials for a kernlet test"
        }]);
        let (code, answer) = admin.send("PUT", &format!("{path}/approval"), &csr.to_string())?;
        match code {
            200 => return Ok(()),
            409 => {}
            _ => bail!("approving {path}: {code} {answer}"),
        }
    }
    bail!("approving {path}: it kept changing under the approval")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_names_server_and_credentials() -> Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("ca.crt"), "CA")?;
        let config: Yaml = serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n\
             - name: one\n  cluster: {server: 'https://10.0.0.1:6443', certificate-authority: ca.crt}\n\
             contexts:\n- name: a\n  context: {cluster: none, user: none}\n\
             - name: b\n  context: {cluster: one, user: admin}\n\
             users:\n- name: admin\n  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}\n",
        )?;
        let (cluster, user) = current(&config)?;
        assert_eq!(field(cluster, "server"), Some("https://10.0.0.1:6443"));
        assert_eq!(
            material(cluster, "certificate-authority", dir.path())?,
            b"CA"
        );
        assert_eq!(material(user, "client-certificate", dir.path())?, b"CERT");
        assert_eq!(material(user, "client-key", dir.path())?, b"KEY");
        assert!(material(user, "token", dir.path()).is_err());
        Ok(())
    }

    #[test]
    fn servers_are_split_into_host_and_port() -> Result<()> {
        assert_eq!(
            host_port("https://127.0.0.1:6443")?,
            ("127.0.0.1".to_owned(), 6443)
        );
        assert_eq!(
            host_port("https://api.example/")?,
            ("api.example".to_owned(), 443)
        );
        assert_eq!(host_port("https://[::1]:8443")?, ("[::1]".to_owned(), 8443));
        assert_eq!(host_port("https://[::1]")?, ("[::1]".to_owned(), 443));
        assert!(host_port("http://x:80").is_err());
        Ok(())
    }
}
