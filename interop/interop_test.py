"""Interoperability test: an independent gRPC implementation (Python grpcio, stubs generated at test
time from proto/protos/) speaks Fabric's gossip comm protocol with our node.

Run it with `bash interop/run.sh` (which installs, generates the stubs and builds the node).

===================================================================================================
THE CONTRACT `fabric-gossip node` IMPLEMENTS (the CLI is written against this text)
===================================================================================================

    fabric-gossip node --listen HOST:PORT --test-identity [--peer ADDR]... [--auto-ack]
                       [--tls-cert PEM_FILE --tls-key PEM_FILE --tls-ca PEM_FILE]

  --listen HOST:PORT  address of the gossip gRPC server (plaintext). PORT may be 0: the node binds an
                      ephemeral port, and its endpoint (= identity = PKI-ID) is the address actually
                      bound, e.g. "127.0.0.1:41234", as printed in the "listening" event.
  --test-identity     Fabric's unit-test provider, TEST ONLY: identity = PKI-ID = the endpoint's
                      bytes; Sign = HMAC-SHA256 with key [0, 0, 0]; Verify = recompute and compare;
                      ValidateIdentity always passes. (Required: the node has no other identity yet.)
  --peer ADDR         repeatable; at start-up, Send (as the "send" command below) a noop-signed
                      GossipMessage{nonce 0, tag EMPTY, empty{}} to RemotePeer{ADDR, PKI-ID ADDR},
                      which opens the connection (dial, Ping, handshake): "connected" (inbound
                      false) or "presumed_dead" follows. (Fabric's comm has no bare "connect".)
  --auto-ack          acknowledge (empty error) every received message whose nonce is non-zero.
  --tls-cert/--tls-key/--tls-ca   optional, all three or none: mutual TLS. The node serves TLS with
                      this certificate (PEM; key PKCS#8 PEM), requires client certificates that
                      chain to a CA in --tls-ca, dials with the same certificate as its client
                      certificate, verifies servers against --tls-ca, and puts SHA-256 of that
                      certificate's DER in its ConnEstablish (tls_cert_hash). Test certificates are
                      ECDSA P-256 with SAN IP:127.0.0.1 and DNS:localhost.
  Fabric's timeouts: dialTimeout 3 s, connTimeout 2 s.
  `fabric-gossip node --help` exits 0 and its output contains "--test-identity" (the harness uses
  this to tell whether the subcommand exists yet) and, once TLS is supported, "--tls-cert".

  stdout: only JSON objects, one per line, each flushed at once (logs go to stderr), in the order
  things happen. PKI below is the PKI-ID's bytes as UTF-8 (an endpoint string under
  --test-identity); ADDR is "host:port". Extra fields are allowed and ignored.
    {"event":"listening","addr":ADDR}                 once, first line, when accepting connections
    {"event":"connected","peer":PKI,"inbound":BOOL}   a connection registered after a handshake
                                                      (never for a probe)
    {"event":"disconnected","peer":PKI}               a registered connection removed
    {"event":"handshake_failed","remote":ADDR,"error":TEXT}
                                                      a handshake refused: inbound (remote = the
                                                      socket's remote address) or outbound (remote =
                                                      the endpoint dialled)
    {"event":"presumed_dead","peer":PKI}              Fabric's PresumedDead (send could not get a
                                                      connection, or a write failed)
    {"event":"received","from":PKI,"nonce":N,"content":NAME,"data_hex":HEX,"seq":N}
                                                      per delivered message. NAME = the GossipMessage
                                                      oneof field's name in message.proto
                                                      ("data_msg", "alive_msg", ...). data_hex
                                                      (payload.data) and seq (payload.seq_num) only
                                                      for data_msg. Acknowledgements are intercepted
                                                      and never printed.
    {"event":"ack_result","peer":PKI,"seq":N,"ok":BOOL,"error":TEXT}
                                                      answer to send_with_ack; error "" when ok
  stdin: JSON commands, one per line:
    {"cmd":"send","to":ADDR,"pki_id":PKI,"data":TEXT,"seq":N}            optional "nonce":N (default 0)
        Fabric's Send (non-blocking) of GossipMessage{nonce, tag: EMPTY,
        data_msg{payload{seq_num: seq, data: UTF-8 bytes of TEXT}}}, noop-signed (empty signature),
        to RemotePeer{Endpoint: to, PKIID: pki_id}: the existing connection with that PKI-ID,
        inbound or outbound, else dial + Ping + handshake; failure -> "presumed_dead".
    {"cmd":"send_with_ack","to":ADDR,"pki_id":PKI,"data":TEXT,"seq":N,"timeout_ms":N}
        Fabric's SendWithAck(minAck 1) of the same message (fresh random nonce) -> one "ack_result".
    {"cmd":"stop"}   Stop() (closes every connection), then exit with status 0 within 5 s. SIGINT and
                     SIGTERM: same. End of stdin: same with --exit-on-eof; without it the node
                     keeps running (a daemon).
  An "ack_result" that is not ok has a non-empty error: the peer's ack error text, or why no ack came.
===================================================================================================

Targets: "rust" = the real node (target/debug/fabric-gossip, or --node-bin); "reference" = the
Python stand-in reference_node.py (the harness testing itself: Python client/server vs Python node).
Prints one PASS/FAIL/SKIP line per test and closes with "N passed, M failed[, K skipped]".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import traceback

import fabric_membership as fm
import fabric_peer as fp
from fabric_peer import pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(ROOT, "proto", "tests", "fixtures")
OUT = os.path.join(HERE, "_out")
EVENT_TIMEOUT = 10.0  # generous bound for anything the node should do "now"


class Fail(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


class Identity:
    """A Python peer's claimed endpoint. The port is bound but not listening, so it is unique on
    this machine and any dial to it is refused at once (the node must never need to dial it)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.pki = self.endpoint.encode()

    def close(self):
        self.sock.close()


class NodeProc:
    """The node under test: JSON events from stdout, JSON commands to stdin."""

    def __init__(self, argv, name, extra=(), tls: "fp.TlsMaterial | None" = None, msp: "fm.MspPeer | None" = None):
        os.makedirs(OUT, exist_ok=True)
        self.tls = tls
        self.msp = msp
        self.stderr_path = os.path.join(OUT, f"{name}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        identity = ["--msp-dir", msp.msp_dir, "--msp-id", msp.provider.msp_id] if msp else ["--test-identity"]
        self.argv = list(argv) + ["node", "--listen", "127.0.0.1:0"] + identity + list(extra)
        self.started_ns = time.time_ns()
        if tls is not None:
            self.argv += ["--tls-cert", tls.cert_path, "--tls-key", tls.key_path, "--tls-ca", tls.ca_path]
        self.p = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT
        )
        self.events: list[dict] = []
        self.bad_lines: list[str] = []
        self.cv = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def wait_listening(self):
        ev = self.wait(lambda e: e["event"] == "listening", EVENT_TIMEOUT, what="listening")
        self.addr = ev["addr"]
        self.listening_ns = time.time_ns()
        self.listening = ev
        self.pki = self.msp.provider.pki_id if self.msp else self.addr.encode()
        check(self.events[0] is ev, f"first event is not 'listening': {self.events[0]}")

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            with self.cv:
                try:
                    ev = json.loads(line)
                    if not isinstance(ev, dict) or "event" not in ev:
                        raise ValueError
                    self.events.append(ev)
                except ValueError:
                    self.bad_lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def wait(self, pred, timeout, what="event"):
        ev = fp.wait_matching(self.cv, self.events, pred, timeout, done=lambda: self.eof)
        if ev is None:
            state = "node exited" if self.eof else f"none within {timeout}s"
            raise Fail(f"waiting for {what}: {state}; events so far: {self.events[-12:]}")
        return ev

    def find(self, pred):
        with self.cv:
            return [e for e in self.events if pred(e)]

    def cmd(self, **c):
        self.p.stdin.write((json.dumps(c) + "\n").encode())
        self.p.stdin.flush()

    def stop(self, timeout=5.0) -> int:
        """Send stop, close stdin; the node must exit within `timeout` s. Returns its status."""
        try:
            if self.p.poll() is None:
                self.cmd(cmd="stop")
                self.p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Fail(f"node did not exit within {timeout}s of stop") from None

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=5)

    def stderr_tail(self, n=25):
        self._stderr.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def is_ev(kind, **fields):
    return lambda e: e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())


