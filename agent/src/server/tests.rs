//! The server over real TCP on 127.0.0.1, with raw HTTP/1.1 clients.

use std::time::Duration;

use k8s_openapi::List;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn sample_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".to_owned(),
                image: Some("nginx".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("10.0.0.5".to_owned()),
            ..Default::default()
        }),
    }
}

struct Running {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start(pods: Vec<Pod>) -> Running {
    start_on(pods, RouteSet::Full).await
}

async fn start_on(pods: Vec<Pod>, routes: RouteSet) -> Running {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let provider: Arc<dyn PodsProvider> = Arc::new(move || pods.clone());
    let task = tokio::spawn(serve(
        listener,
        Arc::new(Endpoint::plain(routes)),
        Providers::new(provider),
        cancel.clone(),
    ));
    Running { addr, cancel, task }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let result = tokio::time::timeout(WAIT, self.task).await;
        result.expect("server stops").unwrap().unwrap();
    }
}

/// Sends `raw` on a new connection (then, with `close`, ends the write side) and reads until the
/// server closes it.
async fn exchange(addr: SocketAddr, raw: &[u8], close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    out
}

/// `(status code, headers in lower case, body)` of one response.
fn parse(response: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&response[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let code = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_lowercase(), v.trim().to_owned())
        })
        .collect();
    (code, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n");
    parse(&exchange(addr, request.as_bytes(), false).await)
}

#[tokio::test]
async fn server_pods_returns_a_pod_list() {
    let server = start(vec![sample_pod("a"), sample_pod("b")]).await;
    let (code, headers, body) = get(server.addr, "GET", "/pods").await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.starts_with(r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#),
        "{text}"
    );
    assert!(text.ends_with("}\n"));

    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["kind"], "PodList");
    assert_eq!(value["apiVersion"], "v1");
    assert_eq!(value["metadata"], serde_json::json!({}));
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0].get("kind").is_none() && items[0].get("apiVersion").is_none());
    assert_eq!(items[1]["metadata"]["name"], "b");
    assert_eq!(items[0]["status"]["phase"], "Running");

    let list: List<Pod> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.items.len(), 2);
    assert_eq!(list.items[0], sample_pod("a"));
    server.stop().await;
}

