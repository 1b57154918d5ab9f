"""The identity service: providers, users, devices, interop consent, discovery and provider authentication data."""
