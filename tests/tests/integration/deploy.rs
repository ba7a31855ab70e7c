//! `deploy/`: every manifest parses into its typed Kubernetes object without losing a field,
//! the DaemonSet is privileged-but-minimal and its args parse with the real command line, and
//! the RBAC rules allow exactly the API calls the controller makes: the real source, leader
//! election, status writer and Event recorder run against the recording fake API server, and
//! every recorded request must be allowed while every granted permission must be used.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::{CommandFactory, Parser};
use ingress::{
    apply::{
        events::{self, EventsConfig},
        leader::{self, LeaderConfig},
        status::{self, StatusConfig},
    },
    cli::{Cli, Command, RunArgs},
    config::{NamespacedName, Settings},
    snapshot::{ObjectRef, Snapshot},
    source::{kube as kube_source, SourceEvent},
    translate::{Diagnostic, Translation},
};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount},
        networking::v1::IngressClass,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
    serde::{de::DeserializeOwned, Deserialize, Serialize},
};
use serde_json::{json, Value};
use tests::{
    caps,
    fake_api::FakeApi,
    netns::{owned_unique, require_privileges, sh, NetNs},
    rbac::{self, Policy, RbacObjects},
};
use tokio::{
    sync::{mpsc, watch},
    time::timeout,
};
use tokio_util::sync::CancellationToken;

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(15);
/// Stand-ins for the values the kubelet fills in from `fieldRef`s.
const NODE_IP: &str = "198.18.0.10";
const POD_NAME: &str = "ingressd-x7k2p";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

// ---- parsing ---------------------------------------------------------------------------------

/// Every object in `deploy/*.yaml`, typed.
#[derive(Debug, Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    ingress_classes: Vec<IngressClass>,
    daemon_sets: Vec<DaemonSet>,
    config_maps: Vec<ConfigMap>,
    /// `(file, namespace)` of every namespaced object, to check they agree.
    namespaced: Vec<(String, Option<String>)>,
    /// Image names the kustomization rewrites.
    kustomize_images: Vec<String>,
}

/// Where a JSON value and its round trip through a typed object differ: each entry is a path
/// and what happened there.
fn diff(path: &str, original: &Value, back: &Value, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => diff(&p, v, w, out),
                    None => out.push(format!("{p}: dropped (unknown field?)")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by the typed object"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Deserializes into `T` and fails if the typed object does not hold every field of the
/// document: k8s-openapi ignores unknown fields, so a misspelt key would otherwise vanish.
fn strict<T: DeserializeOwned + Serialize>(
    doc: &serde_yaml::Value,
    what: &str,
) -> Result<T, String> {
    let typed: T = serde_yaml::from_value(doc.clone()).map_err(|e| format!("{what}: {e}"))?;
    let original = serde_json::to_value(doc).map_err(|e| format!("{what}: not JSON: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{what}: {e}"))?;
    let mut lost = Vec::new();
    diff("", &original, &back, &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{what}: fields that do not survive the typed object (misspelt or misplaced?): {lost:#?}"
        ))
    }
}

impl Manifests {
    /// Adds every document of one YAML file.
    fn parse(&mut self, file: &str, text: &str) -> Result<(), String> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let what = format!("{file} document {i}");
            let doc = serde_yaml::Value::deserialize(doc).map_err(|e| format!("{what}: {e}"))?;
            if doc.is_null() {
                continue;
            }
            let field = |k: &str| doc.get(k).and_then(serde_yaml::Value::as_str).unwrap_or("");
            let namespace = doc
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(serde_yaml::Value::as_str)
                .map(String::from);
            let (api_version, kind) = (field("apiVersion"), field("kind"));
            let mut namespaced = true;
            match (api_version, kind) {
                ("v1", "Namespace") => {
                    namespaced = false;
                    self.namespaces.push(strict(&doc, &what)?);
                }
                ("v1", "ServiceAccount") => self.service_accounts.push(strict(&doc, &what)?),
                ("v1", "ConfigMap") => self.config_maps.push(strict(&doc, &what)?),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    namespaced = false;
                    self.cluster_roles.push(strict(&doc, &what)?);
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    namespaced = false;
                    self.cluster_role_bindings.push(strict(&doc, &what)?);
                }
                ("rbac.authorization.k8s.io/v1", "Role") => self.roles.push(strict(&doc, &what)?),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    self.role_bindings.push(strict(&doc, &what)?)
                }
                ("networking.k8s.io/v1", "IngressClass") => {
                    namespaced = false;
                    self.ingress_classes.push(strict(&doc, &what)?);
                }
                ("apps/v1", "DaemonSet") => self.daemon_sets.push(strict(&doc, &what)?),
                (a, k) => return Err(format!("{what}: unknown apiVersion/kind {a:?}/{k:?}")),
            }
            match (namespaced, namespace) {
                (true, ns) => self.namespaced.push((what, ns)),
                (false, Some(ns)) => {
                    return Err(format!("{what}: cluster-scoped {kind} has namespace {ns}"))
                }
                (false, None) => {}
            }
        }
        Ok(())
    }

    /// Reads `deploy/*.yaml` (not `examples/`); the kustomization is checked to list them all.
    fn load() -> Result<Manifests, String> {
        let dir = deploy_dir();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        files.sort();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).map_err(|e| format!("reading deploy/{f}: {e}"))
        };
        let mut m = Manifests::default();
        let mut resources = Vec::new();
        for f in &files {
            if f == "kustomization.yaml" {
                continue;
            }
            m.parse(&format!("deploy/{f}"), &read(f)?)?;
            resources.push(f.clone());
        }
        let kustomization: serde_yaml::Value =
            serde_yaml::from_str(&read("kustomization.yaml")?)
                .map_err(|e| format!("deploy/kustomization.yaml: {e}"))?;
        let mut listed: Vec<String> = kustomization
            .get("resources")
            .and_then(serde_yaml::Value::as_sequence)
            .ok_or("deploy/kustomization.yaml: no resources list")?
            .iter()
            .map(|r| r.as_str().unwrap_or("<not a string>").to_string())
            .collect();
        if listed.first().map(String::as_str) != Some("namespace.yaml") {
            return Err(format!(
                "deploy/kustomization.yaml must list namespace.yaml first: {listed:?}"
            ));
        }
        m.kustomize_images = kustomization
            .get("images")
            .and_then(serde_yaml::Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("name").and_then(serde_yaml::Value::as_str))
            .map(String::from)
            .collect();
        listed.sort();
        if listed != resources {
            return Err(format!(
                "deploy/kustomization.yaml lists {listed:?}, deploy/ has {resources:?}"
            ));
        }
        Ok(m)
    }

    /// The ConfigMap `nn` of the manifests.
    fn config_map(&self, nn: &NamespacedName) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(nn.namespace.as_str())
                    && c.metadata.name.as_deref() == Some(nn.name.as_str())
            })
            .unwrap_or_else(|| panic!("deploy/ creates no ConfigMap {}/{}", nn.namespace, nn.name))
    }

    fn one<'a, T>(items: &'a [T], kind: &str) -> &'a T {
        match items {
            [one] => one,
            other => panic!("expected exactly one {kind}, found {}", other.len()),
        }
    }

    fn daemon_set(&self) -> &DaemonSet {
        Self::one(&self.daemon_sets, "DaemonSet")
    }

    /// The labels of the DaemonSet's pods.
    fn pod_labels(&self) -> std::collections::BTreeMap<String, String> {
        self.daemon_set()
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default()
    }

    fn pod(&self) -> &PodSpec {
        self.daemon_set()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("DaemonSet without a pod spec")
    }

    fn container(&self) -> &Container {
        Self::one(&self.pod().containers, "container")
    }

    fn namespace(&self) -> String {
        let ns = Self::one(&self.namespaces, "Namespace");
        ns.metadata.name.clone().expect("Namespace without a name")
    }

    fn rbac(&self) -> RbacObjects<'_> {
        RbacObjects {
            cluster_roles: &self.cluster_roles,
            cluster_role_bindings: &self.cluster_role_bindings,
            roles: &self.roles,
            role_bindings: &self.role_bindings,
        }
    }
}

