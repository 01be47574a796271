//! What telemux's tests and benchmarks run against. Only the Azure cloud is emulated
//! (`ingestion`, `arm`, `entra`); everything else is real: Azurite (`azurite` starts it and talks to it) and
//! the OpenTelemetry Collector (`collector` runs it as a local process, if asked in a memory
//! cgroup of its own, made by `cgroup`, limited as its container would be).

pub mod arm;
pub mod azurite;
pub mod cgroup;
pub mod collector;
pub mod entra;
pub mod ingestion;
