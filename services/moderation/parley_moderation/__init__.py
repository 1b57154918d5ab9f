"""Moderation: send decisions (kill switch, restrictions, rate limits, blocks) and franking-verified reports."""
