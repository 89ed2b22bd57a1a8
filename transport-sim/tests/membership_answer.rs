//! A membership request whose connection closed before its answer is still answered, as
//! Fabric's `SendToPeer` answers it: over the requester's connection there is then, or one
//! dialled to it. End to end, on the simulator with Fabric's membership layer.

use fabric_gossip_core::proto::gossip::gossip_message::Content;
use fabric_gossip_core::{
    Comm, Event, Instant, Layer, PkiId, ReceivedMessage, Security, SubscriptionId,
};
use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use fabric_gossip_sim::*;
use std::time::Duration;

/// Fabric's membership layer, with the membership requests of one peer held back until the
/// test lets them through: a responder whose layer reads behind its connections, so that
/// the requester's connection goes between the request's arrival and its answer.
struct Holding {
    inner: Discovery,
    from: Option<PkiId>,
    held: Vec<ReceivedMessage>,
}

impl Holding {
    /// Answers what was held back, and holds nothing more.
    fn release<S: Security>(&mut self, comm: &mut Comm<S>) {
        self.from = None;
        let now = comm.now();
        for m in std::mem::take(&mut self.held) {
            self.inner.handle_message(now, comm, m);
        }
    }
}

impl<S: Security> Layer<S> for Holding {
    type Event = DiscoveryEvent;

    fn start(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.inner.start(now, comm);
    }

    fn handle_comm_event(&mut self, now: Instant, comm: &mut Comm<S>, event: &Event) {
        self.inner.handle_comm_event(now, comm, event);
    }

    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        Layer::<S>::owns_subscription(&self.inner, sub)
    }

    fn handle_message(&mut self, now: Instant, comm: &mut Comm<S>, msg: ReceivedMessage) {
        let request = matches!(msg.message.content, Some(Content::MemReq(_)));
        if request && self.from.as_ref() == Some(msg.sender()) {
            self.held.push(msg);
        } else {
            self.inner.handle_message(now, comm, msg);
        }
    }

    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.inner.handle_timeout(now, comm);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Layer::<S>::poll_timeout(&self.inner)
    }

    fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        Layer::<S>::poll_event(&mut self.inner)
    }
}

/// The members' `alive_interval`.
const HEARTBEAT: Duration = Duration::from_secs(20);

fn config(ctx: &LayerContext, boot: &str) -> DiscoveryConfig {
    let cfg = DiscoveryConfig::new(ctx.endpoint.clone())
        .with_external_endpoint(ctx.endpoint.clone())
        .with_seed(ctx.seed)
        // Heartbeats far apart: a heartbeat reaching the newcomer (with the members' alive
        // messages forwarded after it) would teach it the members without the answer.
        .with_alive_interval(HEARTBEAT);
    if boot.is_empty() {
        cfg
    } else {
        cfg.with_bootstrap([boot.to_owned()])
    }
}

fn members_of(sim: &Sim, n: NodeId) -> usize {
    let layer = match n {
        0 => sim.layer::<Holding>(n).map(|h| &h.inner),
        _ => sim.layer::<Discovery>(n),
    };
    layer.map_or(0, |d| d.members().len())
}

/// A newcomer joins through a bootstrap peer, which holds its request back; the newcomer's
/// connection is reset meanwhile, then the request is answered. The answer reaches the
/// newcomer through a connection the bootstrap peer dials, so within a second it knows
/// the bootstrap peer and both of its members, and its bootstrap is acknowledged (only a
/// response with the request's nonce does that). Dropped, as it was, the newcomer learnt
/// nothing for seconds more: until its bootstrap request was sent again (5 s) or the
/// bootstrap peer's next heartbeat reached it (heartbeats here are 20 s apart, so that
/// none comes within the second).
#[test]
fn a_requester_cut_off_after_its_request_still_gets_the_response() {
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let responder = NodeSpec::new().subscribe_all(false).layer(|ctx| Holding {
            inner: Discovery::new(config(ctx, "")).expect("a valid endpoint"),
            from: None,
            held: Vec::new(),
        });
        let r = sim.add_node(responder).expect("node");
        let boot = sim.endpoint(r).to_owned();
        let member = move || {
            let boot = boot.clone();
            NodeSpec::new()
                .subscribe_all(false)
                .layer(move |ctx| Discovery::new(config(ctx, &boot)).expect("a valid endpoint"))
        };
        let (a, b) = (
            sim.add_node(member()).expect("node"),
            sim.add_node(member()).expect("node"),
        );
        let deadline = sim.now() + Duration::from_secs(30);
        let joined = |s: &Sim| [r, a, b].iter().all(|&n| members_of(s, n) == 2);
        assert!(sim.run_until(deadline, joined), "seed {seed}: no full view");

        let newcomer = sim.add_node(member()).expect("node");
        let who = sim.pki_id(newcomer);
        let held = who.clone();
        sim.with_layer::<Holding, _>(r, |h, _| h.from = Some(held));
        let deadline = sim.now() + Duration::from_secs(10);
        let asked = |s: &Sim| s.layer::<Holding>(r).is_some_and(|h| !h.held.is_empty());
        assert!(sim.run_until(deadline, asked), "seed {seed}: no request");
        sim.apply(Fault::Reset(r, newcomer));
        let deadline = sim.now() + Duration::from_secs(1);
        // Gone at the responder's end too: the answer has no connection to go on.
        let cut = |s: &Sim| s.comm(r).is_some_and(|c| c.connection(&who).is_none());
        assert!(sim.run_until(deadline, cut), "seed {seed}: still connected");
        let newcomer_knew = members_of(&sim, newcomer);
        let released = sim.now();
        sim.with_layer::<Holding, _>(r, |h, comm| h.release(comm));

        let deadline = released + Duration::from_secs(1);
        let knows_all = |s: &Sim| members_of(s, newcomer) == 3;
        let learnt = sim.run_until(deadline, knows_all);
        let stats = sim
            .layer::<Holding>(r)
            .map(|h| h.inner.stats().clone())
            .expect("layer");
        assert!(
            learnt,
            "seed {seed}: the newcomer knew {newcomer_knew} then {} a second after the \
             answer; responder {stats:?}",
            members_of(&sim, newcomer)
        );
        assert_eq!(
            newcomer_knew, 0,
            "seed {seed}: nothing learnt before the answer"
        );
        assert_eq!(
            (stats.responses_rerouted, stats.responses_dropped),
            (1, 0),
            "seed {seed}"
        );
        let joined = sim.layer_events(newcomer).iter().any(|e| {
            e.at >= released
                && matches!(
                    e.event.downcast_ref::<DiscoveryEvent>(),
                    Some(DiscoveryEvent::BootstrapJoined { .. })
                )
        });
        assert!(
            joined,
            "seed {seed}: the bootstrap was acknowledged by the answer"
        );
    }
}
