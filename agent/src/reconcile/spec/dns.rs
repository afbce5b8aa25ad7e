//! The sandbox's DNS config, after upstream's `GetPodDNS` (`pkg/kubelet/network/dns/dns.go`).
//!
//! - The base is the host's `resolv.conf` (nameservers accumulate, the last `search` and the last
//!   `options` line win, search domains lose a trailing dot).
//! - `ClusterFirst` (and `ClusterFirstWithHostNet`): the cluster DNS servers only, searches
//!   `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, options `ndots:5`. Without
//!   `clusterDNS` it falls back to `Default`. A hostNetwork pod with `ClusterFirst` gets `Default`.
//! - `Default`: the host's settings; with no `resolvConf` at all, `127.0.0.1` (`::1` for IPv6 node
//!   IPs) and search `.`.
//! - `None`: empty.
//! - `dnsConfig` is appended (duplicates dropped, options merged by name, the pod's value wins),
//!   then the limits apply: 3 nameservers, 32 search domains of at most 253 characters, 2048
//!   characters in the search line (the `ExpandedDNSConfig` limits, GA upstream).
//!
//! Upstream merges options through a Go map, so their order is unspecified; here the host's
//! options keep their order and new ones follow in the pod's order.

use std::io::Read as _;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use kernlet_cri::v1;

use super::{NodeContext, SpecError, host_network, pod_namespace};

/// `ndots:5`, upstream's option for cluster DNS.
pub const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];
/// `MaxDNSNameservers`.
pub const MAX_NAMESERVERS: usize = 3;
/// `MaxDNSSearchPathsExpanded`.
pub const MAX_SEARCH_PATHS: usize = 32;
/// `MaxDNSSearchListCharsExpanded`.
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// `DNS1123SubdomainMaxLength`: longer search domains are dropped.
pub const MAX_SEARCH_DOMAIN_CHARS: usize = 253;
/// Upstream reads at most 10 MiB of `resolv.conf`.
const MAX_RESOLV_CONF_BYTES: u64 = 10 << 20;

/// Why a `resolv.conf` cannot be used; reported as [`SpecError::ResolvConf`] with its path.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("nameserver list is empty")]
    EmptyNameserver,
    #[error("open failed: {0}")]
    Open(#[source] std::io::Error),
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("the file is larger than 10 MiB")]
    TooLarge,
}

/// A parsed `resolv.conf`: what `parseResolvConf` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses `resolv.conf` text the way upstream does: `#` comment lines are skipped,
    /// `nameserver` lines accumulate, the last `search` and `options` lines win. A `nameserver`
    /// line without an address is an error (upstream then fails the sandbox).
    pub fn parse(text: &str) -> Result<Self, ResolvConfError> {
        let mut conf = Self::default();
        let mut empty_nameserver = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.split_whitespace();
            match fields.next() {
                Some("nameserver") => match fields.next() {
                    Some(server) => conf.nameservers.push(server.to_owned()),
                    None => empty_nameserver = true,
                },
                Some("search") => {
                    conf.searches = fields
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_owned())
                        .collect();
                }
                Some("options") => conf.options = fields.map(str::to_owned).collect(),
                _ => {}
            }
        }
        if empty_nameserver {
            return Err(ResolvConfError::EmptyNameserver);
        }
        Ok(conf)
    }

    /// Reads and parses the file at `path` (at most 10 MiB, as upstream).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let error = |e: ResolvConfError| SpecError::ResolvConf {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|e| error(ResolvConfError::Open(e)))?;
        let mut text = String::new();
        let read = file
            .take(MAX_RESOLV_CONF_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| error(ResolvConfError::Read(e)))?;
        if read as u64 > MAX_RESOLV_CONF_BYTES {
            return Err(error(ResolvConfError::TooLarge));
        }
        Self::parse(&text).map_err(error)
    }

    /// The host config the node is set up with: the file named by `resolvConf`, or nothing.
    pub fn for_node(node: &NodeContext) -> Result<Self, SpecError> {
        node.dns
            .resolv_conf
            .as_deref()
            .map_or_else(|| Ok(Self::default()), Self::load)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DnsType {
    Cluster,
    Host,
    None,
}

/// `getPodDNSType`: an unknown policy is treated as `ClusterFirst`, as upstream does.
fn dns_type(pod: &Pod) -> DnsType {
    let policy = pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref());
    match policy {
        Some("None") => DnsType::None,
        Some("Default") => DnsType::Host,
        Some("ClusterFirst") if host_network(pod) => DnsType::Host,
        _ => DnsType::Cluster,
    }
}

