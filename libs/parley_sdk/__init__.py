"""parley_sdk: what a provider integrates with.

- ``ProviderBackend``: the provider's backend, holding its enlisted signing key and minting a one-time assertion
  for every call it makes for its users.
- ``DeviceClient``: one device of one user: registration, key publication and refill (one-time prekeys and
  one-time PQ prekeys, ``PreKeyCounts``), sessions, and end-to-end encryption of content messages into stanzas
  (and back). Sending fits content to the recipient's provider (capability downgrade, ``ContentRefusedError``
  with a ``Refusal`` when impossible) and franks it; ``process`` applies the rules of edits, deletes and
  disappearing timers to what arrives (``Received``, ``Outcome``); ``report`` reports a message in one call.
- ``MessageStore`` / ``InMemoryMessageStore`` / ``StoredMessage``: a device's messages as its user sees them.
- ``ProviderDirectory`` / ``ProviderInfo``: what each provider's clients can display, from identity, cached.

- ``RelayConnection`` / ``Incoming``: a device's relay stream (deliveries, acknowledgements, pipelined sends).
- ``error_reason``: the machine-readable reason of a refused call.
"""

from parley_sdk._device import Decrypted, DeviceClient, NotForThisDeviceError, PreKeyCounts, bundle_from_proto
from parley_sdk._errors import ContentRefusedError, Refusal, error_reason
from parley_sdk._messages import InMemoryMessageStore, MessageStore, Outcome, Received, StoredMessage, Tombstone
from parley_sdk._provider import Metadata, ProviderBackend
from parley_sdk._providers import ProviderDirectory, ProviderInfo, features_from_proto
from parley_sdk._relay import Incoming, RelayConnection, StreamClosedError

__all__ = [
    "ContentRefusedError",
    "Decrypted",
    "DeviceClient",
    "InMemoryMessageStore",
    "Incoming",
    "MessageStore",
    "Metadata",
    "NotForThisDeviceError",
    "Outcome",
    "PreKeyCounts",
    "ProviderBackend",
    "ProviderDirectory",
    "ProviderInfo",
    "Received",
    "Refusal",
    "RelayConnection",
    "StoredMessage",
    "StreamClosedError",
    "Tombstone",
    "bundle_from_proto",
    "error_reason",
    "features_from_proto",
]