def client_stream(node, tls=None):
    ch = fp.dial(node.addr, tls=tls)
    return ch, fp.ClientStream(ch, node.addr)


def check_node_conn_establish(env: "pb.Envelope", node, probe=False):
    """The node's ConnEstablish: HMAC verifies, pki_id = identity = listen endpoint, Fabric's
    fields (nonce 0, tag EMPTY, no TLS hash without TLS)."""
    info = fp.check_conn_establish(env)
    m = fp.decode_envelope(env)
    check(info.pki_id == node.pki, f"node's pki_id {info.pki_id!r} != its endpoint {node.addr}")
    check(info.identity == node.pki, f"node's identity {info.identity!r} != its endpoint {node.addr}")
    check(m.nonce == 0 and m.tag == pb.GossipMessage.EMPTY, f"ConnEstablish nonce/tag: {m}")
    want = node.tls.cert_hash if node.tls else b""
    check(m.conn.tls_cert_hash == want, f"tls_cert_hash {m.conn.tls_cert_hash.hex()!r}, expected {want.hex()!r}")
    check(m.conn.probe == probe, f"probe flag {m.conn.probe}, expected {probe}")
    check(env.signature == fp.PROVIDER.sign(env.payload), "HMAC mismatch")
    return info


def printed_pki(pki: bytes, provider) -> str:
    """A PKI-ID as the node prints it: the endpoint text under --test-identity, hex under an MSP."""
    return pki.decode() if provider is fp.PROVIDER else pki.hex()


@contextlib.contextmanager
def connected_client(node, auto_ack=True, tls=None, provider=fp.PROVIDER):
    """Python client -> node under a fresh Identity: dial, Ping, stream, handshake (signed by
    `provider`), the node's "connected" event; yields (me, stream, Conn) and closes all at exit."""
    me = Identity()
    ch = st = None
    try:
        remote_hash = fp.presented_cert_hash(node.addr, tls) if tls else None
        ch, st = client_stream(node, tls)
        fp.ping(ch)
        info = fp.handshake(st, me.endpoint, own_tls_hash=tls.cert_hash if tls else b"", remote_tls_hash=remote_hash, provider=provider)
        check(info.pki_id == node.pki, f"node authenticated as {info.pki_id!r}, expected {node.pki!r}")
        conn = fp.Conn(st, info, auto_ack=auto_ack)
        me.pki = provider.pki_id_of(provider.own_identity(me.endpoint))
        me.printed = printed_pki(me.pki, provider)
        node.wait(is_ev("connected", peer=me.printed, inbound=True), EVENT_TIMEOUT, "connected(inbound)")
        yield me, st, conn
    finally:
        if st is not None:
            st.cancel()
        if ch is not None:
            ch.close()
        me.close()


def expect_refused(node, me: Identity, first: "pb.Envelope", follow=(), tls=None):
    """Open a stream, send `first` (and `follow`), expect: the node's own ConnEstablish, then the
    stream ending with a non-OK status; a handshake_failed event; nothing connected or delivered."""
    ch, st = client_stream(node, tls)
    try:
        st.send(first)
        for env in follow:
            st.send(env)
        got, end = st.recv_until_end(EVENT_TIMEOUT)
        check(len(got) >= 1, "node sent no ConnEstablish before refusing")
        check_node_conn_establish(got[0], node)
        check(len(got) == 1, f"node sent {len(got) - 1} more envelopes after refusing")
        check(end.code != fp.grpc.StatusCode.OK, f"stream ended with OK; expected an error status ({end})")
        node.wait(is_ev("handshake_failed"), EVENT_TIMEOUT, "handshake_failed")
        bad = node.find(lambda e: e.get("peer") == me.endpoint or e.get("from") == me.endpoint)
        check(not bad, f"refused peer was registered or delivered: {bad}")
        return end
    finally:
        st.cancel()
        ch.close()


# --------------------------------------------------------------------------
# Tests. Offline: vectors. Online: each gets a fresh node.
# --------------------------------------------------------------------------

OFFLINE = []
ONLINE = []


def offline(f):
    OFFLINE.append(f)
    return f


def online(*extra):
    def deco(f):
        f.extra = extra
        ONLINE.append(f)
        return f

    return deco


def load(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)["records"]


@offline
def vectors_conn_establish():
    """Our ConnEstablish equals Fabric's byte for byte; Fabric's verify under our checks."""
    for r in load("conn_establish.json"):
        tls = bytes.fromhex(r["tls_cert_hash_hex"])
        env = fp.conn_establish(r["pki_id_string"], tls, r["probe"])
        check(env.SerializeToString().hex() == r["envelope_hex"], f"{r['name']}: envelope differs from Fabric's")
        check(env.payload.hex() == r["payload_hex"], f"{r['name']}: payload differs")
        fabric_env = pb.Envelope.FromString(bytes.fromhex(r["envelope_hex"]))
        info = fp.check_conn_establish(fabric_env, remote_tls_cert_hash=tls if tls else None)
        check(info.pki_id == r["pki_id_string"].encode() and info.probe == r["probe"], f"{r['name']}: info {info}")
        tampered = pb.Envelope(payload=fabric_env.payload, signature=bytes([fabric_env.signature[0] ^ 1]) + fabric_env.signature[1:])
        try:
            fp.check_conn_establish(tampered)
            raise Fail(f"{r['name']}: tampered signature accepted")
        except fp.HandshakeError as e:
            check(e.kind == "signature", f"tampered signature refused as {e.kind!r}")


@offline
def vectors_gossip_messages():
    """Every Fabric GossipMessage vector decodes with the generated stubs, re-encodes to the same
    bytes, and its signed envelope verifies with the unit-test HMAC."""
    recs = load("gossip_messages.json")
    check(len(recs) >= 20, f"only {len(recs)} records")
    for r in recs:
        raw = bytes.fromhex(r["bytes_hex"])
        m = pb.GossipMessage.FromString(raw)
        check(m.SerializeToString() == raw, f"{r['name']}: re-encoding differs")
        env = pb.Envelope.FromString(bytes.fromhex(r["signed_envelope_hex"]))
        check(env.payload == raw, f"{r['name']}: envelope payload")
        fp.verify_envelope(env, b"any identity")
        check(fp.noop_sign(m).SerializeToString().hex() == r["noop_envelope_hex"], f"{r['name']}: noop envelope")
    by = {r["name"]: r for r in recs}
    h = by["harness_data_msg_nonce3_seq1_16B"]
    ours = fp.noop_sign(fp.data_message(1, bytes(range(1, 17)), nonce=3)).SerializeToString().hex()
    check(ours == h["noop_envelope_hex"], "our DataMessage differs from Fabric's")
    a = by["ack_no_error"]
    ack = fp.ack_message(4098)
    ack.channel = b"vectorchannel"
    check(fp.noop_sign(ack).SerializeToString().hex() == a["noop_envelope_hex"], "our Ack differs from Fabric's")


@offline
def vectors_secret_envelope():
    """An Envelope with a SecretEnvelope verifies, and fails when the secret's signature is broken."""
    for r in load("secret_envelope.json"):
        env = pb.Envelope.FromString(bytes.fromhex(r["envelope_hex"]))
        fp.verify_envelope(env, b"127.0.0.1:7051")
        sec = pb.Secret.FromString(env.secret_envelope.payload)
        check(sec.internalEndpoint == r["internal_endpoint"], "internal endpoint")
        env.secret_envelope.signature = b"\x00" * 32
        try:
            fp.verify_envelope(env, b"x")
            raise Fail("broken secret signature accepted")
        except fp.VerifyError:
            pass


CAPTURE = os.path.join(HERE, "vectors", "fabric_peer_capture.json")


def expect_refused_alive(env, provider, identities, what):
    try:
        fm.check_alive(env, provider, identities)
    except fp.VerifyError:
        return
    raise Fail(f"{what}: accepted")


