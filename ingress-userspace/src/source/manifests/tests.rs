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

/// The objects of a text every document of which is fine.
fn good(text: &str, format: Format) -> Vec<Object> {
    let parsed = parse_manifests(text, format).expect("valid");
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    parsed.objects
}

fn names(objs: &[Object]) -> Vec<String> {
    objs.iter()
        .filter_map(key_of)
        .map(|k| format!("{:?} {}/{}", k.kind, k.namespace, k.name))
        .collect()
}

#[test]
fn multi_document_yaml() {
    let objs = good(INGRESS_AND_SERVICE, Format::Yaml);
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
    let objs = good(one, Format::Json);
    assert_eq!(names(&objs), vec!["ConfigMap ingress/tcp"]);
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}},
        {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a-1","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}]}
    ]}"#;
    let objs = good(list, Format::Json);
    assert_eq!(
        names(&objs),
        vec!["Service default/a", "EndpointSlice default/a-1"]
    );
    let yaml_list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n";
    assert_eq!(
        names(&good(yaml_list, Format::Yaml)),
        vec!["Secret default/s"]
    );
}

#[test]
fn secret_string_data_is_merged_into_data() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n\
                data: {tls.crt: b2xk, other: eA==}\nstringData: {tls.crt: new}\n";
    let objs = good(yaml, Format::Yaml);
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
        // Either the whole text fails, or the bad document is rejected on its own.
        let err = match parse_manifests(text, *format) {
            Err(e) => e,
            Ok(p) => p
                .rejected
                .into_iter()
                .map(|r| r.reason)
                .next()
                .unwrap_or_else(|| panic!("{text}: no error")),
        };
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // Not even valid UTF-8: an error for that file, no panic.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bin.yaml");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
    let err = load_file(&path).expect_err("not utf-8").to_string();
    assert!(err.contains("bin.yaml") && err.contains("UTF-8"), "{err}");
}

fn ingress(name: &str, port: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\n\
         spec:\n  defaultBackend:\n    service: {{name: web, port: {{number: {port}}}}}\n"
    )
}

#[test]
fn a_bad_document_is_rejected_alone() {
    let text = [
        "# leading comment\n".to_owned(),
        service("a"),
        ingress("bad", "eighty"),
        "kind: [unclosed\n".to_owned(),
        service("c"),
        "apiVersion: v1\nkind: List\nitems:\n\
         - {apiVersion: v1, kind: Service, metadata: {name: 7, namespace: x}}\n\
         - {apiVersion: v1, kind: Secret, metadata: {name: s, namespace: x}, data: 3}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: d, namespace: x}}\n"
            .to_owned(),
    ]
    .join("--- # separator with a comment\n");
    let parsed = parse_manifests(&text, Format::Yaml).expect("some documents are good");
    assert_eq!(
        names(&parsed.objects),
        vec!["Service default/a", "Service default/c", "Service x/d"]
    );
    let rejected: Vec<(Option<String>, &str)> = parsed
        .rejected
        .iter()
        .map(|r| {
            let key = r
                .key
                .as_ref()
                .map(|k| format!("{:?} {}/{}", k.kind, k.namespace, k.name));
            (key, r.reason.as_str())
        })
        .collect();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert_eq!(rejected[0].0.as_deref(), Some("Ingress default/bad"));
    assert!(
        rejected[0]
            .1
            .starts_with("document 2 (Ingress bad): invalid type"),
        "{}",
        rejected[0].1
    );
    assert_eq!(rejected[1].0, None);
    assert!(
        rejected[1]
            .1
            .starts_with("document 3 (from line 15): invalid YAML"),
        "{}",
        rejected[1].1
    );
    // List items stand alone too; a name that is no string gives no identity.
    assert_eq!(rejected[2].0, None);
    assert!(
        rejected[2].1.contains("document 5 item 1"),
        "{}",
        rejected[2].1
    );
    assert_eq!(rejected[3].0.as_deref(), Some("Secret x/s"));

    // Not one YAML document in the file: the file fails as a whole.
    let err = parse_manifests("# nothing\n---\nkind: [\n---\n", Format::Yaml)
        .expect_err("no document is YAML");
    assert!(
        err.contains("document 1 (from line 3): invalid YAML"),
        "{err}"
    );
}

#[test]
fn a_rejected_document_keeps_the_previous_version_of_its_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("60-mixed.yaml");
    let write = |docs: &[String]| std::fs::write(&path, docs.join("---\n")).expect("write");
    write(&[ingress("good", "80"), ingress("bad", "80"), service("a")]);
    let mut state = DirState::new(dir.path().to_owned());
    let r = state.rescan().expect("scan");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        applied(&r.events),
        vec!["apply a", "apply bad", "apply good"]
    );

    // "bad" breaks, "good" and a new Ingress change, an unreadable document appears: the
    // good ones are applied, "bad" keeps its previous version (no delete).
    write(&[
        ingress("good", "81"),
        ingress("bad", "eighty"),
        "kind: [\n".to_owned(),
        ingress("new", "80"),
        service("a"),
    ]);
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["apply good", "apply new"]);
    let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("60-mixed.yaml: document 2 (Ingress bad): invalid type")
            && errors[0].ends_with("its previous version is kept"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("document 3") && !errors[1].contains("kept"),
        "{}",
        errors[1]
    );
    let bad = Key {
        kind: Kind::Ingress,
        namespace: "default".into(),
        name: "bad".into(),
    };
    let Some(Object::Ingress(kept)) = state.merged.get(&bad) else {
        panic!("bad kept")
    };
    let port = kept
        .spec
        .as_ref()
        .and_then(|s| s.default_backend.as_ref())
        .and_then(|b| b.service.as_ref())
        .and_then(|s| s.port.as_ref())
        .and_then(|p| p.number);
    assert_eq!(port, Some(80));

    // Still kept on the next change of the file; gone once the file no longer has it.
    write(&[ingress("bad", "eighty"), service("a")]);
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["delete good", "delete new"]);
    assert_eq!(r.errors.len(), 1);
    write(&[service("a")]);
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["delete bad"]);

    // A rejected object the file never defined has nothing to keep.
    write(&[service("a"), ingress("fresh", "eighty")]);
    let r = state.rescan().expect("scan");
    assert!(r.events.is_empty());
    assert!(!r.errors[0].to_string().contains("kept"), "{}", r.errors[0]);
}

