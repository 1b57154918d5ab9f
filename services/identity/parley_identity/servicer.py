"""gRPC face of the identity service: requests to handler calls, handler results to responses."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason, PageResponse, ProviderStatus
from parley.identity.v1 import identity_pb2 as pb
from parley.identity.v1 import identity_pb2_grpc
from parley_identity.directory import IdentityProviderDirectory
from parley_identity.handler import DEFAULT_DELETE_WINDOW_S, DEFAULT_EDIT_WINDOW_S, IdentityHandler, Resolution
from parley_identity.model import ConsentRecord, DeviceRecord, MuteRecord, MuteTarget
from parley_runtime.auth import Access, ProviderPrincipal, UserPrincipal, certificate_sha256
from parley_runtime.errors import Code, ParleyError, missing_field, permission_denied
from parley_runtime.interceptors import current_principal
from parley_runtime.sessions import SessionKeys, provider_key_fingerprint

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

_ACCESS_BY_METHOD: dict[str, Access] = {
    "EnlistProvider": Access.ADMIN,
    "ApproveProvider": Access.ADMIN,
    "SuspendProvider": Access.ADMIN,
    "RevokeProvider": Access.ADMIN,
    "UpdateProviderCredentials": Access.ADMIN,
    "GetProvider": Access.ADMIN | Access.INTERNAL,
    "ListProviders": Access.ADMIN,
    "WatchProviders": Access.INTERNAL,
    "CreateSession": Access.PROVIDER,
    "ListAvailableProviders": Access.USER,
    "RegisterUser": Access.USER,
    "RegisterDevice": Access.USER,
    "RemoveDevice": Access.USER,
    "ListDevices": Access.USER,
    "GetConsent": Access.USER,
    "EnableThirdPartyChats": Access.USER,
    "UpdateConsent": Access.USER,
    "DisableThirdPartyChats": Access.USER,
    "LookupAddress": Access.USER,
    "ResolveRecipient": Access.INTERNAL,
    "SetInteropPolicy": Access.ADMIN,
    "SetMute": Access.USER,
    "ClearMute": Access.USER,
    "ListMutes": Access.USER,
}
ACCESS = {f"/{SERVICE_NAME}/{method}": access for method, access in _ACCESS_BY_METHOD.items()}
"""Full method name -> accepted principals, for the auth interceptor."""

_FOLLOWERS = frozenset({"keydir", "moderation", "notification", "relay"})
INTERNAL_CALLERS = {
    f"/{SERVICE_NAME}/{method}": callers
    for method, callers in {
        "GetProvider": _FOLLOWERS,
        "WatchProviders": _FOLLOWERS,
        "ResolveRecipient": frozenset({"keydir", "notification", "relay"}),
    }.items()
}
"""Internal method -> the services (by credential name) it serves; WatchProviders hands out every provider's keys."""

_StatusChangeRequest = pb.ApproveProviderRequest | pb.SuspendProviderRequest | pb.RevokeProviderRequest
_StatusChangeResponseT = TypeVar(
    "_StatusChangeResponseT", pb.ApproveProviderResponse, pb.SuspendProviderResponse, pb.RevokeProviderResponse
)


def _user() -> UserPrincipal:
    principal = current_principal()
    if not isinstance(principal, UserPrincipal):
        raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a user assertion")
    return principal


def _device_pb(device: DeviceRecord) -> pb.Device:
    return pb.Device(
        device_id=device.device_id, registration_id=device.registration_id, created_at_ms=device.created_at_ms
    )


def _consent_pb(consent: ConsentRecord) -> pb.Consent:
    return pb.Consent(
        state=consent.state,
        allowed_providers=sorted(consent.allowed_providers),
        inbox_mode=consent.inbox_mode,
        updated_at_ms=consent.updated_at_ms,
    )


def _mute_pb(mute: MuteRecord) -> pb.Mute:
    if mute.target is MuteTarget.PEER:
        return pb.Mute(peer=mute.subject, until_ms=mute.until_ms, created_at_ms=mute.created_at_ms)
    return pb.Mute(provider_id=mute.subject, until_ms=mute.until_ms, created_at_ms=mute.created_at_ms)


