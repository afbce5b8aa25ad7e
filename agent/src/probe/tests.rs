//! Handlers against real loopback sockets: tcpSocket, httpGet (status codes, redirects, headers,
//! named ports, timeouts, the body cap) and grpc's failures; redirect URL resolution.
use std::{net::IpAddr, time::Duration};

use k8s_openapi::{
    api::core::v1::{ContainerPort, GRPCAction, HTTPGetAction, HTTPHeader, Probe, TCPSocketAction},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{
    handler::{Outcome, Target, resolve_port},
    http::Url,
};

fn target(ports: Vec<ContainerPort>) -> Target {
    Target {
        container_id: "c1".into(),
        ports,
        pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
    }
}

/// A loopback server answering each connection with `answer(request_head)`; returns its port.
async fn serve(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = answer(&String::from_utf8_lossy(&head));
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn http_probe(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some(path.into()),
            ..Default::default()
        }),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

async fn run(probe: &Probe, target: &Target) -> Outcome {
    let timeout = super::handler::timeout_of(probe);
    super::handler::network(probe, target, timeout).await
}

#[tokio::test]
async fn http_passes_on_2xx_fails_on_4xx_and_sends_upstream_headers() {
    let port = serve(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let agent_ok = head.contains("User-Agent: kube-probe/1.34")
            || head.contains("user-agent: kube-probe/1.34");
        let custom = head.to_ascii_lowercase().contains("x-probe: yes");
        match path.as_str() {
            "/ok" if agent_ok && custom => reply("200 OK", "", "fine"),
            "/ok" => reply("400 Bad Request", "", "headers missing"),
            _ => reply("503 Service Unavailable", "", "down"),
        }
    })
    .await;
    let mut probe = http_probe(IntOrString::Int(port.into()), "/ok");
    if let Some(get) = probe.http_get.as_mut() {
        get.http_headers = Some(vec![HTTPHeader {
            name: "X-Probe".into(),
            value: "yes".into(),
        }]);
    }
    assert_eq!(run(&probe, &target(vec![])).await, Outcome::Success);
    let failing = http_probe(IntOrString::Int(port.into()), "/down");
    assert_eq!(
        run(&failing, &target(vec![])).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn http_follows_same_host_redirects_and_stops_at_other_hosts() {
    let port = serve(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        match path.as_str() {
            "/moved" => reply("302 Found", "Location: /ok\r\n", ""),
            "/away" => reply("301 Moved", "Location: http://example.invalid/\r\n", "gone"),
            "/loop" => reply("302 Found", "Location: loop\r\n", ""),
            "/ok" => reply("200 OK", "", ""),
            _ => reply("404 Not Found", "", ""),
        }
    })
    .await;
    let t = target(vec![]);
    let p = |path| http_probe(IntOrString::Int(port.into()), path);
    assert_eq!(run(&p("/moved"), &t).await, Outcome::Success);
    assert_eq!(
        run(&p("/away"), &t).await,
        Outcome::Warning("Probe terminated redirects, Response body: gone".into()),
        "a redirect to another host passes with a warning"
    );
    let looped = run(&p("/loop"), &t).await;
    assert!(
        matches!(&looped, Outcome::Failure(m) if m.ends_with("stopped after 10 redirects")),
        "{looped:?}"
    );
}

#[tokio::test]
async fn http_times_out_and_caps_the_body() {
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _held = slow.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = tokio::time::Instant::now();
    let outcome = run(
        &http_probe(IntOrString::Int(slow_port.into()), "/"),
        &target(vec![]),
    )
    .await;
    assert!(
        matches!(&outcome, Outcome::Failure(m) if m.contains("Client.Timeout")),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by timeoutSeconds"
    );

    let big = "x".repeat(64 * 1024);
    let port =
        serve(move |_| reply("302 Found", "Location: http://elsewhere.invalid/\r\n", &big)).await;
    let outcome = run(
        &http_probe(IntOrString::Int(port.into()), "/"),
        &target(vec![]),
    )
    .await;
    let Outcome::Warning(message) = outcome else {
        panic!("{outcome:?}")
    };
    let body = message.trim_start_matches("Probe terminated redirects, Response body: ");
    assert_eq!(body.len(), super::handler::MAX_OUTPUT, "10 KiB kept");
}

#[tokio::test]
async fn tcp_passes_when_the_port_accepts_and_names_resolve() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let named = vec![ContainerPort {
        name: Some("web".into()),
        container_port: port.into(),
        ..Default::default()
    }];
    let probe = |port| Probe {
        tcp_socket: Some(TCPSocketAction { port, host: None }),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let t = target(named);
    assert_eq!(
        run(&probe(IntOrString::String("web".into())), &t).await,
        Outcome::Success
    );
    drop(listener);
    let closed = run(&probe(IntOrString::Int(port.into())), &t).await;
    assert!(
        matches!(&closed, Outcome::Failure(m) if m.starts_with("dial tcp 127.0.0.1:")),
        "{closed:?}"
    );
    // A port name the container does not have is an error: no result, as upstream.
    assert_eq!(
        run(&probe(IntOrString::String("nope".into())), &t).await,
        Outcome::Error("couldn't find port: nope".into())
    );
}

#[tokio::test]
async fn grpc_fails_without_a_health_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let probe = Probe {
        grpc: Some(GRPCAction {
            port: port.into(),
            service: None,
        }),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    let outcome = run(&probe, &target(vec![])).await;
    assert!(
        matches!(&outcome, Outcome::Failure(m) if m.contains("failed to connect")),
        "{outcome:?}"
    );
}

#[test]
fn ports_resolve_by_number_or_name() {
    let ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        ..Default::default()
    }];
    assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
    assert_eq!(
        resolve_port(&IntOrString::String("http".into()), &ports),
        Ok(8080)
    );
    assert!(resolve_port(&IntOrString::Int(0), &ports).is_err());
    assert!(resolve_port(&IntOrString::Int(70_000), &ports).is_err());
}

