//! `cargo xtask <task>`: see `cargo xtask --help`.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask::{bench, demo, images, layers, setup, test, vm};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kernlet developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run kernlet in standalone mode on a private containerd with the example static pods.
    Demo(demo::DemoArgs),
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup(setup::SetupArgs),
    /// Build the OCI test images (pause, busybox) into target/xtask/images.
    Images(images::ImagesArgs),
    /// Run the whole suite (lint, unit, host, vm tiers); what `.ci/run` calls.
    Test(test::TestArgs),
    /// Boot a throw-away pure cgroup v2 VM and run a command in it; exits with its status.
    Vm(vm::VmArgs),
    /// Check that agent modules import only modules below them (docs/architecture.md).
    Layers(layers::LayersArgs),
    /// Run a benchmark against a release build on private containerd fixtures (needs root).
    Bench(bench::BenchArgs),
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.task {
        Task::Demo(args) => demo::cli(&args).map(|()| ExitCode::SUCCESS),
        Task::Setup(args) => setup::cli(&args).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Task::Images(args) => images::cli(&args).map(|()| ExitCode::SUCCESS),
        Task::Test(args) => test::cli(&args).map(success),
        Task::Vm(args) => vm::cli(&args).map(exit_code),
        Task::Layers(args) => layers::cli(&args).map(|()| ExitCode::SUCCESS),
        Task::Bench(args) => bench::cli(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// Maps an inner exit status to ours (statuses outside 0..=255 become 255).
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}

fn success(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
