//! The one integration test binary. Privileged tests (BPF, netns) run here too and fail with
//! the reason when the machine cannot run them; they are never skipped silently.

mod manifests;
