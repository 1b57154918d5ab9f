"""Assertion verification: the fast path accepts exactly what PyJWT accepts, and defers everything else to it."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parley.common.v1.common_pb2 import Feature, ProviderStatus
from parley_runtime.auth import Access, Authenticator, ProviderRecord, UserPrincipal, mint_assertion
from parley_runtime.errors import ParleyError

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
USER = "username:ann@birdy"


class _Providers:
    def __init__(self) -> None:
        self.records = {
            "birdy": ProviderRecord(
                "birdy", ProviderStatus.PROVIDER_STATUS_APPROVED, KEY.public_key(), frozenset({Feature.FEATURE_TEXT})
            )
        }

    def get(self, provider_id: str) -> ProviderRecord | None:
        return self.records.get(provider_id)


class _Replays:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def first_use(self, provider_id: str, jti: str, expires_at: float) -> bool:
        first = jti not in self.seen
        self.seen.add(jti)
        return first


def _authenticator(providers: _Providers | None = None) -> Authenticator:
    return Authenticator(providers or _Providers(), _Replays(), audience="parley", admin_token="", internal_peers={})


def _token(claims: dict[str, Any] | None = None, *, key: Ed25519PrivateKey = KEY, header: Any = None) -> str:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "birdy",
        "sub": USER,
        "aud": "parley",
        "iat": now,
        "exp": now + 60,
        "jti": "0123456789abcdef",
        "dev": 1,
    }
    base.update(claims or {})
    for name in [name for name, value in base.items() if value is None]:
        del base[name]
    if header is None:
        return jwt.encode(base, key, algorithm="EdDSA")
    # Built by hand: PyJWT will not write some of the headers under test.
    signing_input = f"{_segment({'alg': 'EdDSA', 'typ': 'JWT', **header})}.{_segment(base)}"
    return f"{signing_input}.{base64.urlsafe_b64encode(key.sign(signing_input.encode())).rstrip(b'=').decode()}"


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


_NOW = int(time.time())
CASES = {
    "plain": _token(),
    "audience list": _token({"aud": ["other", "parley"]}),
    "audience list with a number": _token({"aud": ["parley", 7]}),
    "other audience": _token({"aud": "elsewhere"}),
    "expired": _token({"iat": _NOW - 400, "exp": _NOW - 300}),
    "expired within the leeway": _token({"iat": _NOW - 40, "exp": _NOW - 10}),
    "issued in the future": _token({"iat": _NOW + 300, "exp": _NOW + 360}),
    "float times": _token({"iat": _NOW + 0.5, "exp": _NOW + 60.5}),
    "not yet valid": _token({"nbf": _NOW + 300}),
    "no jti": _token({"jti": None}),
    "numeric sub": _token({"sub": 42}),
    "unknown issuer": _token({"iss": "nobody"}),
    "wrong key": _token(key=OTHER_KEY),
    "kid": _token(header={"kid": "k1"}),
    "numeric kid": _token(header={"kid": 1}),
    "critical extension": _token(header={"crit": ["exp"]}),
    "other algorithm": _token(header={"alg": "HS256"}),
    "garbled payload": "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.!!!.AAAA",
}


TAKEN_FAST = {"plain", "audience list", "expired within the leeway", "kid"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_path_accepts_only_what_pyjwt_accepts(name: str) -> None:
    authenticator = _authenticator()
    token = CASES[name]
    fast = authenticator._verify_plain_assertion(token)
    try:
        _, full_claims = authenticator._verify_assertion_in_full(token)
    except ParleyError:
        assert fast is None, f"{name}: PyJWT refuses what the fast path accepted"
        return
    if name in TAKEN_FAST:
        assert fast is not None, f"{name}: an ordinary assertion missed the fast path"
    if fast is not None:
        assert fast[1] == full_claims


def test_a_tampered_signature_is_refused_by_both_paths() -> None:
    token = _token()
    header, payload, signature = token.split(".")
    flipped = f"{header}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    authenticator = _authenticator()
    assert authenticator._verify_plain_assertion(flipped) is None
    with pytest.raises(ParleyError):
        authenticator._verify_assertion_in_full(flipped)


async def test_a_rotated_key_is_used_at_once() -> None:
    providers = _Providers()
    authenticator = _authenticator(providers)
    assert authenticator._verify_plain_assertion(_token()) is not None
    old = providers.records["birdy"]
    providers.records["birdy"] = ProviderRecord("birdy", old.status, OTHER_KEY.public_key(), old.features)
    assert authenticator._verify_plain_assertion(_token()) is None
    assert authenticator._verify_plain_assertion(_token(key=OTHER_KEY)) is not None


async def test_an_assertion_is_accepted_once() -> None:
    authenticator = _authenticator()
    token = mint_assertion(KEY, provider_id="birdy", subject=USER, device_id=1)
    metadata = {"authorization": f"Bearer {token}"}
    principal = await authenticator.authenticate(metadata, Access.DEVICE)
    assert isinstance(principal, UserPrincipal)
    assert (principal.provider_id, str(principal.user), principal.device_id) == ("birdy", USER, 1)
    with pytest.raises(ParleyError) as replayed:
        await authenticator.authenticate(metadata, Access.DEVICE)
    assert replayed.value.reason_name == "TOKEN_REPLAYED"
