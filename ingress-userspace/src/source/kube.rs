//! Kubernetes source: kube-rs watchers for every watched kind, relisting with backoff after errors.
