"""PynamoDB models. Table names are `<prefix><name>`: `configure(prefix)` points every model at
a prefix's tables (on import, the settings' prefix; `store.on_dynamodb()` calls it again with the
prefix it is built for), so the names are configuration, not fixed when this module loads."""

from __future__ import annotations

from pynamodb.attributes import (
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.platform.config import settings


class _Meta:
    region: str | None = None  # set by configure()
    table_name = ""  # set by configure()


class DueIndex(GlobalSecondaryIndex["TaskModel"]):
    """Sparse: only tasks whose schedule (re)starts and is not yet dispatched carry
    `due_shard`/`due_at` (after create, schedule update, resume, snooze). Later fires of
    a running schedule live in the `due` table (DueModel), which costs one write a fire
    where moving this index's key costs three."""

    class Meta:
        index_name = "due"
        projection = IncludeProjection(["sched", "schedule_version", "priority", "created_by"])

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class AgentTasksIndex(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_agent"
        projection = IncludeProjection(["status", "schedule_kind"])

    created_by = UnicodeAttribute(hash_key=True)
    created_sk = UnicodeAttribute(range_key=True)


class EventTasksIndex(GlobalSecondaryIndex["TaskModel"]):
    """`event_key` = "<agent id>#<pattern>" for event tasks with a pattern."""

    class Meta:
        index_name = "by_event"
        projection = KeysOnlyProjection()

    event_key = UnicodeAttribute(hash_key=True)
    created_sk = UnicodeAttribute(range_key=True)


class TaskModel(Model):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute(hash_key=True)
    created_by = UnicodeAttribute()
    created_at = UnicodeAttribute()
    created_sk = UnicodeAttribute()  # created_at with microseconds + task id: newest-first order
    updated_at = UnicodeAttribute()
    status = UnicodeAttribute()
    schedule_kind = UnicodeAttribute()
    priority = NumberAttribute()
    spec = JSONAttribute()  # the definition minus the schedule: title, payload, retries, keys...
    sched = JSONAttribute()  # the schedule definition: kind, expr, timezone, jitter, bounds, misfire
    version = NumberAttribute(default=1)  # bumped by agent-visible changes only; sent as ETag
    schedule_version = NumberAttribute(default=1)  # fencing token carried by run messages
    due_shard = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)  # first fire of a (re)started schedule, epoch seconds
    event_key = UnicodeAttribute(null=True)
    snoozed_until = UnicodeAttribute(null=True)
    snooze_reason = UnicodeAttribute(null=True)
    # "<when>: <why>" when the tick could not compute the schedule and paused the task (dispatch.py)
    schedule_error = UnicodeAttribute(null=True)

    due_index = DueIndex()
    agent_index = AgentTasksIndex()
    event_index = EventTasksIndex()


class StatsModel(Model):
    """A task's run counters, one small item per task (counters.py): every finished run adds
    itself with one UpdateItem of about 1 KB whatever the size of the task's definition."""

    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute(hash_key=True)
    run_count = NumberAttribute(default=0)
    failure_count = NumberAttribute(default=0)
    last_run_at = UnicodeAttribute(null=True)
    last_run_status = UnicodeAttribute(null=True)
    recent = ListAttribute(of=UnicodeAttribute, null=True)  # marks of the runs counted last, oldest first


class RunModel(Model):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute(hash_key=True)
    run_id = UnicodeAttribute(range_key=True)
    agent_id = UnicodeAttribute()
    doc = JSONAttribute()  # the run representation (status, attempts, steps, error ...)
    status = UnicodeAttribute()
    # The attempt claimed last (doc["attempt"], top-level so a save can be fenced on it).
    # Records written before it existed lack it: conditions accept its absence there.
    attempt = NumberAttribute(null=True)
    lease_until = NumberAttribute(null=True)  # a worker owns the run until then
    claim = UnicodeAttribute(null=True)  # the id of the claim that took the lease (Run.claim)
    expires_at = TTLAttribute(null=True)


class AgentModel(Model):
    class Meta(_Meta):
        pass

    agent_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    created_at = UnicodeAttribute()
    status = UnicodeAttribute(default="active")
    token_hash = UnicodeAttribute()
    signing_secret = UnicodeAttribute()
    task_count = NumberAttribute(default=0)
    # Rate-limit buckets (ratelimit.py): the theoretical arrival time, epoch milliseconds.
    rl_writes = NumberAttribute(null=True)
    rl_events = NumberAttribute(null=True)
    rl_runs = NumberAttribute(null=True)  # the run budget's bucket (dispatch/budgets.py)
    # The admin's run budget for this agent (PUT /agents/{id}/budget). Absent: the operator's default.
    runs_per_minute = NumberAttribute(null=True)
    runs_burst = NumberAttribute(null=True)
    runs_in_flight = NumberAttribute(null=True)
    min_interval_seconds = NumberAttribute(null=True)
    # Egress the admin opened for this agent (PUT /agents/{id}/egress): AWS step targets (exact or
    # `*` globs) and HTTP allow entries on top of TASKAPI_EGRESS_ALLOW. Absent: nothing opened.
    egress_aws_targets = ListAttribute(of=UnicodeAttribute, null=True)
    egress_http_allow = ListAttribute(of=UnicodeAttribute, null=True)


class DueModel(Model):
    """One pending fire of a running schedule: the tick that dispatches a fire writes the
    task's next one here. Entries are never moved or deleted by us (TTL removes them): each
    shard's watermark (`tick#through#<shard>` in keys) says how far the tick has worked."""

    class Meta(_Meta):
        pass

    shard = UnicodeAttribute(hash_key=True)
    slot = UnicodeAttribute(range_key=True)  # "<fire epoch, 10 digits>#<task id>": sorts by time
    task_id = UnicodeAttribute()
    fire = NumberAttribute()
    schedule_version = NumberAttribute()
    expires_at = TTLAttribute(null=True)


class KeyModel(Model):
    """Short-lived coordination records: idempotency keys, dedupe windows,
    concurrency leases, tick shard leases. One conditional write each."""

    class Meta(_Meta):
        pass

    key = UnicodeAttribute(hash_key=True)
    value = JSONAttribute(null=True)
    response = JSONAttribute(null=True)  # an Idempotency-Key's first response: status, body, headers
    holder = UnicodeAttribute(null=True)
    until = NumberAttribute(null=True)
    through = UnicodeAttribute(null=True)  # a tick shard's watermark: the last due slot dispatched
    used = NumberAttribute(null=True)  # an event chain's runs started so far (`chain#<agent>#<root>`)
    expires_at = TTLAttribute(null=True)


class EventModel(Model):
    class Meta(_Meta):
        pass

    agent_id = UnicodeAttribute(hash_key=True)
    event_id = UnicodeAttribute(range_key=True)
    doc = JSONAttribute()
    expires_at = TTLAttribute(null=True)


TABLES: dict[type[Model], str] = {
    TaskModel: "tasks",
    StatsModel: "stats",
    RunModel: "runs",
    AgentModel: "agents",
    DueModel: "due",
    KeyModel: "keys",
    EventModel: "events",
}


def configure(prefix: str | None = None, region: str | None = None) -> None:
    """Point every model at `<prefix><table>` in `region` (defaults: the settings'). PynamoDB
    keeps a connection per model built for one table and region: it is dropped, so the next
    call builds one for the new names."""
    s = settings()
    for model, name in TABLES.items():
        model.Meta.table_name = f"{s.prefix if prefix is None else prefix}{name}"
        model.Meta.region = region or s.region
        model._connection = None


def configured_prefix() -> str:
    return TaskModel.Meta.table_name.removesuffix(TABLES[TaskModel])


configure()