fn manifests() -> Manifests {
    Manifests::load().unwrap_or_else(|e| panic!("{e}"))
}

/// The container args as the kubelet passes them: `$(VAR)` replaced from the container's env,
/// with stand-ins for the `fieldRef` values.
fn expand_args(container: &Container) -> Result<Vec<String>, String> {
    let env: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            let value = match (&e.value, field) {
                (Some(v), _) => v.clone(),
                (None, Some("status.hostIP" | "status.podIP")) => NODE_IP.into(),
                (None, Some("metadata.name")) => POD_NAME.into(),
                (None, Some("metadata.namespace")) => "ingressd-system".into(),
                (None, other) => format!("<unsupported source {other:?}>"),
            };
            (e.name.clone(), value)
        })
        .collect();
    container
        .args
        .iter()
        .flatten()
        .map(|arg| {
            let mut out = String::new();
            let mut rest = arg.as_str();
            while let Some(start) = rest.find("$(") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find(')')
                    .ok_or_else(|| format!("unclosed $( in {arg:?}"))?;
                let name = &after[..end];
                let value = env.get(name).ok_or_else(|| {
                    format!("{arg:?} uses $({name}), which the container's env does not define")
                })?;
                out.push_str(value);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}

/// The DaemonSet's `ingressd run` arguments, parsed by the real command line.
fn run_args(m: &Manifests) -> RunArgs {
    let args = expand_args(m.container()).unwrap_or_else(|e| panic!("{e}"));
    let cli = Cli::try_parse_from(std::iter::once("ingressd".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("DaemonSet args {args:?} do not parse: {e}"));
    match cli.command {
        Command::Run(run) => *run,
        other => panic!("DaemonSet runs {other:?}, not `run`"),
    }
}

fn parse_ref(s: &str) -> NamespacedName {
    s.parse()
        .unwrap_or_else(|e| panic!("bad namespace/name {s:?}: {e}"))
}

#[test]
fn deploy_manifests_parse_into_typed_objects_without_losing_fields() {
    let m = manifests();
    let ns = m.namespace();
    assert_eq!(ns, "ingressd-system");
    for (what, object_ns) in &m.namespaced {
        assert_eq!(
            object_ns.as_deref(),
            Some(ns.as_str()),
            "{what} must be in namespace {ns}"
        );
    }
    for (kind, n) in [
        ("ServiceAccount", m.service_accounts.len()),
        ("ClusterRole", m.cluster_roles.len()),
        ("ClusterRoleBinding", m.cluster_role_bindings.len()),
        ("Role", m.roles.len()),
        ("RoleBinding", m.role_bindings.len()),
        ("IngressClass", m.ingress_classes.len()),
        ("DaemonSet", m.daemon_sets.len()),
    ] {
        assert_eq!(n, 1, "expected exactly one {kind}");
    }
    assert_eq!(m.config_maps.len(), 2, "tcp-services and the controller's");

    // The kustomization's image override applies to the DaemonSet's image.
    let image = m.container().image.clone().expect("image");
    let image_name = image.split_once(':').map_or(image.as_str(), |(n, _)| n);
    assert_eq!(m.kustomize_images, vec![image_name.to_string()]);

    // The IngressClass names the controller ingressd answers to by default, and is not the
    // default class unless the operator says so.
    let class = Manifests::one(&m.ingress_classes, "IngressClass");
    let defaults = Cli::try_parse_from(["ingressd", "run"]).expect("bare `run` parses");
    let Command::Run(defaults) = defaults.command else {
        panic!("not run")
    };
    assert_eq!(class.metadata.name.as_deref(), Some("xdp"));
    assert_eq!(
        class.metadata.name.as_deref(),
        Some(defaults.ingress_class.as_str())
    );
    let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
    assert_eq!(controller, Some("ingress.example.dev/xdp-ingress"));
    assert_eq!(controller, Some(defaults.controller_name.as_str()));
    let annotations = class.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("ingressclass.kubernetes.io/is-default-class")
            .map(String::as_str),
        Some("false")
    );
}

#[test]
fn deploy_strict_parsing_rejects_typos_wrong_types_and_unknown_kinds() {
    let ds = |security: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: x, namespace: n}}\n\
             spec:\n  selector: {{matchLabels: {{a: b}}}}\n  template:\n    metadata: {{labels: {{a: b}}}}\n\
             \x20   spec:\n      containers:\n        - name: c\n          securityContext: {security}\n"
        )
    };
    let mut m = Manifests::default();
    m.parse("good", &ds("{readOnlyRootFilesystem: true}"))
        .expect("a correct DaemonSet parses");
    assert_eq!(m.daemon_sets.len(), 1);

    let err = Manifests::default()
        .parse("typo", &ds("{readOnlyRootFilesytem: true}"))
        .expect_err("a misspelt field must fail");
    assert!(err.contains("readOnlyRootFilesytem: dropped"), "{err}");

    let err = Manifests::default()
        .parse("type", &ds("{privileged: \"no\"}"))
        .expect_err("a string where a bool belongs must fail");
    assert!(err.contains("type"), "{err}");

    let err = Manifests::default()
        .parse(
            "kind",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .expect_err("an unexpected kind must fail");
    assert!(err.contains("unknown apiVersion/kind"), "{err}");

    let err = Manifests::default()
        .parse(
            "scope",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x, namespace: y}\n",
        )
        .expect_err("a namespace on a cluster-scoped object must fail");
    assert!(err.contains("cluster-scoped"), "{err}");
}

