"""docs/integrating.md stays true to the SDK: its code is valid Python and every call it shows exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from parley.content.v1 import content_pb2
from parley_sdk import DeviceClient, ProviderBackend, RelayConnection, webhooks
from parley_stanza import Address

GUIDE = Path(__file__).parents[3] / "docs" / "integrating.md"
# What each name in the guide's snippets stands for.
OBJECTS: dict[str, object] = {
    "backend": ProviderBackend,
    "ben": DeviceClient,
    "DeviceClient": DeviceClient,
    "connection": RelayConnection,
    "webhooks": webhooks,
    "Address": Address,
    "content_pb2": content_pb2,
}


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)


def _parsed(snippet: str) -> ast.Module:
    # Snippets use await and return at top level, as inside the caller's coroutine or handler.
    return ast.parse("async def _snippet():\n" + "".join(f"    {line}\n" for line in snippet.splitlines()))


def test_the_guide_shows_code_for_every_step() -> None:
    assert len(_snippets()) >= 5


def test_every_snippet_is_valid_python() -> None:
    for snippet in _snippets():
        _parsed(snippet)


def test_every_attribute_the_guide_uses_exists() -> None:
    used: set[tuple[str, str]] = set()
    for snippet in _snippets():
        for node in ast.walk(_parsed(snippet)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in OBJECTS:
                used.add((node.value.id, node.attr))
    assert used, "no SDK calls found in the guide"
    missing = [f"{name}.{attr}" for name, attr in sorted(used) if not hasattr(OBJECTS[name], attr)]
    assert missing == []
