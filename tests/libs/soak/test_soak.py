"""A two-minute fault soak (issue 10): two relays under steady cross-provider traffic while relays are killed and
terminated, Redis is restarted and paused and providers are suspended; nothing acknowledged may be lost."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from parley_soak import FAULTS


@pytest.mark.timeout(420)
def test_two_minutes_of_faults_lose_nothing(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**31)
    print(f"soak seed {seed} (rerun: python -m parley_soak --minutes 2 --seed {seed})")
    report_path = tmp_path / "soak.json"
    completed = subprocess.run(  # noqa: S603  # our own module, with arguments built here
        [sys.executable, "-m", "parley_soak", "--minutes", "2", "--seed", str(seed), "--report", str(report_path)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["undecryptable"] == 0
    # Traffic really flowed, to every device, and every kind of fault happened while it did.
    assert report["acknowledged"] > 500
    assert report["delivered"] >= report["acknowledged"]
    assert {fault["kind"] for fault in report["faults"]} == set(FAULTS)
