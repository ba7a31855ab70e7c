//! `cargo xtask test`: unit tests and the privileged integration tests (BPF, XDP, network
//! namespaces). Fails loudly, before building, when the machine cannot run them.
use std::path::Path;

use anyhow::{bail, Result};

use crate::exec::{have, output, run, step};

/// Checks that privileged tests can run; each failure names what is missing.
pub fn preflight() -> Result<()> {
    let mut problems = Vec::new();
    if output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        problems.push("not root: BPF, XDP and network namespaces need root".to_string());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        problems.push("bpffs not mounted at /sys/fs/bpf (run `cargo xtask setup`)".to_string());
    }
    for tool in ["ip", "ethtool", "bpf-linker"] {
        if !have(tool) {
            problems.push(format!("`{tool}` not found (run `cargo xtask setup`)"));
        }
    }
    if output("cargo", &["fuzz", "--version"]).is_none() {
        problems.push("`cargo fuzz` not found (run `cargo xtask setup`)".to_string());
    }
    if output("ip", &["netns", "list"]).is_none() {
        problems.push("`ip netns` does not work here".to_string());
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        bail!("privileged tests cannot run on this machine; refusing to report a partial pass");
    }
    step("preflight ok: root, bpffs, iproute2, ethtool, bpf-linker, cargo-fuzz");
    Ok(())
}

/// Runs all tests of the workspace.
pub fn test(extra: &[String]) -> Result<()> {
    preflight()?;
    // Checked before the build and the tests, not minutes later when the smoke runs start.
    let missing: Vec<&str> = ["nginx", "haproxy", "wrk", "h2load"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the benchmark smoke runs need {} (run `cargo xtask setup`)",
            missing.join(", ")
        );
    }
    sweep_leftovers();
    step("building and running every test (unit + privileged integration)");
    // The kernel crate only builds for bpfel-unknown-none (build.rs of ingress-userspace does it).
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "ingress-ebpf",
        "--no-fail-fast",
    ];
    args.extend(extra.iter().map(String::as_str));
    run("cargo", &args)?;
    if !extra.is_empty() {
        // A filter or cargo flags select part of the suite: the fuzzing and the benchmark
        // smoke runs belong to the whole run only, and the message says so.
        step("selected tests passed (fuzzing and benchmark smoke runs are not run with arguments)");
        return Ok(());
    }
    fuzz(
        "clienthello",
        "the ClientHello parser",
        "tests/data/clienthello",
        FUZZ_HELLO_SECS,
    )?;
    fuzz(
        "clienthello_rustls",
        "the ClientHello parser against rustls",
        "tests/data/clienthello",
        FUZZ_HELLO_RUSTLS_SECS,
    )?;
    fuzz(
        "path",
        "the path normalizer",
        "tests/data/paths",
        FUZZ_PATH_SECS,
    )?;
    fuzz(
        "proxy_header",
        "the PROXY protocol decoder",
        "tests/data/proxy_protocol",
        FUZZ_PROXY_SECS,
    )?;
    fuzz(
        "framing",
        "the smuggling guard's HTTP/1 scanner against hyper",
        "tests/data/framing",
        FUZZ_FRAMING_SECS,
    )?;
    bench_smoke()?;
    step("all tests passed");
    Ok(())
}

