"""Notification settings: the environment variables the README documents, and the rules between them."""

from __future__ import annotations

import os

import pytest

from parley_notification.app import NotificationSettings
from parley_runtime.config import ConfigError, load_settings


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
