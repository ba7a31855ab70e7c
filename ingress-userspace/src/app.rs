//! Wires the pipeline together: sources, store, translate, appliers, listeners; and drains it.
use crate::cli::Cli;

/// Runs the command given on the command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("command not wired yet: {:?}", cli.command)
}
