//! `ingressd` entry point: parse, set up logging, hand over to the library.
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = ingress::cli::Cli::parse();
    let kernel_log = matches!(&cli.command, ingress::cli::Command::Run(r) if r.kernel_log);
    ingress::telemetry::init(cli.log_format, kernel_log);
    ingress::app::main(cli)
}
