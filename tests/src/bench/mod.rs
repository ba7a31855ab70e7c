//! Helpers of the benchmark binaries (`src/bin/bench_*.rs`), one module per benchmark.
pub mod l7;
pub mod passthrough;
