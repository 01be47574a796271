//! Everything a reconcile may go wrong with. Problems of the user's spec are not errors: they
//! become conditions. These are the failures worth a retry; `retry::after_error` says when.

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Credential(#[from] crate::credentials::HashError),
    #[error(transparent)]
    Render(#[from] crate::pipeline::render::RenderError),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("could not serialize {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
    #[error("Azure: {0}")]
    Azure(#[from] crate::azure::AzureError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// Stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Credential(_) => "credential",
            Error::Render(_) => "render",
            Error::MissingField(_) => "missing_field",
            Error::Serialize(..) => "serialize",
            Error::Azure(_) => "azure",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// The failure itself, unwrapped from the finalizer helper's error when it carries one.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.cause(),
                _ => self,
            },
            _ => self,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
