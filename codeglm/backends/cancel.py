"""A cancel token made of other cancel tokens.

``AnyCancelToken``: one generation serves one caller but may also be stopped from
inside (a stream whose reader went away).
"""

from __future__ import annotations

from codeglm.backends.base import CancelToken


class AnyCancelToken(CancelToken):
    """Cancelled when it is cancelled itself or when any of ``tokens`` is."""

    def __init__(self, *tokens: CancelToken | None) -> None:
        super().__init__()
        self._tokens = tuple(t for t in tokens if t is not None)

    @property
    def cancelled(self) -> bool:
        return super().cancelled or any(t.cancelled for t in self._tokens)

