//! `ingressd` as the integration tests run it: the same three lines as the real binary's
//! `main.rs`, built in this package so tests can find it through `CARGO_BIN_EXE_*`.
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = ingress::cli::Cli::parse();
    ingress::telemetry::init(
        cli.log_format,
        matches!(&cli.command, ingress::cli::Command::Run(r) if r.kernel_log),
    );
    ingress::app::main(cli)
}
