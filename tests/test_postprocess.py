"""Post-processing per language: where a completion stops and what it drops.

Each case is a document with the cursor at ``█``, a raw generation as a model might
write it (usually running on past the useful part), and the text that should be shown.
"""

from __future__ import annotations

import re

import pytest

from codeglm.completion.loops import loop_cuts
from codeglm.completion.postprocess import make_finished_callback, postprocess
from codeglm.completion.site import completion_site
from codeglm.completion.stops import find_stop
from codeglm.languages import get_language

CURSOR = "█"

# (id, language, document, raw generation, expected text or None, multiline?)
CASES = [
    # --- mid-line: single line, rest of the line not repeated --------------------------------
    ("py-mid-line", "python", "def f(xs):\n    return sum(█) / len(xs)\n", "xs) / len(xs)\n\nprint(f([1]))",
     "xs", False),
    ("java-mid-line", "java", "class A {\n  int f(int[] a) {\n    int n = Math.max(█, 0);\n  }\n}\n",
     "a.length, 0);\n    return n;", "a.length", False),
    ("cpp-mid-line", "cpp", "int f(int x) {\n    return std::max(x, █);\n}\n", "0);\n}\n", "0", False),
    ("c-mid-line", "c", "int f(int x) {\n    printf(\"%d\\n\", █);\n}\n", "x * 2);\n    return 0;", "x * 2", False),
    ("js-mid-line", "javascript", "const f = (a) => {\n  const b = a.map(█);\n};\n", "(x) => x + 1);\n  return b;",
     "(x) => x + 1", False),
    ("ts-mid-line", "typescript", "function f(a: number[]): number {\n  return a.reduce(█);\n}\n",
     "(s, x) => s + x, 0);\n}", "(s, x) => s + x, 0", False),
    ("go-mid-line", "go", "func f(a []int) int {\n\treturn len(█)\n}\n", "a)\n}\n", "a", False),
    ("rust-mid-line", "rust", "fn f(v: &[i32]) -> i32 {\n    v.iter().map(█).sum()\n}\n", "|x| x * 2).sum()\n}",
     "|x| x * 2", False),
    # --- end of a line that opens a block: stop where the block ends ---------------------------
    ("py-end-of-block", "python", "def area(r):█\n", "\n    pi = 3.14159\n    return pi * r * r\n\n\ndef other():\n    pass\n",
     "\n    pi = 3.14159\n    return pi * r * r", True),
    ("java-end-of-block", "java", "class A {\n    int twice(int x) {█\n}\n",
     "\n        return 2 * x;\n    }\n\n    int thrice(int x) {\n        return 3 * x;\n    }\n",
     "\n        return 2 * x;\n    }", True),
    ("cpp-end-of-block", "cpp", "#include <vector>\nint sum(const std::vector<int>& v) {█\n",
     "\n    int s = 0;\n    for (int x : v) s += x;\n    return s;\n}\n\nint main() {\n",
     "\n    int s = 0;\n    for (int x : v) s += x;\n    return s;\n}", True),
    ("c-end-of-block", "c", "int sq(int x) {█\n", "\n    return x * x;\n}\n\nint cube(int x) {\n",
     "\n    return x * x;\n}", True),
    ("js-end-of-block", "javascript", "function inc(a) {█\n", "\n  return a + 1;\n}\n\nfunction dec(a) {\n",
     "\n  return a + 1;\n}", True),
    ("ts-end-of-block", "typescript", "function inc(a: number): number {█\n", "\n  return a + 1;\n}\n\nexport {};\n",
     "\n  return a + 1;\n}", True),
    ("go-end-of-block", "go", "package main\n\nfunc Inc(a int) int {█\n", "\n\treturn a + 1\n}\n\nfunc Dec(a int) int {\n",
     "\n\treturn a + 1\n}", True),
    ("rust-end-of-block", "rust", "fn inc(a: i32) -> i32 {█\n", "\n    a + 1\n}\n\nfn dec(a: i32) -> i32 {\n",
     "\n    a + 1\n}", True),
    ("py-opener-with-comment", "python", "def f(x):\n    if x > 0:  # positive█\n", "\n        return 1\n    return 0\n",
     "\n        return 1", True),
    ("go-opener-with-comment", "go", "package main\n\nfunc F() int { // answer█\n", "\n\treturn 42\n}\n\nfunc G() {",
     "\n\treturn 42\n}", True),
    # --- nested blocks: inner closers do not end the outer block ------------------------------
    ("py-nested", "python", "def count(xs):\n    n = 0\n    for x in xs:█\n    return n\n",
     "\n        if x > 0:\n            n += 1\n        else:\n            n -= 1\n    return n\n",
     "\n        if x > 0:\n            n += 1\n        else:\n            n -= 1", True),
    ("java-nested", "java", "class A {\n  int f(int[] a) {\n    int n = 0;\n    for (int x : a) {█\n    return n;\n  }\n}\n",
     "\n      if (x > 0) {\n        n++;\n      } else {\n        n--;\n      }\n    }\n    return n;\n",
     "\n      if (x > 0) {\n        n++;\n      } else {\n        n--;\n      }\n    }", True),
    ("cpp-nested", "cpp", "int f(int n) {\n    int s = 0;\n    while (n > 0) {█\n    return s;\n}\n",
     "\n        if (n % 2) {\n            s += n;\n        }\n        n--;\n    }\n    return s;\n}\n",
     "\n        if (n % 2) {\n            s += n;\n        }\n        n--;\n    }", True),
    ("go-nested", "go", "package main\n\nfunc F(a []int) int {\n\ts := 0\n\tfor _, x := range a {█\n\treturn s\n}\n",
     "\n\t\tif x > 0 {\n\t\t\ts += x\n\t\t}\n\t}\n\treturn s\n}\n",
     "\n\t\tif x > 0 {\n\t\t\ts += x\n\t\t}\n\t}", True),
    ("rust-nested", "rust", "fn f(v: &[i32]) -> i32 {\n    let mut s = 0;\n    for x in v {█\n    s\n}\n",
     "\n        if *x > 0 {\n            s += x;\n        }\n    }\n    s\n}\n",
     "\n        if *x > 0 {\n            s += x;\n        }\n    }", True),
    ("js-nested", "javascript", "function f(a) {\n  let s = 0;\n  for (const x of a) {█\n  return s;\n}\n",
     "\n    if (x > 0) {\n      s += x;\n    }\n  }\n  return s;\n}\n",
     "\n    if (x > 0) {\n      s += x;\n    }\n  }", True),
    ("c-nested", "c", "int f(int n) {\n    int s = 0;\n    for (int i = 0; i < n; i++) {█\n    return s;\n}\n",
     "\n        if (i % 2 == 0) {\n            s += i;\n        }\n    }\n    return s;\n}\n",
     "\n        if (i % 2 == 0) {\n            s += i;\n        }\n    }", True),
    ("ts-nested", "typescript", "function f(a: number[]): number {\n  let s = 0;\n  for (const x of a) {█\n  return s;\n}\n",
     "\n    if (x > 0) {\n      s += x;\n    }\n  }\n  return s;\n}\n",
     "\n    if (x > 0) {\n      s += x;\n    }\n  }", True),
    # --- empty line: statements until the block closes; at the top level, one item ----------
    ("js-top-level", "javascript", "█\n", "function add(a, b) {\n  return a + b;\n}\n\nfunction sub(a, b) {\n",
     "function add(a, b) {\n  return a + b;\n}", True),
    ("py-top-level", "python", "import os\n\n█\n",
     "def main():\n    print(os.getcwd())\n\n\nif __name__ == '__main__':\n    main()\n",
     "def main():\n    print(os.getcwd())", True),
    ("py-method-in-class", "python", "class A:\n    def f(self):\n        return 1\n\n    █\n",
     "def g(self):\n        return 2\n\n    def h(self):\n        return 3\n", "def g(self):\n        return 2", True),
    ("java-method-in-class", "java", "class A {\n  int f() { return 1; }\n\n  █\n}\n",
     "int g() {\n    return 2;\n  }\n\n  int h() {\n    return 3;\n  }\n}\n", "int g() {\n    return 2;\n  }", True),
    ("py-inner-empty-line", "python", "def f(x):\n    if x:\n        █\n    return 0\n",
     "y = x * 2\n        return y\n    return 0\n", "y = x * 2\n        return y", True),
    ("py-empty-line", "python", "def f(xs):\n    total = 0\n    █\n",
     "for x in xs:\n        total += x\n    return total\n\n\nprint(f([1, 2]))\n",
     "for x in xs:\n        total += x\n    return total", True),
    ("c-empty-line", "c", "int f(int n) {\n    int s = 0;\n    █\n}\n",
     "for (int i = 0; i < n; i++) s += i;\n    return s;\n}\n\nint g(void) {\n",
     "for (int i = 0; i < n; i++) s += i;\n    return s;", True),
    ("ts-empty-line", "typescript", "class A {\n  f(a: number[]): number {\n    █\n  }\n}\n",
     "return a.length;\n  }\n\n  g(): void {}\n}\n", "return a.length;", True),
    # --- auto-closed brackets and quotes -----------------------------------------------------
    ("py-auto-closed-paren", "python", "print(█)\n", "'hello', 'world')\n\nprint('done')\n", "'hello', 'world'", False),
    ("py-auto-closed-quote", "python", "name = \"█\"\n", "Ada Lovelace\"\nage = 36\n", "Ada Lovelace", False),
    ("js-auto-closed-brace", "javascript", "function f(a) {█}\n", "\n  return a * 2;\n}\n\nf(1);\n",
     "\n  return a * 2;\n}", True),
    ("rust-auto-closed-vec", "rust", "fn main() {\n    let v = vec![█];\n}\n", "1, 2, 3];\n    println!(\"{:?}\", v);",
     "1, 2, 3", False),
    ("go-auto-closed-call", "go", "package main\n\nfunc main() {\n\tfmt.Println(█)\n}\n", "\"hi\")\n}\n", "\"hi\"", False),
    ("java-auto-closed-string", "java", "class A {\n  String s = \"█\";\n}\n", "hello\";\n}\n", "hello", False),
    ("cpp-auto-closed-index", "cpp", "int f(int* a) {\n    return a[█];\n}\n", "0];\n}\n", "0", False),
    ("c-auto-closed-if", "c", "int f(int x) {\n    if (█)\n}\n", "x > 0)\n        return 1;\n", "x > 0", False),
    ("ts-auto-closed-generic", "typescript", "const m = new Map<string, number>(█);\n", "[[\"a\", 1]]);\nm.set(\"b\", 2);\n",
     "[[\"a\", 1]]", False),
    # --- a closer with no opener in the line is cut; a line the model left open stays open --
    ("java-stray-closer", "java", "class A {\n  void f() {\n    int x = 1 + █\n  }\n}\n", "2;}}\n  void g() {}\n", "2;", False),
    ("py-open-call-continues", "python", "x = compute(█\n", "a,\n    b)\n", "a,", False),
    # --- code that does not parse (the user is mid-typing elsewhere) -------------------------
    ("py-broken-above", "python", "def g(:\n    pass\n\ndef f(x):█\n", "\n    return x + 1\n\ndef h():\n",
     "\n    return x + 1", True),
    ("java-broken-above", "java", "class A {\n  int g( {\n  int f(int x) {█\n}\n",
     "\n    return x + 1;\n  }\n\n  int h() {\n", "\n    return x + 1;\n  }", True),
    ("go-unclosed-function", "go", "package main\n\nfunc F(n int) int {\n\tfor i := 0; i < n; i++ {█\n",
     "\n\t\tif i > 3 {\n\t\t\treturn i\n\t\t}\n\t}\n\treturn 0\n}\n",
     "\n\t\tif i > 3 {\n\t\t\treturn i\n\t\t}\n\t}", True),
    ("cpp-broken-above", "cpp", "int g(int x {\n    return x;\n}\nint f(int x) {█\n",
     "\n    return x + 1;\n}\n\nint h() {\n", "\n    return x + 1;\n}", True),
    ("c-broken-above", "c", "struct P { int x\nint f(int x) {█\n", "\n    return x + 1;\n}\n\nint h(void) {\n",
     "\n    return x + 1;\n}", True),
    ("js-broken-above", "javascript", "const a = [1, 2;\nfunction f(x) {█\n", "\n  return x + 1;\n}\n\nf(1);\n",
     "\n  return x + 1;\n}", True),
    ("ts-broken-above", "typescript", "let a: number = ;\nfunction f(x: number): number {█\n",
     "\n  return x + 1;\n}\n\nf(1);\n", "\n  return x + 1;\n}", True),
    ("rust-broken-above", "rust", "fn g( -> i32 {\n    1\n}\nfn f(x: i32) -> i32 {█\n",
     "\n    x + 1\n}\n\nfn h() {\n", "\n    x + 1\n}", True),
    # --- a ":" or "{" that ends the code but opens no block: the parse tree tells ------------
    ("py-slice-mid-line", "python", "y = d[a:█]\n", "b]\nprint(y)\n", "b", False),
    ("py-dict-value", "python", 'd = {"a":█}\n', ' 1}\nprint(d)\n', " 1", False),
    ("py-lambda-in-call", "python", "ys = map(lambda x:█, xs)\n", " x * 2, xs)\nprint(ys)\n", " x * 2", False),
    ("py-annotation", "python", "def f(x:█)\n", " int) -> int:\n    return x\n", " int", False),
    ("js-template-substitution", "javascript", "const s = `${█}`;\n", "name}`;\nconsole.log(s);\n", "name", False),
    ("js-object-inline", "javascript", "const o = {█};\n", " a: 1 };\nf(o);\n", " a: 1", False),
    ("java-array-initializer", "java", "class A {\n  int[] a = {█};\n}\n", "1, 2, 3};\n}\n", "1, 2, 3", False),
    ("go-composite-literal", "go", "package main\n\nvar x = []int{█}\n", "1, 2, 3}\n\nfunc main() {}\n", "1, 2, 3", False),
    ("rust-struct-expression", "rust", "fn f() -> P {\n    P {█}\n}\n", " x: 1, y: 2 }\n}\n", " x: 1, y: 2", False),
    # ... while a literal left open at the end of the line is written over the next lines.
    ("js-object-multiline", "javascript", "const o = {█\n", "\n  a: 1,\n  b: 2,\n};\n\nf(o);\n",
     "\n  a: 1,\n  b: 2,\n}", True),
    ("py-comment-after-opener", "python", "def f(x):\n    while x:  # until done█\n    return x\n",
     "\n        x -= 1\n    return x\n", "\n        x -= 1", True),
    # --- never only whitespace ------------------------------------------------------------
    ("py-whitespace", "python", "def f():\n    █\n", "   \n\n   ", None, True),
    ("cpp-only-newline", "cpp", "int x = █;\n", "\n", None, False),
    # --- repeating what follows the cursor -------------------------------------------------
    ("py-repeats-suffix", "python", "def f(a):\n    b = a * 2\n    █\n    return b\n",
     "b += 1\n    return b\n", "b += 1", True),
    # --- a generation caught in a loop keeps one copy; three equal lines may be meant ---------
    ("py-loop-line", "python", "def f(xs):\n    █\n", "print(xs)\n" + "    print(xs)\n" * 5, "print(xs)", True),
    ("java-loop-block", "java", "class A {\n    void f() {\n        █\n    }\n}\n",
     "a();\n        b();\n" + "        a();\n        b();\n" * 3, "a();\n        b();", True),
    ("py-three-equal-lines", "python", "def f(xs):\n    █\n",
     "xs.pop()\n    xs.pop()\n    xs.pop()\n    return xs\n\n\nprint(1)\n", "xs.pop()\n    xs.pop()\n    xs.pop()\n    return xs", True),
]


