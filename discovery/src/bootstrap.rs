//! Joining through bootstrap peers (Fabric's `connect2BootstrapPeers`, `Connect` and
//! `sendUntilAcked`): identify the peer by a probe handshake, check it is of our
//! organization, then send a membership request with a random nonce until a response
//! carrying that nonce arrives.

use crate::error::BootstrapError;
use crate::event::DiscoveryEvent;
use crate::machine::Discovery;
use bytes::Bytes;
use fabric_gossip_core::{
    Comm, ConnectionInfo, HandshakeError, Instant, OpId, PkiId, RemotePeer, Security, SignedMessage,
};
use rand_core::RngCore;
use std::sync::Arc;

/// Where one bootstrap peer stands.
#[derive(Clone, Debug)]
pub(crate) enum BootState {
    /// Next identification attempt at this instant.
    Idle(Instant),
    /// A probe handshake is in flight.
    Identifying(OpId),
    /// The request was sent; waiting for its response until the deadline.
    AwaitingAck {
        pki_id: PkiId,
        nonce: u64,
        request: SignedMessage,
        deadline: Instant,
    },
    /// Not answered in time; the same request goes again at this instant.
    Resend {
        pki_id: PkiId,
        nonce: u64,
        request: SignedMessage,
        at: Instant,
    },
    /// Answered: joined.
    Done,
    /// Out of attempts.
    GaveUp,
}

/// The tracing target of a failed bootstrap attempt's warning, apart from the layer's
/// other lines: a tool that explains each failure itself (the CLI's `watch`) can leave
/// this one out without losing the rest of the layer's warnings.
pub const BOOTSTRAP_TARGET: &str = "fabric_gossip_discovery::bootstrap";

/// The tracing target of the member lines (alive, restarted, dead, purged), apart from the
/// layer's other lines for the same reason: a tool that reports each change itself (the
/// CLI's `watch`) can leave them out, and keep the layer's other warnings. A member found
/// dead is a warning, as in Fabric.
pub const MEMBERS_TARGET: &str = "fabric_gossip_discovery::members";

/// Bootstrap and anchor endpoints the layer follows at once (see
/// [`Discovery::connect_anchor`]).
pub const MAX_BOOTSTRAPS: usize = 1024;

/// One configured bootstrap endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Bootstrap {
    pub(crate) endpoint: String,
    pub(crate) state: BootState,
    /// Identification attempts made.
    pub(crate) attempts: u32,
    /// Requests sent.
    pub(crate) sends: u32,
    /// An anchor peer: any organization may answer (a bootstrap peer must be ours).
    pub(crate) any_org: bool,
    /// The organization the channel configuration puts this anchor peer in, if given
    /// ([`Discovery::connect_anchor_of`]).
    pub(crate) claimed_org: Option<Bytes>,
    /// Who answered our handshake at this endpoint, with an organization it may have:
    /// the member kept as this bootstrap or anchor peer (see
    /// [`Discovery::is_bootstrap_or_anchor`]).
    pub(crate) identified: Option<PkiId>,
}

