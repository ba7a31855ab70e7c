//! Edge protection through the real binary: `--block-cidrs` and `--edge-syn-rate` with the
//! XDP program attached to the node of a namespace topology.
use std::{net::SocketAddr, time::Duration};

use tests::{
    ingressd::{l4_node_args, tcp_services_yaml, Ingressd},
    netns::sh,
    topology::{backend_ip, connects, Server, Topology, SNAT},
};

const BIN: &str = env!("CARGO_BIN_EXE_ingressd_under_test");

fn manifests(dir: &std::path::Path) {
    let endpoints = format!("{}:8080", backend_ip(1));
    std::fs::write(dir.join("l4.yaml"), tcp_services_yaml(&endpoints)).unwrap();
}

/// Whether the client connects to `addr` within half a second.
fn reaches(topo: &Topology, addr: SocketAddr) -> bool {
    connects(&topo.client, addr, Duration::from_millis(500))
}

fn counter(metrics: &str, outcome: &str) -> u64 {
    tests::metric(
        metrics,
        &format!("ingress_xdp_packets_total{{outcome=\"{outcome}\"}}"),
    )
}

fn start(topo: &Topology, dir: &std::path::Path, pin_dir: &str, extra: &[&str]) -> Ingressd {
    let mut args = l4_node_args(dir, pin_dir, &["nc", "nb1"]);
    // A wildcard listener: the guarded addresses are the node's addresses the flags name.
    for a in [
        "--http-addr=0.0.0.0:8081",
        "--https-addr=198.18.0.1:8443",
        "--publish-address=198.18.0.1",
    ] {
        args.push(a.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = dir.join(format!("ingressd-{}.log", extra.len()));
    let mut d = Ingressd::start(
        BIN.as_ref(),
        Some(&topo.node),
        &args,
        "127.0.0.1:10254",
        &log,
    )
    .unwrap();
    d.wait_ready(Duration::from_secs(20)).unwrap();
    d
}

#[test]
fn the_binary_drops_blocked_clients_and_syn_bursts_in_the_driver() {
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _backend = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    // The VIP is the node's own address, as `--l4-address=$(NODE_IP)` makes it.
    topo.node.run("ip addr add 198.19.0.10/32 dev lo").unwrap();
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("edge", "pins"));
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let http: SocketAddr = "198.18.0.1:8081".parse().unwrap();
    let https: SocketAddr = "198.18.0.1:8443".parse().unwrap();

    let mut d = start(
        &topo,
        dir.path(),
        &pin_dir,
        &["--block-cidrs", "198.18.0.0/30,192.0.2.0/24"],
    );
    for addr in [vip, http, https] {
        assert!(!reaches(&topo, addr), "blocked client connected to {addr}");
    }
    // A client on the node itself never crosses the XDP interfaces: ingressd's listener on
    // the VIP serves it (the block list is the edge's).
    assert!(
        connects(&topo.node, vip, Duration::from_secs(2)),
        "a client on the node could not reach the VIP:\n{}",
        d.log_text()
    );
    let m = d.metrics().unwrap_or_default();
    // Each refused connect is at least its first SYN, dropped before the stack saw it.
    assert!(counter(&m, "drop_blocked") >= 3, "{m}");
    // What is guarded, as `ingressd inspect` reads it from the pins: the wildcard HTTP
    // listener on each node address the flags name, the HTTPS listener, the VIP.
    let text = inspect(&pin_dir);
    for line in [
        "edge: 5 guarded destinations, 2 blocked prefixes, no SYN rate limit",
        "guarded 198.18.0.1:8081/tcp  (listener)",
        "guarded 198.19.0.10:8081/tcp  (listener)",
        &format!("guarded {SNAT}:8081/tcp  (listener)"),
        "guarded 198.18.0.1:8443/tcp  (listener)",
        "guarded 198.19.0.10:80/tcp  (VIP #0)",
        "blocked 192.0.2.0/24",
        "blocked 198.18.0.0/30",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    d.signal(libc::SIGTERM).unwrap();
    d.wait(Duration::from_secs(10)).unwrap();

    // Restarted over the same pinned maps without the block list, with a SYN rate.
    let d = start(
        &topo,
        dir.path(),
        &pin_dir,
        &["--edge-syn-rate", "1", "--edge-syn-burst", "2"],
    );
    assert!(reaches(&topo, vip), "the block outlived its flag");
    assert!(reaches(&topo, http));
    assert!(
        !reaches(&topo, https),
        "a third connection in one second got through"
    );
    let m = d.metrics().unwrap_or_default();
    assert!(counter(&m, "drop_syn_rate") >= 1, "{m}");
    assert!(counter(&m, "pass_edge_checked") >= 1, "{m}");
    let text = inspect(&pin_dir);
    let want = "edge: 5 guarded destinations, 0 blocked prefixes, SYN rate 1/s per source, burst 2";
    assert!(text.contains(want), "{text}");
    stop_and_clean(d, &pin_dir);
}

/// Stops ingressd and removes its pins (its programs stay attached through them).
fn stop_and_clean(mut d: Ingressd, pin_dir: &str) {
    d.signal(libc::SIGTERM).unwrap();
    d.wait(Duration::from_secs(10)).unwrap();
    let _ = std::process::Command::new(BIN)
        .args(["cleanup", "--pin-dir", pin_dir])
        .status();
    let _ = sh(&format!("rm -rf {pin_dir}"));
}

/// `ingressd inspect` over the pins.
fn inspect(pin_dir: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["inspect", "--pin-dir", pin_dir])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most 10 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_controller_configmaps_block_list_reaches_the_driver_without_a_restart() {
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _backend = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let cm = dir.path().join("controller.yaml");
    let write_cm = |data: &str| {
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ingressd\n  namespace: default\ndata:\n{data}"
        );
        std::fs::write(&cm, yaml).unwrap();
    };
    write_cm("  block-cidrs: 198.18.0.0/30\n");
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("edgecm", "pins"));
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let http: SocketAddr = "198.18.0.1:8081".parse().unwrap();

    let d = start(
        &topo,
        dir.path(),
        &pin_dir,
        &["--configmap", "default/ingressd"],
    );
    for addr in [vip, http] {
        assert!(!reaches(&topo, addr), "blocked client connected to {addr}");
    }
    let m = d.metrics().unwrap_or_default();
    assert!(counter(&m, "drop_blocked") >= 2, "{m}");
    let text = inspect(&pin_dir);
    assert!(text.contains("blocked 198.18.0.0/30"), "{text}");

    // Another prefix: this client connects again, without a restart.
    write_cm("  block-cidrs: 192.0.2.0/24\n");
    eventually("the edited block list took effect", || reaches(&topo, vip));
    assert!(reaches(&topo, http));
    let text = inspect(&pin_dir);
    assert!(
        text.contains("blocked 192.0.2.0/24") && !text.contains("198.18.0.0/30"),
        "{text}"
    );
    // The key removed (and no rate limit): nothing is guarded or blocked any more.
    write_cm("  proxy-body-size: 2m\n");
    eventually("the block list emptied", || {
        inspect(&pin_dir).contains("edge: 0 guarded destinations, 0 blocked prefixes")
    });
    assert!(reaches(&topo, vip));

    stop_and_clean(d, &pin_dir);
}

