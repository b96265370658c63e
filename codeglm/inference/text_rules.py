"""Stop rules over text that arrives in pieces (from a remote server or a callback).

A sample ends at the first occurrence of a stop string (not returned) or where the
``finished`` callback says. Streaming hands out only text that can no longer change:
never the start of a stop string that the next piece might complete. The native
engine applies the same rules to tokens (``codeglm.inference.engine.SampleText``); these are the
text-level twins, kept free of torch so the ``openai`` backend stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

from codeglm.backends.base import Completion, FinishedCallback

REPLACEMENT_CHAR = "\ufffd"


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest occurrence of any (non-empty) stop string starts, or None."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None


def held_back_length(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the start of a stop string."""
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


class StableDeltas:
    """Turns successive full texts into deltas that never have to be taken back."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(s for s in stop if s)
        self.emitted = ""

    def update(self, text: str, final: bool = False) -> str:
        """The new stable part of ``text`` (all of it when ``final``)."""
        if not final:
            text = text.rstrip(REPLACEMENT_CHAR)
            text = text[: len(text) - held_back_length(text, self._stop)]
        if len(text) <= len(self.emitted) or not text.startswith(self.emitted):
            return ""
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta


class TextSample:
    """One sample whose text arrives in pieces, with stop rules applied as it grows."""

    def __init__(self, stop: Sequence[str], finished: FinishedCallback | None) -> None:
        self._stop = tuple(s for s in stop if s)
        self._finished = finished
        self._deltas = StableDeltas(self._stop)
        self._raw = ""
        self.text = ""
        self.finish_reason: str | None = None
        self.pieces = 0  # one per chunk received: a stand-in for generated tokens

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def add(self, piece: str) -> None:
        if self.done:
            return
        self.pieces += 1
        self._raw += piece
        cut = first_stop(self._raw, self._stop)
        if cut is not None:
            self.finish(self._raw[:cut], "stop")
            return
        self.text = self._raw
        if self._finished is not None and self.text:
            keep = self._finished(self.text)
            if keep is not None:
                self.finish(self.text[: max(0, keep)], "stop")

    def finish(self, text: str, reason: str) -> None:
        if self.done:
            return
        self.text = text
        self.finish_reason = reason

    def take_delta(self) -> str:
        return self._deltas.update(self.text, final=self.done)

    def completion(self, generated_tokens: int | None = None) -> Completion:
        tokens = self.pieces if generated_tokens is None else generated_tokens
        return Completion(text=self.text, finish_reason=self.finish_reason or "length", generated_tokens=tokens)
