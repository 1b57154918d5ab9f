"""X3DH and PQXDH session setup, as in Signal's specifications and libsignal.

The master secret is ``0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] [|| KEM shared secret]`` with
DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), DH3 = DH(EK_A, SPK_B), DH4 = DH(EK_A, OPK_B). HKDF-SHA256 with a
zero salt and info ``"WhisperText"`` (X3DH) or ``"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"`` (PQXDH)
yields the first root key and chain key, and for PQXDH a third 32 bytes: SPQR's authentication key, from which
both sides start the post-quantum ratchet (libsignal's ``pqr_key``; the initiator is SPQR's party A). The
initiator then takes one DH ratchet step against the signed prekey, which doubles as the responder's first
ratchet key.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_crypto import _spqr
from parley_crypto._errors import (
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    PqPrekeyRequiredError,
)
from parley_crypto._kdf import hkdf_sha256, root_step
from parley_crypto._keys import IdentityKeyPair, KemKeyPair, KemPublicKey, KeyPair, PublicKey
from parley_crypto._ratchet import PendingPreKey, ReceiverChain, SessionState

X3DH_VERSION = 3
PQXDH_VERSION = 4
_DISCONTINUITY = b"\xff" * 32
_X3DH_INFO = b"WhisperText"
_PQXDH_INFO = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What the key directory hands out for one remote device.

    Attributes:
        registration_id: the device's registration id.
        device_id: the device id.
        identity_key: the device's identity key.
        signed_prekey_id: id of the signed prekey.
        signed_prekey: the signed prekey's public key.
        signed_prekey_signature: XEdDSA signature by the identity key over ``signed_prekey.serialize()``.
        prekey_id: id of the one-time prekey, if the directory had one left.
        prekey: the one-time prekey's public key, if any.
        kyber_prekey_id: id of the ML-KEM-1024 prekey (PQXDH), if any.
        kyber_prekey: the ML-KEM-1024 public key, if any.
        kyber_prekey_signature: XEdDSA signature by the identity key over ``kyber_prekey.serialize()``.
    """

    registration_id: int
    device_id: int
    identity_key: PublicKey
    signed_prekey_id: int
    signed_prekey: PublicKey
    signed_prekey_signature: bytes
    prekey_id: int | None = None
    prekey: PublicKey | None = None
    kyber_prekey_id: int | None = None
    kyber_prekey: KemPublicKey | None = None
    kyber_prekey_signature: bytes | None = None


def _derive(info: bytes, secret: bytes) -> tuple[bytes, bytes, bytes]:
    # HKDF output is a prefix-stable stream: asking for 96 bytes leaves the root and chain keys unchanged.
    derived = hkdf_sha256(secret, None, info, 96)
    return derived[:32], derived[32:64], derived[64:]


def _spqr_state(pqr_key: bytes, direction: _spqr.Direction) -> _spqr.PqRatchet:
    # As libsignal: SPQR V1 is required of the peer (min_version V1), with libsignal's chain bounds (the defaults).
    return _spqr.PqRatchet.initial(auth_key=pqr_key, direction=direction, min_version=_spqr.Version.V1)


