"""`Client` and `AsyncClient`: the API's resources as methods, in the style of the SDKs people
like (`client.tasks.create(...)`, iterators that follow pagination, typed results, one error
class per status). The two clients have the same methods; the async ones are awaited."""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import anyio
import httpx

from tasksapi import _routes as routes
from tasksapi import models
from tasksapi._http import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Call,
    headers,
    network_error,
    result,
    retry_delay,
)
from tasksapi._routes import Time
from tasksapi.config import agent_id_of, resolve

T = TypeVar("T")


class _Base:
    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        timeout: float,
        max_retries: int,
    ) -> None:
        settings = resolve(base_url, token, use_file=False)
        self.base_url = settings.url
        self._token = settings.token
        self.timeout = timeout
        self.max_retries = max_retries

    @property
    def agent_id(self) -> str | None:
        """The calling agent's id, read from its token (None with the admin token)."""
        return agent_id_of(self._token)

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}(base_url={self.base_url!r})"


# ---- sync ----------------------------------------------------------------------------------


class Client(_Base):
    """A synchronous client.

    `base_url` and `token` default to `TASKS_API_URL` and `TASKS_API_TOKEN`. Requests that
    fail on the network, with a 429 carrying `Retry-After`, or with a 5xx are retried up to
    `max_retries` times when that is safe (see `Call.retry_safe`). Use it as a context manager,
    or call `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, max_retries)
        self._http = http_client or httpx.Client(timeout=timeout)
        self.tasks = Tasks(self)
        self.runs = Runs(self)
        self.schedules = Schedules(self)
        self.events = Events(self)
        self.agents = Agents(self)

    def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    self.base_url + call.path,
                    json=call.json,
                    params=call.params or None,
                    headers={**headers(self._token), **call.headers},
                )
            except httpx.TransportError as e:
                delay = retry_delay(call, attempt, self.max_retries, e)
                if delay is None:
                    raise network_error(call, e) from None
            else:
                delay = retry_delay(call, attempt, self.max_retries, response)
                if delay is None:
                    return result(call, response)
            time.sleep(delay)

    def health(self) -> models.Health:
        return self.send(routes.health())

    def openapi(self) -> dict[str, Any]:
        """The served OpenAPI document."""
        return self.send(routes.openapi())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tasks:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, *, idempotency_key: str | None = None, **fields: Any) -> models.Task:
        """Create a task (fields as in API.md). `created_by` defaults to the calling agent. An
        `Idempotency-Key` is sent (one is made up if not given), so a retry returns the same task."""
        if "created_by" not in fields and self._c.agent_id:
            fields["created_by"] = self._c.agent_id
        return self._c.send(routes.create_task(fields, idempotency_key))

    def page(
        self,
        *,
        status: str | None = None,
        created_by: str | None = None,
        schedule_kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> models.TaskList:
        """One page of the caller's tasks, newest first."""
        return self._c.send(
            routes.list_tasks(
                status=status, created_by=created_by, schedule_kind=schedule_kind, limit=limit, offset=offset
            )
        )

    def list(
        self,
        *,
        status: str | None = None,
        created_by: str | None = None,
        schedule_kind: str | None = None,
        page_size: int = 50,
        max_items: int | None = None,
    ) -> Iterator[models.Task]:
        """Every matching task, newest first, fetching pages as the iteration goes."""
        offset, seen = 0, 0
        while True:
            page = self.page(
                status=status, created_by=created_by, schedule_kind=schedule_kind, limit=page_size, offset=offset
            )
            for task in page.tasks:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield task
            if page.next_offset is None or not page.tasks:
                return
            offset = page.next_offset

    def get(self, task_id: str) -> models.Task:
        return self._c.send(routes.get_task(task_id))

    def update(self, task_id: str, *, if_match: int | str | None = None, **fields: Any) -> models.Task:
        """Change only the given fields. `if_match` (the version you read) turns a concurrent
        change into `PreconditionFailed` instead of a lost update."""
        return self._c.send(routes.update_task(task_id, fields, if_match))

    def pause(self, task_id: str) -> models.Task:
        return self._c.send(routes.lifecycle(task_id, "pause"))

    def resume(self, task_id: str) -> models.Task:
        return self._c.send(routes.lifecycle(task_id, "resume"))

    def cancel(self, task_id: str) -> models.Task:
        return self._c.send(routes.lifecycle(task_id, "cancel"))

    def snooze(self, task_id: str, delay_seconds: int, reason: str | None = None) -> models.Task:
        return self._c.send(routes.snooze(task_id, delay_seconds, reason))

    def run_now(self, task_id: str, input: dict[str, Any] | None = None) -> models.Run:
        return self._c.send(routes.run_now(task_id, input))

    def preview(self, task_id: str, count: int | None = None, after: Time = None) -> models.SchedulePreview:
        return self._c.send(routes.preview_task(task_id, count, after))