@offline
def vectors_fabric_peer_capture():
    """Envelopes captured from a real Fabric v2.4.9 peer (Org1MSP, X.509/ECDSA P-256): each decodes
    and re-encodes to the same bytes; its certificate chains to the Org1MSP CA and hashes to the
    PKI-ID given; both ConnEstablish verify; the MembershipRequest is unsigned, tag EMPTY, with a
    nonce, and carries the captured alive message verbatim; that alive message, its SecretEnvelope
    (internal endpoint) included, verifies with the peer's certificate, with Fabric's low-S."""
    with open(CAPTURE) as f:
        cap = json.load(f)
    msp_id = cap["msp_id"]
    verifier = fm.MspProvider(msp_id, cap["fabric_peer_signcert_pem"].encode(), None, {msp_id: [cap["org_ca_cert_pem"].encode()]})
    peer_pki = bytes.fromhex(cap["fabric_peer_pki_id_hex"])
    check(verifier.pki_id == peer_pki, "PKI-ID is not SHA-256(mspid || certificate PEM)")
    verifier.validate_identity(verifier.identity)
    other_ca = fp.make_pki(os.path.join(OUT, "capture"), ["unused"], ca_name="other-ca")["unused"].ca_pem
    stranger = fm.MspProvider(msp_id, cap["fabric_peer_signcert_pem"].encode(), None, {msp_id: [other_ca]})
    try:
        stranger.validate_identity(verifier.identity)
        raise Fail("certificate accepted under a CA that did not issue it")
    except fp.VerifyError:
        pass
    recs = {r["name"]: r for r in cap["records"]}
    envs = {}
    for name, r in recs.items():
        raw = bytes.fromhex(r["envelope_hex"])
        env = pb.Envelope.FromString(raw)
        check(env.SerializeToString() == raw, f"{name}: envelope re-encodes differently")
        m = fp.decode_envelope(env)
        check(m.SerializeToString() == env.payload, f"{name}: message re-encodes differently")
        check(m.tag == pb.GossipMessage.EMPTY, f"{name}: tag {m.tag}")
        check(bool(env.signature) == r["signed"], f"{name}: signed is {bool(env.signature)}")
        if env.signature:
            check(fm.is_low_s(env.signature, "secp256r1"), f"{name}: Fabric signed with a high S")
        envs[name] = (env, m)
    for name in ("conn_establish_as_server", "conn_establish_as_client"):
        env, _ = envs[name]
        info = fp.check_conn_establish(env, provider=verifier)
        check(info.pki_id == peer_pki and info.identity == verifier.identity and not info.probe, f"{name}: {info}")
        forged = pb.Envelope(payload=env.payload, signature=fm.to_high_s(env.signature))
        try:
            fp.check_conn_establish(forged, provider=verifier)
            raise Fail(f"{name}: high-S signature accepted")
        except fp.HandshakeError as e:
            check(e.kind == "signature", f"{name}: high-S refused as {e.kind!r}")
    req_env, req = envs["membership_request_envelope"]
    alive_env, _ = envs["alive_message_envelope"]
    check(fp.content_of(req) == "mem_req" and req.nonce != 0 and not list(req.mem_req.known), f"request {req}")
    check(req.mem_req.self_information == alive_env, "self_information is not the captured alive envelope")
    a = fm.check_alive(alive_env, verifier, {})
    check(a.pki_id == peer_pki and a.embedded_identity and a.identity == verifier.identity, f"alive {a}")
    check(a.endpoint == "127.0.0.1:17051" and a.internal_endpoint == "127.0.0.1:17051", f"alive endpoints {a}")
    check(a.inc > 1_600_000_000 * 10**9 and a.seq >= 1 and a.msg.nonce == 0, f"alive timestamp {a.msg}")
    for what, mutate in (
        ("high-S alive signature", lambda e: setattr(e, "signature", fm.to_high_s(e.signature))),
        ("flipped alive signature", lambda e: setattr(e, "signature", e.signature[:-1] + bytes([e.signature[-1] ^ 1]))),
        ("flipped secret signature", lambda e: setattr(e.secret_envelope, "signature", e.secret_envelope.signature[:-1] + bytes([e.secret_envelope.signature[-1] ^ 1]))),
        ("changed internal endpoint", lambda e: setattr(e.secret_envelope, "payload", pb.Secret(internalEndpoint="10.0.0.1:7051").SerializeToString())),
        ("changed sequence number", lambda e: setattr(e, "payload", e.payload.replace(fm.alive_message(b"", "", a.inc, a.seq).alive_msg.timestamp.SerializeToString(), fm.alive_message(b"", "", a.inc, a.seq + 1).alive_msg.timestamp.SerializeToString()))),
    ):
        env = pb.Envelope()
        env.CopyFrom(alive_env)
        mutate(env)
        check(env != alive_env, f"{what}: mutation changed nothing")
        expect_refused_alive(env, verifier, {}, what)
    stripped = pb.Envelope(payload=alive_env.payload, signature=alive_env.signature)
    check(fm.check_alive(stripped, verifier, {}).internal_endpoint == "", "an alive without its secret still verifies")


# a. Python client -> node


@online("--auto-ack")
def client_ping_and_handshake(node):
    """Ping answers; the node's ConnEstablish verifies and names its listen endpoint; it registers us."""
    me = Identity()
    ch, st = client_stream(node)
    try:
        fp.ping(ch)
        st.send(fp.conn_establish(me.endpoint))
        first = st.recv(fp.CONN_TIMEOUT + 1)
        check_node_conn_establish(first, node)
        node.wait(is_ev("connected", peer=me.endpoint, inbound=True), EVENT_TIMEOUT, "connected(inbound)")
    finally:
        st.cancel()
        ch.close()
        me.close()


@online("--auto-ack")
def client_sends_data_and_gets_ack(node):
    """Three DataMessages arrive in order; a message with a nonce is acked (auto-ack), others not."""
    with connected_client(node) as (me, st, conn):
        for i in (1, 2, 3):
            conn.send(fp.noop_sign(fp.data_message(i, f"interop-{i}".encode())))
        for i in (1, 2, 3):
            node.wait(is_ev("received", **{"from": me.endpoint}, seq=i), EVENT_TIMEOUT, f"received seq {i}")
        got = node.find(is_ev("received", **{"from": me.endpoint}))
        check([e["seq"] for e in got] == [1, 2, 3], f"order: {got}")
        for i, e in zip((1, 2, 3), got):
            check(e["content"] == "data_msg" and e["nonce"] == 0, f"event {e}")
            check(e["data_hex"] == f"interop-{i}".encode().hex(), f"data of {e}")
        # the ack path: Fabric's SendWithAck shape (random nonce, noop-signed), acked with empty error
        err = conn.send_with_ack(fp.data_message(4, b"ack-me"), timeout=EVENT_TIMEOUT)
        check(err is None, f"node's ack: {err!r}")
        ev = node.wait(is_ev("received", **{"from": me.endpoint}, seq=4), EVENT_TIMEOUT, "received seq 4")
        check(ev["nonce"] != 0, f"nonce not reported: {ev}")
        check(conn.stray_acks == 0, f"node acked {conn.stray_acks} message(s) that had nonce 0")


@online("--auto-ack")
def node_sends_on_inbound_connection(node):
    """The node sends to us over the stream we opened (it must not dial our unreachable endpoint),
    noop-signed; its send_with_ack gets our ack."""
    with connected_client(node) as (me, st, conn):
        node.cmd(cmd="send", to=me.endpoint, pki_id=me.endpoint, data="back-to-you", seq=9)
        r = conn.recv(EVENT_TIMEOUT)
        check(fp.content_of(r.msg) == "data_msg", f"got {r.msg}")
        p = r.msg.data_msg.payload
        check(p.seq_num == 9 and p.data == b"back-to-you", f"payload {p}")
        check(r.msg.nonce == 0 and r.msg.tag == pb.GossipMessage.EMPTY, f"nonce/tag {r.msg}")
        check(r.envelope.signature == b"", "Send must be noop-signed")
        node.cmd(cmd="send_with_ack", to=me.endpoint, pki_id=me.endpoint, data="ack?", seq=10, timeout_ms=5000)
        ev = node.wait(is_ev("ack_result", seq=10), EVENT_TIMEOUT, "ack_result")
        check(ev["ok"] is True and ev["error"] == "" and ev["peer"] == me.endpoint, f"ack_result {ev}")
        r = conn.recv(EVENT_TIMEOUT)
        check(r.msg.nonce != 0 and r.msg.data_msg.payload.seq_num == 10, f"send_with_ack message {r.msg}")
        check(not node.find(is_ev("presumed_dead")), f"presumed dead: {node.find(is_ev('presumed_dead'))}")


