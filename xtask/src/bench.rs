//! `cargo xtask bench <xdp | l7 | passthrough | control-plane>`: installs the peers a benchmark
//! compares against, then runs its binary in release mode. Results go to BENCHMARKS.md by hand,
//! with the command that produced them.
use anyhow::{bail, Result};

use crate::{
    exec::{run, step},
    setup::{apt, bpffs},
    test::preflight,
};

fn run_bin(bin: &str, args: &[String]) -> Result<()> {
    let mut a = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "tests",
        "--bin",
        bin,
        "--",
    ];
    a.extend(args.iter().map(String::as_str));
    run("cargo", &a)
}

/// Runs the named benchmark with extra arguments passed through.
pub fn bench(which: Option<&str>, args: &[String]) -> Result<()> {
    match which {
        Some("xdp") => {
            preflight()?;
            bpffs()?;
            step("part 1: per-packet cost through BPF_PROG_TEST_RUN");
            run_bin("bench_xdp", args)?;
            step("part 2: packets/s through a veth topology vs iptables (and IPVS where the kernel has it)");
            apt(&["iptables", "ipvsadm"])?;
            run_bin("bench_pps", &[])
        }
        Some("l7") => {
            apt(&["nginx", "haproxy", "wrk", "nghttp2-client"])?;
            run_bin("bench_l7", args)
        }
        Some("passthrough") => {
            preflight()?;
            apt(&["nginx", "libnginx-mod-stream", "haproxy"])?;
            run_bin("bench_passthrough", args)
        }
        Some("control-plane") => {
            step("10,000 Ingresses, 5,000 Services, 50,000 endpoints through the store and translator");
            let mut a = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "ingress-userspace",
                "--example",
                "bench_control_plane",
                "--",
            ];
            a.extend(args.iter().map(String::as_str));
            run("cargo", &a)
        }
        other => {
            bail!("unknown benchmark {other:?}: expected xdp, l7, passthrough or control-plane")
        }
    }
}
