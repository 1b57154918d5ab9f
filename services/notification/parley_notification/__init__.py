"""Notification: signed webhooks to providers (retried, coalesced, dead-lettered) and notices to users."""
