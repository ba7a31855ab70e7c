//! A small RBAC evaluator for checking manifests against recorded API requests: turns an HTTP
//! request into the attributes the API server authorizes (verb, API group, resource with
//! subresource, namespace, name) and decides them against Roles and ClusterRoles bound to one
//! ServiceAccount, the way the Kubernetes RBAC authorizer does for resource requests.
//!
//! Covered: core (`/api/v1`) and group (`/apis/<group>/<version>`) paths, namespaced and
//! cluster-wide, subresources, the `get/list/watch/create/update/patch/delete/deletecollection`
//! verbs, `resourceNames` (also for list/watch with a `metadata.name` field selector, which the
//! API server authorizes as that name), `*` wildcards, RoleBinding scope (a binding grants only
//! in its namespace, whether it references a Role or a ClusterRole). Not covered:
//! non-resource URLs (always denied here), aggregated ClusterRoles, impersonation.
use std::fmt;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};

/// The attributes of one resource request, as the API server's authorizer sees them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    /// Resource, with `/subresource` if any (`ingresses/status`).
    pub resource: String,
    /// `None` for cluster-scoped requests and requests across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

/// Splits a query string into decoded pairs.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name a `metadata.name=<x>` (or `==`) term of a field selector pins, if any.
fn selected_name(field_selector: &str) -> Option<String> {
    field_selector.split(',').find_map(|term| {
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The authorization attributes of `method uri` (path and query), or an error naming what is
/// not a resource request.
pub fn access(method: &str, uri: &str) -> Result<Access, String> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let query = query_pairs(query);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(format!("{method} {uri} is not a resource request")),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        other => (None, other),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(*sub)),
        _ => return Err(format!("{method} {uri}: unexpected resource path")),
    };
    let watch = matches!(param("watch"), Some("true" | "1"));
    let verb = match (method, name.is_some()) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(format!("{method} {uri}: unknown method")),
    };
    // The API server authorizes a list or watch pinned to one name as a request for that name.
    let name = match verb {
        "list" | "watch" => param("fieldSelector").and_then(selected_name),
        _ => name,
    };
    Ok(Access {
        verb: verb.into(),
        group: group.into(),
        resource: match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.into(),
        },
        namespace,
        name,
    })
}

/// One (group, resource, verb, name) permission a rule grants, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// `ClusterRole/x via ClusterRoleBinding/y`, `Role/ns/x via RoleBinding/ns/y`, ...
    pub origin: String,
    /// Index of the rule in its role.
    pub rule: usize,
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// `None`: any name.
    pub name: Option<String>,
    /// `None`: every namespace and cluster-scoped resources; `Some(ns)`: only in `ns`.
    pub namespace: Option<String>,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} rule {}: {} {group}/{}",
            self.origin, self.rule, self.verb, self.resource
        )?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

fn wildcard_or(list: &str, value: &str) -> bool {
    list == "*" || list == value
}

impl Grant {
    /// True if this grant allows `access`.
    pub fn allows(&self, access: &Access) -> bool {
        let in_scope = match &self.namespace {
            None => true,
            Some(ns) => access.namespace.as_deref() == Some(ns),
        };
        let name_ok = match &self.name {
            None => true,
            Some(n) => access.name.as_deref() == Some(n),
        };
        in_scope
            && name_ok
            && wildcard_or(&self.group, &access.group)
            && wildcard_or(&self.resource, &access.resource)
            && wildcard_or(&self.verb, &access.verb)
    }
}

/// Everything bound to one ServiceAccount, expanded into single grants.
#[derive(Debug, Default)]
pub struct Policy {
    pub grants: Vec<Grant>,
    /// Problems found while binding: dangling role references, bindings for someone else.
    pub problems: Vec<String>,
}

/// The RBAC objects to evaluate.
#[derive(Clone, Copy, Debug)]
pub struct RbacObjects<'a> {
    pub cluster_roles: &'a [ClusterRole],
    pub cluster_role_bindings: &'a [ClusterRoleBinding],
    pub roles: &'a [Role],
    pub role_bindings: &'a [RoleBinding],
}