// ---- the DaemonSet ---------------------------------------------------------------------------

#[test]
fn deploy_daemonset_is_privileged_but_minimal() {
    let m = manifests();
    let ds = m.daemon_set();
    let pod = m.pod();
    let c = m.container();
    let run = run_args(&m);

    // The pod: node network, cluster DNS, our ServiceAccount, nothing else from the host.
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert!(pod.tolerations.is_none(), "no tolerations by default");
    let sa = Manifests::one(&m.service_accounts, "ServiceAccount");
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    assert!(pod.init_containers.is_none() && pod.ephemeral_containers.is_none());

    // The container: root with exactly five capabilities, nothing else.
    let sc = c.security_context.as_ref().expect("securityContext");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "BPF",
        "NET_ADMIN",
        "PERFMON",
        "SYS_RESOURCE",
        "NET_BIND_SERVICE",
    ]
    .into_iter()
    .collect();
    assert_eq!(add, want, "capabilities added");
    assert_eq!(
        caps.add.as_ref().map(Vec::len),
        Some(want.len()),
        "duplicates"
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_user, Some(0));
    assert_ne!(sc.run_as_non_root, Some(true));
    assert_ne!(sc.proc_mount.as_deref(), Some("Unmasked"));
    if let Some(pod_sc) = &pod.security_context {
        assert!(pod_sc.sysctls.is_none(), "no sysctls");
    }

    // Volumes: the node's bpffs (holding the pin directory) and a small /tmp; no other host path.
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("mount of undeclared volume {name}"))
    };
    assert_eq!(mounts.len(), volumes.len(), "every volume mounted once");
    let bpf = mounts
        .iter()
        .find(|m| m.mount_path == "/sys/fs/bpf")
        .expect("/sys/fs/bpf mounted");
    assert_ne!(bpf.read_only, Some(true), "pins are written");
    assert_ne!(
        bpf.mount_propagation.as_deref(),
        Some("Bidirectional"),
        "Bidirectional needs a privileged container and is not needed for pins"
    );
    let host = volume(&bpf.name)
        .host_path
        .as_ref()
        .expect("bpffs is a hostPath");
    assert_eq!(host.path, "/sys/fs/bpf");
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));
    assert!(
        run.xdp.pin.pin_dir.starts_with(&bpf.mount_path),
        "--pin-dir {} is not on the bpffs mount",
        run.xdp.pin.pin_dir.display()
    );
    for m in mounts.iter().filter(|m| m.mount_path != "/sys/fs/bpf") {
        assert_eq!(m.mount_path, "/tmp", "unexpected mount {}", m.mount_path);
        let tmp = volume(&m.name)
            .empty_dir
            .as_ref()
            .expect("/tmp is an emptyDir");
        assert!(tmp.size_limit.is_some(), "/tmp is bounded");
    }

    // The identity and node address come from the downward API.
    let env: BTreeMap<&str, &str> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let f = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.as_str(), f.field_path.as_str()))
        })
        .collect();
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
    assert_eq!(env.get("NODE_IP"), Some(&"status.hostIP"));
    let identity_env = Cli::command()
        .find_subcommand("run")
        .and_then(|run| run.get_arguments().find(|a| a.get_id() == "identity"))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    assert_eq!(
        identity_env.as_deref(),
        Some("POD_NAME"),
        "--identity must read the POD_NAME the DaemonSet sets"
    );

    // Probes hit the admin listener, which therefore cannot be loopback-only.
    assert!(
        !run.admin_addr.ip().is_loopback(),
        "kubelet probes the node address"
    );
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .map(|cp| cp.container_port)
            .unwrap_or_else(|| panic!("probe names unknown port {name}")),
    };
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{path} probe is an httpGet"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            port(&get.port),
            i32::from(run.admin_addr.port()),
            "{path} probe port"
        );
    }
    let declared: BTreeSet<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    for addr in [run.http_addr, run.https_addr, run.admin_addr] {
        assert!(
            declared.contains(&i32::from(addr.port())),
            "port {} not declared",
            addr.port()
        );
    }

    // Resources and lifecycle.
    let res = c.resources.as_ref().expect("resources");
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("100m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("256Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("512Mi"));
    assert_eq!(
        q(&res.limits, "cpu"),
        None,
        "no CPU limit: throttling adds latency"
    );
    let grace = pod.termination_grace_period_seconds.expect("grace period");
    assert_eq!(grace, 40);
    assert!(
        Duration::from_secs(u64::try_from(grace).unwrap_or(0))
            >= run.drain_timeout + Duration::from_secs(5),
        "grace {grace}s leaves no room after --drain-timeout {:?}",
        run.drain_timeout
    );
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().expect("rollingUpdate");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    assert!(
        matches!(rolling.max_surge, None | Some(IntOrString::Int(0))),
        "a surge pod cannot bind the node's ports"
    );
}

