//! The signals a daemon is asked to stop by (SIGINT, SIGTERM) or to read its configuration
//! again by (SIGHUP).

/// SIGINT and SIGTERM, the two ways a daemon is asked to stop (a terminal's Ctrl-C;
/// systemd, `docker stop`, Kubernetes).
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    /// SIGHUP, for a command that reloads on it (see [`Signals::with_reload`]).
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// The handlers, or `None` once the reason they could not be installed is printed.
    pub(crate) fn new() -> Option<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handlers = signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
            match handlers {
                Ok((term, int)) => Some(Signals {
                    term,
                    int,
                    hup: None,
                }),
                Err(e) => {
                    eprintln!("error: cannot handle signals: {e}");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        Some(Signals {})
    }

    /// [`Signals::new`], and SIGHUP too, which a daemon takes as "read your
    /// configuration again" (`fabric-gossip node` reloads its trust store).
    pub(crate) fn with_reload() -> Option<Signals> {
        #[allow(unused_mut)]
        let mut s = Signals::new()?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(hup) => s.hup = Some(hup),
                Err(e) => {
                    eprintln!("error: cannot handle SIGHUP: {e}");
                    return None;
                }
            }
        }
        Some(s)
    }

    /// The name of the next signal received.
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let hup = async {
                match &mut self.hup {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = hup => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}
