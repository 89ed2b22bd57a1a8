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
//! its usual images) does, and caches answers by their TTL (denials not at all, as Go and
//! glibc keep none).

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use tokio::net::TcpStream;

/// The node's options over a resolver configuration (the system's, or the fallback).
fn build(
    mut b: ResolverBuilder<TokioRuntimeProvider>,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    // IPv4 addresses first, IPv6 ones only for a name with none: hickory's default
    // asks for both at once and waits for both, so a name `/etc/hosts` gives an IPv4
    // address still waited for a DNS answer about IPv6 (none, from a name server
    // that does not answer); glibc and Go take the hosts file's answer alone.
    b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
    // A denial is not kept: Go's resolver and glibc keep no answer, and a zone's negative
    // TTL (an hour for example.com) kept a node from dialling a peer whose name appeared
    // after its first try (a container started after this node) for that long.
    b.options_mut().negative_max_ttl = Some(std::time::Duration::ZERO);
    b.build()
}

/// A resolver asking only `servers`, with the node's options.
fn asking_only(
    servers: Vec<NameServerConfig>,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    build(TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioRuntimeProvider::default(),
    ))
}

/// A node's resolver, made at its first dial by name. One per node, not per process: the
/// resolver's sockets belong to the runtime it was made on, and a process may run nodes
/// on several runtimes, one after another.
#[derive(Default)]
pub(crate) struct Resolver(OnceLock<TokioResolver>);

impl Resolver {
    fn get(&self) -> &TokioResolver {
        self.0.get_or_init(|| {
            TokioResolver::builder_tokio()
                .and_then(build)
                .unwrap_or_else(|e| {
                    // As glibc and Go do without a resolv.conf: a name server on this host.
                    tracing::warn!(error = %e, "no usable system resolver configuration; asking a name server on this host");
                    let local = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
                        .map(NameServerConfig::udp_and_tcp)
                        .to_vec();
                    asking_only(local).expect("a resolver of fixed local name servers builds")
                })
        })
    }

    /// A resolver asking only the name server at `at` (UDP), with the node's options.
    #[cfg(test)]
    fn asking(at: std::net::SocketAddr) -> Self {
        use hickory_resolver::config::ConnectionConfig;
        let mut udp = ConnectionConfig::udp();
        udp.port = at.port();
        let server = NameServerConfig::new(at.ip(), true, vec![udp]);
        Resolver(OnceLock::from(asking_only(vec![server]).unwrap()))
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
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

    /// A name server answering NXDOMAIN, with the SOA of a zone whose negative TTL is an
    /// hour (example.com's), until `exists` is set; then the name's A record.
    async fn fake_name_server(exists: Arc<AtomicBool>) -> std::net::SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let q = &buf[..n];
                // The question: labels up to the root, then type and class.
                let mut end = 12;
                while end < n && q[end] != 0 {
                    end += 1 + q[end] as usize;
                }
                end += 5;
                if end > n {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[end - 4], q[end - 3]]);
                let found = exists.load(Ordering::SeqCst) && qtype == 1;
                let mut r = q[..end].to_vec();
                r[2] = 0x84 | (q[2] & 0x01); // response, authoritative, RD copied
                r[3] = if found { 0x80 } else { 0x83 }; // RA; NOERROR or NXDOMAIN
                r[6..12].copy_from_slice(&[0, u8::from(found), 0, u8::from(!found), 0, 0]);
                if found {
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
                } else {
                    // SOA: owner the question's name, TTL and minimum 3600 s.
                    r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, 22, 0, 0]);
                    for v in [1u32, 7200, 3600, 1_209_600, 3600] {
                        r.extend_from_slice(&v.to_be_bytes());
                    }
                }
                let _ = sock.send_to(&r, from).await;
            }
        });
        at
    }

    /// A name that did not exist when first dialled is dialled once it exists, as by Go's
    /// resolver (so a Fabric peer), which keeps no answer, and glibc's: a peer started
    /// before the container of its bootstrap peer (docker-compose), whose name the
    /// upstream server denied with an hour's negative TTL, waited out that hour.
    #[tokio::test]
    async fn a_name_denied_once_is_asked_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let exists = Arc::new(AtomicBool::new(false));
        let resolver = Resolver::asking(fake_name_server(exists.clone()).await);
        let name = "peer0.org1.example.com.";
        let first = tokio::time::timeout(Duration::from_secs(10), resolver.connect(name, port))
            .await
            .expect("the lookup ends");
        assert!(first.is_err(), "{first:?}");
        // The peer's container starts: its name now resolves.
        exists.store(true, Ordering::SeqCst);
        let second = tokio::time::timeout(Duration::from_secs(10), resolver.connect(name, port))
            .await
            .expect("the lookup ends");
        assert!(
            second.is_ok(),
            "a name denied once stays denied for the zone's negative TTL: {second:?}"
        );
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
