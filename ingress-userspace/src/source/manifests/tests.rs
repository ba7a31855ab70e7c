use std::time::Duration;

use tokio::time::timeout;

use super::*;

const INGRESS_AND_SERVICE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations:
    nginx.ingress.kubernetes.io/ssl-redirect: "false"
spec:
  ingressClassName: xdp
  rules:
    - host: a.example
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: web
                port:
                  number: 80
---
# a comment-only document is empty
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    ingress.example.dev/endpoints: "127.0.0.1:18081"
spec:
  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ignored
spec: {}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: xdp
  namespace: should-be-dropped
spec:
  controller: ingress.example.dev/xdp-ingress
"#;

fn names(objs: &[Object]) -> Vec<String> {
    objs.iter()
        .filter_map(key_of)
        .map(|k| format!("{:?} {}/{}", k.kind, k.namespace, k.name))
        .collect()
}

#[test]
fn multi_document_yaml() {
    let objs = parse_manifests(INGRESS_AND_SERVICE, Format::Yaml).expect("valid");
    assert_eq!(
        names(&objs),
        vec![
            "Ingress default/web",
            "Service shop/web",
            "IngressClass /xdp"
        ]
    );
    let Object::IngressClass(class) = &objs[2] else {
        panic!("class")
    };
    assert_eq!(class.metadata.namespace, None);
    let Object::Ingress(ing) = &objs[0] else {
        panic!("ingress")
    };
    let ann = ing.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/ssl-redirect")
            .map(String::as_str),
        Some("false")
    );
}

#[test]
fn json_object_and_lists() {
    let one = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"tcp","namespace":"ingress"},"data":{"9000":"db/pg:5432"}}"#;
    let objs = parse_manifests(one, Format::Json).expect("valid");
    assert_eq!(names(&objs), vec!["ConfigMap ingress/tcp"]);
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}},
        {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a-1","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}]}
    ]}"#;
    let objs = parse_manifests(list, Format::Json).expect("valid");
    assert_eq!(
        names(&objs),
        vec!["Service default/a", "EndpointSlice default/a-1"]
    );
    let yaml_list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n";
    assert_eq!(
        names(&parse_manifests(yaml_list, Format::Yaml).expect("valid")),
        vec!["Secret default/s"]
    );
}

#[test]
fn secret_string_data_is_merged_into_data() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n\
                data: {tls.crt: b2xk, other: eA==}\nstringData: {tls.crt: new}\n";
    let objs = parse_manifests(yaml, Format::Yaml).expect("valid");
    let Object::Secret(s) = &objs[0] else {
        panic!("secret")
    };
    assert!(s.string_data.is_none());
    let data = s.data.as_ref().expect("data");
    assert_eq!(data["tls.crt"].0, b"new");
    assert_eq!(data["other"].0, b"x");
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    let table: &[(&str, Format, &str)] = &[
        ("kind: [unclosed", Format::Yaml, "invalid YAML"),
        ("{", Format::Json, "invalid JSON"),
        ("apiVersion: v1\nmetadata: {name: x}\n", Format::Yaml, "missing apiVersion or kind"),
        ("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n", Format::Yaml, "metadata.name is required"),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: w}\nspec: {rules: nope}\n",
            Format::Yaml,
            "document 1 (Ingress w)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcp}\ndata:\n  \"9000\": [db/pg, 5432]\n",
            Format::Yaml,
            "document 1 (ConfigMap tcp): invalid type",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: 7}\n",
            Format::Yaml,
            "document 2",
        ),
        ("apiVersion: v1\nkind: List\nitems: 3\n", Format::Yaml, "items must be an array"),
    ];
    for (text, format, want) in table {
        let err = parse_manifests(text, *format).expect_err(text);
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // Not even valid UTF-8: an error for that file, no panic.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bin.yaml");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
    let err = load_file(&path).expect_err("not utf-8").to_string();
    assert!(err.contains("bin.yaml") && err.contains("UTF-8"), "{err}");
}

fn service(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n")
}

