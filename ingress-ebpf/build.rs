//! Rebuild the object when bpf-linker changes, and fail early with a clear message if the
//! linker is missing (the usual cause is a machine that has not run `cargo xtask setup`).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.starts_with("bpf") {
        return;
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => panic!("bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
