//! A scripted remote for tests that drive one core directly: the messages a remote peer
//! writes, built once here instead of in every test file, and one drain of the core's
//! output.

use super::*;

pub use crate::scripted::conn_establish;

/// An Envelope with these exact bytes as payload and signature (no secret envelope).
pub fn envelope_of(payload: impl Into<Bytes>, signature: impl Into<Bytes>) -> Bytes {
    crate::scripted::envelope(payload, signature, None)
}

/// One drain of [`Comm::poll_output`], split into the actions and the events (the
/// time-out that ends it is dropped).
pub fn drain<S: Security>(c: &mut Comm<S>) -> (Vec<Action>, Vec<Event>) {
    let (mut actions, mut events) = (Vec::new(), Vec::new());
    loop {
        match c.poll_output() {
            Output::Action(a) => actions.push(a),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => return (actions, events),
        }
    }
}

/// Plays the network for a dial the core has just asked for: the first `Dial` of the next
/// drain connects and its Ping answers; returns the stream the core then opens (its
/// `ConnEstablish` is written on it; the remote's is the test's to send). Panics when the
/// core asks for no dial, as a test would.
pub fn open_outbound<S: Security>(c: &mut Comm<S>, now: Instant) -> StreamId {
    let (acts, _) = drain(c);
    let Some(dial) = acts.iter().find_map(|a| match a {
        Action::Dial { dial, .. } => Some(*dial),
        _ => None,
    }) else {
        panic!("no dial among {acts:?}")
    };
    c.handle_dial_result(now, dial, Ok(None)).unwrap();
    c.handle_ping_result(now, dial, Ok(())).unwrap();
    let (acts, _) = drain(c);
    acts.iter()
        .find_map(|a| match a {
            Action::OpenStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stream opened among {acts:?}"))
}
