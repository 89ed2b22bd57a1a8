"""An independent Python implementation of the comm side of a Hyperledger Fabric
gossip peer, written for fabric-gossip's interoperability test.

It shares no code with the Rust project: the wire types come from Python stubs
that `grpc_tools.protoc` generates at test time from the project's
`proto/protos/gossip/message.proto`, and the gRPC stack is `grpcio` (C-core).
Behaviour follows the project spec (/work/shared/spec/fabric-gossip-comm.md,
sections 3-7), i.e. Fabric's `gossip/comm`.

Identities use Fabric's *unit-test* provider by default, which is test-only:
identity = PKI-ID = the endpoint string (e.g. b"127.0.0.1:7070"),
Sign = HMAC-SHA256 with key b"\\x00\\x00\\x00", Verify = recompute and compare,
ValidateIdentity always passes. Every helper that signs or verifies takes a `provider`
argument with the same methods; `fabric_membership.MspProvider` is the X.509/ECDSA one.

Pieces:
- `TestProvider`: the unit-test crypto provider.
- envelope helpers: `sign`, `noop_sign`, `conn_establish`, `data_message`,
  `ack_message`, `verify_envelope`, `check_conn_establish` (Fabric's checks, in
  Fabric's order, each a distinct `HandshakeError.kind`).
- `ClientStream` / `ServerStream`: one GossipStream with deadline-bounded reads.
- `handshake(stream, ...)`: send own ConnEstablish first, read the remote's
  first Envelope within conn_timeout, check it.
- `Conn`: an authenticated connection; delivers messages to an inbox,
  intercepts Acknowledgements for `send_with_ack`, optionally auto-acks.
- `PeerServer`: a `gossip.Gossip` gRPC server (Ping + GossipStream).
- `dial` / `ping` / `connect`: the initiator side (dial, Ping, stream, handshake).
- `TlsMaterial` / `make_pki`: mutual TLS (optional): certificates made with `cryptography`; each
  side binds SHA-256 of its certificate's DER into its ConnEstablish and checks the remote's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import random
import socket
import ssl
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Optional

import grpc

_GEN = os.environ.get("INTEROP_GEN_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gen")
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from gossip import message_pb2 as pb  # noqa: E402  (generated at test time)
from gossip import message_pb2_grpc as pb_grpc  # noqa: E402

# Fabric defaults (spec section 8).
DIAL_TIMEOUT = 3.0
CONN_TIMEOUT = 2.0
MAX_MSG_SIZE = 100 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),  # loopback only, never through a proxy
    ("grpc.max_receive_message_length", MAX_MSG_SIZE),
    ("grpc.max_send_message_length", MAX_MSG_SIZE),
]


# --------------------------------------------------------------------------
# Fabric's unit-test crypto provider (test-only)
# --------------------------------------------------------------------------


class TestProvider:
    """Fabric's unit-test identity provider. TEST ONLY: anyone can sign."""

    KEY = b"\x00\x00\x00"

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self.KEY, data, hashlib.sha256).digest()

    def verify(self, identity: bytes, signature: bytes, data: bytes) -> bool:
        return hmac.compare_digest(self.sign(data), signature)

    def pki_id_of(self, identity: bytes) -> bytes:
        return identity

    def validate_identity(self, identity: bytes) -> None:
        return None

    def own_identity(self, endpoint: str) -> bytes:
        """The identity this side presents: under the unit-test provider, its endpoint."""
        return endpoint.encode()


PROVIDER = TestProvider()


# --------------------------------------------------------------------------
# Mutual TLS (optional)
# --------------------------------------------------------------------------