#[tokio::test]
async fn server_pods_lists_nothing_as_an_empty_array() {
    let server = start(Vec::new()).await;
    let (code, _, body) = get(server.addr, "GET", "/pods?verbose=1").await;
    assert_eq!(code, 200);
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["items"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn server_healthz_not_found_and_method_not_allowed() {
    let server = start(vec![sample_pod("a")]).await;
    let cases = [
        ("GET", "/healthz", 200, "ok"),
        ("GET", "/nope", 404, "404 page not found\n"),
        ("GET", "/pods/extra", 404, "404 page not found\n"),
        ("POST", "/nope", 404, "404 page not found\n"),
        ("POST", "/pods", 405, "405: Method Not Allowed"),
        ("DELETE", "/healthz", 405, "405: Method Not Allowed"),
        ("HEAD", "/pods", 405, ""),
    ];
    for (method, path, want_code, want_body) in cases {
        let (code, headers, body) = get(server.addr, method, path).await;
        assert_eq!(code, want_code, "{method} {path}");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            want_body,
            "{method} {path}"
        );
        if want_code == 405 {
            assert_eq!(header(&headers, "allow"), Some("GET"));
        }
        if want_code != 200 || path == "/healthz" {
            assert_eq!(
                header(&headers, "content-type"),
                Some("text/plain; charset=utf-8")
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn server_survives_garbage_and_serves_connections_concurrently() {
    let server = start(vec![sample_pod("a")]).await;
    // An idle connection that never sends a request does not block others.
    let idle = TcpStream::connect(server.addr).await.unwrap();
    for garbage in [
        &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        b"GET /pods HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
        b"",
    ] {
        let response = exchange(server.addr, garbage, true).await;
        if !response.is_empty() {
            let (code, _, _) = parse(&response);
            assert!((400..600).contains(&code), "{code}");
        }
    }
    let (code, _, body) = get(server.addr, "GET", "/healthz").await;
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    drop(idle);
    server.stop().await;
}

#[tokio::test]
async fn server_keeps_connections_alive_and_shuts_down_gracefully() {
    let server = start(vec![sample_pod("a")]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0_u8; 512];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let (code, _, body) = parse(&buf[..n]);
        assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    }
    // Cancelling closes the idle keep-alive connection and ends `serve`.
    server.stop().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is closed");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn server_bind_error_names_the_address() {
    let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = first.local_addr().unwrap();
    let error = bind(addr).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("cannot listen on {addr}: ")),
        "{text}"
    );
}

// ---------------------------------------------------------------- stats and metrics

mod stats_routes {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::metrics::cadvisor::{CadvisorContainer, CadvisorSnapshot, ContainerLabels};
    use crate::stats::summary::testdata::{at, sample, summary};
    use crate::stats::summary::{StatsError, Summary};

    struct FakeStats;

    impl StatsProvider for FakeStats {
        fn summary(&self) -> Result<Summary, StatsError> {
            Ok(summary())
        }

        fn cadvisor(&self) -> Result<CadvisorSnapshot, StatsError> {
            Ok(CadvisorSnapshot {
                containers: vec![CadvisorContainer {
                    labels: ContainerLabels {
                        container: "app".to_owned(),
                        id: "/kubepods/podx/abc".to_owned(),
                        namespace: "default".to_owned(),
                        pod: "web".to_owned(),
                        ..ContainerLabels::default()
                    },
                    sample: sample(at(10_000), 2_000_000),
                    ..CadvisorContainer::default()
                }],
                devices: BTreeMap::new(),
            })
        }
    }

    async fn start_with(stats: Arc<dyn StatsProvider>, metrics: Arc<Metrics>) -> Running {
        start_serving(stats, metrics, MetricKinds::ALL).await
    }

    async fn start_serving(
        stats: Arc<dyn StatsProvider>,
        metrics: Arc<Metrics>,
        metric_kinds: MetricKinds,
    ) -> Running {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let pods: Arc<dyn PodsProvider> = Arc::new(Vec::new);
        let providers = Providers {
            pods,
            stats,
            metrics,
            probes: Arc::new(crate::probe::ProbeMetrics::new()),
            metric_kinds,
            runtime: None,
            health: HealthChecks::default(),
            configz: Arc::new(serde_json::Value::Null),
            pod_list: PodListCache::default(),
        };
        let endpoint = Arc::new(Endpoint::plain(RouteSet::Full));
        let task = tokio::spawn(serve(listener, endpoint, providers, cancel.clone()));
        Running { addr, cancel, task }
    }

    async fn post(
        addr: SocketAddr,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        parse(&exchange(addr, request.as_bytes(), false).await)
    }

    fn decode(body: &[u8]) -> Summary {
        serde_json::from_slice(body).expect("strict summary json")
    }

    #[tokio::test]
    async fn server_stats_summary_serves_the_upstream_json() {
        let server = start_with(Arc::new(FakeStats), Arc::new(Metrics::new())).await;
        let (code, headers, body) = get(server.addr, "GET", "/stats/summary").await;
        assert_eq!(code, 200);
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert!(body.starts_with(b"{\n \"node\": {\n  \"nodeName\": \"node-a\""));
        assert_eq!(decode(&body), summary());
        server.stop().await;
    }

    #[tokio::test]
    async fn server_stats_summary_only_cpu_and_memory_by_query_or_form() {
        let server = start_with(Arc::new(FakeStats), Arc::new(Metrics::new())).await;
        let only = summary().cpu_and_memory_only();
        let (_, _, body) = get(
            server.addr,
            "GET",
            "/stats/summary?only_cpu_and_memory=true",
        )
        .await;
        assert_eq!(decode(&body), only);
        let form = "application/x-www-form-urlencoded";
        let (code, _, body) = post(
            server.addr,
            "/stats/summary",
            form,
            "only_cpu_and_memory=true",
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(decode(&body), only);
        // Not "true", given twice, or in a body that is not a form: the full summary.
        for path in [
            "/stats/summary?only_cpu_and_memory=false",
            "/stats/summary?only_cpu_and_memory=true&only_cpu_and_memory=true",
            "/stats/summary?only_cpu_and_memory=TRUE",
        ] {
            let (_, _, body) = get(server.addr, "GET", path).await;
            assert_eq!(decode(&body), summary(), "{path}");
        }
        let (_, _, body) = post(
            server.addr,
            "/stats/summary?only_cpu_and_memory=true",
            form,
            "only_cpu_and_memory=true",
        )
        .await;
        assert_eq!(
            decode(&body),
            summary(),
            "form and query together give two values"
        );
        let (_, _, body) = post(
            server.addr,
            "/stats/summary",
            "application/json",
            "only_cpu_and_memory=true",
        )
        .await;
        assert_eq!(decode(&body), summary());
        let (code, headers, _) = get(server.addr, "PUT", "/stats/summary").await;
        assert_eq!(code, 405);
        assert_eq!(header(&headers, "allow"), Some("GET, POST"));
        server.stop().await;
    }

    #[tokio::test]
    async fn server_without_stats_answers_as_upstream() {
        let server = start(Vec::new()).await;
        let (code, headers, body) = get(server.addr, "GET", "/stats/summary").await;
        assert_eq!(code, 500);
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "Internal Error: no stats have been collected yet"
        );
        let (code, _, body) = get(server.addr, "GET", "/metrics/resource").await;
        assert_eq!(code, 200);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .ends_with("resource_scrape_error 1\n")
        );
        let (code, _, body) = get(server.addr, "GET", "/metrics/cadvisor").await;
        assert_eq!(code, 200);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .ends_with("container_scrape_error 1\n")
        );
        let (code, _, body) = get(server.addr, "GET", "/metrics").await;
        assert_eq!((code, body.len()), (200, 0));
        server.stop().await;
    }

    #[tokio::test]
    async fn cadvisor_kinds_are_chosen_by_the_node_and_narrowed_per_scrape() {
        let node = MetricKinds::ALL.without(MetricKinds::parse(["memory"]).unwrap());
        let server = start_serving(Arc::new(FakeStats), Arc::new(Metrics::new()), node).await;
        let families = |body: Vec<u8>| -> Vec<String> {
            let text = String::from_utf8(body).unwrap();
            let mut names: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .map(str::to_owned)
                .collect();
            names.dedup();
            names
        };
        let (code, _, body) = get(server.addr, "GET", "/metrics/cadvisor").await;
        let all = families(body);
        assert_eq!(code, 200);
        assert!(
            all.iter().any(|f| f == "container_cpu_usage_seconds_total"),
            "{all:?}"
        );
        assert!(
            !all.iter().any(|f| f.starts_with("container_memory_")),
            "{all:?}"
        );

        let path = "/metrics/cadvisor?collect%5B%5D=cpu&collect[]=memory";
        let (code, _, body) = get(server.addr, "GET", path).await;
        let chosen = families(body);
        assert_eq!(code, 200);
        // cpu, and what belongs to no kind; memory stays off because the node turned it off.
        for family in &chosen {
            assert!(
                family.starts_with("container_cpu_")
                    || family.starts_with("container_spec_")
                    || [
                        "container_scrape_error",
                        "container_last_seen",
                        "container_start_time_seconds"
                    ]
                    .contains(&family.as_str()),
                "{family} in {chosen:?}"
            );
        }
        assert!(
            chosen
                .iter()
                .any(|f| f == "container_cpu_user_seconds_total")
        );

        let (code, _, body) = get(server.addr, "GET", "/metrics/cadvisor?collect[]=cpus").await;
        assert_eq!(code, 400);
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with("collect[]: unknown metric kind \"cpus\""),
            "{text}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn server_metrics_routes_serve_text_format() {
        let metrics = Arc::new(Metrics::new());
        metrics.set_program_loaded("sched_switch", true);
        let server = start_with(Arc::new(FakeStats), Arc::clone(&metrics)).await;
        let cases = [
            (
                "/metrics",
                "kernlet_ebpf_program_loaded{program=\"sched_switch\"} 1\n",
            ),
            (
                "/metrics/resource",
                "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 2 1624396288000\n",
            ),
            (
                "/metrics/cadvisor",
                "container_memory_working_set_bytes{container=\"app\",id=\"/kubepods/podx/abc\",image=\"\",name=\"\",namespace=\"default\",pod=\"web\"} 41943040 1624396288000\n",
            ),
        ];
        for (path, line) in cases {
            let (code, headers, body) = get(server.addr, "GET", path).await;
            assert_eq!(code, 200, "{path}");
            assert_eq!(
                header(&headers, "content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8"),
                "{path}"
            );
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(line), "{path}: {line}\n{text}");
        }
        // Updates show on the next scrape.
        metrics.set_program_loaded("sched_switch", false);
        let (_, _, body) = get(server.addr, "GET", "/metrics").await;
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("{program=\"sched_switch\"} 0\n")
        );
        server.stop().await;
    }
}

