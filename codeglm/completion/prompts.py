"""Prompts for completion: CodeGeeX layout, fitted into the model's token budget.

Layout (non-FIM)::

    # language: Python            <- the CodeGeeX language tag
    # path: src/app/main.py       <- the file's path
    # Compare this snippet from src/app/util.py:
    # def helper(a, b): ...       <- ranked context snippets, as comments
    <prefix>                      <- the document up to the cursor

With fill-in-the-middle the same text is the prompt and the text after the cursor
goes into ``GenerationRequest.suffix``; the backend lays out its own FIM tokens.

Everything is counted with the backend's tokenizer and must fit in
``context_length - max_new_tokens``: the least relevant snippets are dropped first,
then the prefix is trimmed from the top at a line boundary. A long prefix does not
push the snippets out: the most relevant snippets keep up to ``SNIPPET_SHARE`` of the
budget, the prefix is trimmed to the rest (the lines nearest the cursor stay). Token counts of pieces do
not add up exactly under BPE, so every decision is checked on the assembled text.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from codeglm.completion.context import CompletionContext, Snippet

TokenCounter = Callable[[str], int]

# With FIM, the suffix may take at most this share of the budget.
FIM_SUFFIX_SHARE = 0.25
# When the prefix alone does not fit, context snippets may take up to this share of the
# budget (the prefix is trimmed from the top to the rest).
SNIPPET_SHARE = 0.5
# A prefix longer than this many characters per token of the budget is taken not to fit
# whole (code averages 3 to 4): it is never counted whole, which on a long file costs more
# than everything else a prompt takes.
MAX_CHARS_PER_TOKEN = 8


class PromptBudgetError(ValueError):
    """The model's context cannot hold a prompt and the requested completion."""


@dataclass(frozen=True)
class Prompt:
    """A prompt that fits.

    ``prefix_start``: index into ``context.prefix`` where the kept prefix begins.
    ``tokens``: tokens of ``text`` plus, with FIM, of ``suffix``; never above ``budget``.
    """

    text: str
    suffix: str | None
    tokens: int
    budget: int
    snippets: tuple[Snippet, ...]
    prefix_start: int


def snippet_comment(context: CompletionContext, snippet: Snippet) -> str:
    """A snippet rendered as comments in the document's language."""
    if snippet.kind == "imports":
        title = "Imports of this file:"
    elif snippet.kind == "region":
        title = f"Recently edited in {snippet.path}:"
    elif snippet.kind == "scope":
        title = "Inside:"
    elif snippet.path is not None and snippet.path != context.path:
        title = f"Compare this snippet from {snippet.path}:"
    else:
        title = "Defined in this file:"
    return context.language.comment(f"{title}\n{snippet.text}")


def _normalized(text: str) -> str:
    return "\n".join(line.strip() for line in text.split("\n") if line.strip())


def _already_in(snippet: Snippet, prefix: str) -> bool:
    return _normalized(snippet.text) in _normalized_cached(prefix)


@lru_cache(maxsize=4)
def _normalized_cached(text: str) -> str:
    return _normalized(text)


@dataclass(frozen=True)
class _Layout:
    tag: bool
    path: bool
    snippets: tuple[Snippet, ...]
    prefix_start: int
    suffix_end: int


class _Assembler:
    def __init__(self, context: CompletionContext, count: TokenCounter, fim: bool) -> None:
        self.context = context
        self.count = count
        self.fim = fim
        self.rendered = {s: snippet_comment(context, s) for s in context.snippets()}
        self.costs: dict[_Layout, int] = {}

    def text(self, layout: _Layout) -> str:
        language = self.context.language
        parts: list[str] = []
        if layout.tag:
            parts.append(language.codegeex_tag + "\n")
        if layout.path and self.context.path:
            parts.append(language.comment(f"path: {self.context.path}"))
        parts.extend(self.rendered[s] for s in layout.snippets)
        parts.append(self.context.prefix[layout.prefix_start :])
        return "".join(parts)

    def suffix(self, layout: _Layout) -> str | None:
        return self.context.suffix[: layout.suffix_end] if self.fim else None

    def cost(self, layout: _Layout) -> int:
        known = self.costs.get(layout)
        if known is None:
            suffix = self.suffix(layout)
            known = self.costs[layout] = self.count(self.text(layout)) + (self.count(suffix) if suffix else 0)
        return known


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = text.find("\n")
    while index >= 0:
        if index + 1 < len(text):
            starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def _smallest_fitting(candidates: Sequence[int], fits: Callable[[int], bool]) -> int | None:
    """The first candidate (ascending, fits() assumed monotone) that fits, or None."""
    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo] if lo < len(candidates) else None


