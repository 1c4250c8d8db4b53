"""`{{ expression }}` templates in pipeline steps, evaluated with JMESPath.

JMESPath (it ships with boto3) is a query language, not a programming language: a
template can read the run context but cannot loop, call out or run code, which is
what we want for strings written by agents.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

_OPEN = "{{"
_CLOSE = "}}"
_QUOTES = "\"'`"


class TemplateError(ValueError):
    """A template that cannot be evaluated; no retry can fix it."""


@lru_cache(maxsize=1024)
def _compile(expr: str) -> ParsedResult:
    try:
        return jmespath.compile(expr)
    except JMESPathError as e:
        raise TemplateError(f"invalid expression {{{{ {expr} }}}}: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _end_of(text: str, start: int) -> int:
    """Index of the `}}` closing the expression that begins at `start`.

    Braces inside the expression (multiselect hashes `{a: b}`, JSON literals in
    backticks, quoted strings) are skipped, so `{{ {a: x} }}` closes where a reader
    expects. Raises TemplateError when no closing `}}` exists.
    """
    depth = 0
    quote = ""
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in _QUOTES:
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0 and text.startswith(_CLOSE, i):
                return i
            depth = max(0, depth - 1)
        i += 1
    # An unbalanced quote or brace: close at the first `}}` and let JMESPath report it.
    plain = text.find(_CLOSE, start)
    if plain >= 0:
        return plain
    snippet = text[max(0, start - 2) : start + 40]
    raise TemplateError(f"unterminated '{{{{' in {snippet!r}")


def _parts(text: str) -> list[tuple[bool, str]]:
    """Split a string into (is_expression, text) parts."""
    out: list[tuple[bool, str]] = []
    pos = 0
    while True:
        i = text.find(_OPEN, pos)
        if i < 0:
            if pos < len(text):
                out.append((False, text[pos:]))
            return out
        if i > pos:
            out.append((False, text[pos:i]))
        end = _end_of(text, i + len(_OPEN))
        out.append((True, text[i + len(_OPEN) : end].strip()))
        pos = end + len(_CLOSE)


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """One JMESPath expression over the context; a missing path is None."""
    if not expr:
        raise TemplateError("empty expression {{ }}")
    compiled = _compile(expr)
    try:
        return compiled.search(context)
    except JMESPathError as e:
        raise TemplateError(f"expression {{{{ {expr} }}}} failed: {_one_line(e)}") from None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# What one template may produce. A value is copied out of the context (never a reference into
# it, so `{{ @ }}` cannot make the run's context contain itself), and its size is capped, so
# self-reference (`to_string(@)` step after step) cannot grow anything exponentially.
MAX_RENDERED_BYTES = 64 * 1024


def _detached(value: Any, expr: str) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    )
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RENDERED_BYTES:
        raise TemplateError(f"{{{{ {expr[:60]} }}}} renders to more than {MAX_RENDERED_BYTES} bytes")
    return value if isinstance(value, str) else json.loads(text)


def render_string(text: str, context: dict[str, Any]) -> Any:
    if _OPEN not in text:
        return text
    parts = _parts(text)
    # Exactly one expression and nothing but whitespace around it: the value itself.
    significant = [p for p in parts if p[0] or p[1].strip()]
    if len(significant) == 1 and significant[0][0]:
        return _detached(evaluate(significant[0][1], context), significant[0][1])
    out = "".join(_as_text(_detached(evaluate(t, context), t)) if is_expr else t for is_expr, t in parts)
    return _detached(out, text)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside `value` (dict values and list items, recursively).

    Dict keys are left as written: a key is structure, not data.
    """
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value
