"""Fabric's MSP identities and membership (discovery) messages, written for fabric-gossip's
interoperability test independently of the project's Rust code.

Behaviour follows /work/shared/spec/fabric-gossip-discovery.md (sections 0, 1, 3.1 and 4.3), i.e.
Fabric v2.4.9's `internal/peer/gossip/mcs.go`, `gossip/protoext/signing.go` and
`gossip/discovery/discovery_impl.go`. Cryptography is the `cryptography` package (OpenSSL).

Pieces:
- `serialize_identity` / `parse_identity` / `pki_id_of`: Fabric's `msp.SerializedIdentity`
  {mspid, id_bytes = PEM certificate}; PKI-ID = SHA-256(mspid bytes || id_bytes).
- `presented_certificate`: Fabric's sanitizeCert, the form in which a Fabric peer (and our node)
  presents a certificate whose CA signature has a high s; `MspProvider` presents its own so.
- `MspProvider`: the same interface as `fabric_peer.TestProvider` (sign, verify, pki_id_of,
  validate_identity, own_identity), so the comm helpers of `fabric_peer` (handshake,
  check_conn_establish, verify_envelope) work unchanged with real identities. Signatures are
  ECDSA over SHA-256, ASN.1 DER, low-S (Fabric refuses a high-S signature); an identity is valid
  when its certificate is directly issued by a CA trusted for its MSP ID.
- `make_msp`: an organization's CA and peer identities, each written as an MSP folder laid out
  like cryptogen's (cacerts/, signcerts/, keystore/priv_sk), for `fabric-gossip node --msp-dir`.
- alive messages and membership requests built as Fabric builds them (`signed_alive`,
  `membership_request`, `membership_response`), and `check_alive`: Fabric's ValidateAliveMsg on a received one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

import fabric_peer as fp
from fabric_peer import pb
from msp import identities_pb2 as msp_pb  # noqa: E402  (generated at test time)

# Orders of the curves Fabric's MSP uses; low-S means s <= order / 2 (bccsp/utils/ecdsa.go, IsLowS).
CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
}


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------


def serialize_identity(msp_id: str, cert_pem: bytes) -> bytes:
    return msp_pb.SerializedIdentity(mspid=msp_id, id_bytes=cert_pem).SerializeToString()


def parse_identity(identity: bytes) -> "msp_pb.SerializedIdentity":
    """The SerializedIdentity in `identity`; VerifyError when it is not one."""
    sid = msp_pb.SerializedIdentity()
    try:
        sid.ParseFromString(identity)
    except Exception as e:  # noqa: BLE001  (protobuf DecodeError)
        raise fp.VerifyError(f"not a serialized identity: {e}") from e
    if not sid.mspid or not sid.id_bytes:
        raise fp.VerifyError("serialized identity without MSP ID or certificate")
    return sid


def pki_id_of(identity: bytes) -> bytes:
    """Fabric's GetPKIidOfCert: SHA-256 over the MSP ID's bytes followed by the certificate PEM
    (not over the serialized identity's encoding)."""
    sid = parse_identity(identity)
    return hashlib.sha256(sid.mspid.encode() + sid.id_bytes).digest()


def certificate_of(identity: bytes) -> "x509.Certificate":
    """The one PEM CERTIFICATE block of an identity (Fabric refuses anything else)."""
    pem = parse_identity(identity).id_bytes
    if pem.count(b"-----BEGIN ") != 1 or b"-----BEGIN CERTIFICATE-----" not in pem:
        raise fp.VerifyError("identity is not exactly one PEM CERTIFICATE block")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise fp.VerifyError(f"bad certificate: {e}") from e


def is_low_s(signature: bytes, curve: str) -> bool:
    _, s = decode_dss_signature(signature)
    return s <= CURVE_ORDERS[curve] // 2


def to_high_s(signature: bytes, curve: str = "secp256r1") -> bytes:
    """The other valid ECDSA signature (r, n - s) of a low-S one: mathematically valid, refused by
    Fabric's verifier."""
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, CURVE_ORDERS[curve] - s)


