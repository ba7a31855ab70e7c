//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does
//! it: read the Lease, take it if it is free or its holder stopped renewing, renew it while held,
//! and write with the read `resourceVersion` so two candidates can never both win a round.
//!
//! Expiry is judged by the local clock from when this replica last saw the Lease record change,
//! never by comparing `renewTime` with the local wall clock, so clock skew between nodes cannot
//! cause two leaders. A leader that cannot renew within `renew_deadline` steps down on its own,
//! before any other candidate may take over (`renew_deadline < lease_duration`).
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client};
use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Name of the Lease all replicas compete for.
pub const LEASE_NAME: &str = "ingressd-leader";

/// Where and how to hold the Lease.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's `holderIdentity`; must be unique among replicas.
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal (`leaseDurationSeconds`; rounded
    /// down to whole seconds, at least 1).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down. Kept below `lease_duration`
    /// (clamped to 2/3 of it otherwise).
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// One election round failed to talk to the API.
#[derive(Debug, Error)]
pub enum LeaderError {
    #[error("lease request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("lease request timed out after {0:?}")]
    Timeout(Duration),
}

/// Starts the election in a task. The receiver says whether this replica leads right now; it
/// turns false on shutdown, before the Lease is released.
pub fn spawn(
    client: Client,
    config: LeaderConfig,
    shutdown: CancellationToken,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(client, config, tx, shutdown));
    (rx, task)
}

/// Runs the election until `shutdown` is cancelled, publishing leadership on `tx`. On shutdown
/// a held Lease is released so another replica can take over at once.
///
/// Leadership ends exactly `renew_deadline` after the last successful renewal was sent, even
/// while a round or the pause between rounds is still running: another replica may take over
/// `lease_duration` after it saw that renewal land, which is no earlier than it was sent.
pub async fn run(
    client: Client,
    config: LeaderConfig,
    tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut elector = Elector::new(client, normalized(config));
    let deadline = elector.config.renew_deadline;
    let retry_period = elector.config.retry_period;
    // When the write of the last successful renewal was sent; `None` while not leading.
    let mut last_renewal: Option<Instant> = None;
    loop {
        let round = async {
            let round = tokio::time::timeout(deadline, elector.try_acquire_or_renew()).await;
            round.unwrap_or(Err(LeaderError::Timeout(deadline)))
        };
        tokio::select! {
            biased;
            // Also mid-round: a hanging request must not delay the release.
            _ = shutdown.cancelled() => break,
            _ = step_down_at(last_renewal, deadline) => last_renewal = None,
            round = round => match round {
                Ok(renewed) => last_renewal = renewed,
                // Still leading until the deadline, which `step_down_at` enforces.
                Err(error) => warn!(
                    %error,
                    lease = %elector.config.name,
                    leading = last_renewal.is_some(),
                    "lease round failed"
                ),
            },
        }
        publish(&tx, &elector.config.identity, last_renewal.is_some());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = step_down_at(last_renewal, deadline) => {
                last_renewal = None;
                publish(&tx, &elector.config.identity, false);
            }
            _ = tokio::time::sleep(retry_period) => {}
        }
    }
    tx.send_replace(false);
    // Released even when not leading: a write abandoned by shutdown or by the deadline may
    // still have landed. `release` writes only if the Lease names this replica.
    match tokio::time::timeout(deadline, elector.release()).await {
        Ok(Ok(true)) => info!(identity = %elector.config.identity, "lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => warn!(%error, "releasing lease failed"),
        Err(_) => warn!("releasing lease timed out"),
    }
}

/// Resolves when a leader whose last renewal was sent at `last_renewal` must step down; never
/// if it is not leading.
async fn step_down_at(last_renewal: Option<Instant>, renew_deadline: Duration) {
    match last_renewal {
        Some(sent) => {
            tokio::time::sleep_until(sent + renew_deadline).await;
            warn!(
                ?renew_deadline,
                "could not renew the lease in time; stepping down"
            );
        }
        None => std::future::pending().await,
    }
}

fn publish(tx: &watch::Sender<bool>, identity: &str, leading: bool) {
    tx.send_if_modified(|current| {
        let changed = *current != leading;
        if changed {
            info!(identity, leading, "leadership changed");
        }
        *current = leading;
        changed
    });
}

/// Whole-second lease (as written to the Lease) and a renew deadline below it, so this
/// replica always steps down before anyone else may take over.
fn normalized(mut config: LeaderConfig) -> LeaderConfig {
    config.lease_duration = Duration::from_secs(config.lease_duration.as_secs().max(1));
    if config.renew_deadline >= config.lease_duration {
        let clamped = config.lease_duration * 2 / 3;
        warn!(
            renew_deadline = ?config.renew_deadline,
            lease_duration = ?config.lease_duration,
            ?clamped,
            "renew deadline must be below the lease duration; clamping"
        );
        config.renew_deadline = clamped;
    }
    config
}

/// The election state of one replica.
struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The last Lease spec seen and when it was first seen in that form.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    fn new(client: Client, config: LeaderConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn observe(&mut self, spec: &LeaseSpec) -> Instant {
        match &self.observed {
            Some((seen, at)) if seen == spec => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((spec.clone(), now));
                now
            }
        }
    }

    /// One round: if this replica holds the Lease afterwards, when the write that took or
    /// renewed it was sent.
    async fn try_acquire_or_renew(&mut self) -> Result<Option<Instant>, LeaderError> {
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.config.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let sent = Instant::now();
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created.spec.unwrap_or_default());
                    Ok(Some(sent))
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(None),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_at = self.observe(&spec);
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.config.identity.as_str());
        if let Some(holder) = holder.filter(|_| !ours) {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            if seen_at.elapsed() < duration {
                debug!(holder, "lease held by another replica");
                return Ok(None);
            }
            info!(holder, "lease expired; taking over");
        }
        let mut next = spec.clone();
        next.holder_identity = Some(self.config.identity.clone());
        next.lease_duration_seconds = Some(self.config.lease_seconds());
        next.renew_time = Some(now.clone());
        if !ours {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        self.replace(lease, next).await
    }

    /// Writes `spec` over `lease` and returns when the write was sent; a conflict (`None`)
    /// means another replica wrote first.
    async fn replace(
        &mut self,
        mut lease: Lease,
        spec: LeaseSpec,
    ) -> Result<Option<Instant>, LeaderError> {
        lease.spec = Some(spec);
        let sent = Instant::now();
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written.spec.unwrap_or_default());
                Ok(Some(sent))
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                debug!("lease changed under us; lost this round");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up if we hold it: no holder, one-second duration (as client-go does).
    /// True if it was ours and is released now.
    async fn release(&mut self) -> Result<bool, LeaderError> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let next = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..Default::default()
        };
        Ok(self.replace(lease, next).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_deadline_stays_below_the_written_lease() {
        let config = LeaderConfig {
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_secs(5),
            ..LeaderConfig::new("ns", "me")
        };
        let n = normalized(config);
        assert_eq!(n.lease_duration, Duration::from_secs(1));
        assert!(n.renew_deadline < n.lease_duration);
        assert_eq!(n.lease_seconds(), 1);
        let defaults = normalized(LeaderConfig::new("ns", "me"));
        assert_eq!(defaults.renew_deadline, Duration::from_secs(10));
        assert_eq!(defaults.name, LEASE_NAME);
    }
}
