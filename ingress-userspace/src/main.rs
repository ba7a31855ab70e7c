//! `ingressd` entry point: parse, set up logging, hand over to the library.
use clap::Parser as _;

/// mimalloc instead of glibc's malloc: hyper gives every HTTP/2 stream a task of ~6 KB, above
/// glibc's per-thread cache, so each request went through its bins (about 9% of an HTTP/2
/// request's CPU); measured 0.89x CPU per HTTP/2 request and a faster translator
/// (BENCHMARKS.md), for about 10-30 MB more resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = ingress::cli::Cli::parse();
    let kernel_log = matches!(&cli.command, ingress::cli::Command::Run(r) if r.kernel_log);
    ingress::telemetry::init(cli.log_format, kernel_log);
    ingress::app::main(cli)
}