def _mute_target(request: pb.SetMuteRequest | pb.ClearMuteRequest) -> tuple[MuteTarget, str]:
    """What a mute request names, as (target, subject)."""
    which = request.WhichOneof("target")
    if which == "peer":
        return MuteTarget.PEER, request.peer
    if which == "provider_id":
        return MuteTarget.PROVIDER, request.provider_id
    raise missing_field("target")


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """Implements ``parley.identity.v1.IdentityService``."""

    def __init__(
        self,
        handler: IdentityHandler,
        directory: IdentityProviderDirectory,
        *,
        sessions: SessionKeys | None = None,
        session_lifetime_s: int = 600,
    ) -> None:
        self._handler = handler
        self._directory = directory
        self._sessions = sessions
        self._session_lifetime_s = session_lifetime_s

    async def EnlistProvider(
        self, request: pb.EnlistProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnlistProviderResponse:
        provider = await self._handler.enlist_provider(
            request.provider_id,
            request.display_name,
            request.signing_public_key,
            request.mtls_client_cert_pem,
            request.identifier_kinds,
            request.features,
            request.edit_window_s,
            request.delete_window_s,
        )
        return pb.EnlistProviderResponse(provider=provider)

    async def ApproveProvider(
        self, request: pb.ApproveProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApproveProviderResponse:
        return await self._change_provider_status(
            request, ProviderStatus.PROVIDER_STATUS_APPROVED, pb.ApproveProviderResponse
        )

    async def SuspendProvider(
        self, request: pb.SuspendProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuspendProviderResponse:
        return await self._change_provider_status(
            request, ProviderStatus.PROVIDER_STATUS_SUSPENDED, pb.SuspendProviderResponse
        )

    async def RevokeProvider(
        self, request: pb.RevokeProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeProviderResponse:
        return await self._change_provider_status(
            request, ProviderStatus.PROVIDER_STATUS_REVOKED, pb.RevokeProviderResponse
        )

    async def _change_provider_status(
        self,
        request: _StatusChangeRequest,
        target: ProviderStatus.ValueType,
        response_type: type[_StatusChangeResponseT],
    ) -> _StatusChangeResponseT:
        """Body of ApproveProvider, SuspendProvider and RevokeProvider, which differ only in the target status.

        Each RPC keeps its own request and response messages (one pair per RPC); the pairs carry the same fields.
        """
        provider = await self._handler.change_provider_status(request.provider_id, target, request.reason)
        return response_type(provider=provider)

    async def UpdateProviderCredentials(
        self, request: pb.UpdateProviderCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProviderCredentialsResponse:
        provider = await self._handler.update_provider_credentials(
            request.provider_id, request.signing_public_key, request.mtls_client_cert_pem
        )
        return pb.UpdateProviderCredentialsResponse(provider=provider)

    async def GetProvider(
        self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProviderResponse:
        return pb.GetProviderResponse(provider=await self._handler.get_provider(request.provider_id))

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        providers, next_token = await self._handler.list_providers(request.page.page_size, request.page.page_token)
        return pb.ListProvidersResponse(providers=providers, page=PageResponse(next_page_token=next_token))

    async def WatchProviders(
        self, request: pb.WatchProvidersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchProvidersResponse]:
        async for snapshot, providers in self._directory.watch():
            yield pb.WatchProvidersResponse(providers=providers, snapshot=snapshot)

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        principal = current_principal()
        # Only an assertion makes a session: a session renewing itself would outlive the provider's proof of its key.
        if not isinstance(principal, ProviderPrincipal) or principal.session:
            raise permission_denied(
                ErrorReason.ERROR_REASON_TOKEN_INVALID, "a session is made with a provider-level assertion"
            )
        if self._sessions is None:
            raise ParleyError(
                Code.FAILED_PRECONDITION, ErrorReason.ERROR_REASON_SESSION_KEY_UNKNOWN, "sessions are not enabled"
            )
        # The server presents the client certificate only where it requires one (mTLS): the session is bound to it.
        certificates = context.auth_context().get("x509_pem_cert")
        bound = certificate_sha256(certificates[0]) if certificates else b""
        expires_at = int(time.time()) + self._session_lifetime_s
        record = self._directory.get(principal.provider_id)
        if record is None:
            raise permission_denied(ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER, "provider is not enlisted")
        fingerprint = provider_key_fingerprint(record.signing_key.public_bytes_raw())
        token = self._sessions.mint(principal.provider_id, expires_at, fingerprint, bound)
        return pb.CreateSessionResponse(
            session_token=token, expires_at_ms=expires_at * 1000, lifetime_s=self._session_lifetime_s
        )

    async def ListAvailableProviders(
        self, request: pb.ListAvailableProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAvailableProvidersResponse:
        return pb.ListAvailableProvidersResponse(
            providers=[
                pb.ProviderSummary(
                    provider_id=record.provider_id,
                    display_name=record.display_name,
                    features=sorted(record.features),
                    # Providers enlisted before windows existed have none stored: they get the defaults.
                    edit_window_s=record.edit_window_s or DEFAULT_EDIT_WINDOW_S,
                    delete_window_s=record.delete_window_s or DEFAULT_DELETE_WINDOW_S,
                )
                for record in self._handler.available_providers()
            ]
        )

    async def RegisterUser(
        self, request: pb.RegisterUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterUserResponse:
        user = _user().user
        consent = await self._handler.register_user(user)
        return pb.RegisterUserResponse(address=str(user), consent=_consent_pb(consent))

    async def RegisterDevice(
        self, request: pb.RegisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterDeviceResponse:
        user = _user().user
        device = await self._handler.register_device(user, request.registration_id)
        return pb.RegisterDeviceResponse(device=_device_pb(device), address=str(user.with_device(device.device_id)))

    async def RemoveDevice(
        self, request: pb.RemoveDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveDeviceResponse:
        await self._handler.remove_device(_user().user, request.device_id)
        return pb.RemoveDeviceResponse()

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDevicesResponse:
        devices = await self._handler.list_devices(_user().user)
        return pb.ListDevicesResponse(devices=[_device_pb(device) for device in devices])

    async def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentResponse:
        return pb.GetConsentResponse(consent=_consent_pb(await self._handler.get_consent(_user().user)))

    async def EnableThirdPartyChats(
        self, request: pb.EnableThirdPartyChatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableThirdPartyChatsResponse:
        principal = _user()
        consent = await self._handler.enable_third_party_chats(
            principal.user, request.allowed_providers, request.inbox_mode, principal.device_id
        )
        return pb.EnableThirdPartyChatsResponse(consent=_consent_pb(consent))

    async def UpdateConsent(
        self, request: pb.UpdateConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConsentResponse:
        allowed = list(request.allowed_providers) if request.replace_allowed_providers else None
        consent = await self._handler.update_consent(_user().user, allowed, request.inbox_mode)
        return pb.UpdateConsentResponse(consent=_consent_pb(consent))

    async def DisableThirdPartyChats(
        self, request: pb.DisableThirdPartyChatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableThirdPartyChatsResponse:
        consent = await self._handler.disable_third_party_chats(_user().user)
        return pb.DisableThirdPartyChatsResponse(consent=_consent_pb(consent))

    async def LookupAddress(
        self, request: pb.LookupAddressRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupAddressResponse:
        resolution = await self._handler.lookup(_user().user, request.address)
        return pb.LookupAddressResponse(
            address=str(resolution.recipient),
            devices=[_device_pb(device) for device in resolution.devices],
            features=sorted(resolution.features),
        )

    async def ResolveRecipient(
        self, request: pb.ResolveRecipientRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveRecipientResponse:
        resolution: Resolution = await self._handler.resolve_recipient(request.sender, request.recipient)
        return pb.ResolveRecipientResponse(
            reachability=resolution.reachability,
            recipient=str(resolution.recipient),
            devices=[_device_pb(device) for device in resolution.devices],
            features=sorted(resolution.features),
            inbox_mode=resolution.inbox_mode,
            muted=resolution.muted,
            sender_consent=resolution.sender_consent,
            policy_rule=resolution.policy_rule,
        )

    async def SetInteropPolicy(
        self, request: pb.SetInteropPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetInteropPolicyResponse:
        provider = await self._handler.set_interop_policy(request.provider_id, request.policy)
        return pb.SetInteropPolicyResponse(provider=provider)

    async def SetMute(self, request: pb.SetMuteRequest, context: grpc.aio.ServicerContext) -> pb.SetMuteResponse:
        target, subject = _mute_target(request)
        mute = await self._handler.set_mute(_user().user, target, subject, request.duration_s)
        return pb.SetMuteResponse(mute=_mute_pb(mute))

    async def ClearMute(self, request: pb.ClearMuteRequest, context: grpc.aio.ServicerContext) -> pb.ClearMuteResponse:
        target, subject = _mute_target(request)
        return pb.ClearMuteResponse(cleared=await self._handler.clear_mute(_user().user, target, subject))

    async def ListMutes(self, request: pb.ListMutesRequest, context: grpc.aio.ServicerContext) -> pb.ListMutesResponse:
        mutes = await self._handler.list_mutes(_user().user)
        return pb.ListMutesResponse(mutes=[_mute_pb(mute) for mute in mutes])