/// Runs every benchmark once at tiny sizes, from the debug builds `cargo test` just made, so a
/// benchmark that no longer starts, routes or checks its peers fails here instead of on the
/// next measurement. The figures are meaningless and not printed as results.
fn bench_smoke() -> Result<()> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let ingressd = format!("{target}/debug/ingressd_under_test");
    let ingressd = ingressd.as_str();
    let runs: [(&str, &[&str]); 5] = [
        (
            "bench_xdp",
            &[
                "--calls",
                "200",
                "--batches",
                "2",
                "--vips",
                "20",
                "--conntrack",
                "2000",
            ],
        ),
        // Rounds, frames per run.
        ("bench_pps", &["1", "20000"]),
        (
            "bench_l7",
            &[
                "--rounds",
                "1",
                "--duration",
                "1",
                "--pause",
                "0",
                "--ingressd",
                ingressd,
            ],
        ),
        (
            "bench_passthrough",
            &[
                "--rounds",
                "1",
                "--single-mib",
                "8",
                "--multi-mib",
                "1",
                "--conns",
                "4",
                "--rr-secs",
                "0.5",
                "--pause",
                "0",
                "--wait-mins",
                "0",
                "--ingressd",
                ingressd,
            ],
        ),
        ("examples/bench_control_plane", &["--small"]),
    ];
    for (bin, args) in runs {
        step(&format!(
            "benchmark smoke run (debug build, tiny sizes: the figures mean nothing): {bin}"
        ));
        run(&format!("{target}/debug/{bin}"), args)?;
    }
    Ok(())
}

/// The pid in a name the tests give their namespaces and pin directories,
/// `xit-<tag>-<pid>-<suffix>` (`tests::netns::owned`).
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.split('-');
    if parts.next()? != "xit" {
        return None;
    }
    parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

/// Removes the network namespaces and bpffs pin directories of test and benchmark runs that
/// were killed before their guards ran: those whose creating process is gone. A live run's
/// are never touched.
fn sweep_leftovers() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut removed = Vec::new();
    for entry in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name) && output("ip", &["netns", "del", &name]).is_some() {
            removed.push(name);
        }
    }
    for entry in std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        step(&format!(
            "removed what killed earlier runs left behind: {}",
            removed.join(" ")
        ));
    }
}

/// How long CI fuzzes the ClientHello parser (hostile input from any client on :443).
const FUZZ_HELLO_SECS: u32 = 40;
/// How long CI fuzzes the same parser against rustls (where rustls reads a hello, ours must
/// route it by the same name).
const FUZZ_HELLO_RUSTLS_SECS: u32 = 20;
/// How long CI fuzzes the path normalizer (hostile input from any client, and routing
/// depends on its answer).
const FUZZ_PATH_SECS: u32 = 30;
/// How long CI fuzzes the PROXY protocol decoder (the first bytes of every connection behind
/// a load balancer; a small grammar).
const FUZZ_PROXY_SECS: u32 = 20;
/// How long CI fuzzes the smuggling guard's scanner against hyper (every HTTP/1 byte a
/// client sends; a scanner that loses its place in the stream blinds the guard).
const FUZZ_FRAMING_SECS: u32 = 30;

/// Fuzzes the target `name` (`fuzz/fuzz_targets/<name>.rs`) for `secs`, seeded with the
/// committed corpus in `corpus`; new inputs go to a scratch directory, so the tree stays
/// clean. A crash fails the run with libFuzzer's report and the input that caused it.
fn fuzz(name: &str, what: &str, corpus: &str, secs: u32) -> Result<()> {
    step(&format!(
        "fuzzing {what} for {secs} s (libFuzzer, address sanitizer)"
    ));
    let scratch = std::env::temp_dir().join(format!("{name}-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let scratch_dir = scratch.display().to_string();
    let max_time = format!("-max_total_time={secs}");
    let result = run(
        "cargo",
        &[
            "+nightly",
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            name,
            &scratch_dir,
            corpus,
            "--",
            &max_time,
            "-print_final_stats=1",
        ],
    );
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_reads_only_names_the_tests_make() {
        assert_eq!(owner_pid("xit-tc-4242-0"), Some(4242));
        assert_eq!(owner_pid("xit-benchl7-17-ingressd"), Some(17));
        assert_eq!(owner_pid("xit-tc-4242"), None, "no suffix");
        assert_eq!(owner_pid("xit-tc-notapid-0"), None);
        assert_eq!(owner_pid("ingressd"), None, "a production pin dir");
        assert_eq!(
            owner_pid("cni-1234-5678-9"),
            None,
            "someone else's namespace"
        );
    }
}
