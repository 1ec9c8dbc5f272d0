"""The base of every error a transport client raises (shared by client.py and poll.py)."""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """Base of the errors a client raises; ``str()`` is a one-line message for a person."""
