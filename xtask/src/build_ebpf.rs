//! `cargo xtask build-ebpf`: builds the kernel programs through the one build path
//! (ingress-userspace/build.rs, aya-build), then shows where the object is and that it
//! carries BTF.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::exec::{output, run, step};

/// Newest object produced by build.rs under `target/<profile>/build/`.
pub fn object(profile: &str) -> Result<PathBuf> {
    let dir = PathBuf::from("target").join(profile).join("build");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
    {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("ingress-userspace-")
        {
            continue;
        }
        let obj = entry.path().join("out").join("ingress");
        if let Ok(meta) = obj.metadata() {
            let t = meta.modified()?;
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, obj));
            }
        }
    }
    best.map(|(_, p)| p)
        .context("no kernel object found; did the build run?")
}

/// Builds and checks the object.
pub fn build_ebpf(release: bool) -> Result<PathBuf> {
    step("building the kernel programs (nightly, bpfel-unknown-none, bpf-linker --btf)");
    let mut args = vec!["build", "--package", "ingress-userspace"];
    if release {
        args.push("--release");
    }
    run("cargo", &args)?;
    let obj = object(if release { "release" } else { "debug" })?;
    let btf = output("bpftool", &["btf", "dump", "file", &obj.to_string_lossy()])
        .context("bpftool btf dump failed: the object has no usable BTF")?;
    for needed in ["VipKey", "FlowKey", "Counter"] {
        if !btf.contains(needed) {
            bail!("BTF of {} lacks type {needed}", obj.display());
        }
    }
    step(&format!(
        "kernel object: {} (BTF present: VipKey, FlowKey, Counter)",
        obj.display()
    ));
    Ok(obj)
}