def _tlv(der: bytes, at: int) -> tuple[int, int]:
    """Where the contents of the DER element at `at` start, and where the element ends."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2, at + 2 + first
    n = first & 0x7F
    return at + 2 + n, at + 2 + n + int.from_bytes(der[at + 2 : at + 2 + n], "big")


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _with_s(cert: "x509.Certificate", curve: str, high: bool) -> bytes:
    """`cert` (PEM) with its CA signature's s high or low as asked: when it is the other, the
    certificate re-encoded with s folded to n - s, its to-be-signed part and signature
    algorithm kept as they were (what Go's asn1.Marshal writes in Fabric's
    sanitizeECDSASignedCert)."""
    if is_low_s(cert.signature, curve) != high:
        return cert.public_bytes(serialization.Encoding.PEM)
    folded = to_high_s(cert.signature, curve)  # (r, n - s): the fold is its own inverse
    der = cert.public_bytes(serialization.Encoding.DER)
    # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
    body, _ = _tlv(der, 0)
    _, tbs_end = _tlv(der, body)
    _, algorithm_end = _tlv(der, tbs_end)
    signature = b"\x03" + _der_length(len(folded) + 1) + b"\x00" + folded
    contents = der[body:algorithm_end] + signature
    encoded = b"\x30" + _der_length(len(contents)) + contents
    return x509.load_der_x509_certificate(encoded).public_bytes(serialization.Encoding.PEM)


def presented_certificate(cert_pem: bytes, cas: list[bytes]) -> bytes:
    """The certificate as Fabric's MSP presents it (msp/mspimpl.go sanitizeCert,
    msp/cert.go sanitizeECDSASignedCert, applied in identities.go newIdentity before Serialize):
    when the CA that issued it (by name, among `cas`) signed with a high s, the certificate
    re-encoded with the low-S form of that signature. Any other certificate, or one no CA of
    `cas` issued, as it is."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    issuers = [c for c in (x509.load_pem_x509_certificate(p) for p in cas) if c.subject == cert.issuer]
    if not issuers:
        return cert_pem
    key = issuers[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or is_low_s(cert.signature, key.curve.name):
        return cert_pem
    return _with_s(cert, key.curve.name, high=False)


class MspProvider:
    """Fabric's MSP message crypto service for one peer: signs with its key (when it has one),
    verifies anyone's signature, and validates identities against `trusted` CAs per MSP ID."""

    def __init__(self, msp_id: str, cert_pem: bytes, key_pem: Optional[bytes], trusted: dict[str, list[bytes]]):
        self.msp_id = msp_id
        # As Fabric's MSP presents it: a high-S CA signature folded (its PKI-ID is this one's).
        self.cert_pem = presented_certificate(cert_pem, trusted.get(msp_id, []))
        self.identity = serialize_identity(msp_id, self.cert_pem)
        self.pki_id = pki_id_of(self.identity)
        self._key = serialization.load_pem_private_key(key_pem, password=None) if key_pem else None
        self._trusted = {m: [x509.load_pem_x509_certificate(c) for c in cas] for m, cas in trusted.items()}

    def trust(self, msp_id: str, ca_pem: bytes) -> None:
        """Also accept identities of `msp_id` issued by this CA (another organization's)."""
        self._trusted.setdefault(msp_id, []).append(x509.load_pem_x509_certificate(ca_pem))

    def own_identity(self, endpoint: str) -> bytes:
        return self.identity

    def pki_id_of(self, identity: bytes) -> bytes:
        return pki_id_of(identity)

    def sign(self, data: bytes) -> bytes:
        """ECDSA over SHA-256 in DER, normalised to low-S as Fabric's signer does."""
        if self._key is None:
            raise fp.VerifyError("this provider has no signing key")
        sig = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return sig if is_low_s(sig, self._key.curve.name) else to_high_s(sig, self._key.curve.name)

    def verify(self, identity: bytes, signature: bytes, data: bytes) -> bool:
        try:
            key = certificate_of(identity).public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey) or not is_low_s(signature, key.curve.name):
                return False
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
        except (fp.VerifyError, InvalidSignature, ValueError, KeyError):
            return False

    def validate_identity(self, identity: bytes) -> None:
        """The certificate must be issued (name and signature) by a CA trusted for the identity's
        MSP ID. Like Fabric's MSP validation, the validity period is not checked here."""
        sid = parse_identity(identity)
        cert = certificate_of(identity)
        for ca in self._trusted.get(sid.mspid, []):
            try:
                cert.verify_directly_issued_by(ca)
                return
            except (ValueError, TypeError, InvalidSignature):
                continue
        raise fp.VerifyError(f"certificate of {sid.mspid} is not issued by a CA trusted for that MSP")


@dataclass
class MspPeer:
    """One generated peer identity: its MSP folder and the provider that signs for it."""

    name: str
    msp_dir: str
    provider: MspProvider
    ca_pem: bytes  # the organization's CA


def make_msp(directory: str, msp_id: str, peers: list[str]) -> dict[str, MspPeer]:
    """An organization's CA (fresh ECDSA P-256, made by fabric_peer.make_pki) and one MSP folder
    per peer under `directory`/<peer>/msp: cacerts/ca.pem, signcerts/cert.pem, keystore/priv_sk
    (PKCS#8). Every provider trusts the CA for `msp_id`. The first peer's certificate is written
    with a high-S CA signature, as `cryptogen extend` writes about half of its certificates (so
    whoever presents it must present Fabric's sanitized form), the others' with a low-S one."""
    pki = fp.make_pki(os.path.join(directory, "pem"), peers, ca_name=f"ca-{msp_id}")
    out = {}
    for i, name in enumerate(peers):
        m = pki[name]
        cert = _with_s(x509.load_pem_x509_certificate(m.cert_pem), "secp256r1", high=i == 0)
        msp_dir = os.path.join(directory, name, "msp")
        for sub, data in (("cacerts/ca.pem", m.ca_pem), ("signcerts/cert.pem", cert), ("keystore/priv_sk", m.key_pem)):
            path = os.path.join(msp_dir, sub)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        out[name] = MspPeer(name, msp_dir, MspProvider(msp_id, cert, m.key_pem, {msp_id: [m.ca_pem]}), m.ca_pem)
    return out


