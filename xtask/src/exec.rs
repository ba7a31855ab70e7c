//! The one way xtask runs commands: echoed, checked, with a clear error naming the command.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Prints a progress line for a long step.
pub fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// Runs `prog args..`, inheriting stdio; fails if it exits non-zero.
pub fn run(prog: &str, args: &[&str]) -> Result<()> {
    run_env(prog, args, &[])
}

/// Like [`run`] with extra environment variables.
pub fn run_env(prog: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("    $ {prog} {}", args.join(" "));
    let status = Command::new(prog)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("starting {prog}"))?;
    if !status.success() {
        bail!("`{prog} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs quietly and returns stdout, or None if it could not run or failed.
pub fn output(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    output("sh", &["-c", &format!("command -v {prog}")]).is_some()
}
