//! Project tasks: `cargo xtask <setup | build-ebpf | test | demo | bench ...>`.
mod bench;
mod build_ebpf;
mod demo;
mod exec;
mod setup;
mod test;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <command>
  setup                 make a fresh Debian 12 machine (root) ready: apt packages, rust-src, bpf-linker
  build-ebpf [--debug]  build the kernel programs and check their BTF
  test [ARGS..]         run unit and privileged integration tests (fails if BPF/netns unavailable)
  demo                  run ingressd standalone on deploy/examples in a throwaway netns topology
  bench <xdp|l7|passthrough|control-plane> [ARGS..]
                        run a benchmark against its peers (installs nginx/HAProxy/wrk as needed)";

fn main() -> Result<()> {
    // Run from the workspace root whatever the caller's directory.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup::setup(),
        Some("build-ebpf") => {
            build_ebpf::build_ebpf(!args.iter().any(|a| a == "--debug")).map(|_| ())
        }
        Some("test") => test::test(&args[1..]),
        Some("bench") => bench::bench(
            args.get(1).map(String::as_str),
            args.get(2..).unwrap_or_default(),
        ),
        Some("demo") => demo::demo(),
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown or missing command")
        }
    }
}