#[test]
fn pod_list_items_are_the_pods_without_their_type() {
    let pods = vec![sample_pod("a"), Pod::default(), sample_pod("b")];
    let body = encode_pod_list(&pods).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let expected: Vec<serde_json::Value> = pods
        .iter()
        .map(|pod| {
            let mut value = serde_json::to_value(pod).unwrap();
            let fields = value.as_object_mut().unwrap();
            assert!(fields.remove("apiVersion").is_some() && fields.remove("kind").is_some());
            value
        })
        .collect();
    assert_eq!(value["items"], serde_json::Value::Array(expected));
    assert_eq!(value["kind"], "PodList");
}

#[tokio::test]
async fn debugging_handlers_off_answer_405_as_upstream() {
    let server = start_on(Vec::new(), RouteSet::NoDebugging).await;
    for path in [
        "/exec/a/b/c",
        "/containerLogs/a/b/c",
        "/runningpods/",
        "/portForward/a/b",
    ] {
        let (status, _, body) = get(server.addr, "GET", path).await;
        assert_eq!(status, 405, "{path}");
        assert_eq!(body, b"Debug endpoints are disabled.\n");
    }
    assert_eq!(get(server.addr, "GET", "/configz").await.0, 404);
    assert_eq!(get(server.addr, "GET", "/pods").await.0, 200);
    server.stop().await;
}
