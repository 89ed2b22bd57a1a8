//! What a failed dial most likely means, read from the transport's error text.
//!
//! A dial that fails reports what hyper, h2 and rustls said (in [`DialError::Failed`],
//! a Ping's status, or a handshake's `StreamEnded`), and the same mistake reads differently
//! depending on the moment the other side gave up: a plaintext client meeting a TLS server
//! sees a broken pipe, a closed connection, a connection "not ready" or an HTTP/2 frame of
//! invalid size. People embedding the driver met these strings against real Fabric peers
//! and had to learn them one by one; [`DialDiagnosis::of`] names the usual causes once, for
//! every tool built on the driver (the `fabric-gossip` CLI words its hints from it).
//!
//! [`DialError::Failed`]: fabric_gossip_core::DialError::Failed

/// The usual cause of a failed dial, as far as the error text tells it. A guess: the text
/// is all it reads, so say "most likely" when showing it to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialDiagnosis {
    /// Dialled in plaintext, the port seems to serve TLS: its TLS records read as HTTP/2
    /// frames, or it hung up on our plaintext preface. A port serving HTTP/1.x (a Fabric
    /// peer's operations port) fails a plaintext gRPC client the very same way; only a look
    /// at the port tells the two apart.
    PeerServesTls,
    /// Dialled with TLS, the port answered in plaintext.
    PeerServesPlaintext,
    /// The peer's TLS certificate is issued to another name than the one dialled: dial with
    /// a name it holds ([`TlsConfig::with_server_name_override`] or
    /// [`TlsConfig::with_server_name_for`]; a Fabric peer's is its host name, e.g.
    /// `peer0.org1.example.com`).
    ///
    /// [`TlsConfig::with_server_name_override`]: crate::TlsConfig::with_server_name_override
    /// [`TlsConfig::with_server_name_for`]: crate::TlsConfig::with_server_name_for
    ServerNameMismatch,
    /// The peer's TLS certificate does not chain to any CA we trust: add its
    /// organization's TLS CA (`tlscacerts/`) to ours. The usual slip is the identity CA
    /// (`cacerts/`) in its place: a Fabric organization has one CA for each.
    UnknownIssuer,
    /// The peer's TLS certificate names a CA we trust as its issuer, but that CA's key did
    /// not sign it: two CAs of one name, most often crypto material made again
    /// (`cryptogen`, `keygen`) with one side still holding the old: give both sides the
    /// same generation's TLS CA.
    IssuerKeyMismatch,
    /// The peer refused our TLS client certificate with an alert: it must be issued by a
    /// TLS CA the peer trusts for clients (a Fabric peer's `peer.tls.clientRootCAs`).
    ClientCertificateRefused,
    /// Dialled with TLS, the peer closed the connection without a word. Under TLS 1.3 a
    /// server that refuses our client certificate may just hang up once the client's side
    /// of the handshake is over; a plaintext server hangs up too.
    ClosedUnderTls,
    /// Nothing listens at the address.
    NothingListening,
    /// The text speaks of TLS or a handshake without saying more: most often one side uses
    /// TLS and the other does not.
    TlsModeMismatch,
}

impl DialDiagnosis {
    /// The most likely cause of a dial that failed with `error` (any of the texts above,
    /// whole or in part, in any case); `tls`: whether we dialled with TLS. `None` when the
    /// text names no cause we know.
    pub fn of(error: &str, tls: bool) -> Option<Self> {
        let e = error.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| e.contains(w));
        let hung_up = has(&[
            "broken pipe",
            "connection reset",
            "connection closed",
            "connection was not ready",
        ]);
        let plaintext_meets_tls = !tls
            && (hung_up
                || has(&[
                    "frame with invalid size",
                    "frame_size_error",
                    "invalid http",
                    "stream closed",
                ]));
        let tls_meets_plaintext = tls
            && has(&[
                "corrupt",
                "invalidcontenttype",
                "wrong version",
                "invalid message",
            ]);
        Some(if plaintext_meets_tls {
            DialDiagnosis::PeerServesTls
        } else if tls_meets_plaintext {
            DialDiagnosis::PeerServesPlaintext
        } else if has(&["notvalidforname", "not valid for name"]) {
            DialDiagnosis::ServerNameMismatch
        } else if has(&["unknownissuer", "unknown issuer"]) {
            DialDiagnosis::UnknownIssuer
        } else if has(&["invalid peer certificate: badsignature"]) {
            DialDiagnosis::IssuerKeyMismatch
        } else if tls
            && has(&[
                "alert: unknownca",
                "alert: badcertificate",
                "alert: certificaterequired",
                // rustls's answer to a client certificate whose signature does not verify
                // (a CA of the same name with another key)
                "alert: decrypterror",
            ])
        {
            DialDiagnosis::ClientCertificateRefused
        } else if tls && hung_up {
            DialDiagnosis::ClosedUnderTls
        } else if has(&["connection refused"]) {
            DialDiagnosis::NothingListening
        } else if has(&["tls", "handshake", "corrupt", "connection closed"]) {
            DialDiagnosis::TlsModeMismatch
        } else {
            return None;
        })
    }
}

