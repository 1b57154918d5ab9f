"""gRPC face of the key directory: requests to handler calls, handler results to responses."""

from __future__ import annotations

import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason
from parley.keydir.v1 import keydir_pb2 as pb
from parley.keydir.v1 import keydir_pb2_grpc
from parley_keydir.handler import KeyDirectoryHandler
from parley_keydir.model import Bundle, OneTimeKey, PqPreKeyKind, SignedKey
from parley_runtime.auth import Access, UserPrincipal
from parley_runtime.errors import missing_field, permission_denied
from parley_runtime.interceptors import current_principal
from parley_stanza import Address

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KeyDirectoryService"].full_name

ACCESS = {
    f"/{SERVICE_NAME}/{method}": Access.DEVICE
    for method in ("PublishKeys", "RotateSignedPreKey", "UploadOneTimePreKeys", "GetPreKeyCount", "FetchPreKeyBundles")
}
"""Every key-directory RPC acts for one device."""

_PQ_KIND = {
    PqPreKeyKind.ONE_TIME: pb.PQ_PRE_KEY_KIND_ONE_TIME,
    PqPreKeyKind.LAST_RESORT: pb.PQ_PRE_KEY_KIND_LAST_RESORT,
}


def _device() -> Address:
    principal = current_principal()
    if not isinstance(principal, UserPrincipal):
        raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a device assertion")
    return principal.device


def _signed(message: pb.SignedPreKey | pb.KemSignedPreKey) -> SignedKey:
    return SignedKey(message.key_id, message.public_key, message.signature)


def _one_time(keys: list[pb.OneTimePreKey]) -> list[OneTimeKey]:
    return [OneTimeKey(key.key_id, key.public_key) for key in keys]


def _one_time_pq(keys: list[pb.KemSignedPreKey]) -> list[SignedKey]:
    return [_signed(key) for key in keys]


def _fill_bundle(message: pb.PreKeyBundle, user: Address, bundle: Bundle) -> None:
    """Writes ``bundle`` into ``message``, a bundle already in the response (no sub-message built and copied)."""
    message.address = str(user.with_device(bundle.device_id))
    message.device_id = bundle.device_id
    message.registration_id = bundle.registration_id
    message.identity_key = bundle.identity_key
    signed = message.signed_prekey
    signed.key_id = bundle.signed_prekey.key_id
    signed.public_key = bundle.signed_prekey.public_key
    signed.signature = bundle.signed_prekey.signature
    if bundle.one_time_prekey is None:
        message.one_time_prekey_exhausted = True
    else:
        message.one_time_prekey.key_id = bundle.one_time_prekey.key_id
        message.one_time_prekey.public_key = bundle.one_time_prekey.public_key
    if bundle.pq_prekey is not None and bundle.pq_prekey_kind is not None:
        message.pq_prekey.key_id = bundle.pq_prekey.key_id
        message.pq_prekey.public_key = bundle.pq_prekey.public_key
        message.pq_prekey.signature = bundle.pq_prekey.signature
        message.pq_prekey_kind = _PQ_KIND[bundle.pq_prekey_kind]


class KeyDirectoryServicer(keydir_pb2_grpc.KeyDirectoryServiceServicer):
    """Implements ``parley.keydir.v1.KeyDirectoryService``."""

    def __init__(self, handler: KeyDirectoryHandler) -> None:
        self._handler = handler

    async def PublishKeys(
        self, request: pb.PublishKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishKeysResponse:
        result = await self._handler.publish_keys(
            _device(),
            registration_id=request.registration_id or None,
            identity_key=request.identity_key or None,
            signed_prekey=_signed(request.signed_prekey) if request.HasField("signed_prekey") else None,
            pq_prekey=_signed(request.pq_prekey) if request.HasField("pq_prekey") else None,
            one_time_prekeys=_one_time(list(request.one_time_prekeys)),
            one_time_pq_prekeys=_one_time_pq(list(request.one_time_pq_prekeys)),
        )
        return pb.PublishKeysResponse(
            one_time_prekey_count=result.one_time_prekey_count,
            identity_key_changed=result.identity_key_changed,
            one_time_pq_prekey_count=result.one_time_pq_prekey_count,
        )

    async def RotateSignedPreKey(
        self, request: pb.RotateSignedPreKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSignedPreKeyResponse:
        if not request.HasField("signed_prekey"):
            raise missing_field("signed_prekey")
        await self._handler.publish_keys(
            _device(),
            registration_id=None,
            identity_key=None,
            signed_prekey=_signed(request.signed_prekey),
            pq_prekey=None,
            one_time_prekeys=[],
            one_time_pq_prekeys=[],
        )
        return pb.RotateSignedPreKeyResponse()

    async def UploadOneTimePreKeys(
        self, request: pb.UploadOneTimePreKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadOneTimePreKeysResponse:
        if not request.one_time_prekeys and not request.one_time_pq_prekeys:
            raise missing_field("one_time_prekeys")
        result = await self._handler.publish_keys(
            _device(),
            registration_id=None,
            identity_key=None,
            signed_prekey=None,
            pq_prekey=None,
            one_time_prekeys=_one_time(list(request.one_time_prekeys)),
            one_time_pq_prekeys=_one_time_pq(list(request.one_time_pq_prekeys)),
        )
        return pb.UploadOneTimePreKeysResponse(
            one_time_prekey_count=result.one_time_prekey_count,
            one_time_pq_prekey_count=result.one_time_pq_prekey_count,
        )

    async def GetPreKeyCount(
        self, request: pb.GetPreKeyCountRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPreKeyCountResponse:
        counts = await self._handler.count(_device())
        return pb.GetPreKeyCountResponse(
            one_time_prekey_count=counts.one_time_prekeys,
            has_pq_prekey=counts.has_last_resort_pq_prekey,
            low_watermark=self._handler.limits.low_watermark,
            one_time_pq_prekey_count=counts.one_time_pq_prekeys,
        )

    async def FetchPreKeyBundles(
        self, request: pb.FetchPreKeyBundlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.FetchPreKeyBundlesResponse:
        bundles = await self._handler.fetch_bundles(_device(), request.address)
        user = Address.parse(request.address).user
        response = pb.FetchPreKeyBundlesResponse()
        for bundle in bundles:
            _fill_bundle(response.bundles.add(), user, bundle)
        return response
