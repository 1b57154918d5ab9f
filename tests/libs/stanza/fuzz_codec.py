"""Coverage-guided fuzzing of the stanza codec with atheris.

Run it directly for as long as you like, seeded with a copy of the golden stanzas (libFuzzer writes the
inputs it finds into its corpus directory, so never point it at the golden directory itself):

    cp -r tests/libs/stanza/golden /tmp/stanza-corpus
    .venv/bin/python tests/libs/stanza/fuzz_codec.py /tmp/stanza-corpus -max_total_time=600

Any exception other than a ``StanzaError``, or a decoded stanza that its own constructor, the encoder or the
schema disagrees with, is a crash. test_fuzz.py runs a short, bounded session of it on every test run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]  # atheris ships no type information

with atheris.instrument_imports():
    from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs

    from parley_stanza import StanzaError, decode, encode
    from parley_stanza.testing import rebuild

_SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).resolve().parents[3] / "protos/stanza/v1/stanza.xsd")))


def check_one_input(data: bytes) -> None:
    """Decodes ``data``; when it is a stanza, checks that every other view of it agrees.

    Raises:
        AssertionError: a decoded stanza is not what its constructor, the encoder or the schema accept.
    """
    try:
        stanza = decode(data)
    except StanzaError:
        return
    assert rebuild(stanza) == stanza  # the decoder's checks are the constructors'
    canonical = encode(stanza)
    assert decode(canonical) == stanza
    assert _SCHEMA.validate(etree.fromstring(canonical)), _SCHEMA.error_log


if __name__ == "__main__":
    atheris.Setup(sys.argv, check_one_input)
    atheris.Fuzz()