class Runs:
    def __init__(self, client: Client) -> None:
        self._c = client

    def page(self, task_id: str, *, limit: int = 50, cursor: str | None = None) -> models.RunList:
        return self._c.send(routes.list_runs(task_id, limit, cursor))

    def list(self, task_id: str, *, page_size: int = 50, max_items: int | None = None) -> Iterator[models.Run]:
        """The task's runs, newest first, following `next_cursor`."""
        cursor: str | None = None
        seen = 0
        while True:
            page = self.page(task_id, limit=page_size, cursor=cursor)
            for run in page.runs:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield run
            if not page.next_cursor or not page.runs:
                return
            cursor = page.next_cursor

    def get(self, task_id: str, run_id: str) -> models.Run:
        return self._c.send(routes.get_run(task_id, run_id))


class Schedules:
    def __init__(self, client: Client) -> None:
        self._c = client

    def preview(
        self,
        schedule_kind: str,
        schedule_expr: str | None = None,
        *,
        timezone: str | None = None,
        count: int | None = None,
        after: Time = None,
        jitter_seconds: int | None = None,
        starts_at: Time = None,
        ends_at: Time = None,
    ) -> models.SchedulePreview:
        """The next fire instants of an expression, before any task uses it."""
        return self._c.send(
            routes.preview_schedule(
                schedule_kind,
                schedule_expr,
                timezone=timezone,
                count=count,
                after=after,
                jitter_seconds=jitter_seconds,
                starts_at=starts_at,
                ends_at=ends_at,
            )
        )


class Events:
    def __init__(self, client: Client) -> None:
        self._c = client

    def send(self, name: str, data: dict[str, Any] | None = None) -> models.EventAccepted:
        """Publish an event: one run starts for each of the caller's matching event tasks."""
        return self._c.send(routes.send_event(name, data))


class Agents:
    """Admin only (the client's token must be the admin token)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, name: str) -> models.AgentCreated:
        """A new agent; its `token` and `signing_secret` are shown only in this answer."""
        return self._c.send(routes.create_agent(name))

    def list(self) -> builtins.list[models.Agent]:
        return self._c.send(routes.list_agents())

    def revoke(self, agent_id: str) -> models.Agent:
        return self._c.send(routes.revoke_agent(agent_id))

    def egress(self, agent_id: str) -> models.Egress:
        """The agent's AWS targets and HTTP allow entries (the admin, or the agent itself)."""
        return self._c.send(routes.get_egress(agent_id))

    def set_egress(
        self, agent_id: str, *, aws_targets: Iterable[str] = (), http_allow: Iterable[str] = ()
    ) -> models.Egress:
        """Replace what the agent's steps may reach: AWS targets (exact, or `*` globs) and HTTP
        allow entries (`host[:port]`, CIDR[`:port`]) on top of the operator's."""
        return self._c.send(routes.set_egress(agent_id, list(aws_targets), list(http_allow)))

    def budget(self, agent_id: str) -> models.Budget:
        """The agent's run budget: what applies, its own values, the defaults (the admin, or the
        agent itself)."""
        return self._c.send(routes.get_budget(agent_id))

    def set_budget(
        self,
        agent_id: str,
        *,
        runs_per_minute: int | None = None,
        runs_burst: int | None = None,
        runs_in_flight: int | None = None,
        min_interval_seconds: int | None = None,
    ) -> models.Budget:
        """Replace the agent's run budget (admin): each value left None takes the operator's default."""
        update = models.BudgetUpdate(
            runs_per_minute=runs_per_minute,
            runs_burst=runs_burst,
            runs_in_flight=runs_in_flight,
            min_interval_seconds=min_interval_seconds,
        )
        return self._c.send(routes.set_budget(agent_id, update))


# ---- async ---------------------------------------------------------------------------------