@online("--auto-ack")
def client_close_disconnects(node):
    """When we end our stream the node removes the connection and says so."""
    with connected_client(node) as (me, st, conn):
        st.close_send()
        node.wait(is_ev("disconnected", peer=me.endpoint), EVENT_TIMEOUT, "disconnected")
        check(conn.done.wait(EVENT_TIMEOUT), "node did not end the stream after we closed ours")


# b. node -> Python server


def with_server(f):
    def run(node):
        srv = fp.PeerServer(auto_ack=True).start()
        try:
            f(node, srv)
        finally:
            srv.stop()

    run.__name__ = f.__name__
    run.__doc__ = f.__doc__
    return run


@online("--auto-ack")
@with_server
def node_dials_python_server(node, srv):
    """send to the Python server: the node dials, Pings, handshakes (the server authenticates it as
    its listen endpoint) and the message arrives; the server's reply on that stream reaches the node."""
    node.cmd(cmd="send", to=srv.endpoint, pki_id=srv.endpoint, data="hello-python", seq=5)
    ev = srv.wait_event(lambda e: e.kind == "connected", EVENT_TIMEOUT)
    check(ev.pki_id == node.pki, f"server authenticated {ev.pki_id!r}, expected {node.addr}")
    pings = [e for e in srv.events if e.kind == "ping"]
    check(pings and pings[0].at <= ev.at, "node opened the stream without Pinging first")
    r = srv.recv(EVENT_TIMEOUT)
    p = r.msg.data_msg.payload
    check(p.seq_num == 5 and p.data == b"hello-python", f"server got {r.msg}")
    check(r.info.pki_id == node.pki and r.info.identity == node.pki, f"conn info {r.info}")
    node.wait(is_ev("connected", peer=srv.endpoint, inbound=False), EVENT_TIMEOUT, "connected(outbound)")
    srv.connection(node.pki).send(fp.noop_sign(fp.data_message(6, b"from-python-server")))
    ev = node.wait(is_ev("received", **{"from": srv.endpoint}), EVENT_TIMEOUT, "received from server")
    check(ev["seq"] == 6 and ev["data_hex"] == b"from-python-server".hex(), f"event {ev}")
    # a second send reuses the connection: no second handshake
    node.cmd(cmd="send", to=srv.endpoint, pki_id=srv.endpoint, data="again", seq=7)
    r = srv.recv(EVENT_TIMEOUT)
    check(r.msg.data_msg.payload.seq_num == 7, f"second message {r.msg}")
    check(srv.count("connected") == 1, f"{srv.count('connected')} handshakes for one peer")


@online()
@with_server
def node_send_with_ack_to_python(node, srv):
    """send_with_ack: our ack -> ok; an ack with error text -> that error; no ack -> failure by timeout_ms."""
    node.cmd(cmd="send_with_ack", to=srv.endpoint, pki_id=srv.endpoint, data="a", seq=1, timeout_ms=5000)
    ev = node.wait(is_ev("ack_result", seq=1), EVENT_TIMEOUT, "ack_result 1")
    check(ev["ok"] is True and ev["error"] == "" and ev["peer"] == srv.endpoint, f"ack_result {ev}")
    r = srv.recv(EVENT_TIMEOUT)
    check(r.msg.nonce != 0 and r.envelope.signature == b"", "SendWithAck: random nonce, noop-signed")
    srv.ack_error = "python says no"
    node.cmd(cmd="send_with_ack", to=srv.endpoint, pki_id=srv.endpoint, data="b", seq=2, timeout_ms=5000)
    ev = node.wait(is_ev("ack_result", seq=2), EVENT_TIMEOUT, "ack_result 2")
    check(ev["ok"] is False and ev["error"] == "python says no", f"ack_result {ev}")
    srv.connection(node.pki).auto_ack = False
    t0 = time.monotonic()
    node.cmd(cmd="send_with_ack", to=srv.endpoint, pki_id=srv.endpoint, data="c", seq=3, timeout_ms=500)
    ev = node.wait(is_ev("ack_result", seq=3), EVENT_TIMEOUT, "ack_result 3")
    took = time.monotonic() - t0
    check(ev["ok"] is False and ev["error"], f"ack_result without an ack: {ev}")
    check(0.4 <= took <= 5.0, f"no-ack failure after {took:.2f}s, timeout_ms was 500")


@online()
def node_peer_flag_connects(node_factory):
    """--peer ADDR: the node connects at start-up and sends an Empty message."""
    srv = fp.PeerServer().start()
    try:
        node = node_factory("--peer", srv.endpoint)
        node.wait(is_ev("connected", peer=srv.endpoint, inbound=False), EVENT_TIMEOUT, "connected(--peer)")
        ev = srv.wait_event(lambda e: e.kind == "connected", EVENT_TIMEOUT)
        check(ev.pki_id == node.pki, f"server authenticated {ev.pki_id!r}")
        r = srv.recv(EVENT_TIMEOUT)
        check(fp.content_of(r.msg) == "empty" and r.msg.tag == pb.GossipMessage.EMPTY, f"--peer sent {r.msg}")
        check(r.msg.nonce == 0 and r.envelope.signature == b"", "--peer message: nonce 0, noop-signed")
    finally:
        srv.stop()


node_peer_flag_connects.wants_factory = True


@online()
@with_server
def node_refuses_server_with_bad_signature(node, srv):
    """A server whose ConnEstablish has a bad HMAC: the node refuses it and presumes it dead."""
    srv.bad_signature = True
    node.cmd(cmd="send", to=srv.endpoint, pki_id=srv.endpoint, data="never", seq=1)
    node.wait(is_ev("handshake_failed"), EVENT_TIMEOUT, "handshake_failed(outbound)")
    node.wait(is_ev("presumed_dead", peer=srv.endpoint), EVENT_TIMEOUT, "presumed_dead")
    check(srv.inbox.empty(), "a message reached a peer the node had refused")
    check(not node.find(is_ev("connected", peer=srv.endpoint)), "refused peer registered")


@online()
def node_presumes_unreachable_peer_dead(node):
    """send to an endpoint that refuses connections: presumed_dead."""
    me = Identity()
    try:
        node.cmd(cmd="send", to=me.endpoint, pki_id=me.endpoint, data="void", seq=1)
        node.wait(is_ev("presumed_dead", peer=me.endpoint), EVENT_TIMEOUT, "presumed_dead")
    finally:
        me.close()


# c. Negative handshakes (inbound)


def _bad_hmac(me):
    env = fp.conn_establish(me.endpoint)
    env.signature = bytes([env.signature[0] ^ 0x80]) + env.signature[1:]
    return env


@online("--auto-ack")
def refuses_bad_hmac(node):
    """A ConnEstablish with a bad HMAC is refused; a DataMessage sent after it is not delivered."""
    me = Identity()
    try:
        expect_refused(node, me, _bad_hmac(me), follow=[fp.noop_sign(fp.data_message(1, b"smuggled"))])
    finally:
        me.close()


@online("--auto-ack")
def refuses_first_message_not_conn(node):
    """A first message that is not a ConnEstablish (a signed DataMessage) is refused."""
    me = Identity()
    try:
        expect_refused(node, me, fp.sign(fp.data_message(1, b"no-handshake", nonce=5)))
    finally:
        me.close()


@online("--auto-ack")
def refuses_pki_id_not_matching_identity(node):
    """pki_id != PKI-ID-of(identity) is refused even though the HMAC is valid."""
    me, other = Identity(), Identity()
    try:
        env = fp.sign(fp.conn_establish_message(me.pki, other.pki))
        expect_refused(node, me, env)
        check(not node.find(lambda e: e.get("peer") == other.endpoint), "registered under the identity")
    finally:
        me.close()
        other.close()


