"""TLS at the transport: servers serve TLS only when configured, mTLS refuses clients without a certificate, and
internal channels verify their peers."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.cluster import CREDENTIALS, error_reason
from support.probe import PROBE_SERVICE, ProbeFactory
from support.tls import Issued, TestAuthority

from parley.common.v1.common_pb2 import ProviderStatus
from parley.identity.v1.identity_pb2 import Provider
from parley_runtime.auth import certificate_sha256, mint_assertion
from parley_runtime.clients import PeerTls, internal_channel, peer_tls
from parley_runtime.config import ConfigError, ServiceSettings, load_settings
from parley_runtime.credentials import peers_line
from parley_runtime.providers import ProviderCache
from parley_runtime.sessions import SessionKeys, provider_key_fingerprint
from parley_runtime.telemetry import Telemetry


async def _healthy(channel: grpc.aio.Channel) -> bool:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_tls_server_talks_to_tls_clients_only(
    start_probe: ProbeFactory, tmp_path: Path, telemetry: Telemetry
) -> None:
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    probe = await start_probe(tls_cert_file=str(server.cert_file), tls_key_file=str(server.key_file))
    target = f"localhost:{probe.server.port}"
    assert await _healthy(grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(authority.ca_pem)))
    assert not await _healthy(grpc.aio.insecure_channel(target))
    # Parley's own services reach it when they trust the CA.
    peer = internal_channel(target, internal_token="t", telemetry=telemetry, tls=PeerTls(authority.ca_pem))
    assert await _healthy(peer)
    (tmp_path / "other").mkdir()
    stranger = TestAuthority(tmp_path / "other")
    assert not await _healthy(grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(stranger.ca_pem)))


async def test_mtls_refuses_clients_without_a_certificate_from_the_client_ca(
    start_probe: ProbeFactory, tmp_path: Path
) -> None:
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    client = authority.issue("birdy", server=False)
    probe = await start_probe(
        tls_cert_file=str(server.cert_file),
        tls_key_file=str(server.key_file),
        tls_client_ca_file=str(authority.ca_file),
    )
    target = f"localhost:{probe.server.port}"
    anonymous = grpc.ssl_channel_credentials(authority.ca_pem)
    assert not await _healthy(grpc.aio.secure_channel(target, anonymous))
    identified = grpc.ssl_channel_credentials(authority.ca_pem, client.key_pem, client.cert_pem)
    assert await _healthy(grpc.aio.secure_channel(target, identified))


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    with pytest.raises(ConfigError, match="TLS_CERT_FILE and PARLEY_TLS_KEY_FILE go together"):
        load_settings(ServiceSettings, tls_cert_file=str(server.cert_file))
    with pytest.raises(ConfigError, match=r"PARLEY_TLS_CA_FILE: .*no readable file"):
        load_settings(ServiceSettings, tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA_FILE needs the server's own certificate"):
        load_settings(ServiceSettings, tls_client_ca_file=str(authority.ca_file))
    settings = load_settings(ServiceSettings, tls_cert_file=str(server.cert_file), tls_key_file=str(server.key_file))
    assert settings.tls_cert_file == str(server.cert_file)


async def test_a_provider_that_enlisted_a_certificate_must_present_that_one(
    start_probe: ProbeFactory, tmp_path: Path
) -> None:
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    enlisted, other = authority.issue("birdy", server=False), authority.issue("someone-else", server=False)
    signing_key = Ed25519PrivateKey.generate()
    providers = ProviderCache()
    providers.put(
        Provider(
            provider_id="birdy",
            status=ProviderStatus.PROVIDER_STATUS_APPROVED,
            signing_public_key=signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            mtls_client_cert_pem=enlisted.cert_pem.decode(),
        )
    )
    probe = await start_probe(
        providers=providers,
        tls_cert_file=str(server.cert_file),
        tls_key_file=str(server.key_file),
        tls_client_ca_file=str(authority.ca_file),
    )
    target = f"localhost:{probe.server.port}"

    async def call(client_cert: Issued) -> grpc.aio.AioRpcError | bytes:
        credentials = grpc.ssl_channel_credentials(authority.ca_pem, client_cert.key_pem, client_cert.cert_pem)
        token = mint_assertion(signing_key, provider_id="birdy", subject="birdy")
        async with grpc.aio.secure_channel(target, credentials) as channel:
            try:
                reply: bytes = await channel.unary_unary(f"/{PROBE_SERVICE}/ForProviders")(
                    b"hi", metadata=(("authorization", f"Bearer {token}"),), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                return error
        return reply

    assert await call(enlisted) == b"hi"
    refused = await call(other)  # signed by the same CA, but not birdy's
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused) == "CLIENT_CERT_MISMATCH"


async def test_under_mtls_a_service_credential_needs_that_services_certificate(
    start_probe: ProbeFactory, tmp_path: Path, telemetry: Telemetry
) -> None:
    # Regression (issue 10, item 8): internal channels presented no client certificate, so a service could not
    # call a peer that required mTLS at all, and a service credential was never bound to a service identity.
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    relay = authority.issue("relay", server=False, uris=["spiffe://parley/relay"])
    moderation = authority.issue("moderation", server=False, uris=["spiffe://parley/moderation"])
    foreign = authority.issue("relay-elsewhere", server=False, uris=["spiffe://elsewhere/relay"])
    birdy = authority.issue("birdy", server=False)
    relay_credential, peers = CREDENTIALS["relay"], peers_line(CREDENTIALS)
    probe = await start_probe(
        tls_cert_file=str(server.cert_file),
        tls_key_file=str(server.key_file),
        tls_client_ca_file=str(authority.ca_file),
        internal_peers=peers,
    )
    target = f"localhost:{probe.server.port}"

    async def call(certificate: Issued, credential: str) -> bytes | str:
        tls = PeerTls(authority.ca_pem, certificate.cert_pem, certificate.key_pem)
        channel = internal_channel(target, internal_token=credential, telemetry=telemetry, tls=tls)
        try:
            reply: bytes = await channel.unary_unary(f"/{PROBE_SERVICE}/ForServices")(b"hi", timeout=5)
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name} {error_reason(error)}"
        finally:
            await channel.close()
        return reply

    assert await call(relay, relay_credential) == b"hi"
    assert await call(moderation, CREDENTIALS["moderation"]) == b"hi"
    # The relay's secret with another service's, another domain's or a provider's certificate is refused.
    for certificate in (moderation, foreign, birdy):
        assert await call(certificate, relay_credential) == "PERMISSION_DENIED CLIENT_CERT_MISMATCH"


async def test_a_session_made_over_one_client_certificate_is_refused_over_another(
    start_probe: ProbeFactory, tmp_path: Path
) -> None:
    """A session token bound to the certificate it was made over (as identity's CreateSession binds it) works only
    over that certificate, here over real mTLS: a stolen token is useless from another client, even one the same CA
    vouches for and the same provider may use."""
    authority = TestAuthority(tmp_path)
    server = authority.issue("server", server=True)
    first, second = authority.issue("birdy-a", server=False), authority.issue("birdy-b", server=False)
    signing_key = Ed25519PrivateKey.generate()
    public_key = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    providers = ProviderCache()
    # No pinned certificate: both are birdy's as far as the directory knows; only the session's binding differs.
    providers.put(
        Provider(provider_id="birdy", status=ProviderStatus.PROVIDER_STATUS_APPROVED, signing_public_key=public_key)
    )
    session_key = secrets.token_bytes(32)
    probe = await start_probe(
        providers=providers,
        tls_cert_file=str(server.cert_file),
        tls_key_file=str(server.key_file),
        tls_client_ca_file=str(authority.ca_file),
        session_key=base64.b64encode(session_key).decode(),
    )
    target = f"localhost:{probe.server.port}"
    token = SessionKeys(session_key).mint(
        "birdy", int(time.time()) + 600, provider_key_fingerprint(public_key), certificate_sha256(first.cert_pem)
    )

    async def call(client_cert: Issued) -> bytes | str:
        credentials = grpc.ssl_channel_credentials(authority.ca_pem, client_cert.key_pem, client_cert.cert_pem)
        async with grpc.aio.secure_channel(target, credentials) as channel:
            try:
                reply: bytes = await channel.unary_unary(f"/{PROBE_SERVICE}/ForProviders")(
                    b"hi", metadata=(("authorization", f"Bearer {token}"),), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name} {error_reason(error)}"
        return reply

    assert await call(first) == b"hi"
    assert await call(second) == "PERMISSION_DENIED CLIENT_CERT_MISMATCH"


def test_peer_tls_settings_go_together(tmp_path: Path) -> None:
    authority = TestAuthority(tmp_path)
    relay = authority.issue("relay", server=False, uris=["spiffe://parley/relay"])
    with pytest.raises(ConfigError, match="TLS_PEER_CERT_FILE and PARLEY_TLS_PEER_KEY_FILE go together"):
        load_settings(ServiceSettings, tls_peer_cert_file=str(relay.cert_file), tls_ca_file=str(authority.ca_file))
    with pytest.raises(ConfigError, match="set PARLEY_TLS_CA_FILE too"):
        load_settings(ServiceSettings, tls_peer_cert_file=str(relay.cert_file), tls_peer_key_file=str(relay.key_file))
    settings = load_settings(
        ServiceSettings,
        tls_ca_file=str(authority.ca_file),
        tls_peer_cert_file=str(relay.cert_file),
        tls_peer_key_file=str(relay.key_file),
    )
    assert peer_tls(settings) == PeerTls(authority.ca_pem, relay.cert_pem, relay.key_pem)
