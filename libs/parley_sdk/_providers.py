"""What each provider's clients can display, as identity lists it: the SDK's input to capability downgrade."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from parley.common.v1.common_pb2 import Feature as FeatureProto
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley_stanza import Feature

Credentials = Callable[[str], tuple[tuple[str, str], ...]]


def features_from_proto(values: Iterable[FeatureProto.ValueType]) -> frozenset[Feature]:
    """The stanza library's features from the proto enum (``FEATURE_MEDIA_IMAGE`` -> ``Feature.MEDIA_IMAGE``)."""
    return frozenset(Feature(FeatureProto.Name(value).removeprefix("FEATURE_").lower()) for value in values)


@dataclass(frozen=True)
class ProviderInfo:
    """An approved provider as its users' contacts see it.

    Attributes:
        provider_id: the provider's id.
        display_name: its display name.
        features: what its clients can display.
        edit_window_s: how long after acceptance its clients honour an edit.
        delete_window_s: how long after acceptance its clients honour a delete for everyone.
    """

    provider_id: str
    display_name: str
    features: frozenset[Feature]
    edit_window_s: int
    delete_window_s: int


class ProviderDirectory:
    """Identity's ``ListAvailableProviders``, cached for ``ttl_s`` and asked again at once about an unknown id.

    Providers declare features and windows at enlistment and change rarely; a provider backend calls
    :meth:`invalidate` when its ``provider_available`` or ``provider_status_changed`` webhook arrives, so a new
    provider is known at its first message and the TTL bounds everything else.

    Args:
        identity: identity client stub.
        credentials: call metadata acting for a user (``ProviderBackend.credentials``).
        ttl_s: how long one listing is used.
        clock: monotonic seconds (tests inject their own).
    """

    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceStub,
        credentials: Credentials,
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._identity = identity
        self._credentials = credentials
        self._ttl_s = ttl_s
        self._clock = clock
        self._providers: dict[str, ProviderInfo] = {}
        self._expires = float("-inf")

    def invalidate(self) -> None:
        """Makes the next lookup ask identity again."""
        self._expires = float("-inf")

    async def get(self, provider_id: str, *, acting_for: str) -> ProviderInfo | None:
        """The provider, or None when identity does not list it (not approved, or unknown).

        Args:
            provider_id: the provider asked about.
            acting_for: the user address the listing is asked for (any user of this backend).

        Raises:
            grpc.aio.AioRpcError: identity refused or failed.
        """
        if self._clock() >= self._expires or provider_id not in self._providers:
            await self.refresh(acting_for=acting_for)
        return self._providers.get(provider_id)

    async def refresh(self, *, acting_for: str) -> None:
        """Replaces the cached listing with identity's current one."""
        response: id_pb.ListAvailableProvidersResponse = await self._identity.ListAvailableProviders(
            id_pb.ListAvailableProvidersRequest(), metadata=self._credentials(acting_for)
        )
        self._providers = {
            p.provider_id: ProviderInfo(
                p.provider_id, p.display_name, features_from_proto(p.features), p.edit_window_s, p.delete_window_s
            )
            for p in response.providers
        }
        self._expires = self._clock() + self._ttl_s
