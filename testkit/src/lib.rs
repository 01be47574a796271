//! What telemux's tests and benchmarks run against. Only the Azure cloud is emulated
//! (`ingestion`, `arm`, `entra`); everything else is real: Azurite (`azurite` starts it and talks to it) and
//! the OpenTelemetry Collector (`collector` runs it as a local process, if asked in a memory
//! cgroup of its own, made by `cgroup`, limited as its container would be).

use std::net::{Ipv4Addr, TcpListener};

pub mod arm;
pub mod azurite;
pub mod cgroup;
pub mod collector;
pub mod entra;
pub mod ingestion;

/// A loopback port no socket is bound to right now. Another process may take it before the
/// caller binds it: a server that fails with "address in use" should be started again.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}
