//! `cargo xtask demo`: builds everything, then runs the demo binary, which sets up a throwaway
//! network-namespace topology with demo backends and runs `ingressd` standalone on
//! `deploy/examples/` until Ctrl-C.
use anyhow::Result;

use crate::{
    exec::{run, step},
    setup::bpffs,
    test::preflight,
};

/// Builds and runs the demo.
pub fn demo() -> Result<()> {
    preflight()?;
    bpffs()?;
    step("building ingressd and the demo (release; several minutes on a fresh machine)");
    run(
        "cargo",
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "ingress-userspace",
            "-p",
            "tests",
            "--bin",
            "ingressd",
            "--bin",
            "demo",
        ],
    )?;
    step("starting the demo (Ctrl-C to stop and clean up)");
    run(
        "target/release/demo",
        &["target/release/ingressd", "deploy/examples"],
    )
}
