"""Templates: `{{ JMESPath }}` over the run context."""

from __future__ import annotations

import pytest

from chalicelib.domain.templates import TemplateError, render

CTX = {
    "task": {"id": "t-1", "title": "Nightly report", "priority": 3},
    "run": {"id": "r-1", "attempt": 2},
    "input": {"user": {"name": "Ana", "tags": ["a", "b"]}, "flag": True, "nothing": None},
    "event": None,
    "steps": {"a": {"output": {"status": 200, "body": {"x": 42, "items": [{"id": 1}, {"id": 2}]}}}},
}


def test_whole_value_keeps_the_type():
    assert render("{{ task.priority }}", CTX) == 3
    assert render("{{ input.user }}", CTX) == {"name": "Ana", "tags": ["a", "b"]}
    assert render("{{ input.flag }}", CTX) is True
    assert render("{{input.user.tags}}", CTX) == ["a", "b"]


def test_whole_value_allows_surrounding_whitespace():
    assert render("  {{ task.priority }}\n", CTX) == 3


def test_text_substitution():
    assert render("Report: {{ task.title }} (p{{ task.priority }})", CTX) == "Report: Nightly report (p3)"


def test_text_substitution_json_encodes_non_strings():
    assert render("u={{ input.user }};f={{ input.flag }}", CTX) == 'u={"name":"Ana","tags":["a","b"]};f=true'


def test_two_expressions_are_text_even_without_other_text():
    assert render("{{ task.priority }}{{ run.attempt }}", CTX) == "32"


def test_nested_dicts_and_lists():
    value = {"a": ["{{ task.id }}", {"b": "x-{{ run.id }}"}, 5, None, True], "c": {"d": "{{ steps.a.output.status }}"}}
    assert render(value, CTX) == {"a": ["t-1", {"b": "x-r-1"}, 5, None, True], "c": {"d": 200}}


def test_keys_are_not_rendered():
    assert render({"{{ task.id }}": "v"}, CTX) == {"{{ task.id }}": "v"}


def test_steps_output_chaining():
    assert render("{{ steps.a.output.body.x }}", CTX) == 42
    assert render("{{ steps.a.output.body.items[].id }}", CTX) == [1, 2]
    assert render("n={{ length(steps.a.output.body.items) }}", CTX) == "n=2"


def test_missing_keys_are_null_or_empty():
    assert render("{{ input.missing.deeper }}", CTX) is None
    assert render("{{ event.name }}", CTX) is None
    assert render("[{{ input.missing }}]", CTX) == "[]"
    assert render("[{{ input.nothing }}]", CTX) == "[]"


def test_strings_without_templates_and_non_strings_pass_through():
    assert render("plain {text} }} here", CTX) == "plain {text} }} here"
    assert render(12.5, CTX) == 12.5
    assert render(None, CTX) is None


def test_braces_inside_the_expression():
    assert render("{{ {t: task.title, p: task.priority} }}", CTX) == {"t": "Nightly report", "p": 3}
    assert render('{{ `{"k": [1]}` }}', CTX) == {"k": [1]}
    assert render("x{{ 'a}}b' }}y", CTX) == "xa}}by"


def test_invalid_expression_names_it():
    with pytest.raises(TemplateError) as e:
        render("hello {{ task..title }}", CTX)
    assert "task..title" in str(e.value)


def test_unknown_function_and_type_errors_are_template_errors():
    with pytest.raises(TemplateError, match="nope"):
        render("{{ nope(task) }}", CTX)
    with pytest.raises(TemplateError):
        render("{{ length(task.priority) }}", CTX)


def test_empty_expression():
    with pytest.raises(TemplateError):
        render("{{ }}", CTX)


@pytest.mark.parametrize("text", ["{{ task.title", "a {{ task.title } b", "ok {{ task.id }} then {{ run.id"])
def test_unterminated_braces(text):
    with pytest.raises(TemplateError, match="unterminated"):
        render(text, CTX)


def test_template_error_is_a_value_error():
    assert issubclass(TemplateError, ValueError)


def test_a_whole_value_is_a_copy_never_the_context_itself():
    ctx = {"task": {"title": "t"}, "steps": {}}
    out = render("{{ @ }}", ctx)
    assert out == ctx and out is not ctx and out["task"] is not ctx["task"]
    ctx["steps"]["x"] = {"output": out}  # what the pipeline does with a step's output
    import json

    json.dumps(ctx)  # no cycle: the rendered value does not hold the context


def test_a_rendered_value_over_the_cap_is_a_template_error():
    from chalicelib.domain.templates import MAX_RENDERED_BYTES

    ctx = {"big": "x" * (MAX_RENDERED_BYTES // 2 + 10)}
    assert len(render("{{ big }}", ctx)) == len(ctx["big"])
    with pytest.raises(TemplateError, match="more than"):
        render("{{ big }}{{ big }}", ctx)
    with pytest.raises(TemplateError, match="more than"):
        render("{{ [big, big] }}", ctx)
