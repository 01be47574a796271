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

/// This machine's first IPv4 address outside loopback, from the kernel's routing table
/// (`/proc/net/fib_trie`): an EndpointSlice may not name a loopback address, so a local
/// process that the operator must reach through one listens here.
pub fn host_address() -> Option<Ipv4Addr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let lines: Vec<&str> = trie.lines().collect();
    lines.windows(2).find_map(|pair| {
        // "|-- 192.0.2.2" followed by "/32 host LOCAL": an address of this host.
        let address: Ipv4Addr = pair[0].trim().strip_prefix("|-- ")?.parse().ok()?;
        let local = pair[1].contains("/32 host LOCAL");
        (local && !address.is_loopback()).then_some(address)
    })
}
