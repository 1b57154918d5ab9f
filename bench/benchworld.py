"""Set-up shared by the benchmarks that run real services: the bench's tokens and enlisting providers."""

from __future__ import annotations

import base64
import secrets
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley_runtime.auth import mint_assertion
from parley_runtime.credentials import new_credentials

ADMIN_TOKEN = "bench-admin"  # noqa: S105 -- a throwaway token of a bench-local cluster
CREDENTIALS = new_credentials()
"""Each bench service's credential (fresh per run); ServiceProcess(..., credentials=CREDENTIALS) hands them out."""
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

Metadata = tuple[tuple[str, str], ...]


SESSION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
"""The provider-session key every bench service shares (a fresh one per run)."""


def service_env(redis_url: str) -> dict[str, str]:
    """The environment every bench service process shares: the bench's Redis, admin token and session key, quiet
    logs."""
    return {
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PARLEY_SESSION_KEY": SESSION_KEY,
        "PARLEY_LOG_LEVEL": "WARNING",
    }


async def enlist(identity: identity_pb2_grpc.IdentityServiceStub, provider_id: str) -> Ed25519PrivateKey:
    """Enlists and approves a provider (usernames, text); returns its signing key."""
    key = Ed25519PrivateKey.generate()
    await identity.EnlistProvider(
        id_pb.EnlistProviderRequest(
            provider_id=provider_id,
            display_name=provider_id,
            signing_public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            identifier_kinds=[IdentifierKind.IDENTIFIER_KIND_USERNAME],
            features=[Feature.FEATURE_TEXT],
        ),
        metadata=ADMIN,
    )
    await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=ADMIN)
    return key


def auth(key: Ed25519PrivateKey, provider_id: str, subject: str, device_id: int | None = None) -> Metadata:
    """Call metadata with a fresh one-time assertion for ``subject`` (and ``device_id``)."""
    token = mint_assertion(key, provider_id=provider_id, subject=subject, device_id=device_id)
    return (("authorization", f"Bearer {token}"),)


_ASSERTION_SHELF_S = 20.0
"""How long a minted assertion (60 s to live) stays ready for the next round."""


class Assertions:
    """One-time assertions for ``subject``, minted ahead in batches so that minting stays out of timed rounds."""

    def __init__(self, key: Ed25519PrivateKey, provider_id: str, subject: str, device_id: int | None = None) -> None:
        self._key = key
        self._provider_id = provider_id
        self._subject = subject
        self._device_id = device_id
        self._ready: list[tuple[float, Metadata]] = []

    def mint(self, count: int) -> None:
        """Mints until ``count`` assertions are ready, first dropping those too old to outlast another round."""
        # Assertions live 60 s, and the newest are used first: unused old ones would sit at the bottom until a
        # round that uses more than the last reached them, expired.
        fresh_after = time.monotonic() - _ASSERTION_SHELF_S
        self._ready = [(minted, metadata) for minted, metadata in self._ready if minted > fresh_after]
        while len(self._ready) < count:
            self._ready.append((time.monotonic(), auth(self._key, self._provider_id, self._subject, self._device_id)))

    def next(self) -> Metadata:
        """Call metadata with an unused assertion (minted now if none is ready)."""
        if self._ready:
            return self._ready.pop()[1]
        return auth(self._key, self._provider_id, self._subject, self._device_id)