/// `GetPodDNS`: the DNS config of `pod`'s sandbox, given the node's parsed `resolv.conf`.
#[must_use]
pub fn pod_dns_config(pod: &Pod, node: &NodeContext, resolv: &ResolvConf) -> v1::DnsConfig {
    let mut config = v1::DnsConfig {
        servers: resolv.nameservers.clone(),
        searches: resolv.searches.clone(),
        options: resolv.options.clone(),
    };
    let mut kind = dns_type(pod);
    if kind == DnsType::Cluster && node.dns.cluster_dns.is_empty() {
        // Upstream records a MissingClusterDNS event and falls back to Default.
        kind = DnsType::Host;
    }
    match kind {
        DnsType::None => config = v1::DnsConfig::default(),
        DnsType::Cluster => {
            config.servers = node
                .dns
                .cluster_dns
                .iter()
                .map(ToString::to_string)
                .collect();
            config.searches = cluster_searches(pod, &node.dns.cluster_domain, &config.searches);
            config.options = DEFAULT_DNS_OPTIONS.iter().map(|&o| o.to_owned()).collect();
        }
        DnsType::Host => {
            if node.dns.resolv_conf.is_none() {
                for ip in &node.host_ips {
                    let local = if ip.is_ipv6() { "::1" } else { "127.0.0.1" };
                    config.servers.push(local.to_owned());
                }
                if config.servers.is_empty() {
                    config.servers.push("127.0.0.1".to_owned());
                }
                config.searches = vec![".".to_owned()];
            }
        }
    }
    if let Some(pod_config) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        append_pod_dns_config(&mut config, pod_config);
    }
    fit_limits(&mut config);
    config
}

/// `generateSearchesForDNSClusterFirst`.
fn cluster_searches(pod: &Pod, cluster_domain: &str, host_searches: &[String]) -> Vec<String> {
    if cluster_domain.is_empty() {
        return host_searches.to_vec();
    }
    let cluster = [
        format!("{}.svc.{cluster_domain}", pod_namespace(pod)),
        format!("svc.{cluster_domain}"),
        cluster_domain.to_owned(),
    ];
    omit_duplicates(cluster.into_iter().chain(host_searches.iter().cloned()))
}

fn omit_duplicates(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `appendDNSConfig`: the pod's servers and searches after the base ones, duplicates dropped;
/// options merged by name with the pod's value winning.
fn append_pod_dns_config(config: &mut v1::DnsConfig, pod_config: &PodDNSConfig) {
    let servers = pod_config.nameservers.iter().flatten().cloned();
    config.servers = omit_duplicates(config.servers.drain(..).chain(servers));
    let searches = pod_config.searches.iter().flatten().cloned();
    config.searches = omit_duplicates(config.searches.drain(..).chain(searches));

    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| {
        if let Some(slot) = merged.iter_mut().find(|(n, _)| n == name) {
            value.clone_into(&mut slot.1);
        } else {
            merged.push((name.to_owned(), value.to_owned()));
        }
    };
    for option in &config.options {
        match option.split_once(':') {
            Some((name, value)) => set(name, value),
            None => set(option, ""),
        }
    }
    for option in pod_config.options.iter().flatten() {
        let name = option.name.as_deref().unwrap_or_default();
        set(name, option.value.as_deref().unwrap_or_default());
    }
    config.options = merged
        .into_iter()
        .map(|(name, value)| {
            if value.is_empty() {
                name
            } else {
                format!("{name}:{value}")
            }
        })
        .collect();
}

/// `formDNSConfigFitsLimits`.
fn fit_limits(config: &mut v1::DnsConfig) {
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches.truncate(MAX_SEARCH_PATHS);
    config
        .searches
        .retain(|s| s.len() <= MAX_SEARCH_DOMAIN_CHARS);
    let mut line_len = config.searches.join(" ").len();
    while line_len > MAX_SEARCH_LIST_CHARS {
        match config.searches.pop() {
            Some(dropped) => line_len = line_len.saturating_sub(dropped.len() + 1),
            None => break,
        }
    }
}
