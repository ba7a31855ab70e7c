//! The standalone demo (`cargo xtask demo`): a throwaway topology of network namespaces — a
//! client, a node running `ingressd` with XDP on its links, two backend hosts — with small demo
//! backends, `ingressd run --manifests deploy/examples`, a round of real requests over every
//! path (HTTP routing, HTTPS termination, TLS passthrough, the XDP L4 path), then the commands
//! to try by hand. Ctrl-C stops everything and deletes the namespaces and pins.
//!
//! Usage: demo <path to ingressd> <manifest dir>
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tests::{
    ingressd::Ingressd,
    netns::{in_ns, NetNs},
    topology::{Server, Topology, SNAT},
};

const VIP: &str = "198.19.0.10";
const NODE: &str = "198.18.0.1";

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// A tiny HTTP/1.1 server: answers every request with `<name>: <method> <path> (host <h>)`.
fn serve_http<S: Read + Write>(mut s: S, name: &str) {
    let mut reader = BufReader::new(&mut s);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut host = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                if let Some(h) = line
                    .strip_prefix("host: ")
                    .or_else(|| line.strip_prefix("Host: "))
                {
                    host = h.trim().to_string();
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let body = format!(
        "{name}: {} {} (host {host})\n",
        parts.next().unwrap_or("?"),
        parts.next().unwrap_or("?")
    );
    let _ = s.write_all(
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            .as_bytes(),
    );
}

fn http_server(ns: &NetNs, port: u16, name: &'static str) -> Result<()> {
    let l = in_ns(ns, move || TcpListener::bind(("0.0.0.0", port)))??;
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || serve_http(s, name));
        }
    });
    Ok(())
}

/// An HTTPS server holding its own certificate (the passthrough backend).
fn tls_server(ns: &NetNs, port: u16, config: Arc<rustls::ServerConfig>) -> Result<()> {
    let l = in_ns(ns, move || TcpListener::bind(("0.0.0.0", port)))??;
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let config = config.clone();
            thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let tls = rustls::StreamOwned::new(conn, s);
                serve_http(
                    tls,
                    "tls-backend (its own certificate, spliced through ingressd)",
                );
            });
        }
    });
    Ok(())
}

