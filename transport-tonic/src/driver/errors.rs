//! Error texts: what the driver tells the core and the logs of a failed dial, Ping or
//! stream, made from tonic's, hyper's and h2's error chains and remotes' statuses
//! ([`error_text`], [`status_text`]): each layer once, and what a remote chose cut and
//! escaped. Its own part: functions of an error alone, tested on their own.

use tonic::Status;

/// Human-readable text of an error and its sources (tonic's transport errors say little
/// at the top level).
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    let mut next = Some(e);
    // `next`'s text, when the layer above it formatted it already.
    let mut next_text = None;
    while let Some(err) = next {
        let source = err.source();
        // Each layer cut as a remote's status is: a layer may print what the remote sent
        // (h2 prints a GOAWAY's debug data, up to a frame of 64 KiB, escaped to four
        // times that), and a status's source is such a chain. A status within the chain
        // gives its message only: its `Display` prints its code and its whole source
        // chain with `Debug` (`code: 'Unknown error', message: "…", source:
        // hyper::Error(Body, Error { kind: Io(…) })`), which the layers below then
        // repeat; seen when a Fabric peer closed a stream it had replaced.
        if let Some(status) = err.downcast_ref::<Status>() {
            push_remote(&mut s, status.message());
            (next, next_text) = (source, None);
            continue;
        }
        let text = next_text.take().unwrap_or_else(|| err.to_string());
        let source_text = source.map(ToString::to_string);
        // A wrapper that shows its source's text as its own adds nothing, and hides what
        // it wraps from the look above: axum's `Error` around a status, seen when a Fabric
        // peer closed a TLS stream it had replaced (its status's whole `Display` printed).
        if source_text.as_deref() != Some(text.as_str()) {
            push_remote(&mut s, &text);
        }
        (next, next_text) = (source, source_text);
    }
    s
}

/// Appends the `": "`-separated segments of `text` to `s`, leaving out those `s` already
/// has: each layer of tonic, hyper and h2 repeats part of the one below it, which made
/// errors read "transport error: transport error: connection error: …" or "http2 error:
/// transport error: http2 error: …".
fn push_segments(s: &mut String, text: &str) {
    for seg in text.split(": ").filter(|t| !t.is_empty()) {
        if !s.split(": ").any(|have| have == seg) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(seg);
        }
    }
}

/// [`push_segments`] of text a remote may have chosen: cut to [`REMOTE_STATUS_CHARS`] and
/// escaped first.
fn push_remote(s: &mut String, text: &str) {
    push_segments(
        s,
        &fabric_gossip_core::shown_up_to(text, REMOTE_STATUS_CHARS),
    );
}

/// How many characters of a status the remote chose are kept: a refusing Fabric peer's
/// reason whole, and at most what an inbound stream's refusal sends back. A server the node
/// dials may send up to hyper's 16 KiB of headers as `grpc-message`; it had been echoed
/// whole, control characters and all, into two events and three log lines per attempt
/// (72 KB of output for each refused dial; an attack, 2026-12-05).
const REMOTE_STATUS_CHARS: usize = 1024;

pub(crate) fn status_text(status: &Status) -> String {
    let mut s = format!("{:?}", status.code());
    push_remote(&mut s, status.message());
    if let Some(src) = std::error::Error::source(status) {
        push_segments(&mut s, &error_text(src));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The I/O error under a stream's end when a Fabric peer closed a replaced stream.
    #[derive(Debug)]
    struct Io;

    impl std::fmt::Display for Io {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stream closed because of a broken pipe")
        }
    }

    impl std::error::Error for Io {}

    /// A stream's end as a Fabric peer closing a replaced stream gave it: a status whose
    /// source is a status whose source is hyper's error over an I/O error.
    #[test]
    fn a_status_within_a_status_reads_as_its_message() {
        const MSG: &str = "h2 protocol error: error reading a body from connection";
        let mut inner = Status::unknown(MSG);
        inner.set_source(std::sync::Arc::new(Io));
        let mut outer = Status::unknown(MSG);
        outer.set_source(std::sync::Arc::new(inner));
        assert_eq!(
            status_text(&outer),
            "Unknown: h2 protocol error: error reading a body from connection: stream closed \
             because of a broken pipe"
        );
    }

    /// The same behind a wrapper that shows its source's text as its own (axum's `Error`,
    /// whose `Debug` a live check against Fabric v2.4.9 printed: `Error { inner: Status {
    /// … } }`): the reason read "…: code: 'Unknown error', message: \"h2 protocol error:
    /// …\", source: hyper::Error(Body, …): stream closed because of a broken pipe".
    #[test]
    fn a_status_behind_a_transparent_wrapper_reads_as_its_message() {
        #[derive(Debug)]
        struct Wrapper(Box<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        const MSG: &str = "h2 protocol error: error reading a body from connection";
        let mut inner = Status::unknown(MSG);
        inner.set_source(std::sync::Arc::new(Io));
        let mut outer = Status::unknown(MSG);
        outer.set_source(std::sync::Arc::new(Wrapper(Box::new(inner))));
        assert_eq!(
            status_text(&outer),
            "Unknown: h2 protocol error: error reading a body from connection: stream closed \
             because of a broken pipe"
        );
        // A layer whose text differs from its source's is kept.
        let mut other = Status::unknown("reset");
        other.set_source(std::sync::Arc::new(Wrapper(Box::new(Io))));
        assert_eq!(
            status_text(&other),
            "Unknown: reset: stream closed because of a broken pipe"
        );
    }

    /// Each layer's text appears once: the errors an embedder saw read "Unknown: transport
    /// error: transport error: connection error: received fatal alert: UnknownCA".
    #[test]
    fn error_texts_name_each_layer_once() {
        let mut s = "Unknown".to_owned();
        push_segments(&mut s, "transport error");
        push_segments(
            &mut s,
            "transport error: connection error: received fatal alert: UnknownCA",
        );
        assert_eq!(
            s,
            "Unknown: transport error: connection error: received fatal alert: UnknownCA"
        );
        let mut s = "Internal".to_owned();
        push_segments(&mut s, "h2 protocol error: http2 error");
        push_segments(
            &mut s,
            "transport error: http2 error: connection error detected: frame with invalid size",
        );
        assert_eq!(
            s,
            "Internal: h2 protocol error: http2 error: transport error: connection error \
             detected: frame with invalid size"
        );
    }

    /// A server the node dials chooses its statuses' messages: they reach the events and
    /// logs cut and escaped.
    #[test]
    fn a_remote_status_message_is_cut_and_escaped() {
        let forged = "\u{1b}[31mFORGED\n2026-12-05T00:00:00Z  INFO fake: line\u{202e} ".repeat(250);
        let text = status_text(&Status::permission_denied(forged.clone()));
        assert!(
            text.len() < 1500,
            "{} bytes kept of {}",
            text.len(),
            forged.len()
        );
        assert!(!text.chars().any(fabric_gossip_core::is_unseen), "{text}");
        assert!(
            text.starts_with("PermissionDenied: \\u{1b}[31mFORGED\\n2026"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("… ({} bytes)", forged.len())),
            "{text}"
        );
        // An ordinary refusal reads as it came.
        assert_eq!(
            status_text(&Status::permission_denied(
                "failed classifying identity: unknown MSP"
            )),
            "PermissionDenied: failed classifying identity: unknown MSP"
        );
    }
}
