"""Which previewed fires a daylight-saving change touches, for the CLI's preview table.

The server decides the fire times (API.md's DST policy); this only explains them. A fire is
*moved* when it lands on the first instant after a spring-forward gap and its local time is not
one the expression asks for (a 02:30 job firing at 03:00). A fire in a repeated fall-back hour
is marked with which copy of the hour it is. Schedules whose hour field is `*` follow real time
and are never "moved".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_NAMED = {
    "@yearly": "0 0",
    "@annually": "0 0",
    "@monthly": "0 0",
    "@weekly": "0 0",
    "@daily": "0 0",
    "@midnight": "0 0",
}


@dataclass(frozen=True)
class Wanted:
    """The local hours and minutes a schedule asks for; None means any."""

    hours: frozenset[int] | None
    minutes: frozenset[int] | None


def _ints(field: str) -> frozenset[int] | None:
    if re.fullmatch(r"\d+(,\d+)*", field):
        return frozenset(int(x) for x in field.split(","))
    return None


def wanted(kind: str, expr: str | None) -> Wanted | None:
    """What local times the expression names, when that can be read simply; None otherwise."""
    if not expr:
        return None
    expr = expr.strip()
    if kind == "cron":
        fields = _NAMED.get(expr.lower(), expr).split()
        if len(fields) < 2:
            return None
        return Wanted(_ints(fields[1]), _ints(fields[0]))
    if kind == "rrule":
        upper = expr.upper()
        hours = re.search(r"BYHOUR=([\d,]+)", upper)
        minutes = re.search(r"BYMINUTE=([\d,]+)", upper)
        start = re.search(r"DTSTART[^:\n]*:(\d{8})T(\d{2})(\d{2})", upper)
        h = _ints(hours.group(1)) if hours else (frozenset({int(start.group(2))}) if start else None)
        m = _ints(minutes.group(1)) if minutes else (frozenset({int(start.group(3))}) if start else None)
        return Wanted(h, m) if h is not None else None
    if kind == "once":
        try:
            t = datetime.fromisoformat(expr.replace("Z", "+00:00"))
        except ValueError:
            return None
        return None if t.tzinfo else Wanted(frozenset({t.hour}), frozenset({t.minute}))
    return None


def note(fire: datetime, zone: ZoneInfo, want: Wanted | None) -> str:
    """A short remark on `fire` (an aware instant) in `zone`: empty when DST does not touch it."""
    local = fire.astimezone(zone)
    before = (fire - timedelta(seconds=1)).astimezone(zone)
    offset, offset_before = local.utcoffset(), before.utcoffset()
    if offset is not None and offset_before is not None and offset > offset_before:
        if want is None or want.hours is None:
            return "" if want is not None else "at a DST change"
        asked = local.hour in want.hours and (want.minutes is None or local.minute in want.minutes)
        if not asked:
            gap = offset - offset_before
            start = (local - gap).strftime("%H:%M")
            return f"moved by DST: {start}–{local:%H:%M} does not exist that day"
    # A repeated wall-clock time reads differently with the other `fold`.
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() != local.utcoffset():
        return "DST repeated hour: " + ("second" if local.fold else "first") + " occurrence"
    return ""
