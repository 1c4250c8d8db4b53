"""docs/api.md documents everything the served /openapi.json describes: each route (with its
query and header parameters and exactly its status codes), each field of each schema, and each
enum value. A route, field or status added to the code without a line in docs/api.md fails here.

How the document is read:
- a route is documented in the section (heading to next heading) whose heading or text contains
  `` `METHOD /path` ``; that section has a `Status…: 200, 400, …` line listing its codes;
- a field is documented by a table row whose first cell names it in backticks. When the table has
  an `in` column, that cell names the schema(s) (`every step` = every *Step schema); otherwise the
  schemas are those named in backticks in the section heading above the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"


@dataclass
class Section:
    heading: str
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join([self.heading, *self.lines])


def _sections(text: str) -> list[Section]:
    out = [Section("")]
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            out.append(Section(line))
        else:
            out[-1].lines.append(line)
    return out


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _rows(sections: list[Section], schemas: set[str]) -> list[tuple[set[str], set[str], str]]:
    """(schemas, fields, row text) for every row of every field table."""
    steps = {s for s in schemas if s.endswith("Step")}
    rows = []
    for sec in sections:
        header: list[str] | None = None
        for line in sec.lines:
            if not line.startswith("|"):
                header = None
                continue
            cells = _cells(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if set("".join(cells)) <= set("-: ") or header[0] != "field":
                continue
            if "in" in header:
                where = cells[header.index("in")]
                named = {w for w in re.findall(r"\w+", where) if w in schemas}
                if "every step" in where:
                    named |= steps
            else:
                named = {t for t in _ticked(sec.heading) if t in schemas}
            rows.append((named, set(_ticked(cells[0])), line))
    return rows


def _enum_values(schema: dict[str, Any]) -> list[Any]:
    if "const" in schema:
        return [schema["const"]]
    values = list(schema.get("enum", []))
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        values += _enum_values(sub)
    if "items" in schema:
        values += _enum_values(schema["items"])
    return [v for v in values if v is not None]


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text()


@pytest.fixture()
def served(api) -> dict[str, Any]:
    r = api.call("GET", "/openapi.json")
    assert r.status_code == 200
    assert r.data["paths"], "the served document lists no routes"
    return r.data


def test_every_route_its_parameters_and_exactly_its_status_codes_are_documented(served, doc_text):
    sections = _sections(doc_text)
    missing = []
    checked = 0
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            name = f"{method.upper()} {path}"
            hits = [s for s in sections if f"`{name}`" in s.heading] or [s for s in sections if f"`{name}`" in s.text]
            if not hits:
                missing.append(f"route {name}: no section mentions `{name}`")
                continue
            sec = hits[0]
            statuses = re.search(r"^Status[^:\n]*:\s*([\d, ]+)", sec.text, re.M) or re.search(
                r"Status[^:\n]*:\s*([\d,\s]+\d)", sec.text
            )
            documented = set(re.findall(r"\d{3}", statuses.group(1))) if statuses else set()
            if documented != set(op["responses"]):
                missing.append(
                    f"route {name}: Status line lists {sorted(documented)}, served {sorted(op['responses'])}"
                )
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    continue  # named by the route itself
                if not re.search(r"`" + re.escape(param["name"]) + r"(?![\w-])", sec.text):
                    missing.append(f"route {name}: {param['in']} parameter {param['name']} not in its section")
            checked += 1
    assert checked >= 19, checked
    assert not missing, "\n".join(missing)


def test_every_field_and_enum_value_of_every_schema_is_documented(served, doc_text):
    schemas = served["components"]["schemas"]
    rows = _rows(_sections(doc_text), set(schemas))
    missing = []
    checked = 0
    for name, schema in schemas.items():
        for prop, prop_schema in schema.get("properties", {}).items():
            found = [text for named, fields, text in rows if name in named and prop in fields]
            if not found:
                missing.append(f"{name}.{prop}: no table row")
                continue
            for value in _enum_values(prop_schema):
                if not any(f"`{value}`" in text for text in found):
                    missing.append(f"{name}.{prop}: value {value!r} not in its row")
            checked += 1
    assert checked >= 150, checked  # the contract's models: a parsing slip would document nothing
    assert not missing, "\n".join(missing)


def test_the_rules_fail_on_an_undocumented_field_or_status(served, doc_text):
    """The checks above can fail: remove one row and one status, and each is reported."""
    schemas = served["components"]["schemas"]
    rows = _rows(_sections(doc_text.replace("| `snooze_reason` |", "| snooze reason |")), set(schemas))
    assert not [t for named, fields, t in rows if "Task" in named and "snooze_reason" in fields]
    assert [t for named, fields, t in rows if "Task" in named and "snoozed_until" in fields]
    cut = doc_text.replace("Status: 201, 400, 401, 403, 409, 413, 429.", "Status: 201, 400, 401, 403, 409, 413.")
    assert cut != doc_text
    sec = next(s for s in _sections(cut) if "`POST /tasks`" in s.heading)
    assert "429" not in re.search(r"Status[^:\n]*:\s*([\d, ]+)", sec.text).group(1)


def test_internal_links_resolve_and_the_changes_section_exists(doc_text):
    slugs = set()
    for sec in _sections(doc_text):
        title = sec.heading.lstrip("#").strip()
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        slugs.add(slug)
    anchors = re.findall(r"\]\(#([^)]+)\)", doc_text)
    assert anchors
    assert [a for a in anchors if a not in slugs] == []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc_text):
        assert "://" not in target, f"docs/api.md links outside the repository: {target}"
        assert (DOC.parent / target).exists(), target
    assert "## Changes from the original contract" in doc_text


def test_the_readme_links_the_reference():
    readme = (ROOT / "README.md").read_text()
    assert "](docs/api.md)" in readme
    # No link leaves the repository (a reader of the repo alone has nothing above it).
    assert not re.findall(r"\]\((?:\.\./|https?://)[^)]*\)", readme)
