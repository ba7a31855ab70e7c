//! `cargo xtask setup`: makes a fresh Debian 12 machine (as root) ready to build and test,
//! idempotently: every step checks first and skips what is already there.
use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{bail, Result};

use crate::exec::{have, output, run, run_env, step};

/// Packages needed to build the kernel programs and run the privileged tests.
const APT: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "iptables",
    "ipvsadm",
    "curl",
    // The benchmarks' peers: `cargo xtask test` runs every benchmark once at tiny sizes.
    "nginx",
    "libnginx-mod-stream",
    "haproxy",
    "wrk",
    "nghttp2-client",
];

/// Installs Debian packages that are missing.
pub fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        step(&format!("apt packages present ({})", packages.len()));
        return Ok(());
    }
    step(&format!("installing apt packages: {}", missing.join(" ")));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    // nginx and haproxy would start their system services on install; the benchmarks run
    // their own instances. A policy-rc.d answering "forbidden" stops that, unless one exists.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = (|| {
        run_env("apt-get", &["update", "-q"], &env)?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        run_env("apt-get", &args, &env)
    })();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    if installed.is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src"))) {
        step("rust-src for nightly present");
        return Ok(());
    }
    step("adding rust-src to the installed nightly");
    run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"]).is_some_and(|v| v.contains("0.13.0")) {
        step("bpf-linker 0.13.0 present");
        return Ok(());
    }
    step("building bpf-linker 0.13.0 against LLVM 22 (about a minute)");
    // Without LLVM_PREFIX the build finds the image's LLVM 14 llvm-config first and fails.
    run_env(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
        &[
            ("LLVM_PREFIX", "/usr/lib/llvm-22"),
            ("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
        ],
    )
}

fn cargo_fuzz() -> Result<()> {
    if output("cargo", &["fuzz", "--version"]).is_some() {
        step("cargo-fuzz present");
        return Ok(());
    }
    step("building cargo-fuzz (about a minute)");
    run(
        "cargo",
        &["install", "cargo-fuzz", "--version", "0.13.2", "--locked"],
    )
}

/// Mounts bpffs at /sys/fs/bpf if it is not mounted.
pub fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        step("bpffs mounted");
        return Ok(());
    }
    step("mounting bpffs at /sys/fs/bpf");
    std::fs::create_dir_all("/sys/fs/bpf")?;
    run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])
}

/// Runs every setup step.
pub fn setup() -> Result<()> {
    if output("id", &["-u"]).is_none_or(|u| u.trim() != "0") {
        bail!("cargo xtask setup must run as root (it installs packages and mounts bpffs)");
    }
    apt(APT)?;
    if !have("rustup") {
        bail!("rustup not found: the installed Rust toolchain is expected to come from rustup");
    }
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    bpffs()?;
    step("setup complete");
    Ok(())
}
