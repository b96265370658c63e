"""Prompt layout and budget fitting, counted with the real CodeGeeX tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeglm.completion.context import SourceDocument, extract_context
from codeglm.completion.prompts import SNIPPET_SHARE, PromptBudgetError, build_prompt, snippet_comment
from codeglm.languages import LANGUAGES, get_language, language_for_path
from codeglm.model.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "context"


@pytest.fixture(scope="module")
def count_tokens():
    tokenizer = load_tokenizer()
    return tokenizer.count_tokens


def python_example():
    folder = FIXTURES / "python"
    raw = (folder / "shapes.py").read_text()
    offset = raw.index("@@CURSOR@@")
    text = raw.replace("@@CURSOR@@", "")
    line = text.count("\n", 0, offset)
    column = offset - (text.rfind("\n", 0, offset) + 1)
    geometry = SourceDocument("geometry.py", get_language("python"), (folder / "geometry.py").read_text())
    document = SourceDocument("pkg/shapes.py", get_language("python"), text)
    return extract_context(document, line, column, [geometry])


def test_layout_tag_path_snippets_then_prefix(count_tokens) -> None:
    context = python_example()
    prompt = build_prompt(context, count_tokens, context_length=2048, max_new_tokens=64)
    assert prompt.text.startswith("# language: Python\n# path: pkg/shapes.py\n# Compare this snippet from geometry.py:\n")
    assert "# def dot(a: Vector, b: Vector) -> float:\n#     return a.x * b.x + a.y * b.y\n" in prompt.text
    assert prompt.text.endswith(context.prefix)
    assert prompt.suffix is None
    # Imports and headers are in the whole prefix already: not repeated as snippets.
    assert {s.kind for s in prompt.snippets} == {"definition"}
    assert prompt.tokens == count_tokens(prompt.text) <= prompt.budget == 2048 - 64


def test_least_relevant_snippets_go_first(count_tokens) -> None:
    context = python_example()
    full = build_prompt(context, count_tokens, 2048, 64)
    assert len(full.snippets) == 3
    # A budget that holds the prefix and only some snippets.
    without_last = full.tokens - count_tokens("# Compare this snippet from geometry.py:\n") - 5
    tight = build_prompt(context, count_tokens, without_last + 64, 64)
    assert 0 < len(tight.snippets) <= len(full.snippets)
    assert tight.snippets == full.snippets[: len(tight.snippets)]  # a prefix of the ranking
    assert tight.tokens <= tight.budget
    # Snippets keep up to half the budget: the prefix loses its top lines for them.
    rendered = sum(count_tokens(snippet_comment(context, s)) for s in tight.snippets)
    assert rendered <= tight.budget * SNIPPET_SHARE
    if len(tight.snippets) == len(full.snippets):
        assert tight.prefix_start > 0 and tight.text.endswith(context.prefix[tight.prefix_start :])


def test_prefix_is_trimmed_from_the_top_at_a_line_boundary(count_tokens) -> None:
    context = python_example()
    prompt = build_prompt(context, count_tokens, 120, 64)
    assert prompt.tokens <= 56
    assert prompt.prefix_start > 0
    assert context.prefix[prompt.prefix_start - 1] == "\n"
    assert prompt.text.endswith(context.prefix[prompt.prefix_start :])
    assert prompt.text.startswith("# language: Python\n")


def test_trimmed_prefix_brings_back_what_it_lost_only_if_it_fits(count_tokens) -> None:
    context = python_example()
    # Enough for the tag, path and the last lines, not for snippets.
    prompt = build_prompt(context, count_tokens, 150, 64)
    kept = context.prefix[prompt.prefix_start :]
    for snippet in prompt.snippets:
        assert snippet.text not in kept


def test_fim_puts_the_suffix_aside_within_its_share(count_tokens) -> None:
    context = python_example()
    prompt = build_prompt(context, count_tokens, 2048, 64, fim=True)
    assert prompt.suffix is not None and context.suffix.startswith(prompt.suffix)
    assert prompt.suffix.strip().startswith("return total")
    assert prompt.tokens == count_tokens(prompt.text) + count_tokens(prompt.suffix) <= prompt.budget
    small = build_prompt(context, count_tokens, 200, 64, fim=True)
    assert count_tokens(small.suffix or "") <= (200 - 64) // 4
    assert small.tokens <= small.budget


def test_no_room_is_a_clear_error(count_tokens) -> None:
    with pytest.raises(PromptBudgetError, match="lower max_new_tokens"):
        build_prompt(python_example(), count_tokens, 64, 64)


def test_other_languages_comment_their_own_way(count_tokens) -> None:
    folder = FIXTURES / "go"
    raw = (folder / "cart.go").read_text()
    offset = raw.index("@@CURSOR@@")
    text = raw.replace("@@CURSOR@@", "")
    line = text.count("\n", 0, offset)
    store = SourceDocument("store.go", get_language("go"), (folder / "store.go").read_text())
    context = extract_context(SourceDocument("cart.go", get_language("go"), text), line, 1, [store])
    prompt = build_prompt(context, count_tokens, 2048, 64)
    assert prompt.text.startswith("// language: Go\n// path: cart.go\n// Compare this snippet from store.go:\n")
    assert "// func Total(items []Item) int {\n" in prompt.text


# --- the property: never over budget -----------------------------------------------------

SOURCES = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
code_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [line for path in SOURCES for line in path.read_text().replace("@@CURSOR@@", "").split("\n")]
        ),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80),
    ),
    max_size=60,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=code_lines,
    other=st.sampled_from(SOURCES),
    language_index=st.integers(0, len(LANGUAGES) - 1),
    cursor=st.floats(0, 1),
    context_length=st.integers(1, 700),
    max_new_tokens=st.integers(0, 128),
    fim=st.booleans(),
    path=st.one_of(st.none(), st.text(max_size=30)),
)
def test_budget_is_never_exceeded(
    count_tokens, lines, other, language_index, cursor, context_length, max_new_tokens, fim, path
) -> None:
    language = LANGUAGES[language_index]
    text = "\n".join(lines)
    line = int(cursor * max(0, len(lines) - 1)) if lines else 0
    column = len(lines[line]) // 2 if lines else 0
    others = [SourceDocument(other.name, language_for_path(other), other.read_text())]
    context = extract_context(SourceDocument(path, language, text), line, column, others)
    if context_length - max_new_tokens <= 0:
        with pytest.raises(PromptBudgetError):
            build_prompt(context, count_tokens, context_length, max_new_tokens, fim)
        return
    prompt = build_prompt(context, count_tokens, context_length, max_new_tokens, fim)
    real = count_tokens(prompt.text) + (count_tokens(prompt.suffix) if prompt.suffix else 0)
    assert real == prompt.tokens <= context_length - max_new_tokens
    # What is kept of the prefix is its tail: the text right before the cursor.
    assert prompt.text.endswith(context.prefix[prompt.prefix_start :])
    if prompt.suffix is not None:
        assert context.suffix.startswith(prompt.suffix)