#[test]
fn a_syntax_error_deletes_nothing_until_the_file_reads_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("70-app.yaml");
    let write = |docs: &[String]| std::fs::write(&path, docs.join("---\n")).expect("write");
    write(&[ingress("web", "80"), service("a")]);
    let mut state = DirState::new(dir.path().to_owned());
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["apply a", "apply web"]);

    // The Service's document loses a bracket: which object it was cannot be read, so the
    // Service is kept (a typo is not a delete) while the Ingress's edit applies.
    let broken = "apiVersion: v1\nkind: Service\nmetadata: {name: a\n".to_owned();
    write(&[ingress("web", "81"), broken]);
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["apply web"]);
    assert_eq!(r.errors.len(), 1);
    let error = r.errors[0].to_string();
    assert!(
        error.contains("invalid YAML") && error.contains("is kept (Service default/a)"),
        "{error}"
    );

    // Fixed without the Service: now it goes.
    write(&[ingress("web", "81")]);
    let r = state.rescan().expect("scan");
    assert_eq!(applied(&r.events), vec!["delete a"]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
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

/// An Ingress in a removed API version is rejected with what to write instead, not ignored
/// (which would leave its hosts unserved without a word); other unknown kinds are ignored.
#[test]
fn a_removed_api_version_is_rejected_with_its_replacement() {
    let text = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n\
                spec: {backend: {serviceName: web, servicePort: 80}}\n---\n\
                apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: older}\n\
                ---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n\
                metadata: {name: web-1}\naddressType: IPv4\nendpoints: []\n---\n\
                apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    let parsed = parse_manifests(text, Format::Yaml).expect("parsed");
    assert!(parsed.objects.is_empty());
    let reasons: Vec<&str> = parsed.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for (reason, version, replacement) in [
        (reasons[0], "extensions/v1beta1", "networking.k8s.io/v1"),
        (
            reasons[1],
            "networking.k8s.io/v1beta1",
            "networking.k8s.io/v1",
        ),
        (
            reasons[2],
            "discovery.k8s.io/v1beta1",
            "discovery.k8s.io/v1",
        ),
    ] {
        assert!(
            reason.contains(version) && reason.ends_with(&format!("write it as {replacement}")),
            "{reason}"
        );
    }
}

/// A directory whose one manifest (Service `a`) is a symlink to a file in another
/// directory: (the directory, the other one, that file).
fn symlinked_service() -> (tempfile::TempDir, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = elsewhere.path().join("svc.yaml");
    std::fs::write(&target, service("a")).expect("write");
    std::os::unix::fs::symlink(&target, dir.path().join("svc.yaml")).expect("symlink");
    (dir, elsewhere, target)
}

/// A manifest that is a symlink leading out of the directory (the watch sees only the
/// directory's own entries) is read again by the periodic resync.
#[tokio::test]
async fn a_symlinked_file_outside_the_directory_is_followed_by_the_resync() {
    let (dir, _elsewhere, target) = symlinked_service();
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(run_resyncing(
        dir.path().to_owned(),
        tx,
        Duration::from_millis(300),
        mpsc::channel(1).1,
    ));
    while !matches!(recv(&mut rx).await, SourceEvent::Synced) {}
    std::fs::write(&target, service("a").replace("port: 80", "port: 8080")).expect("write");
    assert_eq!(applied(&[recv(&mut rx).await]), vec!["apply a"]);
    // Nothing more while nothing changes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx.try_recv().is_err(), "an unchanged directory sent events");
    task.abort();
}

/// A reload (SIGHUP) reads the directory at once, so a change the watch cannot see (a
/// symlink's target outside the directory) applies without waiting for the resync.
#[tokio::test]
async fn a_reload_reads_what_the_watch_missed_at_once() {
    let (dir, _elsewhere, target) = symlinked_service();
    let (tx, mut rx) = mpsc::channel(64);
    let (reload, reloads) = mpsc::channel(1);
    let task = tokio::spawn(run_resyncing(
        dir.path().to_owned(),
        tx,
        Duration::from_secs(3600),
        reloads,
    ));
    while !matches!(recv(&mut rx).await, SourceEvent::Synced) {}
    std::fs::write(&target, service("a").replace("port: 80", "port: 8080")).expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "the watch saw a change outside the directory"
    );
    reload.send(()).await.expect("source running");
    assert_eq!(applied(&[recv(&mut rx).await]), vec!["apply a"]);
    task.abort();
}
