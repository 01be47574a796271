//! telemux: a Kubernetes operator that gives every tenant of a SaaS platform its own,
//! redacted, region-bound telemetry pipeline into its own Azure Application Insights.

pub mod api;
pub mod azure;
pub mod connection_string;
pub mod controller;
pub mod credentials;
pub mod delivery;
pub mod layout;
pub mod leader;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod resources;
pub mod run;
pub mod server;
pub mod telemetry;
pub mod validation;
pub mod validator;