def cert_hash_of_pem(cert_pem: bytes) -> bytes:
    """SHA-256 of the DER of the first certificate in `cert_pem` (Fabric's certHashFromRawCert)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.decode())).digest()


@dataclass
class TlsMaterial:
    """One certificate and key for both roles (server and client), and the trusted CA(s)."""

    cert_path: str
    key_path: str
    ca_path: str

    def _read(self, p: str) -> bytes:
        with open(p, "rb") as f:
            return f.read()

    @property
    def cert_pem(self) -> bytes:
        return self._read(self.cert_path)

    @property
    def key_pem(self) -> bytes:
        return self._read(self.key_path)

    @property
    def ca_pem(self) -> bytes:
        return self._read(self.ca_path)

    @property
    def cert_hash(self) -> bytes:
        return cert_hash_of_pem(self.cert_pem)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True)

    def channel_credentials(self, with_client_cert: bool = True) -> grpc.ChannelCredentials:
        if not with_client_cert:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem)


def presented_cert_hash(target: str, tls: TlsMaterial, timeout: float = DIAL_TIMEOUT) -> bytes:
    """SHA-256 of the leaf certificate the server at `target` presents, read with Python's own ssl
    module on a separate TLS connection (grpcio does not expose the server certificate of a call)."""
    host, port = target.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=tls.ca_path)
    ctx.load_cert_chain(tls.cert_path, tls.key_path)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname=host) as ss:
            return hashlib.sha256(ss.getpeercert(binary_form=True)).digest()


def make_pki(directory: str, leaves: list[str], ca_name: str = "interop-ca") -> dict[str, TlsMaterial]:
    """A fresh ECDSA P-256 CA and one leaf per name (SAN IP 127.0.0.1 and DNS localhost, usable
    as server and client certificate), written as PEM files under `directory`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def key_pem(k) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def certificate(subject: str, key, issuer: "x509.Name", issuer_key, extensions):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )
        for ext, critical in extensions:
            b = b.add_extension(ext, critical=critical)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = certificate(ca_name, ca_key, ca_subject, ca_key, [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])
    ca_path = write(f"{ca_name}.pem", ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for name in leaves:
        k = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name, k, ca_subject, ca_key, [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ])
        out[name] = TlsMaterial(
            write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)), write(f"{name}.key", key_pem(k)), ca_path
        )
    return out


# --------------------------------------------------------------------------
# Messages and envelopes
# --------------------------------------------------------------------------


def encode(msg: "pb.GossipMessage") -> bytes:
    return msg.SerializeToString()


def sign(msg: "pb.GossipMessage", provider: TestProvider = PROVIDER) -> "pb.Envelope":
    payload = encode(msg)
    return pb.Envelope(payload=payload, signature=provider.sign(payload))


def noop_sign(msg: "pb.GossipMessage") -> "pb.Envelope":
    """What Fabric's Send/Respond/SendWithAck put on the wire: no signature."""
    return pb.Envelope(payload=encode(msg))


def conn_establish_message(pki_id: bytes, identity: bytes, tls_cert_hash: bytes = b"", probe: bool = False):
    return pb.GossipMessage(
        nonce=0,
        tag=pb.GossipMessage.EMPTY,
        conn=pb.ConnEstablish(pki_id=pki_id, identity=identity, tls_cert_hash=tls_cert_hash, probe=probe),
    )


def conn_establish(endpoint: str, tls_cert_hash: bytes = b"", probe: bool = False, provider: TestProvider = PROVIDER):
    """Our signed ConnEstablish: the provider's identity for `endpoint` and its PKI-ID (under the
    unit-test provider identity = PKI-ID = endpoint; an MSP provider presents its certificate)."""
    ident = provider.own_identity(endpoint)
    return sign(conn_establish_message(provider.pki_id_of(ident), ident, tls_cert_hash, probe), provider)


def data_message(seq: int, data: bytes, nonce: int = 0) -> "pb.GossipMessage":
    return pb.GossipMessage(
        nonce=nonce,
        tag=pb.GossipMessage.EMPTY,
        data_msg=pb.DataMessage(payload=pb.Payload(seq_num=seq, data=data)),
    )


def ack_message(nonce: int, error: str = "") -> "pb.GossipMessage":
    """Fabric's ReceivedMessage.Ack: the received nonce and an Acknowledgement (tag unset)."""
    m = pb.GossipMessage(nonce=nonce)
    m.ack.SetInParent()
    if error:
        m.ack.error = error
    return m


def content_of(msg: "pb.GossipMessage") -> Optional[str]:
    return msg.WhichOneof("content")


def random_nonce() -> int:
    return random.getrandbits(64) or 1


class VerifyError(Exception):
    pass