def _longest_prefix_start(prefix: str, cost: Callable[[int], int], budget: int) -> int | None:
    """The first line start of ``prefix`` from which the prompt costs at most ``budget``
    (``cost`` of a start: monotone, a later start keeps less), or None when not even the
    cursor's line fits.

    Galloping from the cursor (each try keeps about twice the text of the last that fitted),
    then interpolation between the last fit and the first miss, alternating with bisection:
    the texts counted stay near the size of the answer, and few, however long the file.
    """
    starts = _line_starts(prefix)
    good = len(starts) - 1
    good_cost = cost(starts[good])
    if good_cost > budget:
        return None
    # The first leap aims where the budget would run out at 3 characters a token (code
    # averages 3 to 4): usually one more doubling or a short narrowing from the answer.
    leap = max(256, (budget - good_cost) * 3)
    while good > 0:
        kept = len(prefix) - starts[good]
        index = min(bisect.bisect_left(starts, len(prefix) - max(2 * kept, leap)), good - 1)
        index_cost = cost(starts[index])
        if index_cost > budget:
            return starts[_narrow(prefix, starts, cost, budget, (index, index_cost), (good, good_cost))]
        good, good_cost = index, index_cost
    return starts[0]


def _narrow(
    prefix: str, starts: list[int], cost: Callable[[int], int], budget: int,
    bad: tuple[int, int], good: tuple[int, int],
) -> int:
    """The smallest index in (bad, good] whose start fits, given (index, cost) of each end."""
    (low, low_cost), (high, high_cost) = bad, good
    interpolate = True
    while high - low > 1:
        middle = (low + high) // 2
        if interpolate and low_cost > high_cost:
            # Characters kept grow about linearly with tokens: aim where the budget runs out.
            kept_high, kept_low = len(prefix) - starts[high], len(prefix) - starts[low]
            aim = kept_high + (budget - high_cost) * (kept_low - kept_high) / (low_cost - high_cost)
            middle = min(max(bisect.bisect_left(starts, len(prefix) - int(aim)), low + 1), high - 1)
        interpolate = not interpolate
        middle_cost = cost(starts[middle])
        if middle_cost <= budget:
            high, high_cost = middle, middle_cost
        else:
            low, low_cost = middle, middle_cost
    return high


def build_prompt(
    context: CompletionContext,
    count_tokens: TokenCounter,
    context_length: int,
    max_new_tokens: int,
    fim: bool = False,
) -> Prompt:
    """The prompt for ``context`` within ``context_length - max_new_tokens`` tokens."""
    budget = context_length - max_new_tokens
    if budget <= 0:
        raise PromptBudgetError(
            f"the model's context ({context_length} tokens) leaves no room for a prompt with "
            f"{max_new_tokens} new tokens; lower max_new_tokens"
        )
    asm = _Assembler(context, count_tokens, fim)
    prefix, suffix = context.prefix, context.suffix
    candidates = tuple(s for s in context.snippets() if not _already_in(s, prefix))
    base = _Layout(True, True, (), 0, len(suffix) if fim else 0)

    if fim:
        # Keep the suffix's first lines (closest to the cursor) within its share.
        share = max(1, int(budget * FIM_SUFFIX_SHARE))
        ends = [*(i - 1 for i in _line_starts(suffix)[1:]), len(suffix)]
        ends = [e for e in ends if e > 0] or [0]
        best = 0
        for end in ends:
            if count_tokens(suffix[:end]) > share:
                break
            best = end
        base = _Layout(True, True, (), 0, best)

    def with_snippets(k: int) -> _Layout:
        return _Layout(base.tag, base.path, candidates[:k], 0, base.suffix_end)

    # 1. As many snippets as fit with the whole prefix (least relevant dropped first), unless
    # more fit within their share of the budget (1b): then the prefix is trimmed for those.
    share = _share_count(asm, candidates, budget)
    k: int | None = None
    if len(prefix) <= budget * MAX_CHARS_PER_TOKEN:
        if asm.cost(with_snippets(len(candidates))) <= budget:
            k = len(candidates)
        elif share == 0 or asm.cost(with_snippets(share)) <= budget:
            k = _smallest_fitting(
                list(range(len(candidates) - 1, share - 1, -1)), lambda n: asm.cost(with_snippets(n)) <= budget
            )
    shared = None if k is not None and k >= share else _shared_layout(asm, base, candidates[:share], budget)
    if shared is not None:
        layout = shared
    elif k is not None:
        layout = with_snippets(k)
    else:
        # 2. No snippets; trim the prefix from the top at a line boundary.
        start = _longest_prefix_start(
            prefix, lambda s: asm.cost(_Layout(base.tag, base.path, (), s, base.suffix_end)), budget
        )
        if start is None:
            # 3. Even the cursor's line is too long: cut it by characters, then drop the header.
            layout = _character_fallback(asm, base, budget, _line_starts(prefix)[-1])
        else:
            layout = _Layout(base.tag, base.path, (), start, base.suffix_end)

    layout = _guarantee(asm, layout, budget)
    kept = prefix[layout.prefix_start :]
    snippets = tuple(s for s in layout.snippets if not _already_in(s, kept))
    if snippets != layout.snippets:
        smaller = _Layout(layout.tag, layout.path, snippets, layout.prefix_start, layout.suffix_end)
        if asm.cost(smaller) <= budget:
            layout = smaller
    return Prompt(
        text=asm.text(layout),
        suffix=asm.suffix(layout),
        tokens=asm.cost(layout),
        budget=budget,
        snippets=layout.snippets,
        prefix_start=layout.prefix_start,
    )