def split(document: str) -> tuple[str, str]:
    index = document.index(CURSOR)
    return document[:index], document[index + 1 :]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_postprocess_cases(case) -> None:
    _, language, document, generation, expected, multiline = case
    prefix, suffix = split(document)
    site = completion_site(get_language(language), prefix, suffix)
    assert site.multiline is multiline
    result = postprocess(site, generation)
    assert (None if result is None else result.text) == expected


@pytest.mark.parametrize("case", [c for c in CASES if c[4] is not None], ids=[c[0] for c in CASES if c[4] is not None])
def test_windows_line_endings(case) -> None:
    """The same cases with CRLF documents and CRLF generations give the same text."""
    _, language, document, generation, expected, _ = case
    prefix, suffix = split(document.replace("\n", "\r\n"))
    site = completion_site(get_language(language), prefix, suffix)
    result = postprocess(site, generation.replace("\n", "\r\n"))
    assert result is not None and result.text == expected


def test_auto_closed_brace_is_replaced_not_doubled() -> None:
    prefix, suffix = split("function f(a) {█}\n")
    site = completion_site(get_language("javascript"), prefix, suffix)
    result = postprocess(site, "\n  return a;\n}\n")
    assert result is not None
    assert result.text == "\n  return a;\n}"
    assert result.replace_suffix_chars == 1  # the editor's "}" is replaced by ours
    assert prefix + result.text + suffix[result.replace_suffix_chars :] == "function f(a) {\n  return a;\n}\n"


