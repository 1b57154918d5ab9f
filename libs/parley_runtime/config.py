"""Service configuration from environment variables, validated once at start.

Each service declares a subclass of :class:`ServiceSettings` with its own fields; every field reads the
environment variable ``PARLEY_<FIELD_NAME>``. :func:`load_settings` turns validation failures into a
:class:`ConfigError` whose message names each bad variable, so a misconfigured pod fails at start with a line
an operator can act on.

The message shows each rejected value too, except where it would put a secret into the logs: a URL keeps its
host but loses its password, and a secret field's value is never shown. A field is secret if it is typed
``SecretStr``/``SecretBytes`` (also inside ``Optional``/``Union``), or if a word of its name (split on ``_``) is
key(s), token, secret, password, passphrase or credential(s). The naming rule is the safety net for a secret
declared as plain ``str``, such as a ``franking_key``; declare secrets as ``SecretStr`` all the same, so that
``repr(settings)`` hides them too. The validator of a secret field must keep the value out of its own message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretBytes, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley_runtime.credentials import credential_service, parse_peers
from parley_runtime.sessions import MIN_KEY_BYTES, SessionKeys

ENV_PREFIX = "PARLEY_"

# The message echoes each bad value, which goes to logs: a URL's password (redis://:secret@host) must not.
_URL_CREDENTIALS = re.compile(r"(//)[^/@\s]*@")

# Words of a field name that make the field secret whatever its type (the module docstring lists them too).
_SECRET_NAME_WORDS = frozenset(
    {"key", "keys", "token", "secret", "password", "passphrase", "credential", "credentials"}
)


class ConfigError(Exception):
    """The environment does not hold a valid configuration; the message names the bad variables."""


class ServiceSettings(BaseSettings):
    """Settings every Parley service shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to (0.0.0.0 in containers).")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://", description="Redis connection URL."
    )
    redis_cluster: bool = Field(
        False,
        description="Talk to a Redis Cluster: `PARLEY_REDIS_URL` names any one node (`redis://` or `rediss://`, "
        "database 0); the client finds the others and follows failovers.",
    )
    redis_max_connections: int = Field(
        64, ge=1, le=10_000, description="Connection pool size per process (with a cluster: per node)."
    )
    redis_timeout_s: float = Field(
        1.0, gt=0, le=30, description="Deadline of each Redis command; beyond it the call fails as UNAVAILABLE."
    )
    admin_token: SecretStr = Field(SecretStr(""), description="Bearer token for admin RPCs; empty disables admin RPCs.")
    internal_token: SecretStr = Field(
        SecretStr(""),
        description="This service's own credential `<service>:<secret>`, presented on its calls to other services.",
    )
    internal_peers: str = Field(
        "",
        description="Services allowed to call this one's internal RPCs: `name=<sha256 hex of its credential>`"
        "[`|<another hash, while rotating>`], comma-separated; empty: no internal RPCs.",
    )
    audience: str = Field("parley", min_length=1, description="Audience (`aud`) user assertions must name.")
    assertion_max_lifetime_s: int = Field(
        300, ge=10, le=3600, description="Longest lifetime (exp - iat) accepted for a user assertion."
    )
    clock_skew_s: int = Field(30, ge=0, le=300, description="Clock skew tolerated when checking assertions.")
    session_key: SecretStr = Field(
        SecretStr(""),
        description="Base64 of the provider-session key (at least 32 random bytes), the same on every service: "
        "identity mints session tokens with it, every service checks them; empty disables sessions.",
    )
    session_previous_key: SecretStr = Field(
        SecretStr(""),
        description="Base64 of the session key being rotated out, still accepted for session tokens; empty: none.",
    )
    session_lifetime_s: int = Field(
        600, ge=30, le=3600, description="How long a provider session (CreateSession) lasts, seconds."
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="On SIGTERM, how long in-flight calls may finish before being cancelled.",
    )
    max_inflight_calls: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Calls handled at once; beyond it RESOURCE_EXHAUSTED/OVERLOADED.",
    )
    max_pending_calls: int = Field(
        20_000,
        ge=1000,
        le=1_000_000,
        description="Calls the gRPC transport queues before the process takes them up; past it, some are cancelled.",
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest gRPC message accepted."
    )
    readiness_interval_s: float = Field(
        1.0, gt=0, le=60, description="Time between checks of the dependencies readiness follows (Redis, identity)."
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level of the JSON logs.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
    tls_cert_file: str = Field(
        "", description="PEM certificate chain the gRPC server presents; with the key file it serves TLS only."
    )
    tls_key_file: str = Field("", description="PEM private key of the server certificate.")
    tls_client_ca_file: str = Field(
        "", description="PEM CA bundle; when set, every client must present a certificate it signed (mTLS)."
    )
    tls_ca_file: str = Field(
        "", description="PEM CA bundle trusted for calls to other Parley services; when set, those calls use TLS."
    )
    tls_peer_cert_file: str = Field(
        "",
        description="PEM certificate chain this service presents when it calls other services (their mTLS); its "
        "URI SAN spiffe://<PARLEY_TRUST_DOMAIN>/<service> names the service.",
    )
    tls_peer_key_file: str = Field("", description="PEM private key of the peer certificate.")
    trust_domain: str = Field(
        "parley",
        pattern=r"^[a-z0-9._-]{1,255}$",
        description="SPIFFE trust domain of service certificates: spiffe://<domain>/<service>.",
    )

    @field_validator(
        "tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file", "tls_peer_cert_file", "tls_peer_key_file"
    )
    @classmethod
    def _readable_file(cls, value: str) -> str:
        if value and not os.access(value, os.R_OK):
            raise ValueError("no readable file at this path")
        return value

    @field_validator("internal_token")
    @classmethod
    def _service_credential(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            credential_service(value.get_secret_value())
        return value

    @field_validator("session_key", "session_previous_key")
    @classmethod
    def _session_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            _decode_key(value)
        return value

    @model_validator(mode="after")
    def _session_rotation(self) -> ServiceSettings:
        previous = self.session_previous_key.get_secret_value()
        if previous and not self.session_key.get_secret_value():
            raise ValueError(f"{ENV_PREFIX}SESSION_PREVIOUS_KEY needs {ENV_PREFIX}SESSION_KEY")
        if previous and _decode_key(self.session_previous_key) == _decode_key(self.session_key):
            raise ValueError(f"{ENV_PREFIX}SESSION_PREVIOUS_KEY is the same key as {ENV_PREFIX}SESSION_KEY")
        return self

    def session_keys(self) -> SessionKeys | None:
        """The session keys, or None when sessions are off (no ``PARLEY_SESSION_KEY``)."""
        if not self.session_key.get_secret_value():
            return None
        previous = self.session_previous_key
        return SessionKeys(
            _decode_key(self.session_key), _decode_key(previous) if previous.get_secret_value() else None
        )

    @field_validator("internal_peers")
    @classmethod
    def _peers(cls, value: str) -> str:
        parse_peers(value)
        return value

    @model_validator(mode="after")
    def _cluster_url(self) -> ServiceSettings:
        if self.redis_cluster:
            # A cluster has only database 0 and is reached over TCP: refuse what the client would reject later.
            if not self.redis_url.startswith(("redis://", "rediss://")):
                raise ValueError(f"{ENV_PREFIX}REDIS_CLUSTER needs a redis:// or rediss:// {ENV_PREFIX}REDIS_URL")
            database = urlsplit(self.redis_url).path.strip("/")
            if database not in ("", "0"):
                raise ValueError(f"{ENV_PREFIX}REDIS_CLUSTER needs database 0 in {ENV_PREFIX}REDIS_URL")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServiceSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError(f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError(f"{ENV_PREFIX}TLS_CLIENT_CA_FILE needs the server's own certificate and key")
        if bool(self.tls_peer_cert_file) != bool(self.tls_peer_key_file):
            raise ValueError(f"{ENV_PREFIX}TLS_PEER_CERT_FILE and {ENV_PREFIX}TLS_PEER_KEY_FILE go together")
        if self.tls_peer_cert_file and not self.tls_ca_file:
            raise ValueError(f"{ENV_PREFIX}TLS_PEER_CERT_FILE is for TLS calls: set {ENV_PREFIX}TLS_CA_FILE too")
        return self


def _decode_key(value: SecretStr) -> bytes:
    """A base64 secret key of at least 32 bytes; the error never shows the value."""
    try:
        key = base64.b64decode(value.get_secret_value(), validate=True)
    except binascii.Error:
        raise ValueError("must be base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"must decode to at least {MIN_KEY_BYTES} bytes")
    return key


class IdentityPeerSettings(ServiceSettings):
    """Settings of a service that follows identity's provider list (every service but identity)."""

    identity_target: str = Field("127.0.0.1:7101", min_length=1, description="Identity service host:port.")
    startup_timeout_s: float = Field(
        30.0, gt=0, le=600, description="How long to wait at start for identity's provider list."
    )


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Reads ``cls`` from the environment (``overrides`` win), or raises a readable :class:`ConfigError`.

    Args:
        cls: the service's settings class.
        overrides: values that take precedence over the environment (tests, embedding).

    Returns:
        The validated settings.

    Raises:
        ConfigError: naming every variable with a bad value (and the value, unless the field is secret).
    """
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            if not error["loc"]:
                # A rule across fields (it names its variables itself).
                problems.append(error["msg"].removeprefix("Value error, "))
            elif _is_secret(cls, str(error["loc"][0])):
                problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']} (value hidden: secret)")
            else:
                got = _URL_CREDENTIALS.sub(r"\1***@", repr(error.get("input")))
                problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']} (got {got})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _is_secret(cls: type[ServiceSettings], name: str) -> bool:
    """Whether the value of field ``name`` must stay out of error messages (see the module docstring)."""
    if _SECRET_NAME_WORDS.intersection(name.lower().split("_")):
        return True
    info = cls.model_fields.get(name)
    return info is not None and _holds_secret_type(info.annotation)


def _holds_secret_type(annotation: object) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_holds_secret_type(arg) for arg in get_args(annotation))
