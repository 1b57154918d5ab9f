"""parley_sdk: what a provider integrates with.

- ``ProviderBackend``: the provider's backend, holding its enlisted signing key and minting a one-time assertion
  for every call it makes for its users.
- ``DeviceClient``: one device of one user: registration, key publication and refill (one-time prekeys and
  one-time PQ prekeys, ``PreKeyCounts``), sessions, and end-to-end encryption of content messages into stanzas
  (and back).

- ``RelayConnection`` / ``Incoming``: a device's relay stream (deliveries, acknowledgements, pipelined sends).
- ``error_reason``: the machine-readable reason of a refused call.
"""

from parley_sdk._device import Decrypted, DeviceClient, NotForThisDeviceError, PreKeyCounts, bundle_from_proto
from parley_sdk._errors import error_reason
from parley_sdk._provider import Metadata, ProviderBackend
from parley_sdk._relay import Incoming, RelayConnection, StreamClosedError

__all__ = [
    "Decrypted",
    "DeviceClient",
    "Incoming",
    "Metadata",
    "NotForThisDeviceError",
    "PreKeyCounts",
    "ProviderBackend",
    "RelayConnection",
    "StreamClosedError",
    "bundle_from_proto",
    "error_reason",
]
