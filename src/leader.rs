//! Leader election on a coordination.k8s.io Lease, so that of several replicas exactly one
//! runs the controllers.
//!
//! Losing the lease (another holder, or a renewal that fails) stops the controllers and ends
//! [`run_while_leader`] with [`LeaderError::Lost`]: the binary then exits and Kubernetes
//! restarts it as a standby, as controller-runtime's operators do. Stepping down at the first
//! failed renewal, rather than retrying while possibly past the lease's expiry, is what keeps
//! two instances from ever writing at once.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use crate::metrics::Metrics;

/// Which Lease, held by whom, for how long.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique among the replicas (the pod name in a cluster).
    pub identity: String,
    /// A holder that has not renewed for this long loses the lease.
    pub duration: Duration,
    /// The holder renews this long before the lease would expire.
    pub renew_before: Duration,
}

impl LeaseSettings {
    /// The default Lease of a namespace, held as `identity`: 15 s, renewed 5 s early.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: "telemux-leader".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_before: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid lease settings: {0}")]
    InvalidSettings(String),
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the leader Lease {0}; stopped reconciling")]
    Lost(String),
}

/// Waits for the Lease, then runs `work` until `shutdown` or until the lease is lost.
///
/// `work` gets a future that resolves when it must stop (shutdown or lost lease) and should
/// return soon after. `on_standby` is called once while waiting for the lease.
pub async fn run_while_leader<W, Fut>(
    client: Client,
    lease: LeaseSettings,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_standby: impl FnOnce(),
    work: W,
) -> Result<(), LeaderError>
where
    W: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = ()>,
{
    let whole_seconds = |d: Duration| d.as_secs();
    let (duration, grace) = (
        whole_seconds(lease.duration),
        whole_seconds(lease.renew_before),
    );
    if duration == 0 || grace == 0 || grace >= duration {
        return Err(LeaderError::InvalidSettings(format!(
            "the lease duration ({duration}s) must exceed the renewal margin ({grace}s), both at least 1s"
        )));
    }
    let lease_error = |source| LeaderError::Lease {
        namespace: lease.namespace.clone(),
        name: lease.name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(lease_error)?;
    let shutdown = shutdown.shared();

    on_standby();
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for the leader lease");
    tokio::select! {
        acquired = acquire(&manager) => acquired.map_err(lease_error)?,
        _ = shutdown.clone() => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(identity = %lease.identity, "acquired the leader lease");

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown => {},
                _ = lost_rx => {},
            }
        }
        .boxed()
    };
    let work = work(stop);
    tokio::pin!(work);
    let outcome = tokio::select! {
        _ = &mut work => None,
        // Returns only when we are no longer the holder, or a renewal failed.
        changed = manager.changed() => Some(match changed {
            Ok(_) => "another instance holds it".to_owned(),
            Err(error) => format!("renewal failed: {error}"),
        }),
    };
    match outcome {
        None => {
            // Shut down while leading: hand the lease over at once instead of letting the
            // standby wait for it to expire.
            metrics.leader.set(0);
            if let Err(error) = manager.release().await {
                tracing::warn!(%error, "could not release the leader lease");
            } else {
                tracing::info!("released the leader lease");
            }
            Ok(())
        }
        Some(why) => {
            tracing::error!(reason = %why, "lost the leader lease: stopping the controllers");
            let _ = lost_tx.send(());
            work.await;
            metrics.leader.set(0);
            Err(LeaderError::Lost(why))
        }
    }
}

/// Resolves once this instance holds the lease; transient API failures are retried.
async fn acquire(manager: &LeaseManager) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match manager.changed().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "leader election request failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
