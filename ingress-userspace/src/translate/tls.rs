//! TLS termination: `spec.tls[]` Secrets parsed into certified keys.
//!
//! A Secret of type `kubernetes.io/tls` (or `Opaque`) with PEM `tls.crt` (chain, leaf first)
//! and `tls.key`. Parsed keys are cached per Secret object, so a certificate is parsed once
//! and not on every snapshot. A missing or invalid Secret drops that TLS entry only; the
//! Ingress's routes are still served.
//!
//! As in ingress-nginx (`extractTLSSecretName`, called per rule host of the same Ingress), a
//! `spec.tls` host counts only when the same Ingress has a rule for it: another Ingress cannot
//! put a certificate (and the HTTPS redirect) on a host it does not route. A rule host listed
//! under none of the Ingress's `spec.tls[].hosts` takes the first entry whose certificate is
//! valid for it (SAN DNS names, wildcards included; no Common Name fallback), which is how an
//! entry without `hosts` applies.
use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use rustls::{server::ParsedCertificate, sign::CertifiedKey};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

use super::{hosts::host_order, ingress::ParsedIngress, reason, Diagnostic};
use crate::{
    config::NamespacedName,
    snapshot::{HostMatch, ObjectRef, TlsCert, TlsConfig},
    store::ObjectCache,
};

/// Parsed certificates kept across translations, with each Secret's last usable one.
#[derive(Debug, Default)]
pub struct CertCache {
    entries: HashMap<(String, String), CertEntry>,
}

#[derive(Debug)]
struct CertEntry {
    secret: Arc<Secret>,
    result: Result<Arc<CertifiedKey>, String>,
    /// The certificate of the last version of the Secret that could be used: a botched
    /// rotation (a half-written Secret, a key that does not match) keeps it served, as
    /// ingress-nginx keeps the certificate it last read.
    last_good: Option<Arc<CertifiedKey>>,
    used_run: u64,
}

/// A Secret's certificate as it is to be served.
#[derive(Clone, Debug)]
pub struct ServedCert {
    pub key: Arc<CertifiedKey>,
    /// Why the Secret as it is now cannot be used; [`Self::key`] is then its last usable
    /// version's.
    pub stale: Option<String>,
}

impl CertCache {
    /// The certificate of Secret `namespace/name`, parsed once per Secret object. While the
    /// Secret holds something unusable, its last usable certificate (if this cache read one
    /// since the Secret was last unused or deleted) is served, with the reason.
    pub fn get(
        &mut self,
        objects: &ObjectCache,
        namespace: &str,
        name: &str,
        run: u64,
    ) -> Result<ServedCert, String> {
        let key = (namespace.to_owned(), name.to_owned());
        let Some(secret) = objects.secret(namespace, name) else {
            // A deleted Secret was meant to go: nothing of it is kept.
            self.entries.remove(&key);
            return Err(format!("secret {namespace}/{name} not found"));
        };
        let entry = match self.entries.remove(&key) {
            Some(e) if Arc::ptr_eq(&e.secret, secret) => e,
            previous => {
                let result = certified_key_from_secret(secret)
                    .map(Arc::new)
                    .map_err(|e| format!("secret {namespace}/{name}: {e}"));
                let last_good = match &result {
                    Ok(k) => Some(k.clone()),
                    Err(_) => previous.and_then(|p| p.last_good),
                };
                CertEntry {
                    secret: secret.clone(),
                    result,
                    last_good,
                    used_run: run,
                }
            }
        };
        let served = match (&entry.result, &entry.last_good) {
            (Ok(k), _) => Ok(ServedCert {
                key: k.clone(),
                stale: None,
            }),
            (Err(e), Some(k)) => Ok(ServedCert {
                key: k.clone(),
                stale: Some(e.clone()),
            }),
            (Err(e), None) => Err(e.clone()),
        };
        self.entries.insert(
            key,
            CertEntry {
                used_run: run,
                ..entry
            },
        );
        served
    }

    /// Forgets Secrets not used in this run.
    pub fn evict(&mut self, run: u64) {
        self.entries.retain(|_, e| e.used_run == run);
    }
}

/// Parses a TLS Secret.
pub fn certified_key_from_secret(secret: &Secret) -> Result<CertifiedKey, String> {
    match secret.type_.as_deref() {
        None | Some("kubernetes.io/tls") | Some("Opaque") => {}
        Some(other) => return Err(format!("type {other} is not kubernetes.io/tls")),
    }
    let data = secret.data.as_ref();
    let get = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .ok_or(format!("no key {k}"))
    };
    certified_key_from_pem(get("tls.crt")?, get("tls.key")?)
}

/// Parses a PEM chain (leaf first) and PEM private key, and checks that they belong together.
pub fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt: no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let ck = CertifiedKey::new(certs, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(format!("tls.crt and tls.key do not match: {e}")),
    }
}

