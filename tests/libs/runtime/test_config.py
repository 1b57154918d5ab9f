"""Configuration from ``PARLEY_*`` variables: values parsed, and every bad variable named in the error."""

from __future__ import annotations

import os

import pytest
from pydantic import Field, SecretStr, field_validator

from parley_identity.app import IdentitySettings
from parley_moderation.app import ModerationSettings
from parley_relay.app import RelaySettings
from parley_runtime.config import ConfigError, ServiceSettings, load_settings

# Shaped like a secret but not base64, so every franking key validator rejects it.
_LEAKY = "hunter2-hunter2-hunter2-hunter2!"


class _SecretSettings(ServiceSettings):
    """One field of each secret kind, each with a check the test value fails, and a plain field beside them."""

    pairing_code: SecretStr | None = Field(None, description="Secret by type only (in an Optional), not by name.")
    webhook_signing_key: str = Field("", description="Secret by name only: typed plain str.")
    greeting: str = Field("", description="Not secret: its bad value is shown.")

    @field_validator("pairing_code", "webhook_signing_key", "greeting")
    @classmethod
    def _short(cls, value: SecretStr | str | None) -> SecretStr | str | None:
        if value is not None and len(value) > 8:
            raise ValueError("must be at most 8 characters")
        return value


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own PARLEY_* variables must not leak into what the tests read.
    for name in list(os.environ):
        if name.startswith("PARLEY_"):
            monkeypatch.delenv(name)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings(ServiceSettings)
    assert (defaults.port, defaults.shutdown_grace_s, defaults.audience) == (0, 10.0, "parley")
    monkeypatch.setenv("PARLEY_PORT", "7000")
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("PARLEY_SHUTDOWN_GRACE_S", "2.5")
    settings = load_settings(ServiceSettings)
    assert (settings.port, settings.shutdown_grace_s) == (7000, 2.5)
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_PORT", "7000")
    assert load_settings(ServiceSettings, port=0).port == 0


def test_identity_has_its_own_defaults() -> None:
    settings = load_settings(IdentitySettings)
    assert (settings.port, settings.max_devices_per_user, settings.lookup_burst) == (7101, 6, 60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PARLEY_PORT", "not-a-port"),
        ("PARLEY_PORT", "70000"),
        ("PARLEY_REDIS_URL", "http://127.0.0.1:6379"),
        ("PARLEY_REDIS_CLUSTER", "maybe"),
        ("PARLEY_LOG_LEVEL", "LOUD"),
        ("PARLEY_SHUTDOWN_GRACE_S", "-1"),
        ("PARLEY_MAX_INFLIGHT_CALLS", "0"),
        ("PARLEY_ASSERTION_MAX_LIFETIME_S", "86400"),
    ],
)
def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings)
    message = str(error.value)
    assert f"{variable}:" in message
    assert repr(value) in message
    assert message.count("PARLEY_") == 1


@pytest.mark.parametrize("url", ["unix:///run/redis.sock", "redis://redis-0:6379/3", "rediss://redis-0:6379/1"])
def test_a_cluster_needs_a_tcp_url_of_database_0(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PARLEY_REDIS_CLUSTER", "1")
    monkeypatch.setenv("PARLEY_REDIS_URL", url)
    with pytest.raises(ConfigError, match="PARLEY_REDIS_CLUSTER needs"):
        load_settings(ServiceSettings)


@pytest.mark.parametrize("url", ["redis://redis-0:6379", "redis://redis-0:6379/0", "rediss://:pw@redis-0:6380/"])
def test_a_cluster_url_names_any_node(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PARLEY_REDIS_CLUSTER", "true")
    monkeypatch.setenv("PARLEY_REDIS_URL", url)
    settings = load_settings(ServiceSettings)
    assert (settings.redis_cluster, settings.redis_url) == (True, url)


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_PORT", "-5")
    monkeypatch.setenv("PARLEY_MAX_DEVICES_PER_USER", "0")
    monkeypatch.setenv("PARLEY_LOOKUP_PER_SECOND", "0")
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "INFO")
    with pytest.raises(ConfigError) as error:
        load_settings(IdentitySettings)
    named = {line.split(":")[0].strip() for line in str(error.value).splitlines()[1:]}
    assert named == {"PARLEY_PORT", "PARLEY_MAX_DEVICES_PER_USER", "PARLEY_LOOKUP_PER_SECOND"}


@pytest.mark.parametrize("url", ["http://:hunter2@redis:6379/0", "redis//admin:hunter2@redis:6379/0"])
def test_a_bad_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PARLEY_REDIS_URL", url)
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings)
    message = str(error.value)
    assert "PARLEY_REDIS_URL:" in message
    assert "hunter2" not in message
    assert "@redis:6379/0" in message


@pytest.mark.parametrize(
    ("settings_class", "variable"),
    [
        (_SecretSettings, "PARLEY_PAIRING_CODE"),
        (_SecretSettings, "PARLEY_WEBHOOK_SIGNING_KEY"),
        # The relay declares its franking key as plain str, the naming rule is what hides it.
        (RelaySettings, "PARLEY_FRANKING_KEY"),
        (ModerationSettings, "PARLEY_FRANKING_KEY"),
    ],
)
def test_a_bad_secret_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, settings_class: type[ServiceSettings], variable: str
) -> None:
    monkeypatch.setenv(variable, _LEAKY)
    with pytest.raises(ConfigError) as error:
        load_settings(settings_class)
    message = str(error.value)
    assert f"{variable}:" in message
    assert "hunter2" not in message
    assert "(value hidden: secret)" in message


def test_a_bad_plain_value_beside_secrets_is_still_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_GREETING", _LEAKY)
    monkeypatch.setenv("PARLEY_PAIRING_CODE", "too-long-code")
    with pytest.raises(ConfigError) as error:
        load_settings(_SecretSettings)
    lines = [line.strip() for line in str(error.value).splitlines()[1:]]
    assert sorted(lines) == [
        "PARLEY_GREETING: Value error, must be at most 8 characters (got 'hunter2-hunter2-hunter2-hunter2!')",
        "PARLEY_PAIRING_CODE: Value error, must be at most 8 characters (value hidden: secret)",
    ]
