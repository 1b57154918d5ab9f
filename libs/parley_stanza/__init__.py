"""parley_stanza: Parley's wire vocabulary, pure and free of I/O.

- ``Address``: the one address format (``kind:identifier@provider[/device]``).
- ``Feature``: what a provider supports, the Python twin of ``parley.common.v1.Feature``.
- Every error raised on bad input is a ``StanzaError``.
"""

from parley_stanza._address import MAX_DEVICE_ID, Address, AddressKind
from parley_stanza._errors import (
    ForbiddenMarkupError,
    InvalidAddressError,
    InvalidContentError,
    InvalidStanzaError,
    LimitExceededError,
    StanzaError,
    StanzaParseError,
)
from parley_stanza._features import Feature

__all__ = [
    "MAX_DEVICE_ID",
    "Address",
    "AddressKind",
    "Feature",
    "ForbiddenMarkupError",
    "InvalidAddressError",
    "InvalidContentError",
    "InvalidStanzaError",
    "LimitExceededError",
    "StanzaError",
    "StanzaParseError",
]
