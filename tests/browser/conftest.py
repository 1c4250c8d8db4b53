"""The console in a real browser: Debian's Chromium driven by Playwright, against the local stack.

Playwright's own browser download is not reachable here or in CI, so the system Chromium is
launched by path (`.ci/run` installs it when missing). Every page runs with a guard that refuses
and records any request to another origin (the console must work offline) and with listeners
that record CSP violations and uncaught script errors; `Console.check()` fails a test on any.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "console"
FAILURES = ROOT / "build" / "browser-failures"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
VIEWER_ZONE = "America/New_York"  # not UTC, so local times and UTC differ on screen


# Per module, not per session: while Playwright's sync API is open its event loop counts as
# running in this thread, and every later `asyncio.run()` on the same test worker (the SQS worker
# handler, the async SDK) would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Console:
    page: Page
    base_url: str
    outside: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    api_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base_url}/console"

    def open(self, fragment: str = "") -> None:
        self.page.goto(self.url + fragment)

    def sign_in(self, token: str) -> None:
        self.open()
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("button", name="Sign out")).to_be_visible()

    def go(self, fragment: str) -> None:
        """Navigate inside the signed-in app (a hash change: the session stays)."""
        self.page.evaluate("h => { location.hash = h }", fragment)

    def shot(self, name: str, *, full_page: bool = True, mask: list[Any] | None = None) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        # Toasts are transient and would cover the view.
        self.page.evaluate("document.getElementById('toasts').replaceChildren()")
        self.page.screenshot(path=str(path), full_page=full_page, mask=mask or [], animations="disabled")
        return path

    def check(self) -> None:
        assert not self.outside, f"the console asked for something outside its origin: {self.outside}"
        assert not self.problems, f"CSP violations or script errors: {self.problems}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so the fixture knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def console(request: pytest.FixtureRequest, browser: Browser, local_stack: LocalStack) -> Iterator[Console]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id=VIEWER_ZONE)
    page = context.new_page()
    c = Console(page, local_stack.base_url)
    origin = local_stack.base_url

    def guard(route: Route) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            c.outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)

    def on_console(msg: Any) -> None:
        text = msg.text
        if re.search(r"Content Security Policy|Refused to|Trusted Type", text):
            c.problems.append(text)

    def on_request(req: Any) -> None:
        if req.resource_type == "fetch":
            c.api_requests.append({"url": req.url, "headers": req.headers})

    page.on("console", on_console)
    page.on("pageerror", lambda err: c.problems.append(f"uncaught: {err}"))
    page.on("request", on_request)
    # Generous: under `make test -n 2` the stack shares two cores with the other suites.
    page.set_default_timeout(30000)
    expect.set_options(timeout=30000)
    try:
        yield c
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            # What the page showed when the test failed (build/ is not committed).
            FAILURES.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(FAILURES / f"{request.node.name}.png"), full_page=True)
            (FAILURES / f"{request.node.name}.txt").write_text(f"{page.url}\n\n{page.inner_text('body')}")
    finally:
        context.close()


@dataclass
class Agent:
    agent_id: str
    token: str
    name: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_agent(stack: LocalStack, name: str) -> Agent:
    r = requests.post(f"{stack.base_url}/agents", json={"name": name}, headers=stack.admin(), timeout=10)
    assert r.status_code == 201, r.text
    body = r.json()
    CHECKER.agent(body)
    return Agent(body["agent_id"], body["token"], body["name"])


def make_task(stack: LocalStack, agent: Agent, **fields: Any) -> dict[str, Any]:
    body = {
        "title": "made by the test",
        "description": "",
        "schedule_kind": "cron",
        "schedule_expr": "0 9 * * *",
        "created_by": agent.agent_id,
        "payload": {"steps": [{"id": "say", "type": "log", "message": "hello {{ task.title }}"}]},
        **fields,
    }
    r = requests.post(f"{stack.base_url}/tasks", json=body, headers=agent.headers(), timeout=10)
    assert r.status_code == 201, r.text
    return dict(r.json())