def test_closing_brace_already_on_the_next_line_is_not_repeated() -> None:
    prefix, suffix = split("int f(int x) {\n    if (x) {█\n    }\n    return 0;\n}\n")
    site = completion_site(get_language("c"), prefix, suffix)
    result = postprocess(site, "\n        return 1;\n    }\n    return 0;\n}\n")
    assert result is not None and result.text == "\n        return 1;"


def test_truncated_generation_keeps_whole_lines_and_closes_a_cut_line() -> None:
    prefix, suffix = split("def f(x):█\n")
    site = completion_site(get_language("python"), prefix, suffix)
    result = postprocess(site, "\n    y = x + 1\n    z = g(y, ", truncated=True)
    assert result is not None and result.text == "\n    y = x + 1"
    prefix, suffix = split("total = compute(█\n")
    site = completion_site(get_language("python"), prefix, suffix)
    result = postprocess(site, "scale(a, [1, 2", truncated=True)
    assert result is not None and result.text == "scale(a, [1, 2])"


def tokens_of(text: str) -> list[str]:
    """Pieces the size of BPE tokens (words, symbols, runs of whitespace)."""
    return re.findall(r"\s+|\w+|[^\w\s]", text)


@pytest.mark.parametrize("case", [c for c in CASES if c[4] is not None], ids=[c[0] for c in CASES if c[4] is not None])
def test_finished_callback_stops_as_the_engine_feeds_tokens(case) -> None:
    """Fed token by token, the callback ends generation before the raw text runs out,
    and what it keeps post-processes to the same result."""
    _, language, document, generation, expected, _ = case
    prefix, suffix = split(document)
    site = completion_site(get_language(language), prefix, suffix)
    finished = make_finished_callback(site)
    text, used, keep = "", 0, None
    pieces = tokens_of(generation)
    for piece in pieces:
        text += piece
        used += 1
        keep = finished(text)
        if keep is not None:
            break
    if keep is not None:
        assert used < len(pieces)
        text = text[:keep]
    result = postprocess(site, text)
    assert result is not None and result.text == expected


