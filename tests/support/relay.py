"""Relay test scaffolding: a cluster with identity, key directory and relay, and SDK devices on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from parley.content.v1 import content_pb2
from parley_relay.app import RelaySettings, build_relay
from parley_sdk import DeviceClient, ProviderBackend
from parley_stanza import Address, Message, MessageType, Payload, PayloadKind
from support.cluster import ALL_FEATURES, Cluster


@dataclass
class World:
    """Providers and users of a relay test: gatekeeper (Ana, two devices) and birdy (Ben; Cleo, two devices)."""

    cluster: Cluster
    backends: dict[str, ProviderBackend] = field(default_factory=dict)
    devices: dict[str, DeviceClient] = field(default_factory=dict)

    def __getitem__(self, name: str) -> DeviceClient:
        return self.devices[name]

    async def close(self) -> None:
        """Closes the backends' channels."""
        for backend in self.backends.values():
            await backend.close()


async def start_providers(
    cluster: Cluster,
    features: Mapping[str, Sequence[int]],
    *,
    relays: int = 1,
    sessions: bool = True,
    **relay_overrides: object,
) -> dict[str, ProviderBackend]:
    """Starts identity, key directory and ``relays`` relay replicas, enlists each provider with its features, and
    returns their SDK backends (sessions unless ``sessions`` is False: per-call assertions)."""
    await cluster.start_identity()
    keys = {
        name: await cluster.enlist(name, features=provider_features) for name, provider_features in features.items()
    }
    await cluster.start_keydir()
    for index in range(relays):
        await cluster.start(
            "relay" if index == 0 else f"relay-{index}",
            RelaySettings,
            build_relay,
            replica=f"relay-{index}",
            **relay_overrides,
        )
    return {
        name: ProviderBackend(
            name,
            provider_keys.signing_key,
            identity_target=cluster.target("identity"),
            keydir_target=cluster.target("keydir"),
            relay_target=cluster.target("relay"),
            # Reports go to moderation when the test runs one.
            moderation_target=cluster.target("moderation") if "moderation" in cluster.servers else None,
            sessions=sessions,
        )
        for name, provider_keys in keys.items()
    }


async def start_world(cluster: Cluster, *, relays: int = 1, sessions: bool = True, **relay_overrides: object) -> World:
    """Starts identity, key directory and ``relays`` relay replicas, and registers the cast with keys; the
    providers' backends use sessions unless ``sessions`` is False (per-call assertions)."""
    features = dict.fromkeys(("gatekeeper", "birdy"), ALL_FEATURES)
    world = World(cluster)
    world.backends = await start_providers(cluster, features, relays=relays, sessions=sessions, **relay_overrides)
    cast = [
        ("ana_phone", "gatekeeper", "username:ana", True),
        ("ana_laptop", "gatekeeper", "username:ana", False),
        ("ben", "birdy", "username:ben", True),
        ("cleo_phone", "birdy", "username:cleo", True),
        ("cleo_tablet", "birdy", "username:cleo", False),
    ]
    for name, provider, user, new_user in cast:
        address = Address.parse(f"{user}@{provider}")
        world.devices[name] = await DeviceClient.register(world.backends[provider], address, new_user=new_user)
    await world["ana_phone"].enable_third_party_chats(["birdy"])
    for name in ("ben", "cleo_phone"):
        await world[name].enable_third_party_chats(["gatekeeper"])
    for device in world.devices.values():
        await device.publish_keys(20)
    return world


def text(body: str) -> content_pb2.Content:
    """A text content message."""
    return content_pb2.Content(sent_at_ms=1, text=content_pb2.Text(body=body))


def raw_message(sender: Address, recipient: Address, devices: list[Address], message_id: str = "m1") -> Message:
    """A message stanza with placeholder ciphertexts (the relay never decrypts), for relay-only tests."""
    return Message(
        id=message_id,
        sender=sender,
        recipient=recipient,
        ts=1,
        type=MessageType.CHAT,
        payloads=tuple(Payload.of(device, PayloadKind.MESSAGE, b"ciphertext") for device in devices),
    )