@online("--auto-ack")
def refuses_missing_pki_id(node):
    """A ConnEstablish without a PKI-ID is refused."""
    me = Identity()
    try:
        expect_refused(node, me, fp.sign(fp.conn_establish_message(b"", me.pki)))
    finally:
        me.close()


@online()
def refuses_silence_after_conn_timeout(node):
    """No ConnEstablish at all: the node gives up after connTimeout (2 s) with an error status."""
    ch, st = client_stream(node)
    try:
        t0 = time.monotonic()
        got, end = st.recv_until_end(EVENT_TIMEOUT)
        took = time.monotonic() - t0
        check(len(got) == 1, f"expected only the node's ConnEstablish, got {len(got)} envelopes")
        check_node_conn_establish(got[0], node)
        check(end.code != fp.grpc.StatusCode.OK, f"silent peer: stream ended with {end}")
        check(1.0 <= took <= 6.0, f"stream ended after {took:.2f}s; connTimeout is 2 s")
        node.wait(is_ev("handshake_failed"), EVENT_TIMEOUT, "handshake_failed")
    finally:
        st.cancel()
        ch.close()


# d. Probe


@online("--auto-ack")
def probe_registers_nothing(node):
    """probe: true -> the node answers with its ConnEstablish (probe false), ends the stream with
    OK and registers nothing (a node may report the probe as a `probed` event, nothing else); a normal
    peer connecting afterwards is registered."""
    me = Identity()
    ch, st = client_stream(node)
    try:
        st.send(fp.conn_establish(me.endpoint, probe=True))
        got, end = st.recv_until_end(EVENT_TIMEOUT)
        check(len(got) == 1, f"probe: expected one envelope, got {len(got)}")
        check_node_conn_establish(got[0], node)
        check(end.code == fp.grpc.StatusCode.OK, f"probe stream should end with OK, ended {end}")
        with connected_client(node):  # barrier: events are printed in order
            pass
        seen = node.find(lambda e: me.endpoint in (e.get("peer"), e.get("from")))
        bad = [e for e in seen if e.get("event") != "probed"]
        check(not bad, f"probe registered something: {bad}")
    finally:
        st.cancel()
        ch.close()
        me.close()


@online("--auto-ack")
def stop_closes_and_exits(node):
    """stop: the node ends our stream and exits with status 0 within 5 s."""
    with connected_client(node) as (me, st, conn):
        code = node.stop(timeout=5.0)
        check(code == 0, f"exit status {code}")
        check(conn.done.wait(5.0), "our stream was not ended by stop")


# e. Mutual TLS (when the node supports --tls-cert). PKI: one CA, leaves node / py-a / py-b /
# py-server, and a rogue CA with leaf rogue; made fresh per run under _out/pki.

PKI: dict = {}


def tls_online(f):
    f.tls = True
    return f


def make_test_pki():
    d = os.path.join(OUT, "pki")
    PKI.update(fp.make_pki(d, ["node", "py-a", "py-b", "py-server"]))
    PKI.update(fp.make_pki(d, ["rogue"], ca_name="rogue-ca"))


@online("--auto-ack")
@tls_online
def tls_client_to_node(node):
    """Mutual TLS, Python client -> node: both bind their certificate hash; messages flow both ways."""
    tls = PKI["py-a"]
    check(fp.presented_cert_hash(node.addr, tls) == node.tls.cert_hash, "node presents another certificate")
    with connected_client(node, tls=tls) as (me, st, conn):
        check_node_conn_establish(fp.pb.Envelope(payload=conn.info.signed_data, signature=conn.info.signature), node)
        conn.send(fp.noop_sign(fp.data_message(1, b"over-tls")))
        ev = node.wait(is_ev("received", **{"from": me.endpoint}), EVENT_TIMEOUT, "received over TLS")
        check(ev["data_hex"] == b"over-tls".hex(), f"event {ev}")
        node.cmd(cmd="send", to=me.endpoint, pki_id=me.endpoint, data="tls-back", seq=2)
        r = conn.recv(EVENT_TIMEOUT)
        check(r.msg.data_msg.payload.data == b"tls-back", f"got {r.msg}")


@online()
@tls_online
def tls_node_to_python_server(node):
    """Mutual TLS, node -> Python server: the server checks the node's tls_cert_hash against the
    client certificate the node presented; send_with_ack works."""
    srv = fp.PeerServer(auto_ack=True, tls=PKI["py-server"]).start()
    try:
        node.cmd(cmd="send_with_ack", to=srv.endpoint, pki_id=srv.endpoint, data="tls", seq=1, timeout_ms=5000)
        ev = node.wait(is_ev("ack_result", seq=1), EVENT_TIMEOUT, "ack_result over TLS")
        check(ev["ok"] is True, f"ack_result {ev}")
        r = srv.recv(EVENT_TIMEOUT)
        check(r.info.pki_id == node.pki, f"server authenticated {r.info.pki_id!r}")
        check(r.info.tls_cert_hash == node.tls.cert_hash, "node bound another certificate's hash")
    finally:
        srv.stop()


@online("--auto-ack")
@tls_online
def tls_refuses_wrong_cert_hash(node):
    """A ConnEstablish (valid HMAC) whose tls_cert_hash is not the certificate we presented is refused."""
    me = Identity()
    try:
        env = fp.conn_establish(me.endpoint, tls_cert_hash=PKI["py-b"].cert_hash)
        expect_refused(node, me, env, tls=PKI["py-a"])
    finally:
        me.close()


@online()
@tls_online
def tls_refuses_plaintext_untrusted_and_certless_clients(node):
    """Plaintext, a client certificate from another CA, and no client certificate: no RPC gets through."""
    attempts = {
        "plaintext": fp.grpc.insecure_channel(node.addr, options=fp.CHANNEL_OPTIONS),
        "rogue CA": fp.grpc.secure_channel(node.addr, fp.grpc.ssl_channel_credentials(
            root_certificates=PKI["py-a"].ca_pem, private_key=PKI["rogue"].key_pem,
            certificate_chain=PKI["rogue"].cert_pem), options=fp.CHANNEL_OPTIONS),
        "no client cert": fp.grpc.secure_channel(node.addr, PKI["py-a"].channel_credentials(with_client_cert=False), options=fp.CHANNEL_OPTIONS),
    }
    try:
        for what, ch in attempts.items():
            try:
                fp.ping(ch, timeout=3.0)
                raise Fail(f"{what}: Ping answered")
            except fp.grpc.RpcError as e:
                check(e.code() != fp.grpc.StatusCode.OK, f"{what}: {e}")
        check(not node.find(is_ev("connected")), f"registered: {node.find(is_ev('connected'))}")
    finally:
        for ch in attempts.values():
            ch.close()


# f. Membership (Fabric's discovery) with MSP identities: the real node only (reference_node.py has
# no membership layer). Org1MSP: one CA, MSP folders node / py-a / py-b; Org2MSP: org2-a / org2-b
# (the Python providers of each organization trust the other's CA); a rogue CA also naming itself
# Org1MSP; made fresh per run under _out/msp.

MSP: dict = {}
NODE_EXTERNAL = "node.org1.example.com:7051"  # advertised only: nobody dials it
EXPIRATION = 3.0  # --alive-expiration of the expiry scenario (Fabric: 25 s)


def membership_test(*extra):
    def deco(f):
        f.msp = True
        return online("--membership", *extra)(f)

    return deco


def make_test_msp():
    d = os.path.join(OUT, "msp")
    org1 = fm.make_msp(d, "Org1MSP", ["node", "py-a", "py-b"])
    org2 = fm.make_msp(os.path.join(d, "org2"), "Org2MSP", ["org2-a", "org2-b"])
    for mine, theirs in ((org1, org2), (org2, org1)):  # the two organizations trust each other
        other = next(iter(theirs.values()))
        for peer in mine.values():
            peer.provider.trust(other.provider.msp_id, other.ca_pem)
    MSP.update(org1)
    MSP.update(org2)
    MSP.update(fm.make_msp(os.path.join(d, "rogue"), "Org1MSP", ["rogue"]))


def answer(node, cmd, event):
    """Send `cmd` and return the `event` line it causes (the first one not seen before)."""
    seen = {id(e) for e in node.find(is_ev(event))}
    node.cmd(cmd=cmd)
    return node.wait(lambda e: e.get("event") == event and id(e) not in seen, EVENT_TIMEOUT, f"{event} (answer to {cmd})")