def verify_envelope(env: "pb.Envelope", identity: bytes, provider: TestProvider = PROVIDER) -> None:
    """Spec section 3: payload and signature non-empty, signature over the bytes as received;
    a SecretEnvelope, when present, must carry a non-empty payload and signature that verify."""
    if not env.payload or not env.signature:
        raise VerifyError("envelope has no payload or no signature")
    if not provider.verify(identity, env.signature, env.payload):
        raise VerifyError("failed verifying signature")
    if env.HasField("secret_envelope"):
        se = env.secret_envelope
        if not se.payload or not se.signature:
            raise VerifyError("secret envelope has no payload or no signature")
        if not provider.verify(identity, se.signature, se.payload):
            raise VerifyError("failed verifying secret envelope signature")


class HandshakeError(Exception):
    """A refused handshake. `kind` names which of Fabric's checks failed."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass
class ConnInfo:
    pki_id: bytes
    identity: bytes
    endpoint: str  # remote address (socket peer for inbound, target for outbound)
    signed_data: bytes
    signature: bytes
    probe: bool = False
    tls_cert_hash: bytes = b""


def decode_envelope(env: "pb.Envelope") -> "pb.GossipMessage":
    m = pb.GossipMessage()
    m.ParseFromString(env.payload)  # raises google.protobuf.message.DecodeError
    return m


def check_conn_establish(
    env: "pb.Envelope",
    remote_address: str = "",
    remote_tls_cert_hash: Optional[bytes] = None,
    provider: TestProvider = PROVIDER,
) -> ConnInfo:
    """Fabric's authenticateRemotePeer checks on the remote's first Envelope, in Fabric's order.

    remote_tls_cert_hash: None without TLS; with TLS, SHA-256 of the leaf certificate the
    remote actually presented on this connection."""
    try:
        m = decode_envelope(env)
    except Exception as e:  # noqa: BLE001
        raise HandshakeError("decode", str(e)) from e
    if content_of(m) != "conn":
        raise HandshakeError("wrong type", f"got {content_of(m)}")
    c = m.conn
    if not c.pki_id:
        raise HandshakeError("no PKI-ID")
    # The identity store's Put: both non-empty, identity valid, PKI-ID-of(identity) == pki_id.
    if not c.identity:
        raise HandshakeError("identity store", "empty identity")
    try:
        provider.validate_identity(c.identity)
    except VerifyError as e:
        raise HandshakeError("identity store", str(e)) from e
    if provider.pki_id_of(c.identity) != c.pki_id:
        raise HandshakeError("identity doesn't match the computed pkiID")
    if remote_tls_cert_hash is not None and remote_tls_cert_hash != c.tls_cert_hash:
        raise HandshakeError("tls cert hash", "remote TLS certificate hash mismatch")
    try:
        verify_envelope(env, c.identity, provider)
    except VerifyError as e:
        raise HandshakeError("signature", str(e)) from e
    return ConnInfo(
        pki_id=bytes(c.pki_id),
        identity=bytes(c.identity),
        endpoint=remote_address,
        signed_data=bytes(env.payload),
        signature=bytes(env.signature),
        probe=c.probe,
        tls_cert_hash=bytes(c.tls_cert_hash),
    )


# --------------------------------------------------------------------------
# Streams: Envelopes in both directions, every read bounded by a deadline
# --------------------------------------------------------------------------


class StreamEnded(Exception):
    """The stream ended. `code` is the gRPC status code (grpc.StatusCode), `details` its text."""

    def __init__(self, code, details: str = ""):
        super().__init__(f"stream ended: {code} {details}".strip())
        self.code = code
        self.details = details


class RecvTimeout(Exception):
    pass


class _BaseStream:
    def __init__(self):
        self._in: "queue.Queue" = queue.Queue()
        self._out: "queue.Queue" = queue.Queue()
        self._ended: Optional[StreamEnded] = None
        self._closed = threading.Event()
        self.remote_address = ""

    def send(self, env: "pb.Envelope") -> None:
        if self._closed.is_set():
            raise StreamEnded(grpc.StatusCode.CANCELLED, "send on closed stream")
        self._out.put(env)

    def recv(self, timeout: Optional[float]) -> "pb.Envelope":
        """Next Envelope; StreamEnded when the stream has ended; RecvTimeout after `timeout` s."""
        if self._ended is not None:
            raise self._ended
        try:
            kind, val = self._in.get(timeout=timeout)
        except queue.Empty:
            raise RecvTimeout(f"no envelope within {timeout}s") from None
        if kind == "end":
            self._ended = val
            raise val
        return val

    def recv_until_end(self, timeout: float) -> tuple[list, StreamEnded]:
        """Read everything until the stream ends; RecvTimeout if it has not ended by `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RecvTimeout(f"stream still open after {timeout}s")
            try:
                got.append(self.recv(left))
            except StreamEnded as e:
                return got, e
            except RecvTimeout:
                raise RecvTimeout(f"stream still open after {timeout}s ({len(got)} envelopes received)") from None

    def _outgoing(self):
        while True:
            item = self._out.get()
            if item is None:
                return
            yield item


class ClientStream(_BaseStream):
    """The initiator's side of a GossipStream on an open channel."""

    def __init__(self, channel: grpc.Channel, target: str):
        super().__init__()
        self.remote_address = target
        self._call = pb_grpc.GossipStub(channel).GossipStream(self._outgoing())
        threading.Thread(target=self._reader, daemon=True, name=f"client-reader-{target}").start()

    def _reader(self):
        try:
            for env in self._call:
                self._in.put(("env", env))
            self._in.put(("end", StreamEnded(self._call.code(), self._call.details() or "")))
        except grpc.RpcError as e:
            self._in.put(("end", StreamEnded(e.code(), e.details() or "")))
        except Exception as e:  # noqa: BLE001
            self._in.put(("end", StreamEnded(grpc.StatusCode.UNKNOWN, repr(e))))
        finally:
            self._closed.set()

    def close_send(self) -> None:
        """Half-close: the remote reads end-of-stream."""
        self._out.put(None)

    def cancel(self) -> None:
        self._out.put(None)
        self._call.cancel()


class ServerStream(_BaseStream):
    """The acceptor's side of a GossipStream inside a grpcio handler."""

    def __init__(self, request_iterator, context: grpc.ServicerContext):
        super().__init__()
        self.remote_address = context.peer()
        self._context = context
        # SHA-256 of the client certificate presented on this connection (TLS), else None
        self.remote_cert_hash: Optional[bytes] = None
        certs = (context.auth_context() or {}).get("x509_pem_cert") or []
        if certs:
            self.remote_cert_hash = cert_hash_of_pem(certs[0])
        context.add_callback(self._on_rpc_done)
        threading.Thread(target=self._reader, args=(request_iterator,), daemon=True, name="server-reader").start()

    def _reader(self, it):
        try:
            for env in it:
                self._in.put(("env", env))
            self._in.put(("end", StreamEnded(grpc.StatusCode.OK, "end of stream")))
        except Exception as e:  # noqa: BLE001  (RPC cancelled or terminated)
            self._in.put(("end", StreamEnded(grpc.StatusCode.CANCELLED, repr(e))))

    def _on_rpc_done(self):
        self._closed.set()
        self._out.put(None)
        self._in.put(("end", StreamEnded(grpc.StatusCode.CANCELLED, "rpc done")))

    def finish(self) -> None:
        """Stop the response generator (the handler then returns)."""
        self._out.put(None)


# --------------------------------------------------------------------------
# Handshake and connections
# --------------------------------------------------------------------------


def handshake(
    stream: _BaseStream,
    own_endpoint: str,
    probe: bool = False,
    conn_timeout: float = CONN_TIMEOUT,
    own_envelope: Optional["pb.Envelope"] = None,
    provider: TestProvider = PROVIDER,
    own_tls_hash: bytes = b"",
    remote_tls_hash: Optional[bytes] = None,
) -> ConnInfo:
    """Fabric's handshake, either side: send own ConnEstablish first, then read and check the
    remote's first Envelope within conn_timeout. `own_envelope` overrides what we send (for
    negative tests). With TLS: own_tls_hash = SHA-256 of the certificate we present on this
    connection, remote_tls_hash = that of the certificate the remote presented."""
    own = own_envelope if own_envelope is not None else conn_establish(own_endpoint, own_tls_hash, probe, provider)
    stream.send(own)
    try:
        first = stream.recv(conn_timeout)
    except RecvTimeout:
        raise HandshakeError("timeout", f"no connection message from {stream.remote_address} within {conn_timeout}s") from None
    except StreamEnded as e:
        raise HandshakeError("stream ended", str(e)) from None
    return check_conn_establish(first, stream.remote_address, remote_tls_hash, provider)


@dataclass
class Received:
    """A message delivered on a connection (not an Acknowledgement)."""

    msg: "pb.GossipMessage"
    envelope: "pb.Envelope"
    info: ConnInfo
    conn: "Conn"

    def respond(self, msg: "pb.GossipMessage") -> None:
        self.conn.send(noop_sign(msg))

    def ack(self, error: str = "") -> None:
        self.respond(ack_message(self.msg.nonce, error))


class Conn:
    """An authenticated connection. A pump thread decodes incoming Envelopes: Acknowledgements go
    to the pending send_with_ack with that nonce, everything else to `inbox` (and to `on_message`)."""

    def __init__(
        self,
        stream: _BaseStream,
        info: ConnInfo,
        auto_ack: bool = False,
        ack_error: Callable[[], str] = lambda: "",
        on_message: Optional[Callable[[Received], None]] = None,
        on_end: Optional[Callable[["Conn", StreamEnded], None]] = None,
    ):
        self.stream = stream
        self.info = info
        self.auto_ack = auto_ack
        self.ack_error = ack_error
        self.inbox: "queue.Queue[Received]" = queue.Queue()
        self.on_message = on_message
        self.on_end = on_end
        self.ended: Optional[StreamEnded] = None
        self.done = threading.Event()
        self._pending: dict[int, "queue.Queue"] = {}
        self._lock = threading.Lock()
        self.stray_acks = 0  # Acknowledgements that matched no pending send_with_ack
        threading.Thread(target=self._pump, daemon=True, name="conn-pump").start()

    def _pump(self):
        try:
            while True:
                env = self.stream.recv(None)
                try:
                    m = decode_envelope(env)
                except Exception:  # noqa: BLE001  a decode failure ends the connection
                    raise StreamEnded(grpc.StatusCode.INTERNAL, "undecodable envelope") from None
                if content_of(m) == "ack":
                    with self._lock:
                        w = self._pending.get(m.nonce)
                    if w is not None:
                        w.put(m.ack.error)
                    else:
                        self.stray_acks += 1
                    continue
                r = Received(m, env, self.info, self)
                if self.auto_ack and m.nonce != 0:
                    r.ack(self.ack_error())
                self.inbox.put(r)
                if self.on_message:
                    self.on_message(r)
        except StreamEnded as e:
            self.ended = e
        finally:
            self.done.set()
            if self.on_end:
                self.on_end(self, self.ended)

    def send(self, env: "pb.Envelope") -> None:
        self.stream.send(env)

    def recv(self, timeout: float) -> Received:
        """Next delivered message; RecvTimeout after `timeout` s (StreamEnded if it ended first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.inbox.get(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.done.is_set() and self.inbox.empty():
                    raise self.ended or StreamEnded(grpc.StatusCode.UNKNOWN, "connection closed") from None
                if time.monotonic() >= deadline:
                    raise RecvTimeout(f"no message within {timeout}s") from None

    def send_with_ack(self, msg: "pb.GossipMessage", timeout: float) -> Optional[str]:
        """Fabric's SendWithAck to this one peer: fresh random nonce, noop-signed. Returns None on
        success, the error text of an ack with an error, or 'timeout'."""
        m = pb.GossipMessage()
        m.CopyFrom(msg)
        m.nonce = random_nonce()
        w: "queue.Queue" = queue.Queue()
        with self._lock:
            self._pending[m.nonce] = w
        try:
            self.send(noop_sign(m))
            try:
                err = w.get(timeout=timeout)
            except queue.Empty:
                return "timeout"
            return err or None
        finally:
            with self._lock:
                self._pending.pop(m.nonce, None)

    def close(self) -> None:
        if isinstance(self.stream, ClientStream):
            self.stream.cancel()
        else:
            self.stream.finish()


# --------------------------------------------------------------------------
# Initiator: dial, Ping, stream, handshake
# --------------------------------------------------------------------------


def dial(target: str, timeout: float = DIAL_TIMEOUT, tls: Optional[TlsMaterial] = None, client_cert: bool = True) -> grpc.Channel:
    """Blocking dial, at most `timeout` s (grpc.FutureTimeoutError otherwise); mutual TLS with `tls`."""
    if tls is None:
        ch = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    else:
        ch = grpc.secure_channel(target, tls.channel_credentials(client_cert), options=CHANNEL_OPTIONS)
    try:
        grpc.channel_ready_future(ch).result(timeout=timeout)
    except BaseException:
        ch.close()
        raise
    return ch


def ping(channel: grpc.Channel, timeout: float = CONN_TIMEOUT) -> None:
    pb_grpc.GossipStub(channel).Ping(pb.Empty(), timeout=timeout)


@dataclass
class ClientConn:
    channel: grpc.Channel
    stream: ClientStream
    conn: Optional[Conn] = None  # None for a probe
    info: Optional[ConnInfo] = None

    def close(self):
        self.stream.cancel()
        self.channel.close()


def connect(
    own_endpoint: str,
    target: str,
    expected_pki_id: Optional[bytes] = None,
    probe: bool = False,
    auto_ack: bool = False,
    dial_timeout: float = DIAL_TIMEOUT,
    conn_timeout: float = CONN_TIMEOUT,
    on_message: Optional[Callable[[Received], None]] = None,
    on_end: Optional[Callable[[Conn, StreamEnded], None]] = None,
    tls: Optional[TlsMaterial] = None,
) -> ClientConn:
    """Fabric's createConnection: dial, Ping, open GossipStream, handshake, check the expected
    PKI-ID. Raises HandshakeError, grpc errors, or grpc.FutureTimeoutError (dial)."""
    remote_hash = presented_cert_hash(target, tls, dial_timeout) if tls else None
    ch = dial(target, dial_timeout, tls)
    try:
        ping(ch, conn_timeout)
        st = ClientStream(ch, target)
        try:
            info = handshake(
                st,
                own_endpoint,
                probe=probe,
                conn_timeout=conn_timeout,
                own_tls_hash=tls.cert_hash if tls else b"",
                remote_tls_hash=remote_hash,
            )
            if expected_pki_id is not None and info.pki_id != expected_pki_id:
                raise HandshakeError("authentication failure", "PKI-ID of remote peer doesn't match expected PKI-ID")
        except BaseException:
            st.cancel()
            raise
    except BaseException:
        ch.close()
        raise
    cc = ClientConn(ch, st, info=info)
    if not probe:
        cc.conn = Conn(st, info, auto_ack=auto_ack, on_message=on_message, on_end=on_end)
    return cc


def wait_matching(cv: threading.Condition, events: list, pred: Callable, timeout: float, done: Callable[[], bool] = lambda: False):
    """The first of `events` (appended under `cv`, which writers notify) matching `pred`, waiting
    at most `timeout` s; None on time-out, or as soon as `done()` says nothing more will come."""
    deadline = time.monotonic() + timeout
    with cv:
        while True:
            for ev in events:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or done():
                return None
            cv.wait(min(left, 0.5))


# --------------------------------------------------------------------------
# Acceptor: the gossip.Gossip server
# --------------------------------------------------------------------------


@dataclass
class ServerEvent:
    kind: str  # "ping", "connected", "disconnected", "probe", "handshake_failed"
    pki_id: bytes = b""
    remote: str = ""
    error: str = ""
    at: float = field(default_factory=time.monotonic)


class PeerServer(pb_grpc.GossipServicer):
    """A Fabric peer's gossip server, with the unit-test provider unless given another (an MSP one).

    Knobs for tests: auto_ack (ack every received message with a non-zero nonce), ack_error
    (text put in those acks), bad_signature (send a ConnEstablish whose HMAC is wrong),
    silent (never send a ConnEstablish)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_ack: bool = False,
        conn_timeout: float = CONN_TIMEOUT,
        tls: Optional[TlsMaterial] = None,
        provider: TestProvider = PROVIDER,
    ):
        self.tls = tls
        self.provider = provider
        self.auto_ack = auto_ack
        self.ack_error = ""
        self.bad_signature = False
        self.silent = False
        self.conn_timeout = conn_timeout
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=CHANNEL_OPTIONS[1:])
        pb_grpc.add_GossipServicer_to_server(self, self._server)
        if tls is None:
            bound = self._server.add_insecure_port(f"{host}:{port}")
        else:
            bound = self._server.add_secure_port(f"{host}:{port}", tls.server_credentials())
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        self.endpoint = f"{host}:{bound}"
        self.pki_id = provider.pki_id_of(provider.own_identity(self.endpoint))
        self.connections: dict[bytes, Conn] = {}
        self.events: list[ServerEvent] = []
        self.inbox: "queue.Queue[Received]" = queue.Queue()
        self._cv = threading.Condition()
        self.on_connected: Optional[Callable[[Conn], None]] = None
        self.on_message: Optional[Callable[[Received], None]] = None
        self.on_disconnected: Optional[Callable[[Conn], None]] = None
        self.on_handshake_failed: Optional[Callable[[str, str], None]] = None

    # lifecycle
    def start(self) -> "PeerServer":
        self._server.start()
        return self

    def stop(self, grace: float = 0.5) -> None:
        self._server.stop(grace).wait(timeout=5)

    # observation
    def _event(self, ev: ServerEvent) -> None:
        with self._cv:
            self.events.append(ev)
            self._cv.notify_all()

    def wait_event(self, pred: Callable[[ServerEvent], bool], timeout: float) -> ServerEvent:
        ev = wait_matching(self._cv, self.events, pred, timeout)
        if ev is None:
            raise TimeoutError(f"no matching server event within {timeout}s; events: {self.events}")
        return ev

    def count(self, kind: str) -> int:
        with self._cv:
            return sum(1 for e in self.events if e.kind == kind)

    def recv(self, timeout: float) -> Received:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise RecvTimeout(f"server received nothing within {timeout}s") from None

    def connection(self, pki_id: bytes) -> Optional[Conn]:
        with self._cv:
            return self.connections.get(pki_id)

    # gossip.Gossip
    def Ping(self, request, context):  # noqa: N802
        self._event(ServerEvent("ping", remote=context.peer()))
        return pb.Empty()

    def GossipStream(self, request_iterator, context):  # noqa: N802
        st = ServerStream(request_iterator, context)
        if self.silent:
            own = None
        else:
            own = conn_establish(self.endpoint, self.tls.cert_hash if self.tls else b"", provider=self.provider)
            if self.bad_signature:
                own.signature = bytes(b ^ 0xFF for b in own.signature)
        if own is not None:
            yield own
        try:
            if self.tls is not None and st.remote_cert_hash is None:
                raise HandshakeError("no TLS certificate")
            first = st.recv(self.conn_timeout)
            info = check_conn_establish(first, st.remote_address, st.remote_cert_hash if self.tls else None, self.provider)
        except (RecvTimeout, StreamEnded, HandshakeError) as e:
            err = str(e)
            self._event(ServerEvent("handshake_failed", remote=st.remote_address, error=err))
            if self.on_handshake_failed:
                self.on_handshake_failed(st.remote_address, err)
            context.set_code(grpc.StatusCode.UNKNOWN)
            context.set_details(f"authentication failed: {err}")
            return
        if info.probe:
            self._event(ServerEvent("probe", pki_id=info.pki_id, remote=st.remote_address))
            return
        conn = Conn(
            st,
            info,
            auto_ack=self.auto_ack,
            ack_error=lambda: self.ack_error,
            on_message=self._deliver,
            on_end=lambda c, e: st.finish(),
        )
        with self._cv:
            old = self.connections.get(info.pki_id)
            self.connections[info.pki_id] = conn
        if old is not None:
            old.close()
        self._event(ServerEvent("connected", pki_id=info.pki_id, remote=st.remote_address))
        if self.on_connected:
            self.on_connected(conn)
        try:
            for env in st._outgoing():
                yield env
        finally:
            with self._cv:
                if self.connections.get(info.pki_id) is conn:
                    del self.connections[info.pki_id]
            self._event(ServerEvent("disconnected", pki_id=info.pki_id, remote=st.remote_address))
            if self.on_disconnected:
                self.on_disconnected(conn)

    def _deliver(self, r: Received) -> None:
        self.inbox.put(r)
        if self.on_message:
            self.on_message(r)
