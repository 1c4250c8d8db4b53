"""Timestamps as the API writes them: RFC 3339, UTC, `Z`, whole seconds, four-digit years."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: None) -> None: ...
@overload
def iso(dt: datetime | None) -> str | None: ...
def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    # isoformat, not strftime: strftime writes year 1 as "1" where RFC 3339 needs "0001"
    return dt.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def iso_epoch(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return iso(datetime.fromtimestamp(int(epoch), tz=UTC))


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=UTC)
