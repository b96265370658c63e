"""Junk rejection: a completion never shows text that adds syntax errors where it goes.

Each case is a document with the cursor at ``█``, a raw generation (hand-written junk
of the kinds small models write, or good code that must come through whole) and the
text that should be shown (None: nothing). Documents that do not parse before the
cursor are included: the rule compares with the errors already there.
"""

from __future__ import annotations

import re

import pytest

from codeglm.completion.junk import JUNK_LINES
from codeglm.completion.postprocess import make_finished_callback, postprocess
from codeglm.completion.site import completion_site
from codeglm.languages import get_language
from codeglm.syntax.guard import ERROR, MISSING, clean_lines, new_errors, syntax_baseline

CURSOR = "█"
FIB = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    █\n'
JAVA_BODY = "class A {\n  int f(int x) {\n    █\n  }\n}\n"
GO_BODY = "package main\n\nfunc F(a int) int {\n\t█\n}\n"
JS_BODY = "function f(a) {\n  █\n}\n"

# (id, language, document, raw generation, expected text or None)
CASES = [
    # --- Python ---------------------------------------------------------------------------
    ("py-comment-junk", "python", FIB, "//\n    //\n    //\n    //\n    //\n    //\n", None),
    ("py-good-body", "python", FIB,
     "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nprint(fibonacci(10))\n",
     "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ("py-good-then-junk", "python", FIB, "a, b = 0, 1\n    //\n    //\n    //\n", "a, b = 0, 1"),
    ("py-open-list-closed-later", "python", FIB, "xs = [\n        1,\n        2,\n    ]\n    )))\n",
     "xs = [\n        1,\n        2,\n    ]"),
    ("py-broken-above-junk", "python", "def g(:\n    pass\n\ndef f(x):█\n", "\n    y = x\n    ) ) )\n    ) ) )\n",
     "\n    y = x"),
    ("py-broken-above-good", "python", "def g(:\n    pass\n\ndef f(x):█\n", "\n    y = x * 2\n    return y\n\ndef h():\n",
     "\n    y = x * 2\n    return y"),
    ("py-mid-line-junk", "python", "total = sum(█)\n", "xs ?? 0)\n", None),
    ("py-unclosed-call-good", "python", "x = compute(█\n", "a, b)\n", "a, b)"),
    # --- Java -----------------------------------------------------------------------------
    ("java-bracket-junk", "java", JAVA_BODY, "))) ((\n    ))) ((\n    ))) ((\n    ))) ((\n", None),
    ("java-good-then-junk", "java", JAVA_BODY, "int y = x * 2;\n    ))) junk\n    ))) junk\n", "int y = x * 2;"),
    ("java-good", "java", JAVA_BODY, "int y = x * 2;\n    return y;\n  }\n}\n", "int y = x * 2;\n    return y;"),
    ("java-call-chain", "java", "class A {\n  long f(java.util.List<Integer> list) {\n    █\n  }\n}\n",
     "return list.stream()\n      .map(x -> x * 2)\n      .filter(x -> x > 0)\n      .sorted()\n      .count();\n  }\n}\n",
     "return list.stream()\n      .map(x -> x * 2)\n      .filter(x -> x > 0)\n      .sorted()\n      .count();"),
    ("java-missing-semicolon", "java", JAVA_BODY, "int y = x * 2\n", None),
    ("java-broken-above-good", "java", "class A {\n  int g( {\n  int f(int x) {█\n}\n",
     "\n    return x + 1;\n  }\n\n  int h() {\n", "\n    return x + 1;\n  }"),
    ("java-mid-line-junk", "java", "class A {\n  void f(int[] a) {\n    int n = Math.max(█, 0);\n  }\n}\n",
     "a.length === > 0, 0);\n", None),
    # --- Go -------------------------------------------------------------------------------
    ("go-bare-braces", "go", GO_BODY, "{\n\t{\n\t{\n\t{\n\t{\n", None),
    ("go-bracket-junk", "go", GO_BODY, "))) (((\n\t)))\n\t)))\n\t)))\n", None),
    ("go-good", "go", GO_BODY, "b := a * 2\n\treturn b\n}\n\nfunc G() {}\n", "b := a * 2\n\treturn b"),
    ("go-unclosed-function-good", "go", "package main\n\nfunc F(n int) int {\n\tfor i := 0; i < n; i++ {█\n",
     "\n\t\tif i > 3 {\n\t\t\treturn i\n\t\t}\n\t}\n\treturn 0\n}\n", "\n\t\tif i > 3 {\n\t\t\treturn i\n\t\t}\n\t}"),
    # --- JavaScript -----------------------------------------------------------------------
    ("js-markup-junk", "javascript", JS_BODY, "</div>\n  </div>\n  </div>\n  </div>\n", None),
    ("js-good", "javascript", JS_BODY, "const b = a.map((x) =>\n    x * 2);\n  return b;\n}\n\nf([1]);\n",
     "const b = a.map((x) =>\n    x * 2);\n  return b;"),
    ("js-good-then-junk", "javascript", JS_BODY, "const b = a * 2;\n  #### ####\n  #### ####\n", "const b = a * 2;"),
    ("js-broken-above-good", "javascript", "const a = [1, 2;\nfunction f(x) {█\n", "\n  return x + 1;\n}\n\nf(1);\n",
     "\n  return x + 1;\n}"),
    ("js-mid-line-junk", "javascript", "const b = a.map(█);\n", "x => x +* 2);\n", None),
    # --- the others -----------------------------------------------------------------------
    ("rust-junk", "rust", "fn f(x: i32) -> i32 {\n    █\n}\n", "<<< >>>\n    <<< >>>\n    <<< >>>\n", None),
    ("cpp-junk", "cpp", "int f(int x) {\n    █\n}\n", "@@ @@\n    @@ @@\n    @@ @@\n", None),
    ("ts-good", "typescript", "function f(a: number[]): number {\n  █\n}\n", "return a.length;\n}\n",
     "return a.length;"),
]


def split(document: str) -> tuple[str, str]:
    index = document.index(CURSOR)
    return document[:index], document[index + 1 :]


def pieces(text: str) -> list[str]:
    """Pieces the size of BPE tokens (words, symbols, runs of whitespace)."""
    return re.findall(r"\s+|\w+|[^\w\s]", text)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_junk_is_cut_and_good_code_kept(case) -> None:
    _, language, document, generation, expected = case
    site = completion_site(get_language(language), *split(document))
    result = postprocess(site, generation)
    assert (None if result is None else result.text) == expected


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_streaming_gives_the_same_result(case) -> None:
    """Fed token by token through the finished callback, the kept text post-processes
    to what the whole generation does: stopping early never changes the answer."""
    _, language, document, generation, expected = case
    site = completion_site(get_language(language), *split(document))
    finished = make_finished_callback(site)
    text = ""
    for piece in pieces(generation):
        text += piece
        keep = finished(text)
        if keep is not None:
            text = text[:keep]
            break
    result = postprocess(site, text)
    assert (None if result is None else result.text) == expected


def test_junk_lines_stop_generation_early() -> None:
    """The tiny model's answer to a Python body: lines of ``//``. Generation stops after
    JUNK_LINES of them, keeping nothing, instead of running to the token limit."""
    site = completion_site(get_language("python"), *split(FIB))
    finished = make_finished_callback(site)
    generation = "//\n    " * 30
    text, used, keep = "", 0, None
    for piece in pieces(generation):
        text += piece
        used += 1
        keep = finished(text)
        if keep is not None:
            break
    assert keep == 0
    assert text.count("//") == JUNK_LINES
    assert used < len(pieces(generation)) // 5
    assert postprocess(site, text[:keep]) is None


def test_open_brackets_are_not_judged_while_streaming() -> None:
    """A long list is broken until its last line closes it: no early stop inside it."""
    site = completion_site(get_language("python"), *split(FIB))
    finished = make_finished_callback(site)
    generation = "xs = [\n" + "        1,\n" * 10 + "    ]\n    return xs\n\n\nprint(1)\n"
    text = ""
    for piece in pieces(generation):
        text += piece
        keep = finished(text)
        if keep is not None:
            text = text[:keep]
            break
    assert text.rstrip().endswith("return xs")


def baseline(language: str, document: str):
    before, after = split(document)
    return syntax_baseline(get_language(language), before, after)


def test_errors_elsewhere_do_not_count() -> None:
    document = "def broken(:\n    pass\n\n\ndef f(x):\n    █\n\n\nclass Also(:\n    pass\n"
    base = baseline("python", document)
    assert len(base.errors) >= 2 and not base.broken_at_cursor
    assert new_errors(base, "return x + 1") == []
    junk = new_errors(base, "return x +* 1")
    assert [e.kind for e in junk] == [ERROR]
    assert base.cursor <= junk[0].start < base.cursor + len("return x +* 1")


def test_missing_token_right_after_the_completion_counts() -> None:
    base = baseline("java", JAVA_BODY)
    assert [e.kind for e in new_errors(base, "int y = 5")] == [MISSING]
    assert new_errors(base, "int y = 5;") == []
    # A block left open takes a "}" from below; the shortage shows far from the completion.
    assert new_errors(base, "if (x > 0) {\n      return 1;") == []


def test_clean_lines_keeps_the_longest_clean_run() -> None:
    base = baseline("python", FIB)

    def clean(text: str, replaced: int) -> bool:
        return not new_errors(base, text, replaced)

    text = "ys = [\n        1,\n    ]\n    //"
    assert clean_lines(text, 0, clean) == ("ys = [\n        1,\n    ]", 0)
    assert clean_lines("//\n    //", 0, clean) == ("", 0)
    assert clean_lines("return 1", 0, clean) == ("return 1", 0)