def initiate(
    identity: IdentityKeyPair, bundle: PreKeyBundle, *, local_registration_id: int, allow_x3dh: bool = False
) -> SessionState:
    """The initiator's ("Alice's") side: verifies the bundle and builds a session that sends prekey messages.

    Args:
        identity: our identity key pair.
        bundle: the remote device's prekey bundle.
        local_registration_id: our registration id, repeated in each prekey message.
        allow_x3dh: start an X3DH (version 3) session when the bundle has no PQ prekey, for peers that predate
            PQXDH (python-axolotl, old libsignal); off by default, as libsignal no longer speaks version 3.

    Returns:
        A new session state: PQXDH (version 4), or X3DH (version 3) only when allowed and the bundle has no
        PQ prekey.

    Raises:
        PqPrekeyRequiredError: the bundle has no PQ prekey and X3DH is not allowed.
        InvalidSignatureError: a prekey signature does not verify.
        InvalidKeyError: the bundle is incomplete (a prekey without its id, a PQ key without signature) or holds
            a low-order key.
    """
    identity_ser = bundle.identity_key
    if not identity_ser.verify(bundle.signed_prekey.serialize(), bundle.signed_prekey_signature):
        raise InvalidSignatureError("signed prekey signature does not verify")
    if (bundle.prekey is None) != (bundle.prekey_id is None):
        raise InvalidKeyError("one-time prekey and its id must come together")
    kyber = bundle.kyber_prekey
    if kyber is None and not allow_x3dh:
        raise PqPrekeyRequiredError("bundle has no PQ prekey; X3DH (version 3) sessions are not allowed")
    if kyber is not None:
        if bundle.kyber_prekey_id is None or bundle.kyber_prekey_signature is None:
            raise InvalidKeyError("PQ prekey without id or signature")
        if not identity_ser.verify(kyber.serialize(), bundle.kyber_prekey_signature):
            raise InvalidSignatureError("PQ prekey signature does not verify")
    base = KeyPair.generate()
    parts = [
        _DISCONTINUITY,
        identity.agree(bundle.signed_prekey),
        base.agree(bundle.identity_key),
        base.agree(bundle.signed_prekey),
    ]
    if bundle.prekey is not None:
        parts.append(base.agree(bundle.prekey))
    kyber_ciphertext = None
    if kyber is not None:
        shared, kyber_ciphertext = kyber.encapsulate()
        parts.append(shared)
    root_key, chain_key, pqr_key = _derive(_PQXDH_INFO if kyber else _X3DH_INFO, b"".join(parts))
    sender = KeyPair.generate()
    root_key, sender_chain = root_step(root_key, sender.agree(bundle.signed_prekey))
    return SessionState(
        version=PQXDH_VERSION if kyber else X3DH_VERSION,
        local_identity=identity.public_key,
        remote_identity=bundle.identity_key,
        root_key=root_key,
        sender_ratchet=sender,
        sender_chain_key=sender_chain,
        alice_base_key=base.public_key,
        receiver_chains=[ReceiverChain(bundle.signed_prekey, chain_key, 0)],
        pending_prekey=PendingPreKey(
            bundle.prekey_id,
            bundle.signed_prekey_id,
            base.public_key,
            bundle.kyber_prekey_id if kyber else None,
            kyber_ciphertext,
        ),
        local_registration_id=local_registration_id,
        remote_registration_id=bundle.registration_id,
        pq_ratchet_state=_spqr_state(pqr_key, _spqr.Direction.A2B) if kyber else b"",
    )


def respond(
    identity: IdentityKeyPair,
    *,
    signed_prekey: KeyPair,
    one_time_prekey: KeyPair | None,
    kyber_prekey: KemKeyPair | None,
    kyber_ciphertext: bytes | None,
    their_identity: PublicKey,
    their_base_key: PublicKey,
    version: int,
    local_registration_id: int,
    remote_registration_id: int,
) -> SessionState:
    """The responder's ("Bob's") side, from a received prekey message's parameters and our private prekeys.

    Returns:
        A new session state whose sending chain starts from the signed prekey.

    Raises:
        InvalidMessageError: the PQ ciphertext is missing, unexpected or malformed.
        InvalidKeyError: a low-order key.
    """
    parts = [
        _DISCONTINUITY,
        signed_prekey.agree(their_identity),
        identity.agree(their_base_key),
        signed_prekey.agree(their_base_key),
    ]
    if one_time_prekey is not None:
        parts.append(one_time_prekey.agree(their_base_key))
    if (kyber_prekey is None) != (kyber_ciphertext is None):
        raise InvalidMessageError("PQ prekey and ciphertext must come together")
    if kyber_prekey is not None and kyber_ciphertext is not None:
        try:
            parts.append(kyber_prekey.decapsulate(kyber_ciphertext))
        except InvalidKeyError as exc:
            raise InvalidMessageError("malformed PQ ciphertext") from exc
    root_key, chain_key, pqr_key = _derive(_PQXDH_INFO if kyber_prekey else _X3DH_INFO, b"".join(parts))
    return SessionState(
        version=version,
        local_identity=identity.public_key,
        remote_identity=their_identity,
        root_key=root_key,
        sender_ratchet=signed_prekey,
        sender_chain_key=chain_key,
        alice_base_key=their_base_key,
        local_registration_id=local_registration_id,
        remote_registration_id=remote_registration_id,
        pq_ratchet_state=_spqr_state(pqr_key, _spqr.Direction.B2A) if kyber_prekey else b"",
    )
