"""parley_sdk: what a provider integrates with.

- ``ProviderBackend``: the provider's backend, holding its enlisted signing key and minting a one-time assertion
  for every call it makes for its users.
- ``DeviceClient``: one device of one user: registration, key publication and refill, sessions, and end-to-end
  encryption of content messages into stanzas (and back).

The relay client (send, connect, acknowledge, media) joins with the relay service.
"""

from parley_sdk._device import Decrypted, DeviceClient, NotForThisDeviceError, bundle_from_proto
from parley_sdk._provider import Metadata, ProviderBackend

__all__ = ["Decrypted", "DeviceClient", "Metadata", "NotForThisDeviceError", "ProviderBackend", "bundle_from_proto"]