/// A CA and a certificate for `passthrough.example.test`, written under `dir`.
fn passthrough_certs(dir: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf)> {
    let ca = tests::certs::TestCa::new()?;
    let key = ca.issue(&["passthrough.example.test"])?;
    let ca_path = dir.join("passthrough-ca.crt");
    std::fs::write(&ca_path, pem_of(&ca.cert_der()))?;
    let config = rustls::ServerConfig::builder_with_provider(tests::certs::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    Ok((Arc::new(config), ca_path))
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn client(ns: &NetNs, cmd: &str) -> String {
    match ns.run(cmd) {
        Ok(out) => out,
        Err(e) => format!("(failed: {e})\n"),
    }
}

fn l4_exchange(ns: &NetNs) -> Result<String> {
    let vip: SocketAddr = format!("{VIP}:9000").parse()?;
    in_ns(ns, move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello over XDP")?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = PathBuf::from(
        args.next()
            .context("usage: demo <ingressd> <manifest dir>")?,
    );
    let manifests = std::fs::canonicalize(
        args.next()
            .context("usage: demo <ingressd> <manifest dir>")?,
    )?;
    let bin = std::fs::canonicalize(&bin)
        .with_context(|| format!("{} (build it first)", bin.display()))?;
    let work = tempfile::tempdir()?;

    step("creating namespaces: client, node, two backend hosts (veth, 198.18.0.0/15)");
    let topo = Topology::new(2)?;
    step("starting demo backends: web on both hosts, api and the TLS backend, TCP echo for L4");
    http_server(&topo.backends[0], 8080, "web-1")?;
    http_server(&topo.backends[1], 8080, "web-2")?;
    http_server(&topo.backends[1], 8081, "api")?;
    let (tls, ca_path) = passthrough_certs(work.path())?;
    tls_server(&topo.backends[0], 8443, tls)?;
    let _e1 = Server::start(&topo.backends[0], "echo-1", 9000)?;
    let _e2 = Server::start(&topo.backends[1], "echo-2", 9000)?;

    // Named like the tests' pins, so `cargo xtask test` removes them if the demo is killed.
    let pin_dir = format!("/sys/fs/bpf/{}", tests::netns::owned("demo", "pins"));
    let admin = format!("{NODE}:10254");
    let run: Vec<String> = [
        "--manifests",
        &manifests.to_string_lossy(),
        "--http-addr",
        &format!("{NODE}:80"),
        "--https-addr",
        &format!("{NODE}:443"),
        "--admin-addr",
        &admin,
        "--xdp-interface",
        "nc",
        "--xdp-interface",
        "nb1",
        "--xdp-interface",
        "nb2",
        "--snat-v4",
        SNAT,
        "--l4-address",
        VIP,
        "--tcp-services-configmap",
        "ingress-system/tcp-services",
        "--pin-dir",
        &pin_dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    step(&format!(
        "starting ingressd in the node namespace: {} run {}",
        bin.display(),
        run.join(" ")
    ));
    let log = work.path().join("ingressd.log");
    let mut ingressd = Ingressd::start(&bin, Some(&topo.node), &run, &admin, &log)?;
    ingressd.wait_ready(Duration::from_secs(30))?;

    let c = &topo.client;
    let certs = manifests.join("demo-certs/secure.example.test.crt");
    let tries: Vec<(&str, String)> = vec![
        ("HTTP routing, www.example.test/ -> web (balanced over two hosts)", format!("curl -s -H Host:www.example.test http://{NODE}/")),
        ("HTTP routing, www.example.test/api/users -> api", format!("curl -s -H Host:www.example.test http://{NODE}/api/users")),
        ("HTTP routing, wildcard *.apps.example.test -> web", format!("curl -s -H Host:shop.apps.example.test http://{NODE}/")),
        ("no rule matches -> 404 from ingressd", format!("curl -s -H Host:nowhere.test http://{NODE}/")),
        (
            "HTTPS termination with the Ingress's certificate (secure.example.test)",
            format!("curl -s --cacert {} --resolve secure.example.test:443:{NODE} https://secure.example.test/", certs.display()),
        ),
        (
            "TLS passthrough by SNI: the backend's own certificate, bytes spliced in the kernel",
            format!("curl -s --cacert {} --resolve passthrough.example.test:443:{NODE} https://passthrough.example.test/", ca_path.display()),
        ),
    ];
    for (what, cmd) in &tries {
        println!(
            "\n# {what}\n$ ip netns exec {} {cmd}\n{}",
            c.name,
            client(c, cmd).trim_end()
        );
    }
    println!("\n# XDP L4 path: TCP to the VIP {VIP}:9000, balanced by Maglev in the kernel");
    match l4_exchange(c) {
        Ok(a) => println!("{a}"),
        Err(e) => println!("(failed: {e:#})"),
    }

    println!(
        "\nTry it yourself (another terminal):\n  ip netns exec {cl} curl -H Host:www.example.test http://{NODE}/\n  ip netns exec {cl} curl http://{admin}/metrics\n  {bin} inspect --pin-dir {pin_dir}\n  bpftool map dump pinned {maps}/VIPS\n  ip netns exec {node} ip -d link show nc     # the XDP program on the node's link\n  logs: {log}\nEdit files in {m} and watch ingressd apply them. Ctrl-C (or SIGTERM) stops the demo and cleans up.",
        cl = c.name,
        node = topo.node.name,
        bin = bin.display(),
        log = log.display(),
        m = manifests.display(),
        maps = ingress::maps::loader::maps_dir(Path::new(&pin_dir)).display(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // SIGTERM too: `timeout`, a supervisor or a closed session must not leave the
    // namespaces and pins behind.
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;

    step("stopping ingressd and cleaning up");
    ingressd.signal(libc::SIGTERM)?;
    let _ = ingressd.wait(Duration::from_secs(35));
    let out = std::process::Command::new(&bin)
        .args(["cleanup", "--pin-dir", &pin_dir])
        .output()?;
    if !out.status.success() {
        bail!("cleanup failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop(topo);
    step("done: namespaces deleted, pins removed");
    Ok(())
}