class AsyncClient(_Base):
    """The asynchronous twin of `Client` (same methods, awaited; `list` is an async iterator)."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, max_retries)
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self.tasks = AsyncTasks(self)
        self.runs = AsyncRuns(self)
        self.schedules = AsyncSchedules(self)
        self.events = AsyncEvents(self)
        self.agents = AsyncAgents(self)

    async def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    json=call.json,
                    params=call.params or None,
                    headers={**headers(self._token), **call.headers},
                )
            except httpx.TransportError as e:
                delay = retry_delay(call, attempt, self.max_retries, e)
                if delay is None:
                    raise network_error(call, e) from None
            else:
                delay = retry_delay(call, attempt, self.max_retries, response)
                if delay is None:
                    return result(call, response)
            await anyio.sleep(delay)

    async def health(self) -> models.Health:
        return await self.send(routes.health())

    async def openapi(self) -> dict[str, Any]:
        return await self.send(routes.openapi())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncTasks:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, *, idempotency_key: str | None = None, **fields: Any) -> models.Task:
        if "created_by" not in fields and self._c.agent_id:
            fields["created_by"] = self._c.agent_id
        return await self._c.send(routes.create_task(fields, idempotency_key))

    async def page(
        self,
        *,
        status: str | None = None,
        created_by: str | None = None,
        schedule_kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> models.TaskList:
        return await self._c.send(
            routes.list_tasks(
                status=status, created_by=created_by, schedule_kind=schedule_kind, limit=limit, offset=offset
            )
        )

    async def list(
        self,
        *,
        status: str | None = None,
        created_by: str | None = None,
        schedule_kind: str | None = None,
        page_size: int = 50,
        max_items: int | None = None,
    ) -> AsyncIterator[models.Task]:
        offset, seen = 0, 0
        while True:
            page = await self.page(
                status=status, created_by=created_by, schedule_kind=schedule_kind, limit=page_size, offset=offset
            )
            for task in page.tasks:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield task
            if page.next_offset is None or not page.tasks:
                return
            offset = page.next_offset

    async def get(self, task_id: str) -> models.Task:
        return await self._c.send(routes.get_task(task_id))

    async def update(self, task_id: str, *, if_match: int | str | None = None, **fields: Any) -> models.Task:
        return await self._c.send(routes.update_task(task_id, fields, if_match))

    async def pause(self, task_id: str) -> models.Task:
        return await self._c.send(routes.lifecycle(task_id, "pause"))

    async def resume(self, task_id: str) -> models.Task:
        return await self._c.send(routes.lifecycle(task_id, "resume"))

    async def cancel(self, task_id: str) -> models.Task:
        return await self._c.send(routes.lifecycle(task_id, "cancel"))

    async def snooze(self, task_id: str, delay_seconds: int, reason: str | None = None) -> models.Task:
        return await self._c.send(routes.snooze(task_id, delay_seconds, reason))

    async def run_now(self, task_id: str, input: dict[str, Any] | None = None) -> models.Run:
        return await self._c.send(routes.run_now(task_id, input))

    async def preview(self, task_id: str, count: int | None = None, after: Time = None) -> models.SchedulePreview:
        return await self._c.send(routes.preview_task(task_id, count, after))


class AsyncRuns:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def page(self, task_id: str, *, limit: int = 50, cursor: str | None = None) -> models.RunList:
        return await self._c.send(routes.list_runs(task_id, limit, cursor))

    async def list(
        self, task_id: str, *, page_size: int = 50, max_items: int | None = None
    ) -> AsyncIterator[models.Run]:
        cursor: str | None = None
        seen = 0
        while True:
            page = await self.page(task_id, limit=page_size, cursor=cursor)
            for run in page.runs:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield run
            if not page.next_cursor or not page.runs:
                return
            cursor = page.next_cursor

    async def get(self, task_id: str, run_id: str) -> models.Run:
        return await self._c.send(routes.get_run(task_id, run_id))


class AsyncSchedules:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def preview(
        self,
        schedule_kind: str,
        schedule_expr: str | None = None,
        *,
        timezone: str | None = None,
        count: int | None = None,
        after: Time = None,
        jitter_seconds: int | None = None,
        starts_at: Time = None,
        ends_at: Time = None,
    ) -> models.SchedulePreview:
        return await self._c.send(
            routes.preview_schedule(
                schedule_kind,
                schedule_expr,
                timezone=timezone,
                count=count,
                after=after,
                jitter_seconds=jitter_seconds,
                starts_at=starts_at,
                ends_at=ends_at,
            )
        )


class AsyncEvents:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def send(self, name: str, data: dict[str, Any] | None = None) -> models.EventAccepted:
        return await self._c.send(routes.send_event(name, data))


class AsyncAgents:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, name: str) -> models.AgentCreated:
        return await self._c.send(routes.create_agent(name))

    async def list(self) -> builtins.list[models.Agent]:
        return await self._c.send(routes.list_agents())

    async def revoke(self, agent_id: str) -> models.Agent:
        return await self._c.send(routes.revoke_agent(agent_id))

    async def egress(self, agent_id: str) -> models.Egress:
        return await self._c.send(routes.get_egress(agent_id))

    async def set_egress(
        self, agent_id: str, *, aws_targets: Iterable[str] = (), http_allow: Iterable[str] = ()
    ) -> models.Egress:
        return await self._c.send(routes.set_egress(agent_id, list(aws_targets), list(http_allow)))

    async def budget(self, agent_id: str) -> models.Budget:
        return await self._c.send(routes.get_budget(agent_id))

    async def set_budget(
        self,
        agent_id: str,
        *,
        runs_per_minute: int | None = None,
        runs_burst: int | None = None,
        runs_in_flight: int | None = None,
        min_interval_seconds: int | None = None,
    ) -> models.Budget:
        update = models.BudgetUpdate(
            runs_per_minute=runs_per_minute,
            runs_burst=runs_burst,
            runs_in_flight=runs_in_flight,
            min_interval_seconds=min_interval_seconds,
        )
        return await self._c.send(routes.set_budget(agent_id, update))
