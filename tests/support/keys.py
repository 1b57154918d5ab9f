"""Real Signal-protocol keys for tests, generated with parley_crypto and packed into key-directory requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.keydir.v1 import keydir_pb2 as pb
from parley_crypto import IdentityKeyPair, generate_kyber_prekey, generate_prekeys, generate_signed_prekey


@dataclass
class DeviceKeys:
    """One device's key material."""

    identity: IdentityKeyPair = field(default_factory=IdentityKeyPair.generate)
    registration_id: int = 4242
    next_prekey_id: int = 1

    def signed_prekey(self, key_id: int = 1) -> pb.SignedPreKey:
        """A fresh signed prekey, signed by this device's identity key."""
        record = generate_signed_prekey(self.identity, key_id, timestamp=0)
        return pb.SignedPreKey(
            key_id=key_id, public_key=record.key_pair.public_key.serialize(), signature=record.signature
        )

    def pq_prekey(self, key_id: int = 1) -> pb.KemSignedPreKey:
        """A fresh ML-KEM-1024 last-resort prekey, signed by this device's identity key."""
        record = generate_kyber_prekey(self.identity, key_id, timestamp=0)
        return pb.KemSignedPreKey(
            key_id=key_id, public_key=record.key_pair.public_key.serialize(), signature=record.signature
        )

    def one_time_prekeys(self, count: int) -> list[pb.OneTimePreKey]:
        """``count`` fresh one-time prekeys with increasing ids."""
        records = generate_prekeys(self.next_prekey_id, count)
        self.next_prekey_id += count
        return [pb.OneTimePreKey(key_id=r.id, public_key=r.key_pair.public_key.serialize()) for r in records]

    def publish_request(self, one_time: int = 5, *, pq: bool = True) -> pb.PublishKeysRequest:
        """A complete first publication."""
        return pb.PublishKeysRequest(
            registration_id=self.registration_id,
            identity_key=self.identity.public_key.serialize(),
            signed_prekey=self.signed_prekey(),
            pq_prekey=self.pq_prekey() if pq else None,
            one_time_prekeys=self.one_time_prekeys(one_time),
        )
