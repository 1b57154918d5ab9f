"""SPQR's authenticator: a MAC key chain, re-keyed every epoch, over encapsulation-key headers and ciphertexts.

Both parties start from the PQXDH-derived ``auth_key``; each completed epoch mixes that epoch's shared secret
in, so a header MAC proves knowledge of every earlier secret. As ``spqr::authenticator``::

    root_key, mac_key = HKDF(salt=0^32, ikm=root_key || k, info="...Authenticator Update" || BE64(epoch))
    mac_hdr = HMAC-SHA256(mac_key, "...ekheader"   || BE64(epoch) || hdr)
    mac_ct  = HMAC-SHA256(mac_key, "...ciphertext" || BE64(epoch) || ct1 || ct2)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from parley_crypto._kdf import hkdf_sha256
from parley_crypto._spqr import _codec, _labels
from parley_crypto._spqr._errors import SpqrMacError

MAC_SIZE = 32


@dataclass(frozen=True)
class Authenticator:
    """The per-epoch MAC state: ``root_key`` chains epochs, ``mac_key`` signs this epoch's messages."""

    root_key: bytes
    mac_key: bytes

    @classmethod
    def new(cls, auth_key: bytes, epoch: int) -> Authenticator:
        """The authenticator of a fresh session: an update of all-zero keys with ``auth_key``."""
        return cls(bytes(32), bytes(32)).update(epoch, auth_key)

    def update(self, epoch: int, key: bytes) -> Authenticator:
        """The authenticator after mixing ``key`` (an epoch secret) in at ``epoch``."""
        derived = hkdf_sha256(
            self.root_key + key, _labels.ZERO_SALT, _labels.AUTH_UPDATE + epoch.to_bytes(8, "big"), 64
        )
        return Authenticator(derived[:32], derived[32:])

    def mac_hdr(self, epoch: int, hdr: bytes) -> bytes:
        """The MAC over an encapsulation-key header."""
        return self._mac(_labels.AUTH_HEADER, epoch, hdr)

    def mac_ct(self, epoch: int, ct: bytes) -> bytes:
        """The MAC over a complete ciphertext (``ct1 || ct2``)."""
        return self._mac(_labels.AUTH_CIPHERTEXT, epoch, ct)

    def verify_hdr(self, epoch: int, hdr: bytes, mac: bytes) -> None:
        """Raises:
        SpqrMacError: ``mac`` is not this header's MAC.
        """
        if not hmac.compare_digest(mac, self.mac_hdr(epoch, hdr)):
            raise SpqrMacError("Encapsulation key MAC is invalid")

    def verify_ct(self, epoch: int, ct: bytes, mac: bytes) -> None:
        """Raises:
        SpqrMacError: ``mac`` is not this ciphertext's MAC.
        """
        if not hmac.compare_digest(mac, self.mac_ct(epoch, ct)):
            raise SpqrMacError("Ciphertext MAC is invalid")

    def _mac(self, label: bytes, epoch: int, data: bytes) -> bytes:
        return hmac.digest(self.mac_key, label + epoch.to_bytes(8, "big") + data, "sha256")

    def to_proto(self) -> bytes:
        """``Authenticator { bytes root_key = 1; bytes mac_key = 2; }``."""
        return _codec.opt_bytes(1, self.root_key) + _codec.opt_bytes(2, self.mac_key)

    @classmethod
    def from_proto(cls, data: bytes) -> Authenticator:
        """Parses a serialized authenticator (the reference takes the keys as they are).

        Raises:
            SpqrStateError: malformed bytes.
        """
        fields = _codec.decode(data)
        return cls(_codec.get_bytes(fields, 1), _codec.get_bytes(fields, 2))
