"""Service credentials: each Parley service has its own, and each internal RPC names the services it serves.

A service presents ``<service>:<secret>`` (``PARLEY_INTERNAL_TOKEN``) on every call it makes to another. A service
serving internal RPCs knows its callers only by the SHA-256 of their credentials (``PARLEY_INTERNAL_PEERS``:
``relay=<hex>,keydir=<hex>|<hex>,...``), so it holds none of their secrets, and rotating one service's credential
(add the new hash beside the old with ``|``, roll the caller, drop the old hash) touches no other service.

``python -m parley_runtime.credentials identity keydir relay moderation notification`` prints a fresh credential
per service (``PARLEY_<SERVICE>_CREDENTIAL=...``, the names docker-compose.yml reads) and the peers line that
accepts them all, as an env file.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from collections.abc import Iterable, Mapping

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_MIN_SECRET = 16


def credential_hash(credential: str) -> str:
    """The hex SHA-256 a callee's peers list holds for ``credential``."""
    return hashlib.sha256(credential.encode()).hexdigest()


def credential_service(credential: str) -> str:
    """The service a credential names.

    Raises:
        ValueError: not ``<service>:<secret>`` with a lower-case service name and a secret of 16+ characters.
    """
    name, sep, secret = credential.partition(":")
    if not sep or not _NAME.match(name) or len(secret) < _MIN_SECRET:
        raise ValueError("must be <service>:<secret>, a lower-case service name and a secret of 16+ characters")
    return name


def parse_peers(text: str) -> dict[str, frozenset[str]]:
    """The services ``PARLEY_INTERNAL_PEERS`` accepts, each with the credential hashes it may present.

    Raises:
        ValueError: an entry is not ``name=<64 hex>[|<64 hex>...]``, or a name repeats.
    """
    peers: dict[str, frozenset[str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, hashes = entry.partition("=")
        digests = frozenset(hashes.split("|"))
        if not sep or not _NAME.match(name) or not all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests):
            raise ValueError(f"entry {entry[:40]!r} is not name=<sha256 hex>[|<sha256 hex>...]")
        if name in peers:
            raise ValueError(f"service {name} is listed twice (separate its hashes with |)")
        peers[name] = digests
    return peers


def new_credential(service: str) -> str:
    """A fresh random credential for ``service``."""
    credential = f"{service}:{secrets.token_urlsafe(32)}"
    credential_service(credential)  # refuses a bad service name
    return credential


def peers_line(credentials: Mapping[str, str] | Iterable[str]) -> str:
    """The ``PARLEY_INTERNAL_PEERS`` value accepting each credential (given as credentials, or by service)."""
    values = credentials.values() if isinstance(credentials, Mapping) else credentials
    return ",".join(f"{credential_service(c)}={credential_hash(c)}" for c in values)


SERVICES = ("identity", "keydir", "relay", "moderation", "notification")
"""Parley's services, by the names their credentials carry."""


def new_credentials(services: Iterable[str] = SERVICES) -> dict[str, str]:
    """A fresh credential for each service (one machine's processes, a test cluster)."""
    return {service: new_credential(service) for service in services}


def credential_env(service: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """The ``PARLEY_INTERNAL_*`` variables of ``service`` among services holding ``credentials``: its own
    credential, and every service's accepted as a peer (each RPC still serves only its own callers)."""
    return {"PARLEY_INTERNAL_TOKEN": credentials[service], "PARLEY_INTERNAL_PEERS": peers_line(credentials)}


def deployment_variables(credentials: Mapping[str, str]) -> dict[str, str]:
    """``PARLEY_<SERVICE>_CREDENTIAL`` per service and ``PARLEY_INTERNAL_PEERS``: what docker-compose.yml reads
    (each service gets its own as ``PARLEY_INTERNAL_TOKEN``)."""
    named = {f"PARLEY_{service.upper()}_CREDENTIAL": credential for service, credential in credentials.items()}
    return {**named, "PARLEY_INTERNAL_PEERS": peers_line(credentials)}


def main(argv: list[str]) -> int:
    """Prints a credential per named service and the peers line for them all, as ``NAME=value`` lines."""
    if not argv:
        print(f"usage: {sys.executable} -m parley_runtime.credentials <service> [<service> ...]", file=sys.stderr)
        return 2
    for name, value in deployment_variables(new_credentials(argv)).items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
