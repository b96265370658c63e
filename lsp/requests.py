"""Bookkeeping for completion requests: one live request per document, and an answer cache.

An editor sends a completion request after each pause in typing; by the time the model
answers one, the user may have typed on and the editor asked again. Only the newest
request for a document is worth finishing, so starting one cancels the one before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from codeglm.backends.base import CancelToken

V = TypeVar("V")


class LatestRequests:
    """The cancel token of the newest request per document; a newer one trips the older."""

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self.superseded = 0  # how many requests a newer one cancelled (for logs and tests)

    def start(self, document: str) -> CancelToken:
        token = CancelToken()
        with self._lock:
            previous = self._tokens.get(document)
            self._tokens[document] = token
        if previous is not None and not previous.cancelled:
            previous.cancel()
            self.superseded += 1
        return token

    def finish(self, document: str, token: CancelToken) -> None:
        """Forget ``token`` if it is still the newest for ``document``."""
        with self._lock:
            if self._tokens.get(document) is token:
                del self._tokens[document]

    def cancel(self, document: str) -> None:
        """Cancel whatever runs for ``document`` (it was closed or changed its language)."""
        with self._lock:
            token = self._tokens.pop(document, None)
        if token is not None:
            token.cancel()

    def cancel_all(self) -> None:
        with self._lock:
            tokens = list(self._tokens.values())
            self._tokens.clear()
        for token in tokens:
            token.cancel()


class AnswerCache(Generic[V]):
    """A small least-recently-used map from request keys to answers.

    The key must hold everything the answer depends on: document URI and version,
    position, and the settings that shape generation.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key not in self._entries:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            while len(self._entries) > max(0, capacity):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
