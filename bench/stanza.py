"""parley_stanza beside its floor: bare lxml parsing and serializing of the same bytes.

Figures (all rates in stanzas/s, higher is better), for a typical message stanza (2 device payloads, ~1 KB)
and a large one (20 payloads, ~7 KB):
- ``parse_*``: ``decode`` (safety scan, parse, hand-checked structure, typed objects) beside
  ``etree.fromstring`` with the same safe parser.
- ``serialize_*``: ``encode`` of the typed stanza beside ``etree.tostring`` of the parsed tree.
- ``round_trip_*``: ``decode`` + ``encode`` beside ``fromstring`` + ``tostring``: the full codec against its
  floor, the figure the 1.5x target (ratio >= 0.67) applies to.

``extra`` of the parse figures records what the design decisions cost: ``xsd_parse_validate_per_s`` is
fromstring plus validating against stanza.xsd (why the schema is not on the hot path), and
``decode_cold_address_cache_per_s`` is ``decode`` with the address cache emptied before every call (every
address normalized again by phonenumbers, and the canonical fast path declining for want of them), and
``decode_non_canonical_per_s`` is ``decode`` of the same stanza with a newline between elements, which the
canonical fast path declines and libxml2 parses.
"""

from __future__ import annotations

from pathlib import Path

from benchlib import Figure, interleaved, parse_args, rate, write_results
from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs

from parley_stanza import Message, decode, encode
from parley_stanza._address import _normalize_phone, address_cache
from parley_stanza._codec import _PARSER
from parley_stanza.testing import sample_message

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.67


def main() -> None:
    """Measures every figure and writes bench/results/stanza.json."""
    args = parse_args(__doc__ or "")
    seconds = 0.3 if args.quick else 2.0
    schema = etree.XMLSchema(etree.parse(str(ROOT / "protos/stanza/v1/stanza.xsd")))
    figures: dict[str, Figure] = {}
    for label, devices in (("typical", 2), ("large", 20)):
        message = sample_message(devices, franked=True)
        data = encode(message)
        tree = etree.fromstring(data, _PARSER)
        assert decode(data) == message
        assert etree.tostring(tree) == data  # the floor's output is the same document

        def ours_parse(data: bytes = data) -> object:
            return decode(data)

        def floor_parse(data: bytes = data) -> object:
            return etree.fromstring(data, _PARSER)

        def ours_serialize(message: Message = message) -> bytes:
            return encode(message)

        def floor_serialize(tree: object = tree) -> bytes:
            return bytes(etree.tostring(tree))

        def cold_decode(data: bytes = data) -> object:
            address_cache.clear()
            _normalize_phone.cache_clear()
            return decode(data)

        def xsd_parse(data: bytes = data) -> object:
            return schema.validate(etree.fromstring(data, _PARSER))

        pretty = data.replace(b"><", b">\n<")
        assert decode(pretty) == message

        def non_canonical_decode(pretty: bytes = pretty) -> object:
            return decode(pretty)

        def round_trip(data: bytes = data) -> bytes:
            return encode(decode(data))

        def floor_round_trip(data: bytes = data) -> bytes:
            return bytes(etree.tostring(etree.fromstring(data, _PARSER)))

        ours, floor = interleaved(ours_parse, floor_parse, seconds=seconds)
        figures[f"parse_{label}"] = Figure(
            "stanzas/s",
            ours,
            floor,
            extra={
                "bytes": len(data),
                "payloads": devices,
                "xsd_parse_validate_per_s": round(rate(xsd_parse, seconds=seconds, repeats=1), 1),
                "decode_cold_address_cache_per_s": round(rate(cold_decode, seconds=seconds, repeats=1), 1),
                "decode_non_canonical_per_s": round(rate(non_canonical_decode, seconds=seconds, repeats=1), 1),
            },
        )
        ours, floor = interleaved(ours_serialize, floor_serialize, seconds=seconds)
        figures[f"serialize_{label}"] = Figure("stanzas/s", ours, floor, extra={"bytes": len(data)})
        ours, floor = interleaved(round_trip, floor_round_trip, seconds=seconds)
        figures[f"round_trip_{label}"] = Figure("stanzas/s", ours, floor, target=TARGET, extra={"bytes": len(data)})
    write_results("stanza", figures, quick=args.quick, out=args.out)


if __name__ == "__main__":
    main()
