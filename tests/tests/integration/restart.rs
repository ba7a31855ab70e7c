//! Hitless restarts: the XDP L4 path keeps forwarding while `ingressd` is killed and started
//! again (pinned maps and links), and a SIGTERM lets in-flight L7 requests finish.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use tests::{
    ingressd::{class_and_service_yaml, ingress_yaml, l4_node_args, tcp_services_yaml, Ingressd},
    netns::{in_ns, sh},
    topology::{backend_ip, Server, Topology},
};

const BIN: &str = env!("CARGO_BIN_EXE_ingressd_under_test");

fn l4_manifests(dir: &std::path::Path) {
    let endpoints = format!("{}:8080,{}:8080", backend_ip(1), backend_ip(2));
    std::fs::write(dir.join("l4.yaml"), tcp_services_yaml(&endpoints)).unwrap();
}

fn run_args(dir: &std::path::Path, pin_dir: &str) -> Vec<String> {
    let mut args = l4_node_args(dir, pin_dir, &["nc", "nb1", "nb2"]);
    for a in [
        "--http-addr=198.18.0.1:8081",
        "--https-addr=198.18.0.1:8443",
        "--conntrack-entries=65536",
    ] {
        args.push(a.to_string());
    }
    args
}

/// One short L4 exchange through the VIP from the client namespace.
fn exchange(vip: SocketAddr, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(msg.as_bytes())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn l4_path_keeps_forwarding_through_kill_9_and_restart() {
    let topo = Topology::new(2).expect("topology (needs root, netns, ethtool)");
    let _s1 = Server::start(&topo.backends[0], "b1", 8080).unwrap();
    let _s2 = Server::start(&topo.backends[1], "b2", 8080).unwrap();
    let dir = tempfile::tempdir().unwrap();
    l4_manifests(dir.path());
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("restart", "pins"));
    let args = run_args(dir.path(), &pin_dir);
    let log = dir.path().join("first.log");
    let mut first = Ingressd::start(
        BIN.as_ref(),
        Some(&topo.node),
        &args,
        "127.0.0.1:10254",
        &log,
    )
    .unwrap();
    first.wait_ready(Duration::from_secs(20)).unwrap();

    // Continuous load: new connections back to back, from the client namespace.
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let ns = topo.client.name.clone();
        workers.push(thread::spawn(move || {
            let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            nix_setns(&f);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let msg = format!("w{w}-{i}");
                match exchange(vip, &msg) {
                    Ok(a) if a.ends_with(&msg) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failed.lock().unwrap().push(format!("{msg}: {other:?}")),
                }
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // One long-lived connection, established before the kill and used again after the
    // restart: its conntrack entry must carry it through.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let held = {
        let ns = topo.client.name.clone();
        thread::spawn(move || -> Result<(String, String), String> {
            let f =
                std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
            nix_setns(&f);
            let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(1))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let mut talk = |msg: &str| -> Result<String, String> {
                s.write_all(msg.as_bytes())
                    .map_err(|e| format!("{msg}: {e}"))?;
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).map_err(|e| format!("{msg}: {e}"))?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            };
            let before = talk("held-before")?;
            go_rx.recv().map_err(|e| e.to_string())?;
            let after = talk("held-after")?;
            Ok((before, after))
        })
    };
    thread::sleep(Duration::from_millis(700));
    let before_kill = ok.load(Ordering::Relaxed);
    first.signal(libc::SIGKILL).unwrap();
    first.wait(Duration::from_secs(5)).unwrap();
    // ingressd is gone: the pinned program and maps keep serving.
    thread::sleep(Duration::from_millis(800));
    let while_dead = ok.load(Ordering::Relaxed) - before_kill;
    let mut second = Ingressd::start(
        BIN.as_ref(),
        Some(&topo.node),
        &args,
        "127.0.0.1:10254",
        &dir.path().join("second.log"),
    )
    .unwrap();
    second.wait_ready(Duration::from_secs(20)).unwrap();
    thread::sleep(Duration::from_millis(700));
    go_tx.send(()).unwrap();
    let (before, after) = held
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("held connection: {e}"));
    let backend = before.split(' ').next().unwrap_or_default().to_string();
    assert!(before.ends_with("held-before"), "{before}");
    assert_eq!(
        after,
        format!("{backend} held-after"),
        "the established connection survives kill -9 + restart on the same backend"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed exchanges: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        while_dead > 20,
        "only {while_dead} exchanges while ingressd was down"
    );
    assert!(
        second
            .log_text()
            .contains("swapped into the existing pinned link"),
        "restart must adopt the pinned links:\n{}",
        second.log_text()
    );
    let metrics = second.metrics().unwrap_or_default();
    for series in [
        "ingress_xdp_packets_total{outcome=\"fwd_new_flow\"}",
        "ingress_xdp_packets_total{outcome=\"fwd_conntrack\"}",
        "ingress_xdp_vip_packets_total{vip=\"",
        "ingress_xdp_vip_bytes_total{vip=\"",
        "ingress_xdp_conntrack_entries ",
    ] {
        assert!(
            metrics.contains(series),
            "/metrics lacks {series}:\n{metrics}"
        );
    }

    // `inspect` reads the same state from the pins, in human terms.
    let out = std::process::Command::new(BIN)
        .args(["inspect", "--pin-dir", &pin_dir, "--conntrack", "3"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "VIPs: 1",
        "198.19.0.10:80/tcp  backends 2",
        "Maglev slots",
        "conntrack: ",
        "s ago",
        "time-wait 120 s",
        "fwd_new_flow",
    ] {
        assert!(
            report.contains(needle),
            "inspect lacks {needle:?}:\n{report}"
        );
    }
    assert!(
        !report.contains("conntrack: 0 flows"),
        "inspect sees the flows:\n{report}"
    );

    // `cleanup` detaches everything and removes the pins.
    second.signal(libc::SIGTERM).unwrap();
    second.wait(Duration::from_secs(10)).unwrap();
    // Pins live in the host's bpffs; cleanup needs no namespace.
    let out = std::process::Command::new(BIN)
        .args(["cleanup", "--pin-dir", &pin_dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::path::Path::new(&pin_dir).exists());
    let links = topo.node.run("ip -d link show").unwrap();
    assert!(
        !links.contains("prog/xdp"),
        "XDP still attached after cleanup:\n{links}"
    );
    // With the program gone the VIP is no longer served.
    let r = in_ns(&topo.client, move || exchange(vip, "after cleanup")).unwrap();
    assert!(r.is_err(), "VIP answered after cleanup: {r:?}");
    let _ = sh(&format!("rm -rf {pin_dir}"));
}

fn nix_setns(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid netns fd, affecting only this thread.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A slow HTTP/1.1 upstream on loopback: answers every request after `delay`.
fn slow_upstream(delay: Duration) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        thread::sleep(delay);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn get(addr: SocketAddr, host: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_cleanly() {
    let log = drain_case(None);
    assert!(
        log.iter().any(|v| v["one_cpu"] == false),
        "a multi-thread runtime on this multi-CPU machine"
    );
}

/// Pinned to one CPU, ingressd runs on a current-thread runtime: the same 20 concurrent slow
/// requests are in flight at once and finish through the drain, and a manifest change is
/// translated and served meanwhile (the translation leaves the runtime's only thread).
#[test]
fn pinned_to_one_cpu_it_serves_reloads_and_drains_on_one_thread() {
    let log = drain_case(Some(0));
    assert!(
        log.iter().any(|v| v["one_cpu"] == true),
        "no current-thread runtime"
    );
}

/// Starts ingressd (pinned to `cpu` if given) in front of a slow upstream, SIGTERMs it with
/// 20 requests in flight, checks every one finishes and the exit is clean; returns its JSON
/// log lines.
fn drain_case(cpu: Option<usize>) -> Vec<serde_json::Value> {
    let upstream = slow_upstream(Duration::from_millis(600));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        format!(
            "{}{}",
            class_and_service_yaml("slow", &upstream.to_string(), "http", 80),
            ingress_yaml("slow", "slow.test", "slow", 80)
        ),
    )
    .unwrap();
    let http = tests::ports::free_loopback_addr();
    let admin = tests::ports::free_loopback_addr();
    let args: Vec<String> = [
        "--manifests",
        &dir.path().to_string_lossy(),
        "--http-addr",
        &http.to_string(),
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        &admin.to_string(),
        "--drain-timeout",
        "5s",
        "--pin-dir",
        &format!("/sys/fs/bpf/{}", tests::netns::owned_unique("restart")),
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log_path = dir.path().join("log");
    let mut p = match cpu {
        Some(cpu) => {
            Ingressd::start_on_cpu(BIN.as_ref(), &args, &admin.to_string(), &log_path, cpu)
        }
        None => Ingressd::start(BIN.as_ref(), None, &args, &admin.to_string(), &log_path),
    }
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    if cpu.is_some() {
        // A manifest change goes through the watcher and the translation off the runtime.
        std::fs::write(
            dir.path().join("two.yaml"),
            ingress_yaml("two", "two.test", "slow", 80),
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = get(http, "two.test").unwrap_or_default();
            if r.starts_with("HTTP/1.1 200") && r.ends_with("slow") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "two.test never routed: {r}\n{}",
                p.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    let inflight: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || get(http, "slow.test")))
        .collect();
    thread::sleep(Duration::from_millis(200));
    p.signal(libc::SIGTERM).unwrap();
    thread::sleep(Duration::from_millis(100));
    // Draining: new connections are refused while the old ones finish.
    assert!(
        get(http, "slow.test").is_err(),
        "a new connection was accepted during the drain"
    );
    for (i, h) in inflight.into_iter().enumerate() {
        let r = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight request {i} failed: {e}"));
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("slow"),
            "request {i}: {r}"
        );
    }
    let status = p.wait(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        p.log_text()
    );

    // `--log-format json`: every line (stdout and stderr together here) is one JSON object:
    // ingressd's own records with level, target and message; the access log's bare records
    // (one per request, nothing around them).
    let log = p.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (own, access): (Vec<_>, Vec<_>) = lines.iter().partition(|v| v.get("level").is_some());
    assert!(
        own.iter()
            .all(|v| v["level"].is_string() && v["target"].is_string()),
        "{log}"
    );
    assert!(access.iter().all(|v| v["request_id"].is_string()), "{log}");
    let access = access
        .iter()
        .filter(|v| v["host"] == "slow.test" && v["status"] == 200)
        .count();
    assert_eq!(
        access, 20,
        "one access record per in-flight request:\n{log}"
    );
    lines
}
