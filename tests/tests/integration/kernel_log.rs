//! Kernel log statements (aya-log): loaded with `--kernel-log` they report drops and new flows
//! through the ring buffer; loaded without it they are removed by the verifier and cost nothing.
use std::sync::{Arc, Mutex};

use aya_log::EbpfLogger;
use ingress_common::counters::Stat;
use tests::{
    packet::{Spec, SYN},
    xdp::{lab_services, XdpLab},
};

const DROP: u32 = 1;
const REDIRECT: u32 = 4;

/// A `log` sink that keeps "target: message" lines.
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        self.0
            .lock()
            .expect("capture lock")
            .push(format!("{}: {}", r.target(), r.args()));
    }
    fn flush(&self) {}
}

/// A new flow to the lab's TCP VIP and a malformed packet (IHL < 5) to the same VIP.
fn frames() -> (Vec<u8>, Vec<u8>) {
    let syn = Spec::tcp("198.18.0.2", 41000, "198.19.0.10", 80, SYN).build();
    let mut bad = syn.clone();
    bad[14] = 0x44;
    (syn, bad)
}

/// Runs both frames and returns the verdicts and every record the programs logged.
fn run(lab: &mut XdpLab) -> ((u32, u32), Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut logger = EbpfLogger::init_with_logger(lab.datapath.ebpf_mut(), Capture(seen.clone()))
        .expect("the object carries the aya-log ring buffer");
    let (syn, bad) = frames();
    let v1 = lab.run(&syn, lab.ifindex_a).expect("SYN run").0;
    let v2 = lab.run(&bad, lab.ifindex_a).expect("malformed run").0;
    logger.flush();
    let lines = seen.lock().expect("capture lock").clone();
    ((v1, v2), lines)
}

fn jitted_size(lab: &XdpLab) -> u32 {
    lab.prog()
        .expect("xdp_lb")
        .info()
        .expect("program info")
        .size_jitted()
}

#[test]
fn kernel_log_reports_new_flows_and_drops_only_when_turned_on() {
    let mut on = XdpLab::with_kernel_log(&lab_services()).expect("XDP lab (needs root, BPF)");
    let (verdicts, lines) = run(&mut on);
    assert_eq!(verdicts, (REDIRECT, DROP), "logging changes no verdict");
    assert_eq!(lines.len(), 2, "one record per event: {lines:?}");
    assert!(
        lines[0].starts_with("ingress::programs::xdp_flow: new flow: vip ")
            && lines[0].contains(" backend ")
            && lines[0].contains(" snat port 2"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "ingress::programs::xdp_lb: drop: stat {} vip ",
            Stat::DropMalformed as u32
        )),
        "{lines:?}"
    );
    let size_on = jitted_size(&on);
    drop(on);

    let mut off = XdpLab::new(&lab_services(), 16, 4096).expect("XDP lab (needs root, BPF)");
    let (verdicts, lines) = run(&mut off);
    assert_eq!(verdicts, (REDIRECT, DROP));
    assert!(lines.is_empty(), "log statements ran while off: {lines:?}");
    let size_off = jitted_size(&off);
    assert!(
        size_off < size_on,
        "the verifier removes disabled log statements: {size_off} bytes off vs {size_on} on"
    );
}