#[test]
fn deploy_daemonset_args_parse_with_the_real_cli() {
    let m = manifests();
    let c = m.container();
    assert!(c.command.is_none(), "the image's ENTRYPOINT runs ingressd");
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == r#"ENTRYPOINT ["/usr/local/bin/ingressd"]"#),
        "the Dockerfile's ENTRYPOINT must be ingressd"
    );

    let run = run_args(&m);
    let node: IpAddr = NODE_IP.parse().expect("stand-in");
    assert_eq!(
        run.http_addr,
        "0.0.0.0:80".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        run.https_addr,
        "0.0.0.0:443".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        run.admin_addr,
        "0.0.0.0:10254".parse::<SocketAddr>().expect("addr")
    );
    assert!(run.publish_address.is_empty(), "status follows the pods");
    assert_eq!(run.l4_address, vec![node]);
    // --publish-pods selects this DaemonSet's own pods.
    let selector = run.publish_pods.as_deref().expect("--publish-pods");
    let labels = m.pod_labels();
    for term in selector.split(',') {
        let (k, v) = term.split_once('=').expect("equality selector");
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(v),
            "--publish-pods {selector} does not select the pod template ({labels:?})"
        );
    }
    assert_eq!(run.xdp.snat_v4.map(IpAddr::V4), Some(node));
    assert_eq!(run.xdp.interfaces, vec!["eth0".to_string()]);
    assert!(
        run.manifests.is_none() && run.kubeconfig.is_none(),
        "in-cluster config"
    );
    assert_eq!(run.drain_timeout, Duration::from_secs(30));

    // The namespaces the args name are the ones the manifests create and grant.
    let ns = m.namespace();
    assert_eq!(run.election_namespace, ns);
    for (flag, value) in [
        ("--tcp-services-configmap", &run.tcp_services_configmap),
        ("--configmap", &run.configmap),
    ] {
        let nn = parse_ref(
            value
                .as_deref()
                .unwrap_or_else(|| panic!("{flag} not given")),
        );
        // Panics unless deploy/ creates it.
        m.config_map(&nn);
    }
    assert!(
        run.udp_services_configmap.is_none(),
        "rbac.yaml grants no UDP ConfigMap"
    );

    // The check has teeth: a flag the CLI does not know fails to parse.
    let mut args = expand_args(c).expect("args");
    args.push("--no-such-flag=1".into());
    let err = Cli::try_parse_from(std::iter::once("ingressd".to_string()).chain(args))
        .expect_err("unknown flag");
    assert!(err.to_string().contains("--no-such-flag"), "{err}");
    let mut broken = c.clone();
    broken.args = Some(vec!["run".into(), "--snat-v4=$(NOT_SET)".into()]);
    let err = expand_args(&broken).expect_err("undefined variable");
    assert!(err.contains("NOT_SET"), "{err}");
}

// ---- RBAC against the recorded calls ----------------------------------------------------------