def member_row(node, printed):
    rows = [m for m in answer(node, "members", "members")["members"] if m["pki_id"] == printed]
    return rows[0] if rows else None


def wait_member(node, printed, pred, what):
    """Ask for the member table until `printed`'s row satisfies `pred`; Fail after EVENT_TIMEOUT."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        row = member_row(node, printed)
        if row is not None and pred(row):
            return row
        if time.monotonic() > deadline:
            raise Fail(f"{what}: member row {row}")


def recv_content(conn, content, pred=lambda m: True, timeout=EVENT_TIMEOUT) -> "fp.Received":
    """The next message of `content` satisfying `pred`, skipping what else the node sends (its
    alive messages and membership requests)."""
    deadline = time.monotonic() + timeout
    while True:
        r = conn.recv(max(0.0, deadline - time.monotonic()))
        if fp.content_of(r.msg) == content and pred(r.msg):
            return r


class Heart:
    """Our alive messages: one incarnation (now, in Unix ns) and a rising sequence number."""

    def __init__(self, provider, internal_endpoint, external_endpoint=""):
        self.provider, self.internal, self.external = provider, internal_endpoint, external_endpoint
        self.inc, self.seq = time.time_ns(), 0

    def beat(self, identity=False) -> "pb.Envelope":
        self.seq += 1
        return fm.signed_alive(self.provider, self.internal, self.inc, self.seq, endpoint=self.external, identity=identity)


def check_published_identity(alive: "fm.Alive", identity: bytes, node) -> None:
    """Fabric embeds the identity in its alive messages for publishCertPeriod (10 s) after start."""
    if alive.embedded_identity:
        check(alive.identity == identity, "the alive message embeds another identity than the handshake's")
    else:
        check(time.time_ns() - node.started_ns > 10 * 10**9, "an alive message within 10 s of start must carry the node's identity")


@membership_test("--external-endpoint", NODE_EXTERNAL)
def members_request_answered(node):
    """A signed MembershipRequest (noop-signed outer envelope, our signed alive with identity and
    secret inside) is answered with a MembershipResponse carrying its nonce, whose last alive
    envelope is the node's own: it verifies against the node's MSP identity (ECDSA, low-S), with
    the node's PKI-ID, external endpoint, internal endpoint (secret) and incarnation = its start
    time in Unix ns; our alive is relayed verbatim; the node lists us. A request whose
    self_information is another peer's is not answered and that peer is not learned."""
    py, other = MSP["py-a"].provider, MSP["py-b"].provider
    with connected_client(node, provider=py) as (me, st, conn):
        check(conn.info.identity == node.msp.provider.identity, "the node's ConnEstablish does not carry its MSP identity")
        spoof = fp.random_nonce()
        conn.send(fp.noop_sign(fm.membership_request(Heart(other, me.endpoint).beat(identity=True), spoof)))
        heart = Heart(py, me.endpoint)
        mine = heart.beat(identity=True)
        nonce = fp.random_nonce()
        conn.send(fp.noop_sign(fm.membership_request(mine, nonce)))
        r = recv_content(conn, "mem_res", lambda m: m.nonce in (nonce, spoof))
        check(r.msg.nonce == nonce, "the spoofed request (self_information not the handshake's PKI-ID) was answered")
        check(r.envelope.signature == b"" and r.msg.tag == pb.GossipMessage.EMPTY, f"response envelope: tag {r.msg.tag}, signed {bool(r.envelope.signature)}")
        res = r.msg.mem_res
        check(len(res.alive) >= 1 and len(res.dead) == 0, f"{len(res.alive)} alive, {len(res.dead)} dead")
        known = {node.pki: conn.info.identity, py.pki_id: py.identity}
        for env in res.alive:
            fm.check_alive(env, py, known)  # every alive envelope verifies as its member signed it
        own = fm.check_alive(res.alive[-1], py, known)
        check(own.pki_id == node.pki, f"last alive is {own.pki_id.hex()}, not the node's")
        check(own.endpoint == NODE_EXTERNAL, f"endpoint {own.endpoint!r}, expected --external-endpoint {NODE_EXTERNAL}")
        check(own.internal_endpoint == node.addr, f"internal endpoint {own.internal_endpoint!r}, expected {node.addr}")
        check(node.started_ns <= own.inc <= node.listening_ns, f"incarnation {own.inc} not the start time ({node.started_ns}..{node.listening_ns})")
        check(own.seq >= 1 and own.msg.nonce == 0 and own.msg.tag == pb.GossipMessage.EMPTY, f"alive {own.msg}")
        check_published_identity(own, conn.info.identity, node)
        check(mine in res.alive, "our own alive is not in the response as we signed it")
        node.wait(is_ev("member_alive", pki_id=me.printed), EVENT_TIMEOUT, "member_alive for us")
        row = member_row(node, me.printed)
        want = {"msp_id": "Org1MSP", "endpoint": "", "internal_endpoint": me.endpoint, "inc": heart.inc, "seq": 1, "alive": True}
        check(row is not None and all(row[k] == v for k, v in want.items()), f"our row {row}, expected {want}")
        check(member_row(node, other.pki_id.hex()) is None, "the spoofed peer was learned")
        m = answer(node, "stats", "stats")["membership"]
        check(m["requests_received"] == 2 and m["responses_sent"] == 1, f"two requests, one answered: stats {m}")


@membership_test()
def members_bootstrap_through_python(node_factory):
    """`--bootstrap` a Python peer of the same MSP: the node probes it, then sends a
    MembershipRequest (noop-signed, tag EMPTY, a random nonce) whose self_information verifies
    against the node's identity with its PKI-ID, internal endpoint (secret) and identity; our
    response (our alive and a third member's, as signed by each) makes the node report the
    bootstrap joined and learn both members."""
    py, third = MSP["py-a"].provider, MSP["py-b"].provider
    srv = fp.PeerServer(provider=py).start()
    absent = Identity()  # the third member's endpoint: nobody listens there
    requests: "queue.Queue[fp.Received]" = queue.Queue()
    heart = Heart(py, srv.endpoint)
    theirs = Heart(third, absent.endpoint).beat(identity=True)

    def on_message(r: "fp.Received"):
        if fp.content_of(r.msg) == "mem_req":
            requests.put(r)
            r.respond(fm.membership_response([theirs, heart.beat(identity=True)], [], r.msg.nonce))

    srv.on_message = on_message
    try:
        node = node_factory("--bootstrap", srv.endpoint)
        srv.wait_event(lambda e: e.kind == "probe", EVENT_TIMEOUT)
        try:
            r = requests.get(timeout=EVENT_TIMEOUT)
        except queue.Empty:
            raise Fail(f"no membership request from the node; server events {srv.events}") from None
        check(r.info.pki_id == node.pki and r.info.identity == node.msp.provider.identity, f"connection of {r.info.pki_id.hex()}")
        check(r.envelope.signature == b"" and r.msg.tag == pb.GossipMessage.EMPTY and r.msg.nonce != 0, f"request: signed {bool(r.envelope.signature)}, tag {r.msg.tag}, nonce {r.msg.nonce}")
        me = fm.check_alive(r.msg.mem_req.self_information, py, {node.pki: r.info.identity})
        check(me.pki_id == node.pki and me.internal_endpoint == node.addr and me.endpoint == "", f"self_information {me}")
        check(node.started_ns <= me.inc <= time.time_ns() and me.seq >= 1, f"self_information {me.msg}")
        check_published_identity(me, r.info.identity, node)
        ev = node.wait(is_ev("bootstrap_joined", endpoint=srv.endpoint), EVENT_TIMEOUT, "bootstrap_joined")
        check(ev["pki_id"] == py.pki_id.hex(), f"bootstrap_joined {ev}")
        a = node.wait(is_ev("member_alive", pki_id=py.pki_id.hex()), EVENT_TIMEOUT, "member_alive for the bootstrap peer")
        check(a["internal_endpoint"] == srv.endpoint and a["inc"] == heart.inc and a["msp_id"] == "Org1MSP", f"member_alive {a}")
        b = node.wait(is_ev("member_alive", pki_id=third.pki_id.hex()), EVENT_TIMEOUT, "member_alive for the third member")
        check(b["internal_endpoint"] == absent.endpoint and b["seq"] == 1, f"member_alive {b}")
    finally:
        srv.stop()
        absent.close()


