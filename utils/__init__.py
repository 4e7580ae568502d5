"""Shared helpers: config loading, checkpoints, distributed utilities, errors."""