#[test]
fn deploy_rbac_evaluator_follows_kubernetes_semantics() {
    let access = |m: &str, uri: &str| rbac::access(m, uri).unwrap_or_else(|e| panic!("{e}"));
    let a = access(
        "GET",
        "/apis/networking.k8s.io/v1/ingresses?&watch=true&resourceVersion=5",
    );
    assert_eq!(
        (
            a.verb.as_str(),
            a.group.as_str(),
            a.resource.as_str(),
            &a.namespace,
            &a.name
        ),
        ("watch", "networking.k8s.io", "ingresses", &None, &None)
    );
    let a = access(
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status?&fieldManager=x",
    );
    assert_eq!(
        (
            a.verb.as_str(),
            a.resource.as_str(),
            a.namespace.as_deref(),
            a.name.as_deref()
        ),
        ("patch", "ingresses/status", Some("shop"), Some("web"))
    );
    let a = access(
        "GET",
        "/api/v1/namespaces/ns/configmaps?&fieldSelector=metadata.name%3Dtcp&limit=500",
    );
    assert_eq!(
        (a.verb.as_str(), a.group.as_str(), a.name.as_deref()),
        ("list", "", Some("tcp"))
    );
    assert_eq!(access("GET", "/api/v1/namespaces/x").resource, "namespaces");
    assert!(rbac::access("GET", "/version").is_err());

    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "r", "namespace": "ns"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["tcp"], "verbs": ["get", "list"]}],
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "ns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}],
    }))
    .expect("binding");
    let (roles, bindings) = ([role], [binding]);
    let objects = RbacObjects {
        cluster_roles: &[],
        cluster_role_bindings: &[],
        roles: &roles,
        role_bindings: &bindings,
    };
    let policy = Policy::for_service_account(objects, "ns", "sa");
    assert!(policy.problems.is_empty(), "{:?}", policy.problems);
    let allowed = |m: &str, uri: &str| policy.allowing(&access(m, uri)).next().is_some();
    assert!(allowed("GET", "/api/v1/namespaces/ns/configmaps/tcp"));
    assert!(allowed(
        "GET",
        "/api/v1/namespaces/ns/configmaps?fieldSelector=metadata.name%3Dtcp"
    ));
    assert!(
        !allowed("GET", "/api/v1/namespaces/ns/configmaps"),
        "list of all"
    );
    assert!(!allowed("GET", "/api/v1/namespaces/ns/configmaps/other"));
    assert!(
        !allowed("GET", "/api/v1/namespaces/other/configmaps/tcp"),
        "other namespace"
    );
    assert!(
        !allowed(
            "GET",
            "/api/v1/configmaps?fieldSelector=metadata.name%3Dtcp"
        ),
        "cluster-wide"
    );
    assert!(
        !allowed("PUT", "/api/v1/namespaces/ns/configmaps/tcp"),
        "verb"
    );
    assert!(
        !allowed("GET", "/api/v1/namespaces/ns/configmaps/tcp/status"),
        "subresource"
    );

    let other = Policy::for_service_account(objects, "ns", "someone-else");
    assert!(other.grants.is_empty());
    assert_eq!(other.problems.len(), 2, "{:?}", other.problems);
}

fn seed(api: &FakeApi, config_maps: &[&ConfigMap]) {
    let meta = |name: &str| json!({"namespace": "shop", "name": name});
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("web"),
        "spec": {"ingressClassName": "xdp", "rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}], "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}]},
    }));
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "xdp"},
        "spec": {"controller": "ingress.example.dev/xdp-ingress"},
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "shop", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta("web-tls"),
        "type": "kubernetes.io/tls", "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"},
    }));
    for cm in config_maps {
        api.apply(serde_json::to_value(cm).expect("ConfigMap as JSON"));
    }
}

/// One diagnostic on each kind `apply::events` can attach an Event to, so every lookup it
/// makes happens.
fn diagnostics(tcp: &NamespacedName, controller: &NamespacedName) -> Vec<Diagnostic> {
    let on = |kind: &'static str, namespace: &str, name: &str| Diagnostic {
        object: ObjectRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        },
        reason: "Test",
        message: format!("diagnostic on {kind} {name}"),
    };
    vec![
        on("Ingress", "shop", "web"),
        on("IngressClass", "", "xdp"),
        on("Service", "shop", "web"),
        on("EndpointSlice", "shop", "web-abc"),
        on("Secret", "shop", "web-tls"),
        on("ConfigMap", &tcp.namespace, &tcp.name),
        on("ConfigMap", &controller.namespace, &controller.name),
    ]
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
}

