"""No secret in any log line, checked over the whole test session.

Every credential the tests create is registered here (`CHECKER.secret`, `CHECKER.agent`): the
admin tokens, each agent's token and signing secret, and the secret header values the HTTP steps
carry (`canary`). Every log line the suite produces is fed in: the in-process loggers (a handler
on the service's Powertools loggers, at DEBUG, and on the root logger for everything else) and
the local stacks' stdout, which also carries the moto server's output (`tests/stack.py`). At the
end of each test process the autouse session fixture in `tests/conftest.py` fails the run if a
line holds a registered value or anything shaped like a token or a signing secret, naming the
log event, the field and the secret's kind, never the value. It also fails when a capture saw too
little to mean anything (a stack that printed nothing, in-process tests whose loggers printed
nothing, tests that created agents none of which were registered), so a broken capture cannot
pass as a clean one.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

import local.log  # noqa: F401 - its Powertools logger must exist before the capture sets its level
from chalicelib.services.agents import SECRET_PREFIX, TOKEN_PREFIX

# The service's Powertools loggers (chalicelib.platform.log, local.log): captured at DEBUG.
SERVICE_LOGGERS = ("tasks-api", "tasks-api-local")
MIN_SECRET_LEN = 12  # a shorter registered value would match ordinary text
_HEAD = MIN_SECRET_LEN
_RUN = re.compile(r"[A-Za-z0-9_-]+")  # the alphabet of every token and secret we mint
# Shapes, found even when the value was never registered (a token minted by a path no helper saw).
SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("agent token (by shape)", re.compile(re.escape(TOKEN_PREFIX) + r"[0-9a-f]{32}_[A-Za-z0-9_-]{20,}")),
    ("signing secret (by shape)", re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{20,}")),
    ("bearer credential (by shape)", re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]{12,}")),
)
_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,80}")


@dataclass(frozen=True)
class Finding:
    source: str  # "stack:<port>" or "logger:<name>"
    event: str  # the JSON event's `message` (a name such as run_finished), never free text
    where: str  # the top-level field of the JSON event that holds it, or "line"
    kind: str  # what leaked: "agent token", "X-Api-Key header value", …
    test: str  # the test running when the line was printed

    def __str__(self) -> str:
        return f"{self.kind} in {self.source} event {self.event!r} ({self.where}), during {self.test}"


@dataclass
class Checker:
    """The registry of secrets and the log lines seen, for one test process."""

    current_test: str = "(between tests)"
    lines_by_source: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    _secrets: dict[str, str] = field(default_factory=dict)  # value -> kind
    _planted: set[str] = field(default_factory=set)
    _lines: dict[str, tuple[str, str]] = field(default_factory=dict)  # distinct text -> (source, test)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- secrets -------------------------------------------------------------------------------

    def secret(self, kind: str, value: str) -> str:
        """Register `value` (returned unchanged) as a secret of this `kind`."""
        if len(value) < MIN_SECRET_LEN or not _RUN.fullmatch(value):
            raise ValueError(f"a {kind} to look for needs {MIN_SECRET_LEN}+ characters of [A-Za-z0-9_-]")
        with self._lock:
            if value not in self._secrets:
                self._secrets[value] = kind
                self.kinds[kind] += 1
        return value

    def agent(self, created: Mapping[str, Any]) -> None:
        """Register what `POST /agents` answered: the token and the signing secret, each whole
        and its random part alone (a line that strips the prefix still leaks it)."""
        token, signing = str(created["token"]), str(created["signing_secret"])
        self.secret("agent token", token)
        self.secret("agent token (random part)", token[len(TOKEN_PREFIX) + 33 :])  # after "<32 hex>_"
        self.secret("signing secret", signing)
        self.secret("signing secret (random part)", signing[len(SECRET_PREFIX) :])

    def canary(self, name: str = "X-Api-Key") -> str:
        """A fresh, recognisable value for a secret header of an HTTP step."""
        return self.secret(f"{name} header value", "canary-" + secrets.token_urlsafe(18))

    def plant(self, value: str) -> str:
        """A value a test logs on purpose (to prove a checker flags it): not a finding here,
        but it must have been seen, which proves this process's capture saw that line too."""
        with self._lock:
            self._planted.add(value)
        return value

    # -- lines ---------------------------------------------------------------------------------

    def line(self, source: str, text: str) -> None:
        with self._lock:
            self.lines_by_source[source] += 1
            self._lines.setdefault(text, (source, self.current_test))

    @contextmanager
    def capturing(self, *loggers: str) -> Iterator[None]:
        """Feed every record of the service's loggers (at DEBUG, whatever their handlers print)
        and every other record that reaches the root logger, formatted as it would be printed."""
        handler = _Handler(self)
        saved = []
        for name in loggers:
            lg = logging.getLogger(name)
            saved.append((lg, lg.level, [(h, h.level) for h in lg.handlers]))
            for h in lg.handlers:  # what reaches stdout stays at the configured level
                h.setLevel(max(h.level, lg.getEffectiveLevel()))
            lg.setLevel(logging.DEBUG)
            lg.addHandler(handler)
        root = _Handler(self, skip=loggers)
        logging.getLogger().addHandler(root)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(root)
            for lg, level, handlers in saved:
                lg.removeHandler(handler)
                lg.setLevel(level)
                for h, h_level in handlers:
                    h.setLevel(h_level)

    # -- verdict -------------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        with self._lock:
            known, lines, planted = dict(self._secrets), dict(self._lines), set(self._planted)
        heads: dict[str, list[str]] = {}
        for value in known:
            heads.setdefault(value[:_HEAD], []).append(value)
        out: dict[Finding, None] = {}
        for text, (source, test) in lines.items():
            hits: list[tuple[str, str]] = []  # (kind, value)
            for run in _RUN.findall(text):
                for i in range(len(run) - _HEAD + 1):
                    for value in heads.get(run[i : i + _HEAD], ()):
                        if run.startswith(value, i):
                            hits.append((known[value], value))
            for kind, shape in SHAPES:
                hits.extend((kind, m.group(0)) for m in shape.finditer(text))
            for kind, value in hits:
                if any(value in p or p in value for p in planted):
                    continue
                event, where = _locate(text, value)
                out[Finding(source, event, where, kind, test)] = None
        return list(out)

    def planted_unseen(self) -> int:
        with self._lock:
            texts, planted = list(self._lines), set(self._planted)
        return sum(1 for p in planted if not any(p in t for t in texts))

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "lines": dict(self.lines_by_source),
                "distinct_lines": len(self._lines),
                "secrets": dict(self.kinds),
                "planted": len(self._planted),
            }


