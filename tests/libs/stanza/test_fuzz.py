"""Fuzzing the stanza codec: mutated real stanzas produce a typed error or a stanza every view agrees on."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs

from parley_stanza import InvalidStanzaError, Payload, StanzaError, decode, encode
from parley_stanza._codec import DEFAULT_LIMITS, _decode_canonical_message, _decode_tree
from parley_stanza.testing import rebuild, sample_message

HERE = Path(__file__).resolve().parent
GOLDEN = sorted((HERE / "golden").glob("*.xml"))
SCHEMA = etree.XMLSchema(etree.parse(str(HERE.parents[2] / "protos/stanza/v1/stanza.xsd")))

# Fragments that reach the parser's and the decoder's corner cases far sooner than random bytes do.
_TOKENS = [
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"<!-- c -->",
    b"<![CDATA[x]]>",
    b"<?pi x?>",
    b"&lt;",
    b"&amp;",
    b"&a;",
    b"&#0;",
    b"&#x41;",
    b"<a>",
    b"</a>",
    b"<payload>",
    b"</payload>",
    b'<payload device="username:x@birdy/9" kind="message">AAAA</payload>',
    b'<ref id="m"/>',
    b'<member address="username:x@birdy"/>',
    b'<franking commitment="AAAA"/>',
    b' group="g"',
    b' to="username:x@birdy"',
    b' xmlns:p="urn:parley:stanza:1"',
    b"<p:payload/>",  # a prefix nobody declared: libxml2 keeps "p:payload" as the tag
    b"p:",
    b'"',
    b"'",
    b"=",
    b"/",
    b"@",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b" ",
    b"\n",
    b"9999999999999999999",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "delete", "insert", "token", "duplicate"]))
        if operation == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "token":
            data[position:position] = draw(st.sampled_from(_TOKENS))
        else:
            end = min(len(data), position + draw(st.integers(1, 80)))
            data[position:position] = data[position:end]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_stanzas_give_typed_errors_or_agreeing_stanzas(data: bytes) -> None:
    for path in GOLDEN:  # the golden addresses in the cache, so that mutations reach the canonical fast path
        decode(path.read_bytes())
    fast = _decode_canonical_message(data, DEFAULT_LIMITS)
    if fast is not None:  # the fast path accepts exactly encode()'s output, and agrees with the tree path
        assert encode(fast) == data
        assert _decode_tree(data, DEFAULT_LIMITS) == fast
    try:
        stanza = decode(data)
    except StanzaError:
        return
    assert rebuild(stanza) == stanza  # the decoder's fast path checks what the constructors check
    canonical = encode(stanza)
    assert decode(canonical) == stanza
    assert SCHEMA.validate(etree.fromstring(canonical)), SCHEMA.error_log


# Canonical messages and the bytes that decide whether one is still canonical: the fast path's cases.
_CANONICAL_MESSAGES = [encode(sample_message(n, franked=franked)) for n in (1, 3) for franked in (False, True)]
_EDGE_BYTES = list(b'=AB+/"<> &;#x:@.-_09\n\x00\xc3')


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(_CANONICAL_MESSAGES),
    st.lists(
        st.tuples(st.integers(0, 2000), st.sampled_from(["set", "insert", "delete"]), st.sampled_from(_EDGE_BYTES)),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_canonical_messages_are_declined_or_read_exactly(
    canonical: bytes, edits: list[tuple[int, str, int]]
) -> None:
    decode(canonical)  # its addresses in the cache
    data = bytearray(canonical)
    for offset, operation, byte in edits:
        position = offset % (len(data) + 1)
        if operation == "set" and position < len(data):
            data[position] = byte
        elif operation == "insert":
            data[position:position] = bytes([byte])
        else:
            del data[position : position + 1]
    fast = _decode_canonical_message(bytes(data), DEFAULT_LIMITS)
    if fast is not None:
        assert encode(fast) == data
        assert rebuild(fast) == fast
        assert _decode_tree(bytes(data), DEFAULT_LIMITS) == fast


@pytest.mark.parametrize("path", sorted((HERE / "regressions").iterdir()), ids=lambda path: path.name)
def test_inputs_fuzzing_once_broke_give_typed_errors(path: Path) -> None:
    with pytest.raises(StanzaError):
        decode(path.read_bytes())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_session_finds_no_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "golden", corpus)
    result = subprocess.run(  # noqa: S603  # our own interpreter and harness, fixed arguments
        [sys.executable, str(HERE / "fuzz_codec.py"), str(corpus), "-atheris_runs=30000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,  # crash files land here, not in the source tree
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_rebuild_catches_an_object_the_constructors_refuse() -> None:
    payload = sample_message(1).payloads[0]
    forged = object.__new__(Payload)
    for name, value in (("device", payload.device), ("kind", payload.kind), ("ciphertext_b64", "not base64!")):
        object.__setattr__(forged, name, value)
    assert rebuild(payload) == payload
    with pytest.raises(InvalidStanzaError):
        rebuild(forged)