def _share_count(asm: _Assembler, candidates: Sequence[Snippet], budget: int) -> int:
    """How many of the most relevant snippets fit within ``SNIPPET_SHARE`` of the budget."""
    share = int(budget * SNIPPET_SHARE)
    used, k = 0, 0
    for snippet in candidates:
        used += asm.count(asm.rendered[snippet])
        if used > share:
            break
        k += 1
    return k


def _shared_layout(asm: _Assembler, base: _Layout, snippets: Sequence[Snippet], budget: int) -> _Layout | None:
    """``snippets`` and as much of the prefix (whole lines from the cursor up) as fits beside
    them; None when there are none or not even the cursor's line fits."""
    if not snippets:
        return None
    kept = tuple(snippets)
    start = _longest_prefix_start(
        asm.context.prefix, lambda s: asm.cost(_Layout(base.tag, base.path, kept, s, base.suffix_end)), budget
    )
    return None if start is None else _Layout(base.tag, base.path, kept, start, base.suffix_end)


def _character_fallback(asm: _Assembler, base: _Layout, budget: int, last_line: int) -> _Layout:
    prefix_len = len(asm.context.prefix)
    for tag, path, suffix_end in (
        (base.tag, base.path, base.suffix_end),
        (base.tag, False, base.suffix_end),
        (False, False, base.suffix_end),
        (False, False, 0),
    ):
        start = _smallest_fitting(
            list(range(last_line, prefix_len + 1)),
            lambda s, t=tag, p=path, e=suffix_end: asm.cost(_Layout(t, p, (), s, e)) <= budget,
        )
        if start is not None:
            return _Layout(tag, path, (), start, suffix_end)
    return _Layout(False, False, (), prefix_len, 0)


def _guarantee(asm: _Assembler, layout: _Layout, budget: int) -> _Layout:
    """Binary searches assume monotone counts; BPE is only nearly so. Step until it fits."""
    prefix_len = len(asm.context.prefix)
    while asm.cost(layout) > budget:
        if layout.snippets:
            layout = _Layout(layout.tag, layout.path, layout.snippets[:-1], layout.prefix_start, layout.suffix_end)
        elif layout.prefix_start < prefix_len:
            next_line = asm.context.prefix.find("\n", layout.prefix_start) + 1
            start = next_line if 0 < next_line < prefix_len else layout.prefix_start + 1
            layout = _Layout(layout.tag, layout.path, (), start, layout.suffix_end)
        elif layout.suffix_end:
            layout = _Layout(layout.tag, layout.path, (), prefix_len, 0)
        elif layout.path:
            layout = _Layout(layout.tag, False, (), prefix_len, 0)
        elif layout.tag:
            layout = _Layout(False, False, (), prefix_len, 0)
        else:
            break  # the empty prompt: zero tokens for any sane tokenizer
    return layout
