"""``make demo`` keeps working: the scripted conversation runs through real service processes and checks itself."""

from __future__ import annotations

import subprocess
import sys


def test_demo_conversation_runs_and_every_message_arrives_exactly_once() -> None:
    # A fixed interpreter and module: nothing here comes from outside the test.
    result = subprocess.run(
        [sys.executable, "-m", "parley_sdk.demo"], capture_output=True, text=True, timeout=110, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every message decrypted exactly once on every intended device" in result.stdout
    assert "NOT_FOUND 'this user cannot be found'" in result.stdout
    assert "is typing" in result.stdout
    assert "decrypted 48000 bytes" in result.stdout
    assert "caught up with 9 messages" in result.stdout
    assert "downgrade for birdy: sticker_as_image" in result.stdout
    assert "got the sticker as an image" in result.stdout
    assert (
        "refused before sending (feature_missing, deletes): The recipient's app cannot delete messages for everyone."
        in result.stdout
    )
    assert "Ben cannot tell he is blocked" in result.stdout
    assert "trailing, coalesced; signature valid" in result.stdout
    assert "every webhook delivery carried a valid signature" in result.stdout
