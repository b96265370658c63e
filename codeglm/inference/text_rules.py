"""Stop rules over text that arrives in pieces (from a remote server or a callback).

A sample ends at the first occurrence of a stop string (not returned) or where the
``finished`` callback says. Streaming hands out only text that can no longer change:
never the start of a stop string that the next piece might complete. One sample
type (``Sample``) serves the native engine, ``hf`` (decoded tokens) and ``openai`` (text
pieces), so every backend cuts text identically; it is free of torch, so the ``openai``
backend stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from codeglm.inference.types import Completion, FinishedCallback

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


class Sample:
    """One sample's text with the stop rules applied as it grows.

    Fed decoded tokens (``add_token``: the native engine and the ``hf`` backend, which
    decode the whole token list each time, so a character split across tokens shows as
    U+FFFD until it completes) or pieces of text (``add_text``: the ``openai`` backend).
    ``take_delta`` hands out only text that can no longer change.
    """

    def __init__(
        self,
        stop: Sequence[str],
        finished: FinishedCallback | None,
        decode: Callable[[Sequence[int]], str] | None = None,
    ) -> None:
        self._stop = tuple(s for s in stop if s)
        self._finished = finished
        self._decode = decode
        self.token_ids: list[int] = []
        self._raw = ""  # the text pieces joined
        self._pieces = 0
        self.text = ""  # so far, already cut at a stop string or a finished cut
        self.finish_reason: str | None = None
        self.emitted = 0  # characters handed out by ``take_delta``

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def add_token(self, token_id: int, eos_token_id: int) -> None:
        if self.done:
            return
        if self._decode is None:
            raise TypeError("this sample takes text (add_text); give it a decode function to take tokens")
        self.token_ids.append(token_id)
        if token_id == eos_token_id:
            self.finish(self.text, "stop")
            return
        self._grow(self._decode(self.token_ids))

    def add_text(self, piece: str) -> None:
        if self.done:
            return
        self._pieces += 1
        self._raw += piece
        self._grow(self._raw)

    def _grow(self, text: str) -> None:
        cut = first_stop(text, self._stop)
        if cut is not None:
            self.finish(text[:cut], "stop")
            return
        self.text = text
        complete = text.rstrip(REPLACEMENT_CHAR)
        if self._finished is not None and complete:
            keep = self._finished(complete)
            if keep is not None:
                self.finish(complete[: max(0, keep)], "stop")

    def finish(self, text: str, reason: str) -> None:
        """End the sample with ``text`` (an incomplete trailing character dropped)."""
        if self.done:
            return
        self.text = text.rstrip(REPLACEMENT_CHAR)
        self.finish_reason = reason

    def stable_text(self) -> str:
        """The part of the text that later tokens or pieces cannot change."""
        if self.done:
            return self.text
        text = self.text.rstrip(REPLACEMENT_CHAR)
        return text[: len(text) - held_back_length(text, self._stop)]

    def take_delta(self) -> str:
        """Stable text not handed out before (text once handed out is never taken back)."""
        stable = self.stable_text()
        if len(stable) <= self.emitted:
            return ""
        delta = stable[self.emitted :]
        self.emitted = len(stable)
        return delta

    def completion(self, generated_tokens: int | None = None) -> Completion:
        """The finished sample; ``generated_tokens`` defaults to the tokens (or text pieces) it took."""
        if generated_tokens is None:
            generated_tokens = len(self.token_ids) or self._pieces
        return Completion(text=self.text, finish_reason=self.finish_reason or "length", generated_tokens=generated_tokens)
