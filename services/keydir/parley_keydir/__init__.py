"""The key directory: Signal-protocol identity keys and prekeys of every device, and bundle hand-out."""
