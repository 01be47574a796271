//! Counts every Azure Resource Manager request by operation and outcome
//! (`telemux_azure_requests_total`), around any [`Components`] client.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use super::{AzureError, Component, ComponentId, Components, DesiredComponent};
use crate::metrics::Metrics;

/// A [`Components`] client whose calls are counted and timed.
pub struct MeteredComponents {
    inner: Arc<dyn Components>,
    metrics: Arc<Metrics>,
}

impl MeteredComponents {
    pub fn new(inner: Arc<dyn Components>, metrics: Arc<Metrics>) -> Self {
        MeteredComponents { inner, metrics }
    }

    async fn measure<T>(
        &self,
        operation: &'static str,
        call: BoxFuture<'_, Result<T, AzureError>>,
        ok_outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T, AzureError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(value) => ok_outcome(value),
            Err(error) => error.metric_label(),
        };
        self.metrics
            .azure_request(operation, outcome, started.elapsed());
        result
    }
}

impl Components for MeteredComponents {
    fn get<'a>(
        &'a self,
        id: &'a ComponentId,
    ) -> BoxFuture<'a, Result<Option<Component>, AzureError>> {
        Box::pin(self.measure("get", self.inner.get(id), |found| {
            if found.is_some() { "ok" } else { "not_found" }
        }))
    }

    fn put<'a>(
        &'a self,
        id: &'a ComponentId,
        desired: &'a DesiredComponent,
    ) -> BoxFuture<'a, Result<Component, AzureError>> {
        Box::pin(self.measure("put", self.inner.put(id, desired), |_| "ok"))
    }

    fn delete<'a>(&'a self, id: &'a ComponentId) -> BoxFuture<'a, Result<(), AzureError>> {
        Box::pin(self.measure("delete", self.inner.delete(id), |_| "ok"))
    }
}
