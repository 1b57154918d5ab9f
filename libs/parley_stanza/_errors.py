"""The typed errors of parley_stanza: every failure the library reports is a ``StanzaError``.

Callers (the relay above all) map these to wire error codes, so each class names one kind of fault and the
message says which value was wrong, never echoing more than a short prefix of untrusted input.
"""

from __future__ import annotations


class StanzaError(ValueError):
    """Base class of every error parley_stanza raises on bad input."""


class InvalidAddressError(StanzaError):
    """An address is not of the form ``kind:identifier@provider[/device]`` or one of its parts is invalid."""


class StanzaParseError(StanzaError):
    """The bytes are not a well-formed, safe XML document."""


class ForbiddenMarkupError(StanzaParseError):
    """The document uses markup stanzas never need and that parsers can be attacked through.

    That is a DOCTYPE (and with it entity declarations, the billion-laughs and XXE vectors), a processing
    instruction, a comment or a CDATA section.
    """


class LimitExceededError(StanzaParseError):
    """The document exceeds one of the configured ``Limits``.

    Attributes:
        limit: the name of the ``Limits`` field that was exceeded, e.g. ``"max_bytes"``.
        maximum: the configured bound.
        actual: the value seen, or the first value seen above the bound.
    """

    def __init__(self, limit: str, maximum: int, actual: int) -> None:
        super().__init__(f"{limit} exceeded: {actual} > {maximum}")
        self.limit = limit
        self.maximum = maximum
        self.actual = actual


class InvalidStanzaError(StanzaError):
    """The document is well-formed XML but not a valid stanza (unknown element, bad attribute...)."""


class InvalidContentError(StanzaError):
    """Decrypted content bytes are not a padded, well-formed content message."""
