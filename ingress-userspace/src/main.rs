//! `ingressd` entry point: parse, set up logging, hand over to the library.
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = ingress::cli::Cli::parse();
    ingress::telemetry::init(cli.log_format);
    ingress::app::main(cli)
}
