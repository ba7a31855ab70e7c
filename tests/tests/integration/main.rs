//! The one integration test binary. Privileged tests (BPF, netns) run here too and fail with
//! the reason when the machine cannot run them; they are never skipped silently.

mod bench_manifests;
mod deploy;
mod edge;
mod kernel_log;
mod kube_mode;
mod kube_source;
mod l7_annotations;
mod l7_lifecycle;
mod l7_limits;
mod l7_protocols;
mod l7_real_ip;
mod l7_routing;
mod l7_tls;
mod l7_upstream;
mod manifests;
mod passthrough;
mod pins;
mod restart;
mod standalone;
mod xdp_edge;
mod xdp_lb;
mod xdp_netns;