impl Bootstrap {
    pub(crate) fn new(endpoint: String, now: Instant) -> Self {
        Bootstrap {
            endpoint,
            state: BootState::Idle(now),
            attempts: 0,
            sends: 0,
            any_org: false,
            claimed_org: None,
            identified: None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.state {
            BootState::Idle(t) => Some(*t),
            BootState::AwaitingAck { deadline, .. } => Some(*deadline),
            BootState::Resend { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// What [`Discovery::connect_anchor`] or [`Discovery::connect_anchor_of`] did with an
/// anchor peer. Only [`Dialling`](Self::Dialling) starts an attempt; the others say why
/// none started, so that a caller's own log does not say an anchor is dialled when the
/// layer's rules (Fabric's) skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnchorDial {
    /// An attempt starts at the next `handle_timeout` (a new endpoint, or one whose last
    /// attempt ended, joined or given up). It ends in `BootstrapJoined` or `BootstrapFailed`.
    Dialling,
    /// An attempt for this endpoint is under way and goes on, now judged by the
    /// organization given in this call.
    InProgress,
    /// The endpoint is our own (internal or external, or 127.0.0.1 or localhost at our
    /// port): nothing to join.
    OwnEndpoint,
    /// An anchor listed under another organization while we have no external endpoint:
    /// not dialled, as Fabric skips it (no other organization could reach us back).
    /// Reported as a given-up `BootstrapFailed` with
    /// [`BootstrapError::AnchorWithoutExternalEndpoint`].
    NotDialledWithoutExternalEndpoint,
    /// The layer already follows [`MAX_BOOTSTRAPS`] endpoints, none of them ended:
    /// counted (`anchors_refused`); call again once an attempt ends.
    Refused,
}

impl Discovery {
    /// Joins through an anchor peer (Fabric's `Connect` from `learnAnchorPeers`): like a
    /// bootstrap peer, but it may belong to another organization, in which case our
    /// request carries no secret; skipped (reported as given up) when it is of another
    /// organization and we have no external endpoint. The attempt starts at the next
    /// [`Layer::handle_timeout`](fabric_gossip_core::Layer::handle_timeout), due now.
    ///
    /// Fabric calls `Connect` for every anchor peer again on every channel configuration
    /// update, and so may a caller: an attempt still in progress for the endpoint goes on,
    /// one that ended (joined or given up) starts again. The layer follows at most
    /// [`MAX_BOOTSTRAPS`] bootstrap and anchor endpoints; past that, an anchor whose
    /// attempt ended makes room, and without one the call is counted
    /// (`anchors_refused`) and does nothing. What the call did is returned, so that a
    /// caller logging "dialling" can tell an anchor it was not dialled.
    pub fn connect_anchor(&mut self, now: Instant, endpoint: impl Into<String>) -> AnchorDial {
        self.join_anchor(now, endpoint.into(), None)
    }

    /// [`connect_anchor`](Self::connect_anchor) for an anchor peer the channel
    /// configuration lists under organization `org` (an MSP ID), as Fabric's
    /// `learnAnchorPeers` joins it: if `org` is ours but the peer proves an identity of
    /// another organization, the attempt fails with
    /// [`BootstrapError::NotOfClaimedOrganization`] and is retried like a failed
    /// handshake, rather than joining through a peer that is not what the configuration
    /// says it is. An anchor claimed by another organization may prove any organization;
    /// when we have no external endpoint, such an anchor is not dialled at all (Fabric
    /// skips it before its handshake), reported at once as a given-up attempt
    /// ([`BootstrapError::AnchorWithoutExternalEndpoint`], `attempt` 0). Called before
    /// [`Layer::start`](fabric_gossip_core::Layer::start), when our organization is not
    /// known yet, the anchor is dialled and judged by the organization it proves.
    pub fn connect_anchor_of(
        &mut self,
        now: Instant,
        endpoint: impl Into<String>,
        org: impl Into<Bytes>,
    ) -> AnchorDial {
        self.join_anchor(now, endpoint.into(), Some(org.into()))
    }

    fn join_anchor(
        &mut self,
        now: Instant,
        endpoint: String,
        claimed_org: Option<Bytes>,
    ) -> AnchorDial {
        if self.cfg.is_my_own_endpoint(&endpoint) {
            return AnchorDial::OwnEndpoint;
        }
        // Fabric's `learnAnchorPeers` skips, before any dial, an anchor the configuration
        // lists under another organization when we have no external endpoint, whatever
        // the peer there would prove to be: reported as the given-up attempt the same
        // rule makes after a handshake for an anchor of unknown organization.
        if let Some(org) = &claimed_org
            && self.my_org.is_some()
            && !self.is_ours(Some(org))
            && self.cfg.external_endpoint.is_empty()
        {
            self.stats.bootstrap_failures += 1;
            self.emit(DiscoveryEvent::BootstrapFailed {
                endpoint,
                error: BootstrapError::AnchorWithoutExternalEndpoint,
                attempt: 0,
                gave_up: true,
            });
            return AnchorDial::NotDialledWithoutExternalEndpoint;
        }
        let ended = |b: &Bootstrap| matches!(b.state, BootState::Done | BootState::GaveUp);
        if let Some(b) = self
            .bootstraps
            .iter_mut()
            .find(|b| b.any_org && b.endpoint == endpoint)
        {
            b.claimed_org = claimed_org;
            if !ended(b) {
                return AnchorDial::InProgress;
            }
            // Who answered there stays an anchor while the new attempt runs.
            b.state = BootState::Idle(now);
            b.attempts = 0;
            b.sends = 0;
            return AnchorDial::Dialling;
        }
        if self.bootstraps.len() >= MAX_BOOTSTRAPS {
            match self.bootstraps.iter().position(|b| b.any_org && ended(b)) {
                Some(i) => {
                    self.bootstraps.remove(i);
                }
                None => {
                    self.stats.anchors_refused += 1;
                    return AnchorDial::Refused;
                }
            }
        }
        let mut b = Bootstrap::new(endpoint, now);
        b.any_org = true;
        b.claimed_org = claimed_org;
        self.bootstraps.push(b);
        AnchorDial::Dialling
    }

    /// Moves every bootstrap whose deadline passed.
    pub(crate) fn bootstrap_tick<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        for i in 0..self.bootstraps.len() {
            let state = self.bootstraps[i].state.clone();
            match state {
                BootState::Idle(t) if t <= now => {
                    let endpoint = self.bootstraps[i].endpoint.clone();
                    self.bootstraps[i].attempts += 1;
                    match comm.handshake(now, &RemotePeer::new(endpoint, PkiId::default())) {
                        Ok(op) => self.bootstraps[i].state = BootState::Identifying(op),
                        Err(e) => self.bootstrap_failed(now, i, BootstrapError::NotStarted(e)),
                    }
                }
                BootState::AwaitingAck {
                    pki_id,
                    nonce,
                    request,
                    deadline,
                } if deadline <= now => {
                    self.bootstraps[i].state = BootState::Resend {
                        pki_id,
                        nonce,
                        request,
                        at: now + self.cfg.reconnect_interval,
                    };
                }
                BootState::Resend {
                    pki_id,
                    nonce,
                    request,
                    at,
                } if at <= now => {
                    if self.bootstraps[i].sends >= self.cfg.max_connection_attempts {
                        self.bootstraps[i].state = BootState::GaveUp;
                        let endpoint = self.bootstraps[i].endpoint.clone();
                        let attempt = self.bootstraps[i].sends;
                        self.stats.bootstrap_failures += 1;
                        self.emit(DiscoveryEvent::BootstrapFailed {
                            endpoint,
                            error: BootstrapError::NoResponse,
                            attempt,
                            gave_up: true,
                        });
                        continue;
                    }
                    self.send_bootstrap_request(now, comm, i, pki_id, nonce, request);
                }
                _ => {}
            }
        }
    }

    fn bootstrap_failed(&mut self, now: Instant, i: usize, error: BootstrapError) {
        let b = &mut self.bootstraps[i];
        let gave_up = b.attempts >= self.cfg.max_connection_attempts;
        b.state = if gave_up {
            BootState::GaveUp
        } else {
            BootState::Idle(now + self.cfg.reconnect_interval)
        };
        let ev = DiscoveryEvent::BootstrapFailed {
            endpoint: b.endpoint.clone(),
            error,
            attempt: b.attempts,
            gave_up,
        };
        self.stats.bootstrap_failures += 1;
        self.emit(ev);
    }

    fn send_bootstrap_request<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        i: usize,
        pki_id: PkiId,
        nonce: u64,
        request: SignedMessage,
    ) {
        let endpoint = self.bootstraps[i].endpoint.clone();
        self.bootstraps[i].sends += 1;
        match comm.send(now, &request, &[RemotePeer::new(endpoint, pki_id.clone())]) {
            Ok(()) => self.stats.requests_sent += 1,
            Err(error) => self
                .stats
                .comm_refused("send a request to a bootstrap peer", &error),
        }
        self.bootstraps[i].state = BootState::AwaitingAck {
            pki_id,
            nonce,
            request,
            deadline: now + self.cfg.ack_wait,
        };
    }

    /// The probe handshake to a bootstrap peer finished.
    pub(crate) fn bootstrap_identified<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        op: OpId,
        result: &Result<Arc<ConnectionInfo>, HandshakeError>,
    ) {
        let Some(i) = self
            .bootstraps
            .iter()
            .position(|b| matches!(b.state, BootState::Identifying(o) if o == op))
        else {
            return;
        };
        let info = match result {
            Ok(info) => info,
            // Our own node is stopping: its pending dials and handshakes end with it
            // ("Shutting down"), which says nothing of the peer; reporting it would put a
            // failure at WARN in every quick stop's output.
            Err(_) if comm.is_stopped() => {
                self.bootstraps[i].state = BootState::GaveUp;
                return;
            }
            Err(e) => return self.bootstrap_failed(now, i, BootstrapError::Handshake(e.clone())),
        };
        let org = comm.security().organization_of(&info.identity);
        let same_org = self.is_ours(org.as_ref());
        if !same_org && !self.bootstraps[i].any_org {
            let error = BootstrapError::OtherOrganization(self.bootstraps[i].endpoint.clone());
            return self.bootstrap_failed(now, i, error);
        }
        if !same_org && self.is_ours(self.bootstraps[i].claimed_org.as_ref()) {
            let endpoint = self.bootstraps[i].endpoint.clone();
            return self.bootstrap_failed(
                now,
                i,
                BootstrapError::NotOfClaimedOrganization(endpoint),
            );
        }
        if !same_org && (org.is_none() || self.cfg.external_endpoint.is_empty()) {
            self.bootstraps[i].state = BootState::GaveUp;
            let ev = DiscoveryEvent::BootstrapFailed {
                endpoint: self.bootstraps[i].endpoint.clone(),
                error: BootstrapError::AnchorWithoutExternalEndpoint,
                attempt: self.bootstraps[i].attempts,
                gave_up: true,
            };
            self.stats.bootstrap_failures += 1;
            return self.emit(ev);
        }
        self.bootstraps[i].identified = Some(info.id.clone());
        let nonce = loop {
            let n = self.rng.next_u64();
            if n != 0 {
                break n;
            }
        };
        // Our secret goes only to our own organization.
        let Some(request) = self.make_request(now, comm, !same_org, nonce) else {
            return self.bootstrap_failed(now, i, BootstrapError::CannotSign);
        };
        self.send_bootstrap_request(now, comm, i, info.id.clone(), nonce, request);
    }

    /// A response with `nonce` arrived: every bootstrap waiting for it has joined.
    pub(crate) fn bootstrap_acked(&mut self, nonce: u64, from: &PkiId) {
        if nonce == 0 {
            return;
        }
        for i in 0..self.bootstraps.len() {
            let hit = match &self.bootstraps[i].state {
                BootState::AwaitingAck { nonce: n, .. } | BootState::Resend { nonce: n, .. } => {
                    *n == nonce
                }
                _ => false,
            };
            if hit {
                self.bootstraps[i].state = BootState::Done;
                self.stats.bootstrap_acked += 1;
                let endpoint = self.bootstraps[i].endpoint.clone();
                self.emit(DiscoveryEvent::BootstrapJoined {
                    endpoint,
                    pki_id: from.clone(),
                });
            }
        }
    }
}
