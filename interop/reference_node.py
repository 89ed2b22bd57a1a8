"""A Python stand-in for `fabric-gossip node`, implementing the CLI contract written at the top of
interop_test.py on top of fabric_peer.py. It lets the interop harness test itself (Python client
and server against a Python node) and shows the contract in running code.

    python reference_node.py node --listen 127.0.0.1:0 --test-identity [--peer ADDR]... [--auto-ack]
                                  [--tls-cert PEM --tls-key PEM --tls-ca PEM]
"""

from __future__ import annotations

import argparse
import signal
import json
import sys
import threading

import fabric_peer as fp

_out_lock = threading.Lock()


def emit(**ev) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


def s(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class Node:
    def __init__(self, listen: str, auto_ack: bool, tls=None):
        host, port = listen.rsplit(":", 1)
        self.auto_ack = auto_ack
        self.tls = tls
        self.server = fp.PeerServer(host, int(port), auto_ack=auto_ack, tls=tls)
        self.endpoint = self.server.endpoint
        self.server.on_connected = lambda c: self._register(c, inbound=True)
        self.server.on_message = self._on_message
        self.server.on_disconnected = self._unregister
        self.server.on_handshake_failed = lambda remote, err: emit(event="handshake_failed", remote=remote, error=err)
        self.lock = threading.Lock()
        self.conns: dict[bytes, fp.Conn] = {}
        self.channels: dict[int, object] = {}
        self.dialing: dict[bytes, threading.Lock] = {}
        self.stopping = False

    def start(self):
        self.server.start()
        emit(event="listening", addr=self.endpoint)

    # connection store
    def _register(self, conn: fp.Conn, inbound: bool):
        with self.lock:
            old = self.conns.get(conn.info.pki_id)
            self.conns[conn.info.pki_id] = conn
        if old is not None and old is not conn:
            old.close()
        emit(event="connected", peer=s(conn.info.pki_id), inbound=inbound)

    def _unregister(self, conn: fp.Conn):
        with self.lock:
            if self.conns.get(conn.info.pki_id) is not conn:
                return
            del self.conns[conn.info.pki_id]
        emit(event="disconnected", peer=s(conn.info.pki_id))

    def _on_message(self, r: fp.Received):
        ev = {"event": "received", "from": s(r.info.pki_id), "nonce": r.msg.nonce, "content": fp.content_of(r.msg)}
        if ev["content"] == "data_msg":
            ev["data_hex"] = r.msg.data_msg.payload.data.hex()
            ev["seq"] = r.msg.data_msg.payload.seq_num
        emit(**ev)

    def get_conn(self, to: str, pki_id: bytes) -> fp.Conn:
        with self.lock:
            c = self.conns.get(pki_id)
            lk = self.dialing.setdefault(pki_id, threading.Lock())
        if c is not None:
            return c
        with lk:  # one attempt at a time per PKI-ID
            with self.lock:
                c = self.conns.get(pki_id)
            if c is not None:
                return c
            try:
                cc = fp.connect(
                    self.endpoint,
                    to,
                    expected_pki_id=pki_id,
                    auto_ack=self.auto_ack,
                    on_message=self._on_message,
                    on_end=lambda c, e: self._unregister(c),
                    tls=self.tls,
                )
            except fp.HandshakeError as e:
                emit(event="handshake_failed", remote=to, error=str(e))
                raise
            conn = cc.conn
            self.channels[id(conn)] = cc.channel
            self._register(conn, inbound=False)
            return conn

    def send(self, to: str, pki_id: bytes, msg) -> None:
        try:
            self.get_conn(to, pki_id).send(fp.noop_sign(msg))
        except Exception:  # noqa: BLE001
            emit(event="presumed_dead", peer=s(pki_id))

    def send_with_ack(self, to: str, pki_id: bytes, msg, timeout: float, seq: int) -> None:
        try:
            err = self.get_conn(to, pki_id).send_with_ack(msg, timeout)
        except Exception as e:  # noqa: BLE001
            emit(event="presumed_dead", peer=s(pki_id))
            err = str(e) or "connection failed"
        emit(event="ack_result", peer=s(pki_id), seq=seq, ok=err is None, error=err or "")

    def stop(self):
        self.stopping = True
        with self.lock:
            conns = list(self.conns.values())
        for c in conns:
            c.close()
        self.server.stop(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(prog="reference_node.py node")
    ap.add_argument("sub", choices=["node"])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--test-identity", action="store_true", required=True)
    ap.add_argument("--auto-ack", action="store_true")
    ap.add_argument("--exit-on-eof", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca")
    a = ap.parse_args()
    tls_args = (a.tls_cert, a.tls_key, a.tls_ca)
    if any(tls_args) and not all(tls_args):
        ap.error("--tls-cert, --tls-key and --tls-ca go together")
    tls = fp.TlsMaterial(*tls_args) if all(tls_args) else None
    node = Node(a.listen, a.auto_ack, tls)
    node.start()
    for p in a.peer:
        threading.Thread(target=lambda p=p: _connect_peer(node, p), daemon=True).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    stopped = False
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd["cmd"] == "stop":
            stopped = True
            break
        msg = fp.data_message(cmd["seq"], cmd["data"].encode(), cmd.get("nonce", 0))
        to, pki = cmd["to"], cmd["pki_id"].encode()
        if cmd["cmd"] == "send":
            threading.Thread(target=node.send, args=(to, pki, msg), daemon=True).start()
        elif cmd["cmd"] == "send_with_ack":
            args = (to, pki, msg, cmd["timeout_ms"] / 1000.0, cmd["seq"])
            threading.Thread(target=node.send_with_ack, args=args, daemon=True).start()
    # A daemon, as the contract says: end of stdin stops it only with --exit-on-eof.
    if not stopped and not a.exit_on_eof:
        done.wait()
    node.stop()
    return 0


def _connect_peer(node: Node, addr: str):
    m = fp.pb.GossipMessage(nonce=0, tag=fp.pb.GossipMessage.EMPTY, empty=fp.pb.Empty())
    node.send(addr, addr.encode(), m)


if __name__ == "__main__":
    sys.exit(main())
