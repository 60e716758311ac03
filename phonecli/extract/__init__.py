"""Encoder registry, per-family adapters, and the extraction runner."""
