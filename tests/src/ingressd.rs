//! Runs `ingressd` (the `ingressd_under_test` binary) as a child process, optionally inside a
//! network namespace, and stops it when dropped.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// A running ingressd.
pub struct Ingressd {
    child: Option<Child>,
    pub log: PathBuf,
    pub admin: String,
    ns: Option<String>,
}

impl Ingressd {
    /// Starts `bin run <args>` (in `ns` if given), logging to `log`.
    pub fn start(
        bin: &Path,
        ns: Option<&NetNs>,
        args: &[String],
        admin: &str,
        log: &Path,
    ) -> Result<Self> {
        Self::spawn(bin, ns, args, admin, (log, None), None)
    }

    /// Starts `bin run <args>` with its CPU affinity set to `cpu` alone (as `taskset -c`, or
    /// a cpuset of one CPU), logging to `log`.
    pub fn start_on_cpu(
        bin: &Path,
        args: &[String],
        admin: &str,
        log: &Path,
        cpu: usize,
    ) -> Result<Self> {
        Self::spawn(bin, None, args, admin, (log, None), Some(cpu))
    }

    /// Starts `bin run <args>` with its own log (stderr) in `log` and its stdout, the access
    /// log, in `access_log`.
    pub fn start_with_access_log(
        bin: &Path,
        args: &[String],
        admin: &str,
        log: &Path,
        access_log: &Path,
    ) -> Result<Self> {
        Self::spawn(bin, None, args, admin, (log, Some(access_log)), None)
    }

    /// `logs`: the file for stderr, and one for stdout if not the same.
    fn spawn(
        bin: &Path,
        ns: Option<&NetNs>,
        args: &[String],
        admin: &str,
        logs: (&Path, Option<&Path>),
        cpu: Option<usize>,
    ) -> Result<Self> {
        let create = |p: &Path| {
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))
        };
        let (log, stdout) = logs;
        let err = create(log)?;
        let out = match stdout {
            Some(p) => create(p)?,
            None => err.try_clone()?,
        };
        let mut cmd = Command::new(bin);
        if let Some(cpu) = cpu {
            // SAFETY: the closure only calls sched_setaffinity(2), which is async-signal-safe,
            // on a set built on its own stack.
            #[allow(unsafe_code)]
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(ns) = ns {
            // Enter the namespace between fork and exec rather than through `ip netns exec`,
            // which remounts /sys and would hide the host's bpffs at /sys/fs/bpf (as a
            // hostNetwork pod sees it).
            let f = std::fs::File::open(format!("/var/run/netns/{}", ns.name))
                .context("opening netns")?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // SAFETY: the closure only calls setns(2), which is async-signal-safe; `f` outlives
            // the spawn below.
            #[allow(unsafe_code)]
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            std::mem::forget(f);
        }
        cmd.arg("run")
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("RUST_LOG", "info");
        let child = cmd.spawn().context("starting ingressd")?;
        Ok(Ingressd {
            child: Some(child),
            log: log.to_path_buf(),
            admin: admin.to_string(),
            ns: ns.map(|n| n.name.clone()),
        })
    }

    fn curl(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.admin);
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        // -f: a 503 (not ready, draining) is a failure, whatever the body says.
        let out = cmd.args(["-sf", "-m", "1", &url]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `/readyz` answers `ready`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "ingressd exited early ({status}); log:\n{}",
                        self.log_text()
                    );
                }
            }
            if self.curl("/readyz").is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "ingressd not ready after {timeout:?}; log:\n{}",
            self.log_text()
        )
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> Option<String> {
        self.curl("/metrics")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGKILL`).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        // SAFETY: kill(2) on our own child.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid as i32, sig) };
        if rc != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().context("not running")?;
        loop {
            if let Some(s) = child.try_wait()? {
                self.child = None;
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!("ingressd did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ingressd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ingressd run` arguments for the node of a [`crate::topology::Topology`]: manifests from
/// `dir` (with [`tcp_services_yaml`]), the XDP program on `links`, the L4 VIP 198.19.0.10,
/// pins under `pin_dir`, admin on 127.0.0.1:10254. Callers add the listeners.
pub fn l4_node_args(dir: &std::path::Path, pin_dir: &str, links: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--manifests",
        &dir.to_string_lossy(),
        "--admin-addr",
        "127.0.0.1:10254",
        "--snat-v4",
        crate::topology::SNAT,
        "--l4-address",
        "198.19.0.10",
        "--tcp-services-configmap",
        "default/tcp-services",
        "--pin-dir",
        pin_dir,
        "--max-vips",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for link in links {
        args.extend(["--xdp-interface".to_string(), link.to_string()]);
    }
    args
}

/// An L4 service for `ingressd run --manifests --tcp-services-configmap default/tcp-services`:
/// port 80 of the VIPs goes to Service `echo` port 8080, whose static `endpoints` are
/// `addr:port` pairs, comma-separated.
pub fn tcp_services_yaml(endpoints: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: tcp-services
  namespace: default
data:
  "80": "default/echo:8080"
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
  annotations:
    ingress.example.dev/endpoints: "{endpoints}"
spec:
  ports:
  - name: echo
    port: 8080
"#
    )
}

/// The start of a manifest set for `ingressd run --manifests`: our IngressClass as the cluster
/// default, and Service `name` in `default` with static `endpoints` (the annotation manifests
/// mode reads) on `port`, named `port_name`. Callers append their Ingresses.
pub fn class_and_service_yaml(name: &str, endpoints: &str, port_name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: xdp
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: ingress.example.dev/xdp-ingress
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations:
    ingress.example.dev/endpoints: "{endpoints}"
spec:
  ports:
  - name: {port_name}
    port: {port}
---
"#
    )
}

/// An Ingress `name` in `default` routing every path of `host` to Service `service` on
/// `port`: append it to [`class_and_service_yaml`].
pub fn ingress_yaml(name: &str, host: &str, service: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
spec:
  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: {service}
            port:
              number: {port}
"#
    )
}

/// A `kubernetes.io/tls` Secret `namespace/name` holding a PEM chain and key, as a manifest
/// document (end it with `---` before appending another).
pub fn tls_secret_yaml(namespace: &str, name: &str, chain: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent_block(chain),
        indent_block(key)
    )
}

/// `text` as a YAML block scalar's body at four spaces (its first line is indented by the
/// template).
pub fn indent_block(text: &str) -> String {
    text.replace('\n', "\n    ")
}

/// An Ingress annotated `ssl-passthrough` for `host`, to Service `service` (in `default`) on
/// `port`: append it to [`class_and_service_yaml`].
pub fn passthrough_ingress_yaml(host: &str, service: &str, port: u16) -> String {
    ingress_yaml("passthrough", host, service, port).replacen(
        "  namespace: default\n",
        "  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"\n",
        1,
    )
}
