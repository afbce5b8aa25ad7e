//! `cargo xtask bench server`: a bounded loopback load test of kernlet's HTTP server.
//!
//! kernlet (release build, defaults: 1 s stats) runs `--pods` static pods on a private
//! containerd. Then `--clients` threads, each on one keep-alive connection, send requests as
//! fast as answers come for `--seconds`, taking turns at the `--path`s (by default
//! `GET /stats/summary` and `GET /healthz`, the two a control plane and a load balancer poll;
//! `--path /pods` is what `kubectl get --raw` and the density driver poll), first on the kubelet port (TLS 1.3 with
//! a client certificate, authenticated and authorized per request) and then the same on the
//! read-only port (plain HTTP, no auth), so the table shows what TLS and auth add. Per path:
//! requests per second, p50, p99 and max latency, and the errors (any answer but 200).
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time on real connections: std time is the right clock"
)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use super::{
    cargo_build_release, machine, poll,
    startup::{Kernlet, POLL, running_pods, with_fixture, write_manifest},
    stats::percentile,
    target_dir,
};
use crate::setup;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Static pods running while the load runs (they make `/stats/summary` realistic).
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long each port is loaded.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// The paths the clients take turns at (repeat the flag for several).
    #[arg(long = "path", default_values_t = ["/stats/summary".to_owned(), "/healthz".to_owned()])]
    pub paths: Vec<String>,
    /// A kernlet binary to measure instead of building the release one.
    #[arg(long, value_name = "PATH")]
    pub kernlet: Option<std::path::PathBuf>,
}

/// Latencies in milliseconds per path, and the failed requests.
#[derive(Debug, Default)]
struct Load {
    millis: BTreeMap<String, Vec<f64>>,
    errors: usize,
    seconds: f64,
}

pub fn cli(args: &ServerArgs) -> Result<()> {
    ensure!(!args.paths.is_empty(), "give at least one --path");
    setup::ensure()?;
    let started = Instant::now();
    let binary = match &args.kernlet {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--kernlet {}: no such file", path.display()),
        None => {
            cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
            target_dir().join("release/kernlet")
        }
    };
    let report = with_fixture(|fixture| {
        let mut kernlet = Kernlet::start_with(&binary, fixture, &[])?;
        let manifests = kernlet.dir.join("manifests");
        for index in 0..args.pods {
            write_manifest(&manifests, index)?;
        }
        poll("all pods run", POLL * 10, Duration::from_mins(5), || {
            kernlet.check_alive()?;
            let body = kernlet.get("/pods").unwrap_or_default();
            Ok((running_pods(&body) >= args.pods).then_some(()))
        })?;
        let tls = load(args, || {
            let stream = kernlet.secure.open(Duration::from_secs(10))?;
            stream.sock.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn ReadWrite>)
        })?;
        let plain = load(args, || {
            let stream = TcpStream::connect(("127.0.0.1", kernlet.port))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn ReadWrite>)
        })?;
        kernlet.check_alive()?;
        let _ = kernlet.stop();
        Ok(table(
            args,
            &[
                ("kubelet port (TLS, x509, authz)", &tls),
                ("read-only port (plain)", &plain),
            ],
        ))
    })?;
    println!("Server load (issue 12)\n{}", machine());
    print!("{report}");
    println!("total bench time {} s", started.elapsed().as_secs());
    Ok(())
}

/// A connection the load runs on.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// `args.clients` threads on connections from `connect` for `args.seconds`.
fn load(
    args: &ServerArgs,
    connect: impl Fn() -> Result<Box<dyn ReadWrite>> + Sync,
) -> Result<Load> {
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let per_client: Vec<Result<Load>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..args.clients)
            .map(|client| {
                let connect = &connect;
                scope.spawn(move || -> Result<Load> {
                    let mut stream = connect()?;
                    let mut own = Load::default();
                    let mut turn = client;
                    while Instant::now() < until {
                        let path = &args.paths[turn % args.paths.len()];
                        turn += 1;
                        let sent = Instant::now();
                        if matches!(request(&mut stream, path), Ok(200)) {
                            let took = sent.elapsed().as_secs_f64() * 1e3;
                            own.millis.entry(path.clone()).or_default().push(took);
                        } else {
                            own.errors += 1;
                            stream = connect()?;
                        }
                    }
                    Ok(own)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| bail!("a load client panicked")))
            .collect()
    });
    let mut total = Load {
        seconds: started.elapsed().as_secs_f64(),
        ..Load::default()
    };
    for client in per_client {
        let client = client?;
        total.errors += client.errors;
        for (path, mut millis) in client.millis {
            total.millis.entry(path).or_default().append(&mut millis);
        }
    }
    Ok(total)
}

/// One keep-alive `GET path`: the status; the body (`Content-Length`) is read and dropped.
fn request(stream: &mut Box<dyn ReadWrite>, path: &str) -> Result<u16> {
    // One write: one TLS record, one segment.
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
    stream.flush()?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(stream.read(&mut byte)? == 1, "connection closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no content-length")?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

fn table(args: &ServerArgs, runs: &[(&str, &Load)]) -> String {
    let mut out = format!(
        "{} pods, {} clients on keep-alive connections, {} s per port, {} taking turns\n\n\
         | port | path | requests/s | p50 ms | p99 ms | max ms | errors |\n\
         |---|---|---|---|---|---|---|\n",
        args.pods,
        args.clients,
        args.seconds,
        args.paths.join(", ")
    );
    for (name, load) in runs {
        for path in &args.paths {
            let mut millis = load.millis.get(path).cloned().unwrap_or_default();
            if millis.is_empty() {
                let _ = writeln!(out, "| {name} | {path} | 0 | - | - | - | {} |", load.errors);
                continue;
            }
            millis.sort_by(f64::total_cmp);
            let _ = writeln!(
                out,
                "| {name} | `{path}` | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                millis.len() as f64 / load.seconds,
                percentile(&millis, 50.0),
                percentile(&millis, 99.0),
                millis.last().copied().unwrap_or_default(),
                load.errors
            );
        }
    }
    out
}
