"""Dispatch: planning fires (`plan`, pure), sending run messages (`queue`), settling what was
sent in the `due` table and the task's due index (`settle`), the minute tick over the due
shards (`tick`), and what the API's writes ask of it (`onwrite`). Storage goes through the
dispatch ports (`chalicelib.store.ports`: DueStore, ShardLeases, DueTasks)."""

from __future__ import annotations

from chalicelib.dispatch.onwrite import dispatch_if_soon, fence_change
from chalicelib.dispatch.plan import (
    Send,
    build_schedule,
    first_fire,
    next_fire,
    next_fire_from,
    pending_fire,
    possibly_sent,
    shard_for,
)
from chalicelib.dispatch.plan import scheduled as schedule_next
from chalicelib.dispatch.queue import send_all
from chalicelib.dispatch.tick import TickReport, run_tick

__all__ = [
    "Send",
    "TickReport",
    "build_schedule",
    "dispatch_if_soon",
    "fence_change",
    "first_fire",
    "next_fire",
    "next_fire_from",
    "pending_fire",
    "possibly_sent",
    "run_tick",
    "schedule_next",
    "send_all",
    "shard_for",
]
