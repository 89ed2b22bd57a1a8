//! Hosting a layer whose constructor can fail: `NodeSpec::try_layer`.

use fabric_gossip_discovery::{ConfigError, Discovery, DiscoveryConfig};
use fabric_gossip_sim::*;
use std::time::Duration;

/// A membership node whose configuration `Discovery::new` refuses from process
/// `bad_from` on (an endpoint with two colons, as an embedder's typo would make it).
fn member(bad_from: u32) -> NodeSpec {
    NodeSpec::new().subscribe_all(false).try_layer(move |ctx| {
        let endpoint = if ctx.incarnation >= bad_from {
            format!("{}:1", ctx.endpoint)
        } else {
            ctx.endpoint.clone()
        };
        Discovery::new(DiscoveryConfig::new(endpoint).with_seed(ctx.seed))
    })
}

fn layer_error(e: &StartError) -> Option<&ConfigError> {
    match e {
        StartError::Layer(e) => e.downcast_ref(),
        _ => None,
    }
}

#[test]
fn a_layer_that_cannot_be_built_is_add_nodes_error_not_a_panic() {
    let mut sim = Sim::new(SimConfig::seeded(3));
    let a = sim.add_node(member(1)).expect("a valid configuration");
    let err = sim
        .add_node(member(0))
        .expect_err("Discovery::new refuses it");
    assert!(
        matches!(layer_error(&err), Some(ConfigError::BadEndpoint(_))),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("layer: "), "{err}");
    // The refusal is told once, in the error's own text, not again behind `source()`.
    assert!(std::error::Error::source(&err).is_none());
    // Nothing was added: the next node takes the refused one's place and endpoint.
    assert_eq!(sim.node_count(), 1);
    let b = sim.add_node(member(1)).expect("a valid configuration");
    assert_eq!((a, b), (0, 1));
    assert_eq!(sim.endpoint(b), "127.0.0.1:7052");
    assert!(sim.layer::<Discovery>(b).is_some());
    // The refusal took back its own endpoint only: the first node is still reachable.
    let peer = sim.remote_peer(a);
    let op = sim.probe(b, &peer).unwrap();
    sim.run_for(Duration::from_secs(1));
    assert!(
        matches!(
            sim.op_result(b, op),
            Some(fabric_gossip_core::Event::ProbeDone { result: Ok(()), .. })
        ),
        "{:?}",
        sim.op_result(b, op)
    );
}

#[test]
fn a_restart_whose_layer_cannot_be_built_fails_and_leaves_the_node_down() {
    let mut sim = Sim::new(SimConfig::seeded(4));
    let a = sim.add_node(member(1)).unwrap();
    sim.run_for(Duration::from_secs(1));
    let err = sim.restart(a, false).expect_err("process 1 is refused");
    assert!(layer_error(&err).is_some(), "{err:?}");
    assert_ne!(sim.state(a), Some(NodeState::Up));
    assert_eq!(sim.incarnation(a), 0, "no process 1 ran");
    assert!(sim.layer::<Discovery>(a).is_none());
    assert!(matches!(
        sim.restart(7, false),
        Err(StartError::NoSuchNode(7))
    ));
}

/// A scheduled restart that fails is traced, the run goes on, and the same seed gives
/// the same trace.
#[test]
fn a_scheduled_restart_whose_layer_fails_replays() {
    let run = || {
        let mut cfg = SimConfig::seeded(5);
        cfg.trace = TraceMode::Full;
        let mut sim = Sim::new(cfg);
        sim.add_node(member(u32::MAX)).unwrap();
        let b = sim.add_node(member(1)).unwrap();
        sim.schedule_faults(&[
            ScheduledFault {
                at: Duration::from_secs(1),
                fault: Fault::Crash(b),
            },
            ScheduledFault {
                at: Duration::from_secs(2),
                fault: Fault::Restart(b),
            },
        ]);
        sim.run_for(Duration::from_secs(5));
        assert_eq!(sim.state(b), Some(NodeState::Crashed));
        assert!(
            sim.trace()
                .lines()
                .iter()
                .any(|l| l.contains("restart failed: layer: ")),
            "{}",
            sim.trace().text()
        );
        sim.trace().hash_hex()
    };
    assert_eq!(run(), run());
}

/// Layer events kept per node stop at `record_limit`, as deliveries and core events do;
/// each one past it is counted in `records_dropped`.
#[test]
fn layer_events_past_the_record_limit_are_counted_not_kept() {
    use std::sync::{Arc, Mutex};
    let mut cfg = SimConfig::seeded(5);
    cfg.record_limit = 1;
    let mut sim = Sim::new(cfg);
    // What node 1 saw: deliveries, core events, layer events.
    let seen: Arc<Mutex<[u64; 3]>> = Arc::default();
    let sink = seen.clone();
    sim.set_observer(move |n, o| {
        if n == 1 {
            let mut s = sink.lock().unwrap();
            match o {
                Observation::Delivery(_) => s[0] += 1,
                Observation::Event { .. } => s[1] += 1,
                Observation::Layer { .. } => s[2] += 1,
            }
        }
    });
    let a = sim.add_node(member(1)).unwrap();
    let boot = sim.endpoint(a).to_owned();
    let b = sim
        .add_node(NodeSpec::new().subscribe_all(false).try_layer(move |ctx| {
            Discovery::new(
                DiscoveryConfig::new(ctx.endpoint.clone())
                    .with_seed(ctx.seed)
                    .with_bootstrap([boot.clone()]),
            )
        }))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    let s = *seen.lock().unwrap();
    assert!(s[2] > 1, "layer events seen: {s:?}");
    assert_eq!(sim.layer_events(b).len(), 1);
    // Its time into the run: after the start, within the 5 s run.
    let first = &sim.layer_events(b)[0];
    assert_eq!(first.elapsed(), first.at - fabric_gossip_sim::START);
    assert!(first.elapsed() <= sim.elapsed(), "{:?}", first.elapsed());
    let past_limit: u64 = s.iter().map(|k| k - k.min(&1)).sum();
    assert_eq!(sim.records_dropped(b), past_limit, "{s:?}");
}
