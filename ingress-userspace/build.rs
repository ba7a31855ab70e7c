//! Builds the kernel programs with aya-build (nightly, bpfel-unknown-none, bpf-linker --btf)
//! and leaves the object in OUT_DIR, where `include_bytes_aligned!` embeds it.
//! This is the one build path for the object; `cargo xtask build-ebpf` drives it.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "ingress-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ingress-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
