//! Tests for [`super::dns`]: `resolv.conf` parsing and every DNS policy.
use serde_json::json;

use super::dns::{ResolvConf, ResolvConfError, pod_dns_config};
use super::test_support::{node, pod};

fn host_resolv() -> ResolvConf {
    ResolvConf::parse(
        "# generated\n\
         nameserver 192.168.1.1\n\
         nameserver 192.168.1.2\n\
         search old.example\n\
         search corp.example. lab.example\n\
         options timeout:2\n\
         options ndots:2 edns0\n",
    )
    .unwrap()
}

#[test]
fn resolv_conf_parsing() {
    let conf = host_resolv();
    assert_eq!(conf.nameservers, ["192.168.1.1", "192.168.1.2"]);
    // The last search line wins and loses its trailing dot.
    assert_eq!(conf.searches, ["corp.example", "lab.example"]);
    assert_eq!(conf.options, ["ndots:2", "edns0"]);

    let blank = ResolvConf::parse("\n   \n# only a comment\n  # indented comment\n").unwrap();
    assert_eq!(blank, ResolvConf::default());
    let err = ResolvConf::parse("nameserver 1.1.1.1\nnameserver\n").unwrap_err();
    assert!(matches!(err, ResolvConfError::EmptyNameserver));
    assert_eq!(err.to_string(), "nameserver list is empty");
}

#[test]
fn resolv_conf_load_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 9.9.9.9\nsearch a.example\n").unwrap();
    let conf = ResolvConf::load(&path).unwrap();
    assert_eq!(conf.nameservers, ["9.9.9.9"]);
    let missing = dir.path().join("missing.conf");
    let err = ResolvConf::load(&missing).unwrap_err();
    assert!(err.to_string().contains("missing.conf"), "{err}");
    assert_eq!(err.reason(), "CreatePodSandboxError");
}

#[test]
fn cluster_first_with_cluster_dns() {
    let config = pod_dns_config(&pod(json!({})), &node(), &host_resolv());
    assert_eq!(config.servers, ["10.96.0.10"]);
    assert_eq!(
        config.searches,
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "lab.example"
        ]
    );
    assert_eq!(config.options, ["ndots:5"]);
}

#[test]
fn cluster_first_without_cluster_dns_falls_back_to_default() {
    let mut node = node();
    node.dns.cluster_dns.clear();
    let config = pod_dns_config(&pod(json!({})), &node, &host_resolv());
    assert_eq!(config.servers, ["192.168.1.1", "192.168.1.2"]);
    assert_eq!(config.searches, ["corp.example", "lab.example"]);
    assert_eq!(config.options, ["ndots:2", "edns0"]);
}

#[test]
fn cluster_first_without_cluster_domain_keeps_host_searches() {
    let mut node = node();
    node.dns.cluster_domain.clear();
    let config = pod_dns_config(&pod(json!({})), &node, &host_resolv());
    assert_eq!(config.servers, ["10.96.0.10"]);
    assert_eq!(config.searches, ["corp.example", "lab.example"]);
    assert_eq!(config.options, ["ndots:5"]);
}

#[test]
fn default_policy_uses_host_settings() {
    let pod = pod(json!({"dnsPolicy": "Default"}));
    let config = pod_dns_config(&pod, &node(), &host_resolv());
    assert_eq!(config.servers, ["192.168.1.1", "192.168.1.2"]);
    assert_eq!(config.searches, ["corp.example", "lab.example"]);
    assert_eq!(config.options, ["ndots:2", "edns0"]);
}

#[test]
fn default_policy_without_resolv_conf_uses_localhost() {
    let mut node = node();
    node.dns.resolv_conf = None;
    node.host_ips = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
    let pod = pod(json!({"dnsPolicy": "Default"}));
    let config = pod_dns_config(&pod, &node, &ResolvConf::default());
    assert_eq!(config.servers, ["127.0.0.1", "::1"]);
    assert_eq!(config.searches, ["."]);
    assert!(config.options.is_empty());
    node.host_ips.clear();
    let config = pod_dns_config(&pod, &node, &ResolvConf::default());
    assert_eq!(config.servers, ["127.0.0.1"]);
}

#[test]
fn host_network_cluster_first_is_default_unless_with_host_net() {
    let host_net = pod(json!({"hostNetwork": true}));
    let config = pod_dns_config(&host_net, &node(), &host_resolv());
    assert_eq!(config.servers, ["192.168.1.1", "192.168.1.2"]);

    let with_host_net = pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
    let config = pod_dns_config(&with_host_net, &node(), &host_resolv());
    assert_eq!(config.servers, ["10.96.0.10"]);
    assert_eq!(config.options, ["ndots:5"]);
}

#[test]
fn none_policy_uses_only_dns_config() {
    let pod = pod(json!({
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8"],
            "searches": ["a.example", "b.example"],
            "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}],
        },
    }));
    let config = pod_dns_config(&pod, &node(), &host_resolv());
    assert_eq!(config.servers, ["1.1.1.1", "8.8.8.8"]);
    assert_eq!(config.searches, ["a.example", "b.example"]);
    assert_eq!(config.options, ["ndots:1", "rotate"]);

    let empty = super::test_support::pod(json!({"dnsPolicy": "None"}));
    let config = pod_dns_config(&empty, &node(), &host_resolv());
    assert_eq!(config, kernlet_cri::v1::DnsConfig::default());
}

#[test]
fn dns_config_merges_into_cluster_first() {
    let pod = pod(json!({
        "dnsConfig": {
            "nameservers": ["10.96.0.10", "1.1.1.1"],
            "searches": ["svc.cluster.local", "extra.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        },
    }));
    let config = pod_dns_config(&pod, &node(), &host_resolv());
    assert_eq!(config.servers, ["10.96.0.10", "1.1.1.1"]);
    assert_eq!(
        config.searches,
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "lab.example",
            "extra.example"
        ]
    );
    // The pod's ndots replaces the cluster default in place.
    assert_eq!(config.options, ["ndots:2", "edns0"]);
}

#[test]
fn limits_apply() {
    let many_servers: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
    let long = "x".repeat(254);
    let mut searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    searches.insert(0, long.clone());
    let pod = pod(json!({
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": many_servers, "searches": searches},
    }));
    let config = pod_dns_config(&pod, &node(), &ResolvConf::default());
    assert_eq!(config.servers.len(), 3);
    // The first 32 are kept, then the 254-character domain is dropped.
    assert_eq!(config.searches.len(), 31);
    assert!(!config.searches.contains(&long));

    // 2048 characters at most in the search line: drop from the end.
    let wide: Vec<String> = (0..10).map(|i| format!("{i}{}", "a".repeat(249))).collect();
    let pod = super::test_support::pod(json!({
        "dnsPolicy": "None",
        "dnsConfig": {"searches": wide},
    }));
    let config = pod_dns_config(&pod, &node(), &ResolvConf::default());
    assert_eq!(config.searches.len(), 8);
    assert!(config.searches.join(" ").len() <= 2048);
}