#[tokio::test]
async fn deploy_rbac_allows_exactly_the_calls_the_controller_makes() {
    let m = manifests();
    let run = run_args(&m);
    let tcp = parse_ref(run.tcp_services_configmap.as_deref().expect("tcp services"));
    // The settings ingressd derives from these very flags.
    let settings: Settings =
        ingress::app::settings(&run).expect("settings from the DaemonSet's flags");
    assert_eq!(settings.tcp_services.as_ref(), Some(&tcp));

    let api = FakeApi::start().await.expect("fake API server");
    let controller = parse_ref(run.configmap.as_deref().expect("--configmap"));
    assert_eq!(settings.controller_config.as_ref(), Some(&controller));
    seed(&api, &[m.config_map(&tcp), m.config_map(&controller)]);
    // This replica's own pod, running on its node: the address --publish-pods publishes.
    let pod_labels = m.pod_labels();
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": run.election_namespace, "name": POD_NAME, "labels": pod_labels},
        "spec": {"containers": [{"name": "ingressd", "image": "ingressd:0.1.0"}]},
        "status": {"phase": "Running", "hostIP": NODE_IP},
    }));
    let url = api.url().parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");

    // The source: lists, then watches, every kind.
    let (tx, mut rx) = mpsc::channel(256);
    let source = kube_source::spawn(client.clone(), tx, None);
    bounded("source synced", async {
        while let Some(event) = rx.recv().await {
            if matches!(event, SourceEvent::Synced) {
                return;
            }
        }
        panic!("source stopped before Synced");
    })
    .await;
    let watches = |a: &FakeApi| a.requests().iter().filter(|r| r.is_watch()).count();
    // One watch per kind, ConfigMaps included (all namespaces).
    api.wait_until(WAIT, "a watch per kind", |a| watches(a) >= 6)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Leader election, then status and Events as the leader.
    let shutdown = CancellationToken::new();
    let lease = LeaderConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
        ..LeaderConfig::new(run.election_namespace.clone(), POD_NAME)
    };
    let (mut leading, leader_task) = leader::spawn(client.clone(), lease, shutdown.clone());
    bounded("leadership", leading.wait_for(|l| *l))
        .await
        .expect("leader channel");
    let (translations, trx) = watch::channel(Arc::new(Translation::default()));
    let addresses = ingress::apply::publish::spawn(
        Some(client.clone()),
        ingress::app::publish_source(&run),
        shutdown.clone(),
    );
    let status_task = tokio::spawn(status::run(
        client.clone(),
        StatusConfig::following(addresses),
        trx.clone(),
        leading.clone(),
        shutdown.clone(),
    ));
    let events_task = tokio::spawn(events::run(
        client.clone(),
        EventsConfig::new(run.controller_name.clone(), POD_NAME),
        trx,
        leading.clone(),
        shutdown.clone(),
    ));
    let diagnostics = diagnostics(&tcp, &controller);
    let n_events = diagnostics.len();
    translations.send_replace(Arc::new(Translation {
        snapshot: Arc::new(Snapshot {
            generation: 1,
            ..Default::default()
        }),
        diagnostics,
        owned_ingresses: vec![ObjectRef {
            kind: "Ingress",
            namespace: "shop".into(),
            name: "web".into(),
        }],
        claimed_elsewhere: Vec::new(),
    }));
    let is = |r: &tests::fake_api::RecordedRequest, method: &str, suffix: &str| {
        r.method.as_str() == method && r.path().ends_with(suffix)
    };
    api.wait_until(WAIT, "the status patch and every Event", |a| {
        let reqs = a.requests();
        reqs.iter().any(|r| is(r, "PATCH", "/ingresses/web/status"))
            && reqs.iter().filter(|r| is(r, "POST", "/events")).count() == n_events
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let web = api
        .get("networking.k8s.io/v1", "Ingress", "shop", "web")
        .expect("Ingress");
    assert_eq!(
        web["status"]["loadBalancer"]["ingress"],
        json!([{"ip": NODE_IP}]),
        "the status lists the node of the running pod"
    );
    api.wait_until(WAIT, "a lease renewal", |a| {
        a.requests()
            .iter()
            .any(|r| is(r, "PUT", "/leases/ingressd-leader"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Shut down as ingressd does: the leader releases its Lease.
    shutdown.cancel();
    for (what, task) in [
        ("leader", leader_task),
        ("status", status_task),
        ("events", events_task),
    ] {
        bounded(what, task)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    source.abort();
    drop(rx);
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            &run.election_namespace,
            leader::LEASE_NAME,
        )
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released on shutdown: {lease}"
    );

    // Every call allowed, every permission used.
    let ds = m.daemon_set();
    let sa_namespace = ds.metadata.namespace.clone().expect("namespace");
    let sa = m
        .pod()
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    let policy = Policy::for_service_account(m.rbac(), &sa_namespace, &sa);
    assert!(
        policy.problems.is_empty(),
        "RBAC objects: {:#?}",
        policy.problems
    );
    let mut denied = BTreeSet::new();
    let mut calls = BTreeSet::new();
    let mut used = BTreeSet::new();
    for r in api.requests() {
        match rbac::access(r.method.as_str(), &r.uri) {
            Ok(access) => {
                let grants: Vec<_> = policy.allowing(&access).cloned().collect();
                if grants.is_empty() {
                    denied.insert(format!("{access}   <- {} {}", r.method, r.uri));
                }
                used.extend(grants);
                calls.insert(access.to_string());
            }
            Err(e) => {
                denied.insert(e);
            }
        }
    }
    let unused: Vec<String> = policy
        .grants
        .iter()
        .filter(|g| !used.contains(*g))
        .map(ToString::to_string)
        .collect();
    assert!(
        denied.is_empty() && unused.is_empty(),
        "deploy/rbac.yaml does not match the controller's calls.\n\
         calls not allowed (add a rule): {denied:#?}\n\
         permissions never used (remove them): {unused:#?}\n\
         all calls made: {calls:#?}"
    );
    // The run really exercised every component.
    for (group_resource, verbs) in [
        ("networking.k8s.io/ingresses", &["list", "watch", "get"][..]),
        ("networking.k8s.io/ingresses/status", &["patch"]),
        ("core/pods", &["list", "watch"]),
        ("coordination.k8s.io/leases", &["create", "get", "update"]),
        ("events.k8s.io/events", &["create"]),
    ] {
        for verb in verbs {
            let call = format!("{verb} {group_resource}");
            assert!(
                calls.iter().any(|c| c.starts_with(&call)),
                "no `{call}` call made: {calls:#?}"
            );
        }
    }
}

// ---- capabilities against the kernel ---------------------------------------------------------

/// The DaemonSet's added capabilities, as numbers.
fn granted_caps(m: &Manifests) -> Vec<u32> {
    granted_names(m)
        .iter()
        .map(|n| caps::number(n).unwrap_or_else(|| panic!("unknown capability {n}")))
        .collect()
}

/// `512Mi` and friends, in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let (num, mult) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    num.parse::<u64>()
        .unwrap_or_else(|e| panic!("quantity {q}: {e}"))
        * mult
}

/// Kernel memory of the loaded object's maps (`memlock` in the map fds' fdinfo), which Linux
/// 5.11+ charges to the loading process's memory cgroup.
fn map_memory(datapath: &ingress::maps::loader::Datapath) -> Result<u64, String> {
    use aya::maps::Map;
    use std::os::fd::{AsFd, AsRawFd};
    let mut total = 0;
    for (name, map) in datapath.ebpf().maps() {
        let data = match map {
            Map::Array(d)
            | Map::HashMap(d)
            | Map::LpmTrie(d)
            | Map::LruHashMap(d)
            | Map::PerCpuArray(d)
            | Map::PerCpuHashMap(d)
            | Map::SockHash(d)
            | Map::SockMap(d)
            | Map::ProgramArray(d)
            | Map::RingBuf(d) => d,
            _ => return Err(format!("map {name}: type not handled by this test")),
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .map_err(|e| format!("fdinfo of {name}: {e}"))?;
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no memlock for map {name}"))?;
        total += memlock;
    }
    Ok(total)
}

/// The outcome of each startup step, in order, up to the first failure.
type Steps = Vec<(&'static str, Result<(), String>)>;

/// One startup under some capability set.
struct Startup {
    steps: Steps,
    /// Kernel memory of the maps, once loaded.
    map_memory: Option<u64>,
}

/// What `ingressd run` does with the kernel and the node's ports at startup, in order, as in
/// the DaemonSet's args. Stops at the first failing step.
fn startup(run: &RunArgs, pin_dir: &Path, backend: SocketAddr) -> Startup {
    let mut out = Startup {
        steps: Vec::new(),
        map_memory: None,
    };
    startup_steps(run, pin_dir, backend, &mut out);
    out
}

fn startup_steps(run: &RunArgs, pin_dir: &Path, backend: SocketAddr, out: &mut Startup) {
    use ingress::{
        apply::maps::{L4Applier, SnatSettings},
        maps::{counters::Counters, loader, neigh},
        snapshot::{L4Protocol, L4Service},
    };
    macro_rules! step {
        ($name:expr, $body:expr) => {{
            let r: Result<_, String> = $body;
            match r {
                Ok(v) => {
                    out.steps.push(($name, Ok(())));
                    v
                }
                Err(e) => {
                    out.steps.push(($name, Err(e)));
                    return;
                }
            }
        }};
    }
    let _listeners = step!("bind the HTTP and HTTPS ports", {
        let bind =
            |a: SocketAddr| std::net::TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}"));
        bind(run.http_addr).and_then(|h| Ok((h, bind(run.https_addr)?)))
    });
    let mut datapath = step!(
        "load the programs, create and pin the maps",
        loader::Datapath::load(&loader::LoaderOptions {
            pin_dir: Some(pin_dir.to_path_buf()),
            max_vips: run.xdp.max_vips,
            conntrack_entries: run.xdp.conntrack_entries,
            kernel_log: run.kernel_log,
        })
        .map_err(|e| format!("{e:#}"))
    );
    out.map_memory = Some(step!("measure map memory", map_memory(&datapath)));
    let iface = run.xdp.interfaces.first().cloned().unwrap_or_default();
    step!(
        "attach XDP (a pinned link)",
        datapath
            .attach(&iface, run.xdp.xdp_generic)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    );
    let writer = step!(
        "open the maps for writing",
        datapath.map_writer().map_err(|e| format!("{e:#}"))
    );
    let (port_min, port_max) = step!(
        "parse --snat-ports",
        ingress::config::parse_port_range(&run.xdp.snat_ports).map_err(|e| e.to_string())
    );
    let snat = SnatSettings {
        v4: run.xdp.snat_v4,
        v6: run.xdp.snat_v6,
        port_min,
        port_max,
        timeouts: Default::default(),
    };
    let mut applier = step!(
        "write the SNAT config",
        L4Applier::new(writer, snat).map_err(|e| format!("{e:#}"))
    );
    let service = L4Service {
        origin: ObjectRef {
            kind: "ConfigMap",
            namespace: "ingressd-system".into(),
            name: "tcp-services".into(),
        },
        vip: run
            .l4_address
            .first()
            .copied()
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        port: 9000,
        protocol: L4Protocol::Tcp,
        backends: vec![backend],
    };
    step!(
        "program a VIP with Maglev and backends",
        applier
            .apply(&[service])
            .map_err(|e| format!("{e:#}"))
            .and_then(|r| match r.skipped.as_slice() {
                [] => Ok(()),
                s => Err(format!("skipped {s:?}")),
            })
    );
    step!(
        "read the pinned counters",
        Counters::from_pins(&loader::maps_dir(pin_dir))
            .and_then(|c| c.stats())
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    );
    step!(
        "read the counters through the loaded object",
        datapath
            .counters()
            .and_then(|c| c.stats().map_err(Into::into))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    );
    step!("keep the backend's next hop resolved (ip neigh)", {
        neigh::keep_resolved([backend.ip()]);
        std::process::Command::new("ip")
            .args(["neigh", "show", &backend.ip().to_string()])
            .output()
            .map_err(|e| format!("ip neigh show: {e}"))
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text.contains("managed") {
                    Ok(())
                } else {
                    Err(format!("no managed neighbour entry: {text:?}"))
                }
            })
    });
}

/// A pin directory on the host's bpffs, removed (detaching pinned links) on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = ingress::maps::loader::cleanup(&self.0);
    }
}

