//! The names a node dials, resolved in the process.
//!
//! Endpoints are names as often as addresses in Fabric (`peer0.org1.example.com:7051`), and a
//! node dials names it did not choose: bootstrap peers, anchor peers of a channel, endpoints
//! that members announce. tokio's `TcpStream::connect` resolves a name with glibc's
//! `getaddrinfo` on its blocking pool, and aborting the dial does not stop the lookup: a
//! name whose servers never answer holds a thread for about 20 s, every retry starts
//! another, and an attack (2026-12-05) with 300 such names took a node to 516 threads and
//! 146 MiB, after which lookups queued behind them and the node could no longer dial its
//! legitimate peers by name. Here a lookup is a future of the dial: it ends with the dial
//! (the core's `dial_timeout`), and one that never answers holds no thread. The resolver
//! reads `/etc/resolv.conf` and `/etc/hosts`, as Go's own resolver (so a Fabric peer in
//! its usual images) does, and caches answers by their TTL.

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use tokio::net::TcpStream;

/// A node's resolver, made at its first dial by name. One per node, not per process: the
/// resolver's sockets belong to the runtime it was made on, and a process may run nodes
/// on several runtimes, one after another.
#[derive(Default)]
pub(crate) struct Resolver(OnceLock<TokioResolver>);

impl Resolver {
    fn get(&self) -> &TokioResolver {
        self.0.get_or_init(|| {
            // IPv4 addresses first, IPv6 ones only for a name with none: hickory's default
            // asks for both at once and waits for both, so a name `/etc/hosts` gives an IPv4
            // address still waited for a DNS answer about IPv6 (none, from a name server
            // that does not answer); glibc and Go take the hosts file's answer alone.
            let build = |mut b: ResolverBuilder<TokioRuntimeProvider>| {
                b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
                b.build()
            };
            TokioResolver::builder_tokio()
                .and_then(build)
                .unwrap_or_else(|e| {
                    // As glibc and Go do without a resolv.conf: a name server on this host.
                    tracing::warn!(error = %e, "no usable system resolver configuration; asking a name server on this host");
                    let local = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
                        .map(NameServerConfig::udp_and_tcp)
                        .to_vec();
                    build(TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], local),
                        TokioRuntimeProvider::default(),
                    ))
                    .expect("a resolver of fixed local name servers builds")
                })
        })
    }

    /// Connects to `host:port`, `host` an address or a name, trying each address of a name
    /// in turn, as `TcpStream::connect` does.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return TcpStream::connect((ip, port)).await;
        }
        let found = self.get().lookup_ip(host).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {}: {e}", fabric_gossip_core::shown(host)),
            )
        })?;
        let mut last = None;
        for ip in found.iter() {
            match TcpStream::connect((ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", fabric_gossip_core::shown(host)),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A dial by name holds no thread of tokio's blocking pool: with the pool's one thread
    /// taken, `localhost` still connects (tokio's `TcpStream::connect` queued its lookup
    /// behind the taken thread).
    #[test]
    fn a_dial_by_name_does_not_wait_for_the_blocking_pool() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (release, held) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || {
                let _ = held.recv_timeout(Duration::from_secs(30));
            });
            let resolver = Resolver::default();
            let dialled =
                tokio::time::timeout(Duration::from_secs(5), resolver.connect("localhost", port))
                    .await;
            release.send(()).unwrap();
            blocker.await.unwrap();
            let tcp = dialled.expect("the dial waited for the blocking pool");
            assert!(tcp.is_ok(), "{tcp:?}");
        });
    }

    /// Addresses are not looked up, and a name that does not resolve fails with its name.
    #[tokio::test]
    async fn addresses_dial_directly_and_unknown_names_fail_by_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let resolver = Resolver::default();
        resolver.connect("127.0.0.1", port).await.unwrap();
        assert!(resolver.0.get().is_none(), "an address made a resolver");
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            resolver.connect("no-such-host.invalid", port),
        )
        .await
        .expect("a lookup of an .invalid name ends")
        .unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
}