fn expand(origin: &str, rules: &[PolicyRule], namespace: Option<&str>, out: &mut Vec<Grant>) {
    for (i, rule) in rules.iter().enumerate() {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        let names: Vec<Option<String>> = match rule.resource_names.as_deref() {
            None | Some([]) => vec![None],
            Some(names) => names.iter().cloned().map(Some).collect(),
        };
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    for name in &names {
                        out.push(Grant {
                            origin: origin.into(),
                            rule: i,
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                            name: name.clone(),
                            namespace: namespace.map(Into::into),
                        });
                    }
                }
            }
        }
    }
}

impl Policy {
    /// The grants bound to ServiceAccount `namespace/name`. Bindings for other subjects and
    /// roles no binding uses for it are reported as problems: in a manifest set for one
    /// controller they are dead weight at best.
    pub fn for_service_account(rbac: RbacObjects<'_>, namespace: &str, name: &str) -> Policy {
        let mut policy = Policy::default();
        let is_us = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == name
                    && s.namespace.as_deref() == Some(namespace)
            })
        };
        let cluster_role = |role: &str| {
            rbac.cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(role))
        };
        let mut used_cluster_roles = Vec::new();
        let mut used_roles = Vec::new();
        for b in rbac.cluster_role_bindings {
            let bname = b.metadata.name.clone().unwrap_or_default();
            if !is_us(&b.subjects) {
                policy.problems.push(format!(
                    "ClusterRoleBinding/{bname} does not bind ServiceAccount {namespace}/{name}"
                ));
                continue;
            }
            if b.role_ref.kind != "ClusterRole" {
                policy.problems.push(format!(
                    "ClusterRoleBinding/{bname} references a {}, not a ClusterRole",
                    b.role_ref.kind
                ));
                continue;
            }
            match cluster_role(&b.role_ref.name) {
                Some(r) => {
                    used_cluster_roles.push(b.role_ref.name.clone());
                    let origin = format!(
                        "ClusterRole/{} via ClusterRoleBinding/{bname}",
                        b.role_ref.name
                    );
                    expand(
                        &origin,
                        r.rules.as_deref().unwrap_or_default(),
                        None,
                        &mut policy.grants,
                    );
                }
                None => policy.problems.push(format!(
                    "ClusterRoleBinding/{bname} references missing ClusterRole/{}",
                    b.role_ref.name
                )),
            }
        }
        for b in rbac.role_bindings {
            let bname = b.metadata.name.clone().unwrap_or_default();
            let bns = b.metadata.namespace.clone().unwrap_or_default();
            if !is_us(&b.subjects) {
                policy.problems.push(format!(
                    "RoleBinding/{bns}/{bname} does not bind ServiceAccount {namespace}/{name}"
                ));
                continue;
            }
            let rules = match b.role_ref.kind.as_str() {
                "Role" => rbac
                    .roles
                    .iter()
                    .find(|r| {
                        r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                            && r.metadata.namespace.as_deref() == Some(bns.as_str())
                    })
                    .map(|r| {
                        used_roles.push((bns.clone(), b.role_ref.name.clone()));
                        r.rules.clone().unwrap_or_default()
                    }),
                "ClusterRole" => cluster_role(&b.role_ref.name).map(|r| {
                    used_cluster_roles.push(b.role_ref.name.clone());
                    r.rules.clone().unwrap_or_default()
                }),
                _ => None,
            };
            match rules {
                Some(rules) => {
                    let origin = format!(
                        "{}/{} via RoleBinding/{bns}/{bname}",
                        b.role_ref.kind, b.role_ref.name
                    );
                    expand(&origin, &rules, Some(&bns), &mut policy.grants);
                }
                None => policy.problems.push(format!(
                    "RoleBinding/{bns}/{bname} references missing {}/{} in its namespace",
                    b.role_ref.kind, b.role_ref.name
                )),
            }
        }
        for r in rbac.cluster_roles {
            let rname = r.metadata.name.clone().unwrap_or_default();
            if !used_cluster_roles.contains(&rname) {
                policy
                    .problems
                    .push(format!("ClusterRole/{rname} is bound to nobody"));
            }
        }
        for r in rbac.roles {
            let key = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            if !used_roles.contains(&key) {
                policy
                    .problems
                    .push(format!("Role/{}/{} is bound to nobody", key.0, key.1));
            }
        }
        policy
    }

    /// The grants allowing `access` (empty: denied).
    pub fn allowing<'p>(&'p self, access: &'p Access) -> impl Iterator<Item = &'p Grant> + 'p {
        self.grants.iter().filter(move |g| g.allows(access))
    }
}
