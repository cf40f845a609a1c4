"""What talking to the owner can end in (kept apart from the client: no httpx import)."""

from __future__ import annotations


class OwnerUnreachable(Exception):
    """The owner stopped answering (it quit or died mid-request)."""


class ControlError(Exception):
    """The owner refused the request; the message is its one-sentence reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