/// A namespace whose `eth0` is one end of a veth pair, holding the node address and a backend
/// route, like a node's uplink.
fn node_namespace() -> (NetNs, SocketAddr) {
    let ns = NetNs::new("dpl").expect("netns");
    for cmd in [
        "ip link add name eth0 type veth peer name peer0",
        "ip link set eth0 up",
        "ip link set peer0 up",
        &format!("ip addr add {NODE_IP}/24 dev eth0"),
    ] {
        ns.run(cmd).unwrap_or_else(|e| panic!("{e}"));
    }
    (ns, "198.18.0.20:8080".parse().expect("addr"))
}

/// The first failing step and its error, shortened: a verifier log keeps its first line and
/// its verdict (the last line before the statistics).
fn failed_step(steps: &Steps) -> Option<(&'static str, String)> {
    let (name, error) = steps
        .iter()
        .find_map(|(name, r)| r.as_ref().err().map(|e| (*name, e)))?;
    let lines: Vec<&str> = error.lines().collect();
    if lines.len() <= 2 {
        return Some((name, error.clone()));
    }
    let verdict = lines
        .iter()
        .rev()
        .find(|l| {
            !l.is_empty()
                && !["verification time", "stack depth", "processed "]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .copied()
        .unwrap_or_default();
    Some((name, format!("{} ... {verdict}", lines[0])))
}

#[test]
fn deploy_capabilities_are_enough_for_ingressd_startup_and_each_is_needed() {
    require_privileges().unwrap_or_else(|e| panic!("{e}"));
    let m = manifests();
    let run = run_args(&m);
    // The test process may itself lack some of them (this is then reported below); they
    // cannot be exercised, and the run proves ingressd starts without them.
    let held = caps::permitted().expect("own capabilities");
    let (granted, not_held): (Vec<u32>, Vec<u32>) = granted_caps(&m)
        .into_iter()
        .partition(|c| held & caps::mask(&[*c]) != 0);
    let (ns, backend) = node_namespace();
    let netns = PathBuf::from(format!("/var/run/netns/{}", ns.name));
    let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(owned_unique("deploy")));

    // First start with exactly the DaemonSet's capabilities.
    let first = caps::run_with(&granted, Some(&netns), || startup(&run, &pins.0, backend))
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Some((step, error)) = failed_step(&first.steps) {
        panic!(
            "with the DaemonSet's capabilities, `{step}` failed: {error}\nsteps: {:#?}",
            first.steps
        );
    }
    // The maps fit in the container's memory limit with room for the proxy.
    let memory = first.map_memory.expect("map memory measured");
    let limit = m
        .container()
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| quantity_bytes(&q.0))
        .expect("memory limit");
    eprintln!(
        "kernel maps: {} MiB of the {} MiB memory limit",
        memory >> 20,
        limit >> 20
    );
    assert!(
        memory + (256 << 20) <= limit,
        "kernel maps take {} MiB of the {} MiB limit; the proxy needs room too",
        memory >> 20,
        limit >> 20
    );

    // What the README says to inspect is there, readable by bpftool on the node.
    let vips = ingress::maps::loader::maps_dir(&pins.0).join("VIPS");
    let dump = sh(&format!("bpftool -j map dump pinned {}", vips.display()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let entries: Vec<Value> = serde_json::from_str(&dump).expect("bpftool JSON");
    assert_eq!(entries.len(), 1, "one VIP programmed: {dump}");
    // BTF-typed: bpftool names the fields of VipKey and VipMeta, as the README shows.
    for field in [
        "\"addr\"",
        "\"port\"",
        "\"proto\"",
        "\"family\"",
        "\"backends\"",
    ] {
        assert!(
            dump.contains(field),
            "bpftool dump lacks field {field}: {dump}"
        );
    }
    let iface = &run.xdp.interfaces[0];
    assert!(
        pins.0.join(format!("links/xdp_{iface}")).exists(),
        "XDP link pinned"
    );

    // A restart (new pod on the same node) adopts the pins and swaps into the pinned link.
    let restart = caps::run_with(&granted, Some(&netns), || startup(&run, &pins.0, backend))
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Some((step, error)) = failed_step(&restart.steps) {
        panic!(
            "on restart, `{step}` failed: {error}\nsteps: {:#?}",
            restart.steps
        );
    }
    assert!(
        ns.run(&format!("ip link show dev {iface}"))
            .expect("ip link")
            .contains("xdp"),
        "program attached"
    );

    // `ingressd cleanup` in the pod removes the pins, which detaches the program.
    let removed = caps::run_with(&granted, Some(&netns), || {
        ingress::maps::loader::cleanup(&pins.0)
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
    .unwrap_or_else(|e| panic!("cleanup with the DaemonSet's capabilities: {e}"));
    assert!(!removed.is_empty() && !pins.0.exists());
    assert!(
        !ns.run(&format!("ip link show dev {iface}"))
            .expect("ip link")
            .contains("xdp"),
        "cleanup detached the program"
    );

    // Each capability is needed: without it, a startup step fails. The one exception is
    // SYS_RESOURCE, which only matters where BPF memory counts against RLIMIT_MEMLOCK (Linux
    // before 5.11); there it must be unneeded, and everything else must be needed.
    let mut report = Vec::new();
    for cap in &granted {
        let fewer: Vec<u32> = granted.iter().copied().filter(|c| c != cap).collect();
        let dir = PinDir(PathBuf::from("/sys/fs/bpf").join(owned_unique("deploy")));
        let without = caps::run_with(&fewer, Some(&netns), || startup(&run, &dir.0, backend))
            .unwrap_or_else(|e| panic!("{e:#}"));
        report.push((*cap, failed_step(&without.steps)));
    }
    // Not held by this process: the runs above already went without them.
    report.extend(not_held.iter().map(|c| (*c, None)));
    let name = |cap: u32| {
        granted_names(&m)
            .into_iter()
            .find(|n| caps::number(n) == Some(cap))
            .unwrap_or_default()
    };
    let summary: Vec<String> = report
        .iter()
        .map(|(cap, failed)| match failed {
            Some((step, error)) => format!("without {}: `{step}` fails: {error}", name(*cap)),
            None => format!("without {}: startup succeeds", name(*cap)),
        })
        .collect();
    eprintln!("{summary:#?}");
    let memlock_accounting = kernel_version() < (5, 11);
    for (cap, failed) in &report {
        let needed = failed.is_some();
        if name(*cap) == "SYS_RESOURCE" {
            assert_eq!(
                needed, memlock_accounting,
                "SYS_RESOURCE is documented as needed only before Linux 5.11: {summary:#?}"
            );
        } else {
            assert!(
                needed,
                "{} is granted but not needed: {summary:#?}",
                name(*cap)
            );
        }
    }
}

fn granted_names(m: &Manifests) -> Vec<String> {
    m.container()
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
