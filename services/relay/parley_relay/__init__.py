"""The edge relay: authenticated stanza intake, durable per-device mailboxes, live streams, receipts, media."""