def _locate(text: str, value: str) -> tuple[str, str]:
    """The event name and the top-level field holding `value`, without repeating either when
    they are free text (they could be the secret itself)."""
    try:
        ev = json.loads(text)
    except ValueError:
        return "(a line that is not a JSON event)", "line"
    if not isinstance(ev, dict):
        return "(a JSON line that is not an event)", "line"
    msg = ev.get("message")
    event = msg if isinstance(msg, str) and _EVENT.fullmatch(msg) and value not in msg else "(free-text message)"
    for key, v in ev.items():
        if value in json.dumps(v, default=str) and _EVENT.fullmatch(str(key)) and value not in str(key):
            return event, f"field {key!r}"
    return event, "line"


class _Handler(logging.Handler):
    """Formats each record as its logger's own handler would print it (Powertools' JSON with the
    appended keys and the exception text), or plainly for other loggers."""

    def __init__(self, checker: Checker, skip: tuple[str, ...] = ()) -> None:
        super().__init__(logging.NOTSET)
        self.checker = checker
        self.skip = skip
        self.plain = logging.Formatter("%(levelname)s %(name)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        if self.skip and record.name.split(".", 1)[0] in self.skip:
            return  # seen by the handler on that logger itself
        own = getattr(logging.getLogger(record.name), "powertools_handler", None)
        formatter = own.formatter if own is not None and own.formatter is not None else self.plain
        try:
            text = formatter.format(record)
        except Exception as exc:  # noqa: BLE001 - a record its formatter cannot print is still checked
            text = json.dumps(
                {"message": "(unformattable record)", "error": type(exc).__name__, **vars(record)}, default=str
            )
        for part in text.splitlines() or [""]:
            self.checker.line(f"logger:{record.name}", part)


# The session's checker (one per test process; xdist runs one per worker).
CHECKER = Checker()


# -- the session's verdict ---------------------------------------------------------------------

MIN_STACK_LINES = 3  # every stack prints emulator_ready, resources_ready and ready at start-up
MIN_IN_PROCESS_TESTS = 20  # this many tests on the in-process app print at least one line…
MIN_IN_PROCESS_LINES = 1
MIN_AGENT_TESTS = 20  # …and this many tests on any app register at least one agent


def verdict(checker: Checker, ran: Mapping[str, int], stacks: Mapping[str, int]) -> list[str]:
    """What fails the session: findings, and captures that saw too little to be trusted.
    `ran` counts the tests that ran per kind ("in_process", "stack"); `stacks` maps each
    launched stack's source name to the lines it printed in all."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for f in checker.findings():
        grouped.setdefault((f.source, f.event, f.where, f.test), []).append(f.kind)
    problems = [
        f"a log line holds a secret: {', '.join(kinds)} in {source} event {event!r} ({where}), during {test}"
        for (source, event, where, test), kinds in grouped.items()
    ]
    seen = checker.summary()
    for source, printed in stacks.items():
        got = seen["lines"].get(source, 0)
        if got < MIN_STACK_LINES:
            problems.append(
                f"{source} printed {printed} lines, the checker saw {got} (a stack prints ≥ {MIN_STACK_LINES})"
            )
    in_process = sum(n for s, n in seen["lines"].items() if s.startswith("logger:"))
    if ran.get("in_process", 0) >= MIN_IN_PROCESS_TESTS and in_process < MIN_IN_PROCESS_LINES:
        problems.append(
            f"{ran['in_process']} tests ran on the in-process app and the checker saw {in_process} log lines"
        )
    agents = seen["secrets"].get("agent token", 0)
    if ran.get("in_process", 0) + ran.get("stack", 0) >= MIN_AGENT_TESTS and agents == 0:
        problems.append("tests created agents through the API and none was registered (CHECKER.agent)")
    if unseen := checker.planted_unseen():
        problems.append(f"{unseen} value(s) logged on purpose never reached this process's checker")
    return problems


# -- pytest wiring (imported by tests/conftest.py) -----------------------------------------------

RAN: Counter[str] = Counter()
_RESULTS: list[str] = []  # on the xdist controller: each worker's summary


def pytest_runtest_setup(item: pytest.Item) -> None:
    CHECKER.current_test = item.nodeid
    names = set(getattr(item, "fixturenames", ()))
    if "api" in names:
        RAN["in_process"] += 1
    if "local_stack" in names:
        RAN["stack"] += 1


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line(request: pytest.FixtureRequest) -> Iterator[None]:
    """Set up before any other session fixture, so it is torn down after all of them (the local
    stacks' last lines included): an error here fails the run, on every xdist worker."""
    from tests.stack import LAUNCHED

    with CHECKER.capturing(*SERVICE_LOGGERS):
        yield
    CHECKER.current_test = "(session teardown)"
    problems = verdict(CHECKER, RAN, {s.source: len(s.lines) for s in LAUNCHED})
    request.config.stash[_SUMMARY] = {**CHECKER.summary(), "ran": dict(RAN), "problems": len(problems)}
    if problems:
        pytest.fail("secrets in the logs (tests/secrets_seen.py):\n  " + "\n  ".join(problems), pytrace=False)


_SUMMARY = pytest.StashKey[dict[str, Any]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    summary = session.config.stash.get(_SUMMARY, None)
    if summary is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["secrets_seen"] = json.dumps(summary)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    raw = getattr(node, "workeroutput", {}).get("secrets_seen")
    if raw:
        _RESULTS.append(raw)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summaries = [json.loads(r) for r in _RESULTS]
    if (own := config.stash.get(_SUMMARY, None)) is not None:
        summaries.append(own)
    if not summaries:
        return
    by_source: Counter[str] = Counter()
    for s in summaries:
        by_source.update({("stack" if k.startswith("stack:") else k): v for k, v in s["lines"].items()})
    registered: Counter[str] = Counter()
    for s in summaries:
        registered.update(s["secrets"])
    problems = sum(s["problems"] for s in summaries)
    terminalreporter.write_line(
        f"secrets in logs: {sum(by_source.values())} log lines "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_source.items()))}) checked against "
        f"{sum(registered.values())} registered secrets "
        f"({', '.join(f'{k} {v}' for k, v in sorted(registered.items()))}; summed over workers) "
        f"and the token shapes: {problems} problem(s)"
    )