/// Whether the leaf certificate is valid for `host` by its SAN DNS names (wildcards
/// included), as Go's `VerifyHostname` that ingress-nginx uses.
pub fn valid_for(key: &CertifiedKey, host: &str) -> bool {
    let Ok(leaf) = key.end_entity_cert() else {
        return false;
    };
    let (Ok(cert), Ok(name)) = (
        ParsedCertificate::try_from(leaf),
        ServerName::try_from(host),
    ) else {
        return false;
    };
    rustls::client::verify_server_name(&cert, &name).is_ok()
}

/// The hosts each `spec.tls` entry of an Ingress applies to (by entry index): its listed hosts
/// that the Ingress has a rule for, plus the rule hosts listed nowhere whose first valid
/// certificate it has.
fn hosts_per_entry(
    ing: &ParsedIngress,
    certs: &mut CertCache,
    objects: &ObjectCache,
    run: u64,
) -> Vec<Vec<HostMatch>> {
    let rule_hosts = ing.hosts();
    let mut out: Vec<Vec<HostMatch>> = ing
        .tls
        .iter()
        .map(|e| {
            e.hosts
                .iter()
                .filter(|h| rule_hosts.contains(h))
                .cloned()
                .collect()
        })
        .collect();
    for host in rule_hosts {
        // A wildcard rule host is a certificate's name only as that same wildcard (Go's
        // `VerifyHostname("*.x")` matches a SAN of exactly `*.x`): a name one label under
        // it, which no other SAN plausibly covers, asks the same. Rules without host never.
        let name = match host {
            HostMatch::Exact(name) => name.clone(),
            HostMatch::Wildcard(suffix) => format!("ingressd-wildcard-probe.{suffix}"),
            _ => continue,
        };
        if ing.tls.iter().any(|e| e.hosts.contains(host)) {
            continue;
        }
        let found = ing.tls.iter().position(|e| {
            // Unusable Secrets are reported with their entry; here they just do not match.
            e.secret
                .as_ref()
                .and_then(|s| certs.get(objects, &ing.origin.namespace, s, run).ok())
                .is_some_and(|served| valid_for(&served.key, &name))
        });
        if let Some(i) = found {
            out[i].push(host.clone());
        }
    }
    out
}

/// Builds the certificate list from Ingresses (oldest first). A host already served by an
/// older Ingress's different Secret is taken off the newer entry (`RuleConflict`). Returns
/// the certificates and every host a `spec.tls` entry applies to (for `VirtualHost.tls`).
pub fn build(
    ingresses: &[&ParsedIngress],
    certs: &mut CertCache,
    objects: &ObjectCache,
    run: u64,
    diags: &mut Vec<Diagnostic>,
) -> (TlsConfig, Vec<HostMatch>) {
    let mut claimed: HashMap<HostMatch, (String, &ParsedIngress)> = HashMap::new();
    let mut out: Vec<(bool, TlsCert)> = Vec::new();
    let mut tls_hosts = Vec::new();
    for ing in ingresses {
        let ns = &ing.origin.namespace;
        // ingress-nginx gives every named rule host of an Ingress with `spec.tls` a
        // certificate (the default one when no entry serves it), which is what its
        // `ssl-redirect` and HSTS look for: such a host is an HTTPS host whichever entry
        // lists it, or none.
        if !ing.tls.is_empty() {
            tls_hosts.extend(
                ing.hosts()
                    .into_iter()
                    .filter(|h| !matches!(h, HostMatch::Any))
                    .cloned(),
            );
        }
        let applies = hosts_per_entry(ing, certs, objects, run);
        for ((i, entry), entry_hosts) in ing.tls.iter().enumerate().zip(applies) {
            // An entry listing hosts of which none applies has no effect: not even its Secret
            // matters.
            if entry_hosts.is_empty() && !entry.hosts.is_empty() {
                continue;
            }
            tls_hosts.extend(entry_hosts.iter().cloned());
            let Some(secret) = &entry.secret else {
                diags.push(Diagnostic::new(
                    ing.origin.clone(),
                    reason::TLS_SECRET_INVALID,
                    format!("spec.tls[{i}] has no secretName"),
                ));
                continue;
            };
            let key = match certs.get(objects, ns, secret, run) {
                Ok(served) => {
                    if let Some(e) = served.stale {
                        diags.push(Diagnostic::new(
                            ing.origin.clone(),
                            reason::TLS_SECRET_INVALID,
                            format!("spec.tls[{i}]: {e}; its last usable certificate is served"),
                        ));
                    }
                    served.key
                }
                Err(e) => {
                    diags.push(Diagnostic::new(
                        ing.origin.clone(),
                        reason::TLS_SECRET_INVALID,
                        format!("spec.tls[{i}] ignored (hosts still served without this certificate): {e}"),
                    ));
                    continue;
                }
            };
            let qualified = format!("{ns}/{secret}");
            let mut hosts = Vec::new();
            for h in &entry_hosts {
                match claimed.get(h) {
                    Some((s, _)) if *s == qualified => {}
                    Some((_, winner)) => {
                        diags.push(Diagnostic::new(
                            ing.origin.clone(),
                            reason::RULE_CONFLICT,
                            format!(
                                "spec.tls[{i}]: host {} already has a certificate from {}",
                                show(h),
                                winner.origin
                            ),
                        ));
                    }
                    None => {
                        claimed.insert(h.clone(), (qualified.clone(), ing));
                        hosts.push(h.clone());
                    }
                }
            }
            // Every host is already served (by this Secret or an older one). An entry that
            // applies to no host and lists none is kept: it names no SNI, the proxy may use it
            // as default.
            if hosts.is_empty() && !entry_hosts.is_empty() {
                continue;
            }
            let has_exact = hosts.iter().any(|h| matches!(h, HostMatch::Exact(_)));
            hosts.sort_by(host_order);
            out.push((
                has_exact,
                TlsCert {
                    origin: ing.origin.clone(),
                    secret: ObjectRef {
                        kind: "Secret",
                        namespace: ns.to_owned(),
                        name: secret.to_owned(),
                    },
                    hosts,
                    key,
                },
            ));
        }
    }
    // Stable sort: certificates with exact names first, each group in Ingress age order.
    out.sort_by_key(|(has_exact, _)| !*has_exact);
    (
        TlsConfig {
            certs: out.into_iter().map(|(_, c)| c).collect(),
            default: None,
        },
        tls_hosts,
    )
}

