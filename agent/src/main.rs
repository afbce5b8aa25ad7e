//! The `kernlet` node agent binary: flags and config, logging, signals; the rest is the library.
//!
//! The allocator is jemalloc (feature `jemalloc`, on by default), with freed pages purged after
//! about a second by its background thread and its mappings kept off transparent huge pages (on
//! THP `always` kernels a purge otherwise costs whole 2 MiB pages; `JEMALLOC_SYS_WITH_MALLOC_CONF`
//! in `.cargo/config.toml`). Measured by `cargo xtask bench stats` (its burst; docs/perf.md): after
//! an HTTP flood glibc's malloc kept the peak (its arenas hold freed memory until `malloc_trim`),
//! jemalloc is back at its idle size within 10 s and half glibc's size at rest; the price is a
//! few hundred page faults per second.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kernlet::config::{self, Flags};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "kernlet", version, about = "A Kubernetes node agent")]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.flags.v {
        0..=1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let loaded = match config::load(&cli.flags) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("kernlet: {error}");
            return ExitCode::from(2);
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    raise_open_file_limit();
    match run(loaded.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kernlet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The stats collector keeps one descriptor per cgroup file it samples (up to 14 per cgroup), so
/// the soft `RLIMIT_NOFILE` goes up to the hard limit, which needs no privilege.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open file limit"),
    }
}

#[tokio::main]
async fn run(config: config::KubeletConfig) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let name = wait_for_signal().await;
        tracing::info!(signal = name, "shutting down");
        on_signal.cancel();
    });
    kernlet::daemon::run(config, cancel).await?;
    Ok(())
}

/// SIGTERM or SIGINT; the name of the one that came.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop kernlet with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
