"""The web console at /console, driven in headless Chromium against the local stack.

Screenshots of the main views are written to docs/console/ (docs/console.md shows them).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Route, expect

from tests.browser.conftest import PHONE, Console, make_agent, make_task
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

ASSETS = Path(__file__).resolve().parents[2] / "chalicelib" / "http" / "console" / "assets"
BUDGET_GZIP_BYTES = 150 * 1024
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _csp(header: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (p.strip() for p in header.split(";")) if d}


# ---- served by the service itself -----------------------------------------------------------------


def test_every_asset_comes_through_the_local_server_with_its_type_and_a_strict_csp(local_stack: LocalStack) -> None:
    # GIVEN the console's files on disk
    files = sorted(p for p in ASSETS.iterdir() if p.is_file())
    assert {p.suffix for p in files} >= {".html", ".css", ".js"}
    # WHEN each is fetched through chalice's local server (index.html at /console itself)
    for path in files:
        url = f"{local_stack.base_url}/console" + ("" if path.name == "index.html" else f"/{path.name}")
        r = requests.get(url, timeout=10)
        # THEN it arrives whole, with its media type and the security headers
        assert r.status_code == 200, (path.name, r.status_code, r.text[:200])
        assert r.headers["Content-Type"] == TYPES[path.suffix], path.name
        assert r.content == path.read_bytes(), path.name
        csp = _csp(r.headers["Content-Security-Policy"])
        assert csp["default-src"] == "'self'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"  # nothing inline
        assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
        assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
        assert csp["require-trusted-types-for"] == "'script'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        # an unchanged file is a 304 on revalidation
        again = requests.get(url, headers={"If-None-Match": r.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and again.content == b""


def test_unknown_or_sneaky_asset_names_are_404_with_the_same_headers(local_stack: LocalStack) -> None:
    for name in ("nope.js", "index.html", "..%2Fapp.py", "%2e%2e", "..%2F..%2Fapp.py", "__init__.py", "main.js%00.css"):
        r = requests.get(f"{local_stack.base_url}/console/{name}", timeout=10)
        assert r.status_code in (403, 404), (name, r.status_code)
        if r.status_code == 404:
            assert r.headers["Content-Type"] == "application/problem+json", name
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], name
    # the API itself is unchanged: its JSON still comes without the console's headers
    health = requests.get(f"{local_stack.base_url}/health", timeout=10)
    assert health.headers["Content-Type"] == "application/json"


def test_a_trailing_slash_is_redirected_so_the_relative_links_resolve(local_stack: LocalStack) -> None:
    r = requests.get(f"{local_stack.base_url}/console/", allow_redirects=False, timeout=10)
    assert r.status_code == 308 and r.headers["Location"] == "../console"
    followed = requests.get(f"{local_stack.base_url}/console/", timeout=10)
    assert followed.url == f"{local_stack.base_url}/console"
    assert followed.headers["Content-Type"] == "text/html; charset=utf-8"


def test_the_assets_fit_the_gzip_budget() -> None:
    sizes = {p.name: len(gzip.compress(p.read_bytes(), 9)) for p in ASSETS.iterdir() if p.is_file()}
    total = sum(sizes.values())
    print(f"console assets: {len(sizes)} files, {total} bytes gzip ({total / 1024:.1f} KiB): {sizes}")
    assert total <= BUDGET_GZIP_BYTES, sizes


# ---- the main path --------------------------------------------------------------------------------


def test_an_agent_signs_in_creates_a_task_runs_it_watches_it_succeed_and_pauses_it(
    console: Console, local_stack: LocalStack
) -> None:
    page = console.page
    agent = make_agent(local_stack, "console-e2e")
    other = make_agent(local_stack, "someone-else")
    foreign = make_task(local_stack, other, title="not yours")

    # Sign in
    console.open()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    console.shot("sign-in", full_page=False)
    console.sign_in(agent.token)
    expect(page.get_by_text("No tasks yet")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('tasksapi.token')") == agent.token
    assert agent.token not in page.url

    # Create a task through the form; a monthly noon fire in Chisinau crosses a clock change
    # within ten fires, whatever the date.
    page.get_by_role("link", name="New task").first.click()
    expect(page.get_by_role("heading", name="New task")).to_be_visible()
    page.get_by_label("Title").fill("Monthly report")
    page.get_by_label("Description").fill("Made in the console")
    page.get_by_label("Schedule", exact=True).fill("0 12 1 * *")
    page.get_by_label("Timezone").fill("Europe/Chisinau")
    page.get_by_label("Pipeline (JSON)").fill(
        '{"steps": [{"id": "greet", "type": "log", "message": "hello from {{ task.title }}"},'
        ' {"id": "tell", "type": "emit", "name": "report.done", "data": {"ok": true}}]}'
    )
    page.get_by_role("button", name="Check schedule").click()
    expect(page.locator(".check table.fires tbody tr:not(.dst)")).to_have_count(5)
    console.shot("new-task")
    page.get_by_role("button", name="Create task").click()

    # Its page: the definition, readable steps, and the next 10 fires with the clock change marked
    expect(page.get_by_role("heading", name="Monthly report")).to_be_visible()
    task_id = page.url.rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id), page.url
    fires = page.locator("table.fires tbody tr:not(.dst)")
    expect(fires).to_have_count(10)
    expect(page.locator("table.fires tr.dst").first).to_contain_text("Clock change in Europe/Chisinau")
    expect(fires.first.locator("td").nth(1)).to_contain_text("12:00:00")  # noon, local to the task
    expect(fires.first.locator("code")).to_have_text(re.compile(r"^\d{4}-\d\d-01T(09|10):00:00Z$"))
    expect(page.locator(".steps .step")).to_have_count(2)
    expect(page.locator(".steps")).to_contain_text("emit event report.done")
    expect(page.get_by_text("No runs yet")).to_be_visible()
    # times are in the viewer's zone, with UTC on hover
    created = page.locator(".props time").first
    expect(created).to_have_attribute("title", re.compile(r"^UTC: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"))

    # Run it now (confirmed in a dialog) and watch the run appear and succeed, without reloading
    page.get_by_role("button", name="Run now").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Input (JSON, optional)").fill('{"why": "console test"}')
    dialog.get_by_role("button", name="Run now").click()
    row = page.locator("table.runs tbody tr").first
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=60000)
    expect(row.locator("td").nth(2)).to_have_text("run now")
    expect(page.locator(".stats")).to_contain_text("succeeded")
    console.shot("task")
    # live refresh keeps polling (quickly, just after a Run now) without taking the keyboard focus
    link = row.locator("a.row-link")
    link.focus()
    updated = page.locator(".live").inner_text()
    expect(page.locator(".live")).not_to_have_text(updated, timeout=10000)
    expect(link).to_be_focused()

    # The run: its steps with their outputs, its attempts and its input
    row.locator("a.row-link").click()
    expect(page.get_by_role("heading", name="Steps")).to_be_visible()
    expect(page.locator(".step").first).to_contain_text("hello from Monthly report")
    expect(page.locator(".step")).to_have_count(2)
    expect(page.get_by_text("1 attempt of at most 4.")).to_be_visible()
    expect(page.locator("pre.json").last).to_contain_text("console test")
    console.shot("run")

    # Pause it, confirmed
    page.get_by_role("link", name=task_id[:8]).click()
    page.get_by_role("button", name="Pause").click()
    page.get_by_role("dialog").get_by_role("button", name="Pause").click()
    expect(page.locator(".title-row .badge").first).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    expect(page.get_by_role("button", name="Snooze")).to_be_disabled()
    got = requests.get(f"{local_stack.base_url}/tasks/{task_id}", headers=agent.headers(), timeout=10).json()
    assert got["status"] == "paused"

    # The list shows it with its counters
    console.go("#/tasks")
    listed = page.locator("table.tasks tbody tr", has_text="Monthly report")
    expect(listed.locator(".badge").first).to_have_text("paused")
    expect(listed.locator("td[data-label=Runs]")).to_have_text("1")
    console.shot("tasks")

    # Another agent's task is "not found", exactly like one that does not exist
    console.go(f"#/tasks/{foreign['id']}")
    expect(page.get_by_role("heading", name="Task not found")).to_be_visible()
    console.shot("not-found", full_page=False)
    assert "not yours" not in page.content()

    # Every API call carried the token as a bearer header, never in a URL, never with a cookie
    assert console.api_requests
    for req in console.api_requests:
        assert req["headers"].get("authorization") == f"Bearer {agent.token}", req["url"]
        assert agent.token not in req["url"] and "cookie" not in req["headers"]
    console.check()


def test_the_edit_form_shows_the_apis_field_errors_inline(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "editor")
    task = make_task(local_stack, agent, title="Nightly", schedule_expr="30 2 * * *")
    console.sign_in(agent.token)
    console.go(f"#/tasks/{task['id']}/edit")
    page = console.page
    # a value the API refuses: its message sits under its own control
    page.get_by_text("Retries, priority and limits").click()
    page.get_by_label("Max retries (0–25)").fill("99")
    page.get_by_role("button", name="Save changes").click()
    retries = page.locator('.field[data-field="max_retries"]')
    expect(retries.locator(".field-error")).to_contain_text("25")
    expect(retries.locator("input")).to_have_attribute("aria-invalid", "true")
    # fixed, and a schedule the engine refuses instead: the old message goes, the new one shows
    page.get_by_label("Max retries (0–25)").fill("2")
    page.get_by_label("Schedule", exact=True).fill("61 * * * *")
    page.get_by_role("button", name="Save changes").click()
    expr = page.locator('.field[data-field="schedule_expr"]')
    expect(expr.locator(".field-error")).to_contain_text("61")
    expect(expr.locator("input")).to_have_attribute("aria-invalid", "true")
    expect(retries.locator(".field-error")).to_be_hidden()
    expect(page.get_by_role("alert").first).to_be_visible()
    console.shot("edit-errors")
    # nothing changed
    got = requests.get(f"{local_stack.base_url}/tasks/{task['id']}", headers=agent.headers(), timeout=10).json()
    assert got["schedule_expr"] == "30 2 * * *" and got["version"] == task["version"]
    # a valid edit goes through, sending only what changed
    page.get_by_label("Schedule", exact=True).fill("45 3 * * *")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="Nightly")).to_be_visible()
    expect(page.locator(".props")).to_contain_text("cron 45 3 * * *")
    got = requests.get(f"{local_stack.base_url}/tasks/{task['id']}", headers=agent.headers(), timeout=10).json()
    assert got["schedule_expr"] == "45 3 * * *" and got["max_retries"] == 2 and got["title"] == "Nightly"
    console.check()


def test_sign_out_clears_the_session(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "leaver")
    make_task(local_stack, agent, title="Private task")
    console.sign_in(agent.token)
    page = console.page
    expect(page.get_by_text("Private task")).to_be_visible()
    assert page.evaluate("sessionStorage.length") > 0
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    # nothing of the agent's is reachable without signing in again, even by URL or reload
    console.open("#/tasks")
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Private task")).to_have_count(0)
    # a wrong token is refused with a message and stores nothing
    page.get_by_label("Token").fill("tapi_" + "0" * 32 + "_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    assert page.evaluate("sessionStorage.length") == 0
    # a link opened while signed out leads there once signed in
    console.open("#/events")
    page.get_by_label("Token").fill(agent.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Events", exact=True)).to_be_visible()
    console.check()


def test_a_revoked_token_signs_the_console_out(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "to-revoke")
    console.sign_in(agent.token)
    r = requests.post(f"{local_stack.base_url}/agents/{agent.agent_id}/revoke", headers=local_stack.admin(), timeout=10)
    assert r.status_code == 200
    console.go("#/activity")
    expect(console.page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert console.page.evaluate("sessionStorage.length") == 0
    console.check()


def test_snooze_resume_and_cancel_each_ask_first(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "lifecycle")
    task = make_task(local_stack, agent, title="Daily export", schedule_expr="0 6 * * *")
    url = f"{local_stack.base_url}/tasks/{task['id']}"

    def status() -> dict[str, object]:
        return dict(requests.get(url, headers=agent.headers(), timeout=10).json())

    console.sign_in(agent.token)
    console.go(f"#/tasks/{task['id']}")
    page = console.page
    dialog = page.get_by_role("dialog")
    # a dismissed confirmation changes nothing (the Cancel button, then Escape)
    page.get_by_role("button", name="Cancel task").click()
    dialog.get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_have_count(0)
    page.get_by_role("button", name="Pause").click()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert status()["status"] == "active"
    # snooze with a reason
    before = status()["next_run_at"]
    page.get_by_role("button", name="Snooze").click()
    dialog.get_by_label("Delay (minutes)").fill("90")
    dialog.get_by_label("Reason").fill("db maintenance")
    console.shot("snooze-dialog", full_page=False)
    dialog.get_by_role("button", name="Snooze").click()
    expect(page.locator(".stats")).to_contain_text("db maintenance")
    got = status()
    assert got["snooze_reason"] == "db maintenance" and got["next_run_at"] != before
    # pause, then resume
    page.get_by_role("button", name="Pause").click()
    dialog.get_by_role("button", name="Pause").click()
    expect(page.locator(".title-row .badge").first).to_have_text("paused")
    expect(page.locator("p.warn", has_text="Paused")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    dialog.get_by_role("button", name="Resume").click()
    expect(page.locator(".title-row .badge").first).to_have_text("active")
    assert status()["status"] == "active"
    # cancel for good: every action goes grey
    page.get_by_role("button", name="Cancel task").click()
    dialog.get_by_role("button", name="Cancel task").click()
    expect(page.locator(".title-row .badge").first).to_have_text("canceled")
    for name in ("Run now", "Pause", "Snooze", "Edit", "Cancel task"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    expect(page.get_by_text("Nothing is scheduled: the task is canceled.")).to_be_visible()
    assert status()["status"] == "canceled"
    console.check()


def test_errors_it_does_not_know_and_fields_it_has_not_seen_are_shown_plainly(
    console: Console, local_stack: LocalStack
) -> None:
    """The API changes under the console (new problem types, 429s, new task fields): a problem's
    own title and detail are shown, anything else gets a generic message, extra fields are listed."""
    agent = make_agent(local_stack, "api-drift")
    task = make_task(local_stack, agent, title="Drifting")
    page = console.page

    def with_extra_fields(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        resp = route.fetch()
        body = resp.json()
        body.update(schedule_error="the rule has no fire after 2031", owner_team="data-eng")
        route.fulfill(response=resp, json=body)

    page.route(re.compile(rf".*/tasks/{task['id']}$"), with_extra_fields)
    page.route(
        re.compile(r".*/pause$"),
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "7", "Content-Type": "application/problem+json"},
            body='{"type": "urn:x:rate-limited", "title": "Too Many Requests", "status": 429,'
            ' "detail": "writes are limited to 600 a minute"}',
        ),
    )
    page.route(
        re.compile(r".*/run_now$"),
        lambda route: route.fulfill(status=502, headers={"Content-Type": "text/html"}, body="<h1>Bad gateway</h1>"),
    )
    console.sign_in(agent.token)
    console.go(f"#/tasks/{task['id']}")
    expect(page.get_by_role("alert").filter(has_text="Schedule error")).to_contain_text("no fire after 2031")
    expect(page.locator(".props")).to_contain_text("owner team")
    expect(page.locator(".props")).to_contain_text("data-eng")

    page.get_by_role("button", name="Pause").click()
    page.get_by_role("dialog").get_by_role("button", name="Pause").click()
    expect(page.locator(".toast.error")).to_contain_text("Too Many Requests: writes are limited to 600 a minute")
    expect(page.locator(".title-row .badge").first).to_have_text("active")

    page.get_by_role("button", name="Run now").click()
    page.get_by_role("dialog").get_by_role("button", name="Run now").click()
    expect(page.locator(".toast.error").last).to_contain_text("The service had a problem")
    assert "Bad gateway" not in page.locator("#toasts").inner_text()
    console.check()


def test_hostile_text_from_the_api_is_shown_as_text(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "hostile")
    title = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    task = make_task(
        local_stack,
        agent,
        title=title,
        description="</p><b>bold?</b>",
        payload={"steps": [{"id": "x", "type": "log", "message": '<svg onload="window.pwned=3">'}]},
    )
    console.sign_in(agent.token)
    page = console.page
    expect(page.locator("table.tasks a.row-link")).to_have_text(title)
    console.go(f"#/tasks/{task['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(page.locator(".description")).to_have_text("</p><b>bold?</b>")
    expect(page.locator(".steps")).to_contain_text('<svg onload="window.pwned=3">')
    assert page.locator("main img, main script, main b, main svg[onload]").count() == 0
    assert page.evaluate("window.pwned") is None
    console.check()


# ---- the admin, events, activity --------------------------------------------------------------------


def test_the_admin_sees_every_agent_and_creates_and_revokes_agents(console: Console, local_stack: LocalStack) -> None:
    a = make_agent(local_stack, "alpha-bot")
    b = make_agent(local_stack, "beta-bot")
    make_task(local_stack, a, title="Alpha's task")
    make_task(local_stack, b, title="Beta's task")
    console.sign_in(local_stack.admin_token)
    page = console.page
    expect(page.get_by_text("Alpha's task")).to_be_visible()
    expect(page.get_by_text("Beta's task")).to_be_visible()
    # filter by agent
    page.get_by_label("Agent", exact=True).select_option(label="beta-bot")
    expect(page.get_by_text("Alpha's task")).to_have_count(0)
    expect(page.get_by_text("Beta's task")).to_be_visible()

    console.go("#/agents")
    page.get_by_label("New agent's name").fill("gamma-bot")
    page.get_by_role("button", name="Create agent").click()
    once = page.locator(".once")
    expect(once).to_contain_text("shown only this once")
    token = once.locator(".secret code").first.inner_text()
    assert token.startswith("tapi_")
    # the token shown works against the API
    r = requests.get(f"{local_stack.base_url}/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    console.shot("agents", mask=[once.locator(".secret code")])
    # revoke, confirmed
    page.get_by_role("button", name="Revoke gamma-bot").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text="gamma-bot").locator(".badge")).to_have_text("revoked")
    r = requests.get(f"{local_stack.base_url}/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401
    # events belong to an agent: the admin is told so instead of being offered a form that fails
    console.go("#/events")
    expect(page.get_by_text("Events belong to an agent")).to_be_visible()
    expect(page.get_by_role("button", name="Send event")).to_have_count(0)
    console.check()


def test_an_agent_sends_an_event_sees_the_runs_it_started_and_the_activity_charts(
    console: Console, local_stack: LocalStack
) -> None:
    agent = make_agent(local_stack, "events-bot")
    listener = make_task(local_stack, agent, title="On order", schedule_kind="event", schedule_expr="order.*")
    make_task(local_stack, agent, title="Ignores orders", schedule_kind="event", schedule_expr="invoice.*")
    console.sign_in(agent.token)
    page = console.page
    console.go("#/events")
    expect(page.get_by_role("link", name="On order")).to_be_visible()
    page.get_by_label("Event name").fill("order.created")
    page.get_by_label("Data (JSON object)").fill('{"id": 42}')
    page.get_by_role("button", name="Send event").click()
    expect(page.get_by_text("1 run started")).to_be_visible()
    started = page.get_by_role("link", name="run of On order")
    expect(started).to_be_visible()
    console.shot("events")
    started.click()
    expect(page.locator(".title-row .badge")).to_have_text("succeeded", timeout=60000)
    expect(page.locator("pre.json").last).to_contain_text("order.created")
    assert listener["id"] in page.url

    console.go("#/activity")
    expect(page.get_by_role("heading", name="Runs per hour by status")).to_be_visible()
    expect(page.locator("figure.chart svg rect.mark").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"over the last 24 hours: 1 run\."))).to_be_visible()
    expect(page.get_by_role("heading", name="Start lag")).to_be_visible()
    console.shot("activity")
    console.check()


# ---- a phone, the keyboard, empty and error states -----------------------------------------------------


def test_the_views_fit_a_phone_and_work_from_the_keyboard(console: Console, local_stack: LocalStack) -> None:
    agent = make_agent(local_stack, "phone-bot")
    task = make_task(local_stack, agent, title="Hourly sync", schedule_expr="0 * * * *", timezone="Europe/Chisinau")
    make_task(local_stack, agent, title="Weekly digest", schedule_expr="0 8 * * MON")
    page = console.page
    page.set_viewport_size(PHONE)
    console.sign_in(agent.token)
    expect(page.get_by_text("Hourly sync")).to_be_visible()

    def fits() -> None:
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"

    fits()
    console.shot("tasks-phone", full_page=False)
    # keyboard: "/" searches, j moves down the rows, Enter opens
    page.keyboard.press("/")
    expect(page.get_by_label("Filter by text")).to_be_focused()
    page.keyboard.type("weekly")
    expect(page.locator("table.tasks tbody tr")).to_have_count(1)
    page.get_by_label("Filter by text").fill("")
    page.locator("h1").focus()
    page.keyboard.press("j")
    expect(page.locator("a.row-link").first).to_be_focused()
    page.keyboard.press("j")
    expect(page.locator("a.row-link").nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Next fires")).to_be_visible()
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.keyboard.press("g")
    page.keyboard.press("a")
    expect(page.get_by_role("heading", name="Activity")).to_be_visible()
    console.go(f"#/tasks/{task['id']}")
    expect(page.get_by_role("heading", name="Hourly sync")).to_be_visible()
    expect(page.locator("table.fires tbody tr:not(.dst)")).to_have_count(10)
    fits()
    console.shot("task-phone", full_page=False)
    # an unknown route and a filter that matches nothing have their own states
    console.go("#/nowhere")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    console.go("#/tasks?status=canceled")
    expect(page.get_by_text("No tasks match these filters")).to_be_visible()
    console.check()