/// An L4 service whose Service is of type ExternalName (an IP address here: the topology has
/// no DNS): the kernel balances over the address it names, with the Service's target port.
#[test]
fn an_l4_service_reaches_an_external_name_backend() {
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _backend = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = tcp_services_yaml("").replace(
        "  annotations:\n    ingress.example.dev/endpoints: \"\"\nspec:\n  ports:\n  - name: echo\n    port: 8080\n",
        &format!(
            "spec:\n  type: ExternalName\n  externalName: {}\n  ports:\n  - name: echo\n    port: 8080\n    targetPort: 8080\n",
            backend_ip(1)
        ),
    );
    assert!(yaml.contains("ExternalName"), "{yaml}");
    std::fs::write(dir.path().join("l4.yaml"), yaml).unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("extl4", "pins"));
    let d = start(&topo, dir.path(), &pin_dir, &[]);
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let mut conn = tests::topology::Conn::open(&topo.client, vip).expect("connect to the VIP");
    let answer = conn.ask("hello\n");
    let log = d.log_text();
    // Its pins keep the programs attached: removed before anything is asserted.
    stop_and_clean(d, &pin_dir);
    let answer = answer.expect("an answer");
    assert_eq!(answer.trim(), "b1 hello", "{log}");
}

/// A `tcp-services` entry for a port a socket of the node already serves (here ingressd's
/// own wildcard HTTP listener, as a node's sshd or kubelet would be) is left out of the
/// kernel maps with a warning: the listener keeps its port. The other entry is served.
#[test]
fn an_l4_entry_never_takes_a_port_the_node_serves() {
    let topo = Topology::new(1).expect("topology (needs root, netns, ethtool)");
    let _backend = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = tcp_services_yaml(&format!("{}:8080", backend_ip(1))).replace(
        "  \"80\": \"default/echo:8080\"\n",
        "  \"80\": \"default/echo:8080\"\n  \"8081\": \"default/echo:8080\"\n",
    );
    assert!(yaml.contains("8081"), "{yaml}");
    std::fs::write(dir.path().join("l4.yaml"), yaml).unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("taken", "pins"));
    let d = start(&topo, dir.path(), &pin_dir, &[]);
    let served = tests::topology::Conn::open(&topo.client, "198.19.0.10:80".parse().unwrap())
        .and_then(|mut c| c.ask("hello\n"));
    // The VIP is not an address of the node here: with the entry left out, the node's stack
    // refuses to route it.
    let left_out = tests::topology::Conn::open(&topo.client, "198.19.0.10:8081".parse().unwrap())
        .and_then(|mut c| c.ask("hello\n"));
    let text = inspect(&pin_dir);
    let log = d.log_text();
    stop_and_clean(d, &pin_dir);
    assert_eq!(served.expect("the free port").trim(), "b1 hello", "{log}");
    assert!(
        !left_out.as_deref().is_ok_and(|a| a.starts_with("b1")),
        "balanced to the backend: {left_out:?}"
    );
    assert!(
        text.contains("VIPs: 1\n") && text.contains("198.19.0.10:80/tcp  backends 1"),
        "{text}"
    );
    assert!(!text.contains("8081/tcp"), "{text}");
    assert!(
        log.contains("L4 service left out: a socket of this host already serves that port")
            && log.contains("port=8081"),
        "{log}"
    );
}