impl core::fmt::Display for DialDiagnosis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DialDiagnosis::PeerServesTls => {
                "the peer seems to serve TLS (or the port is not a gossip endpoint)"
            }
            DialDiagnosis::PeerServesPlaintext => "the peer seems to serve plaintext",
            DialDiagnosis::ServerNameMismatch => {
                "the peer's TLS certificate is issued to another name than the one dialled"
            }
            DialDiagnosis::UnknownIssuer => {
                "the peer's TLS certificate does not chain to any CA we trust (trust its \
                 organization's TLS CA, from tlscacerts/, not its identity CA from cacerts/)"
            }
            DialDiagnosis::IssuerKeyMismatch => {
                "the peer's TLS certificate names a CA we trust, but another key signed it (a \
                 CA of the same name from other crypto material: made again since?)"
            }
            DialDiagnosis::ClientCertificateRefused => {
                "the peer refused our TLS client certificate"
            }
            DialDiagnosis::ClosedUnderTls => {
                "the peer closed the connection during or after TLS: it may not trust our \
                 client certificate's CA, or not serve TLS"
            }
            DialDiagnosis::NothingListening => "nothing listens at that address",
            DialDiagnosis::TlsModeMismatch => "one side seems to use TLS and the other not",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DialDiagnosis::{self, *};

    /// Texts seen in dials against real peers and our own nodes (the CLI's tests hold where
    /// each came from), with what they mean dialled in plaintext and with TLS.
    #[test]
    fn each_text_seen_names_its_cause_in_each_mode() {
        let seen: [(&str, Option<DialDiagnosis>, Option<DialDiagnosis>); 11] = [
            (
                "ping failed: Unknown: transport error: stream closed because of a broken pipe",
                Some(PeerServesTls),
                Some(ClosedUnderTls),
            ),
            (
                "ping failed: Unavailable: transport error: connection closed",
                Some(PeerServesTls),
                Some(ClosedUnderTls),
            ),
            (
                "ping failed: Cancelled: operation was canceled: transport error: connection \
                 was not ready",
                Some(PeerServesTls),
                Some(ClosedUnderTls),
            ),
            (
                "ping failed: Unavailable: h2 protocol error: frame with invalid size",
                Some(PeerServesTls),
                None,
            ),
            (
                "tls: received corrupt message of type InvalidContentType",
                Some(TlsModeMismatch),
                Some(PeerServesPlaintext),
            ),
            (
                "invalid peer certificate: certificate not valid for name \"localhost\"",
                Some(ServerNameMismatch),
                Some(ServerNameMismatch),
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                Some(UnknownIssuer),
                Some(UnknownIssuer),
            ),
            (
                "received fatal alert: UnknownCA",
                None,
                Some(ClientCertificateRefused),
            ),
            (
                "dial failed: transport error: invalid peer certificate: BadSignature",
                Some(IssuerKeyMismatch),
                Some(IssuerKeyMismatch),
            ),
            (
                "ping failed: Unknown: transport error: connection error: received fatal \
                 alert: DecryptError",
                None,
                Some(ClientCertificateRefused),
            ),
            (
                "tcp connect error: Connection refused (os error 111)",
                Some(NothingListening),
                Some(NothingListening),
            ),
        ];
        for (text, plaintext, tls) in seen {
            assert_eq!(DialDiagnosis::of(text, false), plaintext, "{text}");
            assert_eq!(DialDiagnosis::of(text, true), tls, "{text}");
        }
        assert_eq!(DialDiagnosis::of("deadline has elapsed", true), None);
    }

    /// Tools show the diagnosis as a hint: each cause reads as a sentence of its own.
    #[test]
    fn each_cause_is_told_in_words_of_its_own() {
        let all = [
            PeerServesTls,
            PeerServesPlaintext,
            ServerNameMismatch,
            UnknownIssuer,
            IssuerKeyMismatch,
            ClientCertificateRefused,
            ClosedUnderTls,
            NothingListening,
            TlsModeMismatch,
        ];
        let told: std::collections::HashSet<String> = all.iter().map(|d| d.to_string()).collect();
        assert_eq!(told.len(), all.len(), "{told:?}");
        assert!(told.iter().all(|t| t.split(' ').count() > 3), "{told:?}");
    }
}