fn applied(events: &[SourceEvent]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .map(|e| match e {
            SourceEvent::Apply(o) => {
                format!("apply {}", key_of(o).map(|k| k.name).unwrap_or_default())
            }
            SourceEvent::Delete(k) => format!("delete {}", k.name),
            SourceEvent::Replace(k, objs) => format!("replace {k:?} {}", objs.len()),
            SourceEvent::Synced => "synced".into(),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn directory_rescans_add_edit_break_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("a.yaml"), service("a") + "---\n" + &service("b")).expect("write");
    std::fs::write(
        p("c.json"),
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#,
    )
    .expect("write");
    std::fs::write(p("notes.txt"), "not a manifest").expect("write");
    std::fs::write(p(".hidden.yaml"), "{{{").expect("write");
    let mut state = DirState::new(dir.path().to_owned());

    let r = state.rescan().expect("scan");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(applied(&r.events), vec!["apply a", "apply b", "apply c"]);
    let replace = applied(&state.replace_events());
    assert!(
        replace.contains(&"replace Service 3".to_owned()),
        "{replace:?}"
    );

    // Unchanged: nothing to send.
    assert!(state.rescan().expect("scan").events.is_empty());

    // Edit: b removed from a.yaml, a changed.
    std::fs::write(p("a.yaml"), service("a").replace("port: 80", "port: 81")).expect("write");
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["apply a", "delete b"]);

    // Broken: error naming the file, previous objects kept, reported once.
    std::fs::write(
        p("a.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: a\n",
    )
    .expect("write");
    let r = state.rescan().expect("scan");
    assert!(r.events.is_empty());
    assert_eq!(r.errors.len(), 1);
    let msg = r.errors[0].to_string();
    assert!(
        msg.contains("a.yaml") && msg.contains("invalid YAML"),
        "{msg}"
    );
    assert!(state.rescan().expect("scan").errors.is_empty());
    let objs: Vec<Object> = state.merged.values().cloned().collect();
    assert_eq!(names(&objs), vec!["Service default/a", "Service default/c"]);

    // Fixed again with different content: applied.
    std::fs::write(p("a.yaml"), service("a")).expect("write");
    assert_eq!(
        applied(&state.rescan().expect("scan").events),
        vec!["apply a"]
    );

    // Deleted file: its objects are deleted.
    std::fs::remove_file(p("c.json")).expect("rm");
    assert_eq!(
        applied(&state.rescan().expect("scan").events),
        vec!["delete c"]
    );

    // The same object in two files: the first file wins, the other is reported.
    std::fs::write(p("z.yaml"), service("a").replace("port: 80", "port: 99")).expect("write");
    let r = state.rescan().expect("scan");
    assert!(r.events.is_empty());
    assert_eq!(r.duplicates.len(), 1);
    assert!(r.duplicates[0].contains("a.yaml") && r.duplicates[0].contains("z.yaml"));
    std::fs::remove_file(p("a.yaml")).expect("rm");
    let r = state.rescan().expect("scan");
    assert_eq!(
        applied(&r.events),
        vec!["apply a"],
        "z.yaml's version takes over"
    );
}

#[test]
fn load_dir_reads_everything_and_reports_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("good.yml"), service("a")).expect("write");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nspec: 3\n",
    )
    .expect("write");
    let (objs, errors) = load_dir(dir.path()).expect("dir readable");
    assert_eq!(names(&objs), vec!["Service default/a"]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("bad.yaml"));
    assert!(load_dir(&dir.path().join("missing")).is_err());
}

async fn recv(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event within 5 s")
        .expect("source running")
}

#[tokio::test]
async fn watch_applies_live_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), service("a")).expect("write");
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(run(dir.path().to_owned(), tx));

    let mut initial = Vec::new();
    loop {
        let ev = recv(&mut rx).await;
        let done = matches!(ev, SourceEvent::Synced);
        initial.push(ev);
        if done {
            break;
        }
    }
    let summary = applied(&initial);
    assert_eq!(summary.len(), 7, "{summary:?}");
    assert!(summary.contains(&"replace Service 1".to_owned()));
    assert!(summary.contains(&"replace Ingress 0".to_owned()));

    // A new file shows up.
    std::fs::write(dir.path().join("b.yaml"), service("b")).expect("write");
    assert_eq!(applied(&[recv(&mut rx).await]), vec!["apply b"]);

    // A broken edit changes nothing; the following good edit is applied.
    std::fs::write(dir.path().join("a.yaml"), "kind: [").expect("write");
    tokio::time::sleep(SETTLE * 3).await;
    assert!(
        rx.try_recv().is_err(),
        "broken file must not change anything"
    );
    std::fs::write(dir.path().join("a.yaml"), service("a2")).expect("write");
    let mut evs = vec![recv(&mut rx).await, recv(&mut rx).await];
    evs.sort_by_key(|e| matches!(e, SourceEvent::Delete(_)));
    assert_eq!(applied(&evs), vec!["apply a2", "delete a"]);

    // Atomic replace by rename, as editors and kubectl-like tools do.
    let tmp = dir.path().join(".b.yaml.tmp");
    std::fs::write(&tmp, service("b").replace("port: 80", "port: 8080")).expect("write");
    std::fs::rename(&tmp, dir.path().join("b.yaml")).expect("rename");
    assert_eq!(applied(&[recv(&mut rx).await]), vec!["apply b"]);

    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    assert_eq!(applied(&[recv(&mut rx).await]), vec!["delete b"]);

    // The source stops when the store goes away.
    drop(rx);
    std::fs::write(dir.path().join("c.yaml"), service("c")).expect("write");
    let result = timeout(Duration::from_secs(5), task)
        .await
        .expect("source stops")
        .expect("no panic");
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_missing_directory_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = mpsc::channel(8);
    let err = run(dir.path().join("nope"), tx)
        .await
        .expect_err("no directory");
    assert!(err.to_string().contains("nope"), "{err}");
}
