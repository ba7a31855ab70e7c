//! The proxies under test and the processes of the benchmark: certificates, the equivalent
//! configurations of nginx, HAProxy and ingressd (one upstream, keep-alive to it, no access
//! log, the same forwarding headers), free loopback ports, and a guard that stops a process
//! and everything it forked.
use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::cpu;

/// The virtual host every proxy serves.
pub const HOST: &str = "bench.test";

/// PEM material for the benchmark: a CA and an ECDSA P-256 leaf for [`HOST`] it signed.
pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Certs {
    /// A fresh CA and leaf (rcgen's default key type is ECDSA P-256 with SHA-256).
    pub fn generate() -> anyhow::Result<Certs> {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "bench-l7 CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let issuer = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
        let mut leaf = rcgen::CertificateParams::new(vec![HOST.to_string()])?;
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, HOST);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Certs {
            ca_pem: issuer.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A free TCP port on 127.0.0.1 for each entry (all distinct).
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<_>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Forwarding headers as ingress-nginx sets them, so nginx does the same header work as
/// ingressd (which always sets them).
const NGINX_HEADERS: &str = "\
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Scheme $scheme;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;";

/// nginx: one worker, TLS 1.3 only, HTTP/2 on, keep-alive to the upstream, access log off.
/// The per-connection request cap (1000 by default, HTTP/2 streams included) is lifted, as
/// for ingressd (HAProxy has none): with it the load generators' connections would
/// re-handshake (wrk) or stop (h2load) during the runs. Up to 1024 idle upstream connections
/// are kept, as by ingressd (HAProxy keeps all): the h2 workload has 640 requests in flight,
/// and with nginx's usual 32 half of its requests opened a new upstream connection.
pub fn nginx_conf(dir: &Path, http: u16, https: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        "\
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream echo {{
        server 127.0.0.1:{upstream};
        keepalive 1024;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{http};
        listen 127.0.0.1:{https} ssl http2;
        server_name {HOST};
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
{NGINX_HEADERS}
        }}
    }}
}}
"
    )
}

/// HAProxy: one thread, TLS 1.3 only, ALPN h2 and http/1.1, connection reuse to the upstream,
/// no logging, the same forwarding headers. (`option splice-auto` only matters for TCP/large bodies: not set.)
pub fn haproxy_cfg(dir: &Path, http: u16, https: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        "\
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 75s

frontend bench
    bind 127.0.0.1:{http}
    bind 127.0.0.1:{https} ssl crt {d}/haproxy.pem alpn h2,http/1.1
    http-request set-header X-Original-Forwarded-For %[req.hdr(x-forwarded-for)] if {{ req.hdr(x-forwarded-for) -m found }}
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Request-ID %[uuid]
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    http-request set-header X-Forwarded-Scheme https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Scheme http if !{{ ssl_fc }}
    http-request set-header X-Scheme https if {{ ssl_fc }}
    http-request set-header X-Scheme http if !{{ ssl_fc }}
    default_backend echo

backend echo
    server echo1 127.0.0.1:{upstream}
"
    )
}

/// ingressd's manifest directory content: default IngressClass, a Service with static
/// endpoints, the TLS Secret, and an Ingress for [`HOST`] `/` (Prefix) with TLS and
/// `ssl-redirect: "false"` (so the plain HTTP workload is proxied, not redirected).
pub fn ingressd_manifests(upstream: u16, certs: &Certs) -> serde_json::Value {
    use ingress::translate::STATIC_ENDPOINTS_ANNOTATION;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {
                    "name": "xdp",
                    "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}
                },
                "spec": {"controller": "ingress.example.dev/xdp-ingress"}
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "echo",
                    "namespace": "default",
                    "annotations": {STATIC_ENDPOINTS_ANNOTATION: format!("127.0.0.1:{upstream}")}
                },
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": upstream}]}
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": "bench-tls", "namespace": "default"},
                "stringData": {"tls.crt": certs.cert_pem, "tls.key": certs.key_pem}
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": "bench",
                    "namespace": "default",
                    "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
                },
                "spec": {
                    "tls": [{"hosts": [HOST], "secretName": "bench-tls"}],
                    "rules": [{
                        "host": HOST,
                        "http": {"paths": [{
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "echo", "port": {"number": 80}}}
                        }]}
                    }]
                }
            }
        ]
    })
}

/// A started process; dropping it stops the process and every process it forked (SIGTERM,
/// then SIGKILL after 5 s).
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd`; the child also gets SIGTERM if this process dies.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// The process id (taskset and `sh -c exec` keep it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections, failing if the process exits or `timeout`
    /// passes.
    pub fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not listening on {addr} after {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        let tree = cpu::process_tree(pid).unwrap_or_else(|_| vec![pid]);
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the tree (the root itself, or orphaned workers).
        for p in tree {
            if p == pid && !matches!(self.child.try_wait(), Ok(None)) {
                continue;
            }
            if p != pid && !Path::new(&format!("/proc/{p}")).exists() {
                continue;
            }
            signal(p, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion within `timeout` (killed after it), returning (status, stdout,
/// stderr).
pub fn output_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    use std::io::Read as _;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("starting {desc}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{desc} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    Ok((status, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_are_ecdsa_p256_and_parse() {
        let c = Certs::generate().unwrap();
        let key = ingress::translate::tls::certified_key_from_pem(
            c.cert_pem.as_bytes(),
            c.key_pem.as_bytes(),
        );
        assert!(key.is_ok(), "{:?}", key.err());
        assert!(c.key_pem.contains("PRIVATE KEY"));
        assert!(c.ca_pem.contains("CERTIFICATE"));
    }

    #[test]
    fn ports_are_distinct() {
        let p = free_ports(4).unwrap();
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn guard_stops_the_process_tree() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let p = Proc::spawn("sleepers", cmd).unwrap();
        let pid = p.pid();
        thread::sleep(Duration::from_millis(200));
        let tree = cpu::process_tree(pid).unwrap();
        assert!(tree.len() >= 2, "{tree:?}");
        drop(p);
        thread::sleep(Duration::from_millis(100));
        for t in tree {
            let alive = std::fs::read_to_string(format!("/proc/{t}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            assert!(!alive, "{t} still running");
        }
    }

    #[test]
    fn bounded_output_kills_on_timeout() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hi"]);
        let (s, out, _) = output_bounded(c, Duration::from_secs(5)).unwrap();
        assert!(s.success());
        assert_eq!(out, "hi\n");
        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        assert!(output_bounded(c, Duration::from_millis(200)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
