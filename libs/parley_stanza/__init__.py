"""parley_stanza: Parley's wire vocabulary, pure and free of I/O.

- ``Address``: the one address format (``kind:identifier@provider[/device]``).
- Stanzas (``Message``, ``Receipt``, ``ChatState``, ``ErrorStanza``, and the reserved ``GroupControl`` and
  ``CallSignal``): typed, immutable, valid by construction; ``decode`` and ``encode`` convert them from and
  to their canonical XML in the ``urn:parley:stanza:1`` namespace, parsing untrusted bytes safely.
- Content (``parley.content.v1.Content``, the plaintext inside each ciphertext): ``encode_content`` and
  ``decode_content`` check, serialize and pad it; ``downgrade`` fits it to a provider's ``Feature`` set.
- ``Feature``: what a provider supports, the Python twin of ``parley.common.v1.Feature``.
- Every error raised on bad input is a ``StanzaError``.
"""

from parley_stanza._address import MAX_DEVICE_ID, Address, AddressKind
from parley_stanza._codec import DEFAULT_LIMITS, Limits, decode, encode
from parley_stanza._content import (
    PADDING_BLOCK,
    check_content,
    decode_content,
    encode_content,
    pad,
    unpad,
)
from parley_stanza._downgrade import (
    CORRECTION_PREFIX,
    Adaptation,
    Adapted,
    Refused,
    downgrade,
    required_features,
)
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
from parley_stanza._stanza import (
    NAMESPACE,
    CallAction,
    CallSignal,
    ChatState,
    ChatStateKind,
    ErrorCode,
    ErrorStanza,
    Franking,
    GroupAction,
    GroupControl,
    Message,
    MessageType,
    Payload,
    PayloadKind,
    Receipt,
    ReceiptType,
    Stanza,
)

__all__ = [
    "CORRECTION_PREFIX",
    "DEFAULT_LIMITS",
    "MAX_DEVICE_ID",
    "NAMESPACE",
    "PADDING_BLOCK",
    "Adaptation",
    "Adapted",
    "Address",
    "AddressKind",
    "CallAction",
    "CallSignal",
    "ChatState",
    "ChatStateKind",
    "ErrorCode",
    "ErrorStanza",
    "Feature",
    "ForbiddenMarkupError",
    "Franking",
    "GroupAction",
    "GroupControl",
    "InvalidAddressError",
    "InvalidContentError",
    "InvalidStanzaError",
    "LimitExceededError",
    "Limits",
    "Message",
    "MessageType",
    "Payload",
    "PayloadKind",
    "Receipt",
    "ReceiptType",
    "Refused",
    "Stanza",
    "StanzaError",
    "StanzaParseError",
    "check_content",
    "decode",
    "decode_content",
    "downgrade",
    "encode",
    "encode_content",
    "pad",
    "required_features",
    "unpad",
]