def test_find_stop_waits_while_the_block_is_open() -> None:
    prefix, suffix = split("def f(x):█\n")
    site = completion_site(get_language("python"), prefix, suffix)
    assert find_stop(site, "\n    y = x\n    if y:\n        return 1\n") is None
    assert find_stop(site, "\n    y = x\n    if y:\n        return 1\n    el") is None  # may become else
    assert find_stop(site, "\n    y = x\nprint") == len("\n    y = x")


def test_forced_mode() -> None:
    prefix, suffix = split("def f(x):\n    █\n")
    site = completion_site(get_language("python"), prefix, suffix, multiline=False)
    result = postprocess(site, "y = x + 1\n    return y\n")
    assert not site.multiline and result is not None and result.text == "y = x + 1"


def test_loop_cuts_find_the_first_copy_of_a_repeated_line_or_block() -> None:
    def first(text: str, complete: bool = True) -> int | None:
        return next(iter(loop_cuts(text, complete)), None)

    assert first("x = 1\n" * 4 + "y") == len("x = 1")
    assert first("x = 1\n" * 3 + "y") is None  # three in a row may be meant
    assert first("a\nb\nc\n" * 3) == len("a\nb\nc")
    assert first("\n" * 12 + "a") is None  # blank lines may repeat
    assert first("z\n" + "x = 1\n" * 3 + "x = 1", complete=False) is None  # the last line may still grow
    assert first("z\n" + "x = 1\n" * 4, complete=False) == len("z\nx = 1")


def test_equal_lines_inside_brackets_are_data_not_a_loop() -> None:
    prefix, suffix = split("def f():\n    █\n")
    site = completion_site(get_language("python"), prefix, suffix)
    data = "xs = [\n" + "        0,\n" * 6 + "    ]\n    return xs\n"
    result = postprocess(site, data)
    assert result is not None and result.text == data.rstrip()
    result = postprocess(site, data + "    return xs\n" * 5)  # then a real loop
    assert result is not None and result.text == data.rstrip()