# --------------------------------------------------------------------------
# Alive messages and membership requests
# --------------------------------------------------------------------------


def alive_message(pki_id: bytes, endpoint: str, inc: int, seq: int, identity: bytes = b"") -> "pb.GossipMessage":
    """Fabric's AliveMessage as its discovery builds it: tag EMPTY, nonce 0, Member{external
    endpoint, pki_id}, PeerTime{inc, seq}, the identity while the certificate is published."""
    return pb.GossipMessage(
        nonce=0,
        tag=pb.GossipMessage.EMPTY,
        alive_msg=pb.AliveMessage(
            membership=pb.Member(endpoint=endpoint, pki_id=pki_id),
            timestamp=pb.PeerTime(inc_num=inc, seq_num=seq),
            identity=identity,
        ),
    )


def with_secret(env: "pb.Envelope", internal_endpoint: str, provider) -> "pb.Envelope":
    """Fabric's SignSecret: attach SecretEnvelope{Secret{internalEndpoint}} signed by the same key,
    outside the signed payload."""
    payload = pb.Secret(internalEndpoint=internal_endpoint).SerializeToString()
    env.secret_envelope.CopyFrom(pb.SecretEnvelope(payload=payload, signature=provider.sign(payload)))
    return env


def signed_alive(provider: MspProvider, internal_endpoint: str, inc: int, seq: int, endpoint: str = "", identity: bool = True, pki_id: Optional[bytes] = None) -> "pb.Envelope":
    """A signed alive Envelope with the secret internal endpoint. `pki_id` overrides the claimed
    PKI-ID (for forgeries)."""
    msg = alive_message(pki_id or provider.pki_id, endpoint, inc, seq, provider.identity if identity else b"")
    return with_secret(fp.sign(msg, provider), internal_endpoint, provider)


def membership_request(self_information: "pb.Envelope", nonce: int) -> "pb.GossipMessage":
    """MembershipRequest{self_information, known empty}, tag EMPTY; the outer envelope is
    noop-signed when sent (fabric_peer.noop_sign), only self_information is signed."""
    return pb.GossipMessage(
        nonce=nonce, tag=pb.GossipMessage.EMPTY, mem_req=pb.MembershipRequest(self_information=self_information)
    )


def membership_response(alive: list, dead: list, nonce: int) -> "pb.GossipMessage":
    """MembershipResponse{alive, dead} (signed alive Envelopes, relayed as they are), tag EMPTY,
    the request's nonce; noop-signed when sent."""
    return pb.GossipMessage(nonce=nonce, tag=pb.GossipMessage.EMPTY, mem_res=pb.MembershipResponse(alive=alive, dead=dead))


def internal_endpoint(env: "pb.Envelope") -> str:
    """Fabric's InternalEndpoint: the secret's endpoint, "" when absent or undecodable."""
    if not env.HasField("secret_envelope"):
        return ""
    try:
        return pb.Secret.FromString(env.secret_envelope.payload).internalEndpoint
    except Exception:  # noqa: BLE001
        return ""


@dataclass
class Alive:
    """A validated alive message."""

    pki_id: bytes
    endpoint: str
    internal_endpoint: str
    inc: int
    seq: int
    identity: bytes  # the identity it was verified against
    embedded_identity: bool
    msg: "pb.GossipMessage"


def check_alive(env: "pb.Envelope", provider: MspProvider, identities: dict[bytes, bytes]) -> Alive:
    """Fabric's ValidateAliveMsg (spec 4.3): an alive message with a member and PKI-ID, payload and
    signature; an embedded identity must validate and hash to the PKI-ID, else the identity is
    looked up in `identities` (PKI-ID -> identity, e.g. from handshakes); then the signature and
    the secret's signature verify with it. VerifyError otherwise."""
    try:
        m = fp.decode_envelope(env)
    except Exception as e:  # noqa: BLE001
        raise fp.VerifyError(f"undecodable alive envelope: {e}") from e
    a = m.alive_msg
    if fp.content_of(m) != "alive_msg" or not a.HasField("membership") or not a.membership.pki_id:
        raise fp.VerifyError(f"invalid alive message: {fp.content_of(m)}")
    pki = bytes(a.membership.pki_id)
    if a.identity:
        provider.validate_identity(a.identity)
        if pki_id_of(a.identity) != pki:
            raise fp.VerifyError("identity doesn't match the computed pkiID")
        identity = bytes(a.identity)
    elif pki in identities:
        identity = identities[pki]
    else:
        raise fp.VerifyError(f"don't have certificate for {pki.hex()}")
    fp.verify_envelope(env, identity, provider)
    return Alive(
        pki_id=pki,
        endpoint=a.membership.endpoint,
        internal_endpoint=internal_endpoint(env),
        inc=a.timestamp.inc_num,
        seq=a.timestamp.seq_num,
        identity=identity,
        embedded_identity=bool(a.identity),
        msg=m,
    )