#[test]
fn redirect_locations_resolve_against_the_request() {
    let base = Url {
        scheme: "http".into(),
        host: "10.0.0.9".into(),
        port: 8080,
        path: "/a/b?x=1".into(),
    };
    let join = |l| base.join(l).unwrap().to_string();
    assert_eq!(join("/c"), "http://10.0.0.9:8080/c");
    assert_eq!(join("c"), "http://10.0.0.9:8080/a/c");
    assert_eq!(join("http://other:81/d"), "http://other:81/d");
    assert_eq!(join("https://other/d"), "https://other:443/d");
    assert_eq!(join("//[fd00::1]:9/e"), "http://[fd00::1]:9/e");
    assert_eq!(join("HTTP://Up/"), "http://Up:80/");
}

#[tokio::test]
async fn https_accepts_any_certificate_as_upstream() {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let cert = rcgen::generate_simple_self_signed(vec!["somewhere.invalid".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    #[expect(
        deprecated,
        reason = "the test server needs no post-quantum key exchange"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            let mut buf = [0_u8; 1024];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(reply("200 OK", "", "secure").as_bytes())
                .await;
            let _ = tls.shutdown().await;
        }
    });
    let mut probe = http_probe(IntOrString::Int(port.into()), "/");
    if let Some(get) = probe.http_get.as_mut() {
        get.scheme = Some("HTTPS".into());
    }
    assert_eq!(run(&probe, &target(vec![])).await, Outcome::Success);
    // The same port spoken to in plain HTTP is no answer a probe accepts.
    let plain = http_probe(IntOrString::Int(port.into()), "/");
    assert!(matches!(
        run(&plain, &target(vec![])).await,
        Outcome::Failure(_)
    ));
}

#[tokio::test]
async fn grpc_passes_only_for_a_serving_service() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("web", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("db", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let probe = |service: &str| Probe {
        grpc: Some(GRPCAction {
            port: port.into(),
            service: Some(service.into()),
        }),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let t = target(vec![]);
    assert_eq!(run(&probe("web"), &t).await, Outcome::Success);
    assert_eq!(
        run(&probe("db"), &t).await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    let unknown = run(&probe("nope"), &t).await;
    assert!(
        matches!(&unknown, Outcome::Failure(m) if m.contains("health rpc probe failed")),
        "{unknown:?}"
    );
}