members_bootstrap_through_python.wants_factory = True


@membership_test()
def members_disclosure_to_another_org(node_factory):
    """Fabric's disclosure rules, node of Org1MSP with an external endpoint, trusting Org2MSP: a
    peer of Org2MSP with an external endpoint is answered with the members that have one (an Org1
    member with one, itself, the node last) and no secret (internal endpoint) at all; the Org1
    member without an external endpoint is not disclosed; a peer of Org2MSP without an external
    endpoint gets no answer and its connection is closed (requests_refused)."""
    node = node_factory("--membership", "--external-endpoint", NODE_EXTERNAL, "--trust", f"Org2MSP={os.path.join(MSP['org2-a'].msp_dir, 'cacerts')}")
    with contextlib.ExitStack() as stack:
        hearts = {}
        for name, external in (("py-a", ""), ("py-b", "py-b.org1.example.com:7051"), ("org2-a", "org2-a.org2.example.com:7051")):
            p = MSP[name].provider
            me, _, conn = stack.enter_context(connected_client(node, provider=p))
            hearts[name] = Heart(p, me.endpoint, external)
            if name != "org2-a":
                conn.send(hearts[name].beat(identity=True))
                node.wait(is_ev("member_alive", pki_id=me.printed), EVENT_TIMEOUT, f"member_alive for {name}")
        nonce = fp.random_nonce()
        conn.send(fp.noop_sign(fm.membership_request(hearts["org2-a"].beat(identity=True), nonce)))
        res = recv_content(conn, "mem_res", lambda m: m.nonce == nonce).msg.mem_res
        org2 = MSP["org2-a"].provider
        known = {node.pki: node.msp.provider.identity}
        got = [fm.check_alive(env, org2, known) for env in res.alive]
        pkis = [a.pki_id for a in got]
        want = {MSP["py-b"].provider.pki_id, org2.pki_id, node.pki}
        check(set(pkis) == want and len(pkis) == 3 and pkis[-1] == node.pki, f"disclosed {[p.hex()[:8] for p in pkis]}, expected py-b, org2-a and the node last")
        check(not any(env.HasField("secret_envelope") for env in res.alive), "a secret (internal endpoint) was disclosed to another organization")
        check(got[-1].endpoint == NODE_EXTERNAL and len(res.dead) == 0, f"node's alive {got[-1]}")
        stealth = MSP["org2-b"].provider
        me, _, conn = stack.enter_context(connected_client(node, provider=stealth))
        conn.send(fp.noop_sign(fm.membership_request(Heart(stealth, me.endpoint).beat(identity=True), fp.random_nonce())))
        check(conn.done.wait(EVENT_TIMEOUT), "the node kept the connection of a foreign peer without external endpoint that asked for membership")
        while not conn.inbox.empty():
            check(fp.content_of(conn.inbox.get().msg) != "mem_res", "a foreign peer without external endpoint was answered")
        m = answer(node, "stats", "stats")["membership"]
        check(m["requests_received"] == 2 and m["responses_sent"] == 1 and m["requests_refused"] == 1, f"stats {m}")


members_disclosure_to_another_org.wants_factory = True


def capture_trust_args() -> list:
    """`--trust Org1MSP=<the captured Fabric peer's CA>` (the node then trusts two Org1MSP CAs)."""
    with open(CAPTURE) as f:
        cap = json.load(f)
    d = os.path.join(OUT, "capture", "fabric-ca")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "ca.pem"), "w") as f:
        f.write(cap["org_ca_cert_pem"])
    return ["--trust", f"{cap['msp_id']}={d}"]


@membership_test()
def members_learn_real_fabric_alive(node_factory):
    """The alive message captured from the real Fabric v2.4.9 peer, relayed verbatim by us: refused
    and counted by a node that does not trust that peer's CA; learned (PKI-ID, internal endpoint
    from its secret, incarnation, sequence) by a node that does."""
    with open(CAPTURE) as f:
        cap = json.load(f)
    fabric_alive = pb.Envelope.FromString(bytes.fromhex(next(r for r in cap["records"] if r["name"] == "alive_message_envelope")["envelope_hex"]))
    want = fp.decode_envelope(fabric_alive).alive_msg
    py = MSP["py-a"].provider
    for trusted in (False, True):
        node = node_factory("--membership", *(capture_trust_args() if trusted else []))
        with connected_client(node, provider=py) as (me, st, conn):
            conn.send(Heart(py, me.endpoint).beat(identity=True))
            node.wait(is_ev("member_alive", pki_id=me.printed), EVENT_TIMEOUT, "member_alive for us")
            conn.send(fabric_alive)
            if trusted:
                ev = node.wait(is_ev("member_alive", pki_id=cap["fabric_peer_pki_id_hex"]), EVENT_TIMEOUT, "member_alive for the Fabric peer")
                got = (ev["msp_id"], ev["internal_endpoint"], ev["endpoint"], ev["inc"], ev["seq"])
                check(got == ("Org1MSP", fm.internal_endpoint(fabric_alive), want.membership.endpoint, want.timestamp.inc_num, want.timestamp.seq_num), f"member_alive {ev}")
            else:
                conn.send(Heart(py, me.endpoint).beat())  # barrier: processed after the Fabric alive
                m = answer(node, "stats", "stats")["membership"]
                deadline = time.monotonic() + EVENT_TIMEOUT
                while m["alive_received"] < 3 and time.monotonic() < deadline:
                    m = answer(node, "stats", "stats")["membership"]
                check(m["alive_refused"] == 1 and m["members_learned"] == 1, f"untrusted Fabric alive: stats {m}")
        check(node.stop() == 0, "node exited with an error status after stop")


members_learn_real_fabric_alive.wants_factory = True


@membership_test("--alive-interval", "500ms", "--alive-expiration", f"{EXPIRATION:g}s")
def members_alive_then_expired(node):
    """Joined by alive messages alone (identity embedded in the first, looked up by PKI-ID after),
    we stay alive while we send them for longer than the expiration; once we stop, the node
    declares us dead (reason expired) after the expiration and before the next check, and closes
    our connection. Back on a new connection, the timestamp we died with does not resurrect us;
    a new incarnation does."""
    py = MSP["py-a"].provider
    with connected_client(node, provider=py) as (me, st, conn):
        heart = Heart(py, me.endpoint)
        conn.send(heart.beat(identity=True))
        node.wait(is_ev("member_alive", pki_id=me.printed), EVENT_TIMEOUT, "member_alive for us")
        until = time.monotonic() + EXPIRATION * 1.5
        pause = threading.Event()
        while time.monotonic() < until:
            pause.wait(0.5)  # our heartbeat period
            conn.send(heart.beat())
        last = time.monotonic()
        check(not node.find(is_ev("member_dead", pki_id=me.printed)), "declared dead while sending alive messages")
        wait_member(node, me.printed, lambda r: r["seq"] == heart.seq and r["alive"], f"alive with seq {heart.seq}")
        ev = node.wait(is_ev("member_dead", pki_id=me.printed), EXPIRATION * 2 + EVENT_TIMEOUT, "member_dead for us")
        took = time.monotonic() - last
        check(ev["reason"] == "expired" and ev["seq"] == heart.seq, f"member_dead {ev}")
        check(EXPIRATION - 0.05 <= took <= EXPIRATION * 1.1 + 2.0, f"declared dead {took:.2f}s after our last alive; expiration {EXPIRATION}s")
        check(conn.done.wait(EVENT_TIMEOUT), "the node did not close the connection of the member it declared dead")
        last_env = fm.signed_alive(py, me.endpoint, heart.inc, heart.seq, identity=False)
    with connected_client(node, provider=py) as (me, st, conn):
        conn.send(last_env)  # the timestamp it died with: not newer, no resurrection
        restarted = Heart(py, me.endpoint)
        check(restarted.inc > heart.inc, "clock did not advance")
        conn.send(restarted.beat())
        ev = node.wait(is_ev("member_alive", pki_id=me.printed, resurrected=True), EVENT_TIMEOUT, "member_alive (resurrected)")
        check(ev["inc"] == restarted.inc and ev["internal_endpoint"] == me.endpoint, f"resurrected with {ev}, expected the new incarnation")
        m = answer(node, "stats", "stats")["membership"]
        check(m["members_expired"] == 1 and m["alive_refused"] == 0 and m["members_alive"] == 1, f"stats {m}")


