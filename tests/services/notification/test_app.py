"""Notification settings: the environment variables the README documents, and the rules between them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from parley_notification.app import NotificationSettings
from parley_runtime.config import ConfigError, ServiceSettings, load_settings

README = Path(__file__).parents[3] / "services" / "notification" / "README.md"
_SETTINGS_ROW = re.compile(r"^\| (`PARLEY_[A-Z_]+`(?: / `PARLEY_[A-Z_]+`)*) \| ([^|]+) \|", re.MULTILINE)
# Documented in words, not as the value the field holds.
_DESCRIBED_DEFAULTS = {"consumer_name": "host-pid-random"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The defaults are under test: a PARLEY_* variable of the shell running the tests must not hide them.
    for name in list(os.environ):
        if name.startswith("PARLEY_"):
            monkeypatch.delenv(name)


def test_identity_settings_come_from_the_shared_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_IDENTITY_TARGET", "identity.parley:7101")
    monkeypatch.setenv("PARLEY_STARTUP_TIMEOUT_S", "12.5")
    settings = load_settings(NotificationSettings)
    assert settings.identity_target == "identity.parley:7101"
    assert settings.startup_timeout_s == 12.5
    assert settings.port == 7104


def test_defaults_match_the_readme() -> None:
    settings = load_settings(NotificationSettings)
    assert settings.identity_target == "127.0.0.1:7101"
    assert settings.startup_timeout_s == 30.0


def test_a_lease_must_outlive_the_webhook_timeout() -> None:
    with pytest.raises(ConfigError, match="delivery_lease_ms must exceed webhook_timeout_s"):
        load_settings(NotificationSettings, webhook_timeout_s=5.0, delivery_lease_ms=5000)


def _documented_defaults() -> dict[str, str]:
    """Field name -> the default the README's settings table gives (rows may pair variables: `A` / `B`)."""
    section = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str] = {}
    for names, defaults in _SETTINGS_ROW.findall(section):
        variables = [name.strip("`").removeprefix("PARLEY_").lower() for name in names.split(" / ")]
        values = [value.strip().strip("`") for value in defaults.split(" / ")]
        assert len(variables) == len(values), names
        documented.update(zip(variables, values, strict=True))
    return documented


def test_the_readme_lists_every_own_setting_with_its_default() -> None:
    documented = _documented_defaults()
    own = set(NotificationSettings.model_fields) - set(ServiceSettings.model_fields) | {"port"}
    assert set(documented) == own
    for name, text in documented.items():
        default = NotificationSettings.model_fields[name].default
        if name in _DESCRIBED_DEFAULTS:
            assert (default, text) == ("", _DESCRIBED_DEFAULTS[name])
        elif isinstance(default, bool):
            assert text == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(text) == default, name
        else:
            assert text == default, name
