//! The reconcilers. Each reads as observe → decide → apply → status:
//!
//! - `observe` does every read a reconcile needs (API server, watch caches) into a plain struct;
//! - `decide` is pure: from what was observed to the children, conditions and requeue, tested
//!   without a cluster;
//! - `apply` writes (server-side apply, Azure Resource Manager) and nothing else decides;
//! - the status is decided from the outcome and written only when it changed.
//!
//! Where things live: `tenant/` and `collector/` (the two reconcilers), `retry` (how soon to
//! look again by failure class, e.g. ARM 429), `triggers` (what requeues what, and what rolls a
//! collector), `provision` (the tenant's App Insights component), `conditions` (merging and
//! which transitions are warnings), `io` (API server reads and writes), `context` (what
//! reconciles share).

pub mod collector;
pub mod conditions;
pub mod context;
pub mod error;
pub mod io;
pub mod provision;
pub mod retry;
pub mod tenant;
pub mod triggers;

pub use context::{ChildStores, Context, Settings, Stores};
pub use error::{Error, Result};

/// Runs one reconcile, counting it, its duration and its failure kind.
pub async fn measured(
    ctx: &Context,
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<kube::runtime::controller::Action>>,
) -> Result<kube::runtime::controller::Action> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(controller, started.elapsed());
    if let Err(error) = &result {
        ctx.metrics.failed(controller, error.metric_label());
    }
    result
}