@membership_test()
def members_refuse_forged_alive(node):
    """Forged alive messages are refused and counted (alive_refused), the member table unchanged: a
    flipped signature, a high-S signature (valid ECDSA, refused by Fabric), a flipped secret
    signature, another member's PKI-ID signed by us (unknown identity), another member's identity
    signed by us, a self-consistent identity from an untrusted CA. A replayed alive is a duplicate,
    not a refusal, and does not move the member back."""
    py, other, rogue = MSP["py-a"].provider, MSP["py-b"].provider, MSP["rogue"].provider
    with connected_client(node, provider=py) as (me, st, conn):
        heart = Heart(py, me.endpoint)
        first = heart.beat(identity=True)
        conn.send(first)
        node.wait(is_ev("member_alive", pki_id=me.printed), EVENT_TIMEOUT, "member_alive for us")
        base = answer(node, "stats", "stats")["membership"]

        def flip(b: bytes) -> bytes:
            return b[:-1] + bytes([b[-1] ^ 1])

        forged = {}
        e = heart.beat()
        e.signature = flip(e.signature)
        forged["flipped signature"] = e
        e = heart.beat()
        e.signature = fm.to_high_s(e.signature)
        forged["high-S signature"] = e
        e = heart.beat()
        e.secret_envelope.signature = flip(e.secret_envelope.signature)
        forged["flipped secret signature"] = e
        forged["another PKI-ID, our signature"] = fm.signed_alive(py, me.endpoint, heart.inc, 1, identity=False, pki_id=other.pki_id)
        e = fp.sign(fm.alive_message(other.pki_id, "", heart.inc, 1, other.identity), py)
        forged["another identity, our signature"] = fm.with_secret(e, me.endpoint, py)
        forged["untrusted CA"] = fm.signed_alive(rogue, me.endpoint, heart.inc, 1, identity=True)
        for env in forged.values():
            conn.send(env)
        good = heart.beat()
        conn.send(good)
        wait_member(node, me.printed, lambda r: r["seq"] == heart.seq, f"our alive seq {heart.seq} after the forgeries")
        m = answer(node, "stats", "stats")["membership"]
        refused = m["alive_refused"] - base["alive_refused"]
        check(refused == len(forged), f"{refused} alive messages refused, {len(forged)} forged: {list(forged)}; stats {m}")
        for who in (other, rogue):
            check(member_row(node, who.pki_id.hex()) is None, f"forged member {who.pki_id.hex()} learned")
        conn.send(first)  # replay: a valid signature, an old timestamp
        conn.send(good)  # and an exact duplicate
        wait_member(node, me.printed, lambda r: r["seq"] == heart.seq and r["alive"], "our row after replays")
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            after = answer(node, "stats", "stats")["membership"]
            stale = after["alive_duplicate"] + after["alive_stale"] - m["alive_duplicate"] - m["alive_stale"]
            if stale == 2 or time.monotonic() > deadline:
                break
        check(stale == 2 and after["alive_refused"] == m["alive_refused"], f"replays: {stale} counted stale or duplicate (expected 2); stats {after}")


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def line(self, status, name, secs, note=""):
        print(f"{status} {name} ({secs:.2f}s){(': ' + note) if note else ''}", flush=True)


def run_offline(res):
    for f in OFFLINE:
        t0 = time.monotonic()
        try:
            f()
            res.passed += 1
            res.line("PASS", f"vectors/{f.__name__}", time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001
            res.failed += 1
            res.line("FAIL", f"vectors/{f.__name__}", time.monotonic() - t0, f"{type(e).__name__}: {e}")


def run_online(res, target, argv, only, tls_ok=True):
    for f in ONLINE:
        if only and only not in f.__name__:
            continue
        name = f"{target}/{f.__name__}"
        tls = getattr(f, "tls", False)
        if tls and not tls_ok:
            res.skipped += 1
            res.line("SKIP", name, 0.0, "the node's --help does not mention --tls-cert")
            continue
        if tls and not PKI:
            make_test_pki()
        msp = getattr(f, "msp", False)
        if msp and target == "reference":
            continue  # reference_node.py has no membership layer
        if msp and not MSP:
            make_test_msp()
        t0 = time.monotonic()
        nodes = []

        def factory(*extra, _name=f.__name__, _tls=PKI.get("node") if tls else None, _msp=MSP.get("node") if msp else None):
            n = NodeProc(argv, f"{target}-{_name}-{len(nodes)}", extra, _tls, _msp)
            nodes.append(n)
            n.wait_listening()
            return n

        try:
            if getattr(f, "wants_factory", False):
                f(factory)
            else:
                f(factory(*f.extra))
            for n in nodes:
                if n.p.poll() is None:
                    code = n.stop()
                    check(code == 0, f"node exited with status {code} after stop")
                check(not n.bad_lines, f"non-JSON lines on the node's stdout: {n.bad_lines[:3]}")
            res.passed += 1
            res.line("PASS", name, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001
            res.failed += 1
            msg = f"{type(e).__name__}: {e}"
            if not isinstance(e, Fail):
                msg += "\n" + "".join(traceback.format_exception(e)[-4:])
            res.line("FAIL", name, time.monotonic() - t0, msg)
            for n in nodes:
                tail = n.stderr_tail()
                if tail:
                    print(f"  --- node stderr ({n.stderr_path}), last lines:\n" + tail, flush=True)
        finally:
            for n in nodes:
                n.kill()


def node_subcommand_exists(binary) -> tuple[bool, str, bool]:
    """(exists, why not, supports TLS flags), from `BINARY node --help`."""
    if not os.path.exists(binary):
        return False, f"{binary} not built", False
    try:
        p = subprocess.run([binary, "node", "--help"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"`{binary} node --help`: {e}", False
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    if p.returncode != 0 or "--test-identity" not in out:
        return False, f"`fabric-gossip node --help` exits {p.returncode} without mentioning --test-identity", False
    return True, "", "--tls-cert" in out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="reference,rust", help="comma-separated: reference, rust")
    ap.add_argument("--node-bin", default=os.path.join(ROOT, "target", "debug", "fabric-gossip"))
    ap.add_argument("--only", default="", help="run only online tests whose name contains this")
    ap.add_argument("--require-node", action="store_true", help="fail (not skip) when the node subcommand is missing")
    ap.add_argument("--deadline", type=float, default=240.0, help="whole-run watchdog, seconds")
    a = ap.parse_args()

    res = Results()

    def watchdog():
        print(f"FAIL watchdog: the run exceeded {a.deadline:.0f}s", flush=True)
        print(f"{res.passed} passed, {res.failed + 1} failed", flush=True)
        os._exit(1)

    wd = threading.Timer(a.deadline, watchdog)
    wd.daemon = True
    wd.start()

    t0 = time.monotonic()
    run_offline(res)
    for target in [t for t in a.targets.split(",") if t]:
        if target == "reference":
            run_online(res, target, [sys.executable, os.path.join(HERE, "reference_node.py")], a.only)
        elif target == "rust":
            ok, why, tls_ok = node_subcommand_exists(a.node_bin)
            if ok:
                run_online(res, target, [a.node_bin], a.only, tls_ok)
            else:
                n = len([f for f in ONLINE if not a.only or a.only in f.__name__])
                if a.require_node:
                    res.failed += 1
                    res.line("FAIL", "rust/*", 0.0, why)
                else:
                    res.skipped += n
                    print(f"SKIP rust/* ({n} tests): {why}", flush=True)
        else:
            print(f"unknown target {target}", file=sys.stderr)
            return 2
    wd.cancel()
    print(f"interop run took {time.monotonic() - t0:.1f}s", flush=True)
    summary = f"{res.passed} passed, {res.failed} failed"
    if res.skipped:
        summary += f", {res.skipped} skipped"
    print(summary, flush=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