/// The `--default-ssl-certificate` Secret `nn`, read; a Warning on it when it cannot be used
/// (the proxy's own default certificate stays).
pub fn default_certificate(
    nn: &NamespacedName,
    certs: &mut CertCache,
    objects: &ObjectCache,
    run: u64,
    diags: &mut Vec<Diagnostic>,
) -> Option<TlsCert> {
    let secret = ObjectRef {
        kind: "Secret",
        namespace: nn.namespace.clone(),
        name: nn.name.clone(),
    };
    match certs.get(objects, &nn.namespace, &nn.name, run) {
        Ok(served) => {
            if let Some(e) = served.stale {
                diags.push(Diagnostic::new(
                    secret.clone(),
                    reason::TLS_SECRET_INVALID,
                    format!(
                        "--default-ssl-certificate: {e}; its last usable certificate is served"
                    ),
                ));
            }
            Some(TlsCert {
                origin: secret.clone(),
                secret,
                hosts: Vec::new(),
                key: served.key,
            })
        }
        Err(e) => {
            diags.push(Diagnostic::new(
                secret,
                reason::TLS_SECRET_INVALID,
                format!(
                    "--default-ssl-certificate: {e}; the built-in default certificate is served"
                ),
            ));
            None
        }
    }
}

/// A host as written in an Ingress.
pub fn show(h: &HostMatch) -> String {
    h.name().unwrap_or_else(|| "*".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::testutil::*;

    #[test]
    fn parses_a_generated_certificate() {
        let (cert, key) = self_signed(&["secure.example.test"]);
        let ck = certified_key_from_pem(cert.as_bytes(), key.as_bytes()).expect("valid");
        assert_eq!(ck.cert.len(), 1);
        let ck = certified_key_from_secret(&mk_tls_secret("ns", "s", &cert, &key))
            .expect("valid secret");
        assert!(ck.end_entity_cert().is_ok());
    }

    #[test]
    fn rejects_garbage_and_mismatched_keys() {
        let (cert, key) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["b.test"]);
        let table: &[(&str, &str, &str)] = &[
            ("garbage", &key, "no certificate"),
            (&cert, "garbage", "tls.key"),
            (&cert, &other_key, "do not match"),
            ("", "", "no certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                &key,
                "tls.crt",
            ),
        ];
        for (c, k, want) in table {
            let err = certified_key_from_pem(c.as_bytes(), k.as_bytes()).expect_err(want);
            assert!(err.contains(want), "{err} should mention {want}");
        }
        let mut wrong_type = mk_tls_secret("ns", "s", &cert, &key);
        wrong_type.type_ = Some("kubernetes.io/dockerconfigjson".into());
        assert!(certified_key_from_secret(&wrong_type).is_err());
        let mut opaque = mk_tls_secret("ns", "s", &cert, &key);
        opaque.type_ = Some("Opaque".into());
        assert!(certified_key_from_secret(&opaque).is_ok());
        let mut missing = mk_tls_secret("ns", "s", &cert, &key);
        missing.data.as_mut().map(|d| d.remove("tls.key"));
        assert_eq!(
            certified_key_from_secret(&missing).err().as_deref(),
            Some("no key tls.key")
        );
    }
}
