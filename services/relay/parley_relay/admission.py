"""Whether a device may still hold a ``Connect`` stream: its provider's status (the kill switch) and interop policy.

Streams re-ask whenever the provider feed changes the device's provider (``MailboxHub.wake_provider``), so a
suspension, a revocation or a policy that no longer lets the device take part ends its streams within the
second the feed takes, each with the reason a client can act on.
"""

from __future__ import annotations

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.auth import ProviderDirectory, check_provider_status
from parley_runtime.errors import ParleyError, permission_denied
from parley_stanza import Address


class StreamAdmission:
    """Decides, from the local provider cache, whether a device's stream may go on.

    Args:
        providers: the provider directory the identity feed keeps current.
    """

    def __init__(self, providers: ProviderDirectory) -> None:
        self._providers = providers

    def refusal(self, device: Address) -> ParleyError | None:
        """Why ``device`` may no longer hold a stream, or None.

        Returns:
            PERMISSION_DENIED with UNKNOWN_PROVIDER, PROVIDER_NOT_APPROVED, PROVIDER_SUSPENDED or PROVIDER_REVOKED
            (metadata ``provider_id``), or with INTEROP_POLICY (metadata ``rule`` and ``provider_id``).
        """
        record = self._providers.get(device.provider)
        if record is None:
            return permission_denied(
                ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER,
                f"provider {device.provider} is not enlisted",
                provider_id=device.provider,
            )
        try:
            check_provider_status(record)
        except ParleyError as refusal:
            return refusal
        rule = record.interop_policy.refusal(device.user, device.device)
        if rule is None:
            return None
        return permission_denied(
            ErrorReason.ERROR_REASON_INTEROP_POLICY,
            f"the interop policy of {device.provider} no longer lets this device take part in third-party chats",
            rule=rule,
            provider_id=device.provider,
        )
