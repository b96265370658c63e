"""The server's JSON-RPC protocol: pygls's, made to answer every request.

pygls drops a request whose params do not fit the method's types, a request after
``shutdown`` and a message that is not JSON-RPC 2.0, and puts a Python traceback in
``error.data`` of internal errors. The overrides here hand those cases to ``lsp.wire``
(plain functions) and send what it says; everything else is pygls's own path.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from lsprotocol import types
from lsprotocol.types import ResponseError
from pygls.exceptions import JsonRpcException
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from codeglm.backends.base import CancelToken
from lsp import commands, wire

log = logging.getLogger(__name__)


class CodeglmProtocol(LanguageServerProtocol):
    """pygls's protocol, plus: an answer for every request, listeners for
    ``$/cancelRequest``, and codeglm's experimental capabilities in ``initialize``.

    pygls cancels an async request handler's task on ``$/cancelRequest``, but a command
    runs one level down (inside ``workspace/executeCommand``'s own handler), where the
    cancellation does not reach; a listener keyed by request id lets it stop anyway.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancel_listeners: dict[Any, CancelToken] = {}

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        # pygls builds the capabilities from the registered features after the server's
        # initialize handler has run and has no hook for ``experimental``: add it here.
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = commands.experimental_capabilities()
        return result

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        token = self.cancel_listeners.pop(msg_id, None)
        if token is not None:
            token.cancel()
        super()._handle_cancel_notification(msg_id)

    # --- messages pygls would drop ------------------------------------------------------

    def structure_message(self, data: dict[str, Any]) -> Any:
        """pygls's structuring, except that a message that does not fit its method's types
        becomes a ``wire.Unreadable`` for ``handle_message`` instead of an exception that
        the reader loop logs and forgets."""
        if "jsonrpc" not in data:
            return data  # a nested object (json.loads calls this for every dict)
        data = wire.with_default_params(data, self.get_message_type)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            return wire.unreadable(data, exc.__cause__)

    def handle_message(self, message: Any) -> None:
        if isinstance(message, wire.Unreadable):
            self._handle_unreadable(message)
            return
        if getattr(message, "jsonrpc", None) != wire.JSONRPC_VERSION:
            msg_id, problem = wire.invalid_message(message)
            log.warning("%s %s", wire.INVALID_REQUEST, problem)
            if msg_id is not None:
                self._send_response(msg_id, error=ResponseError(code=wire.INVALID_REQUEST, message=problem))
            return
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT:
            msg_id = getattr(message, "id", None)
            if msg_id is not None:
                self._send_response(msg_id, error=wire.shutting_down_error(method))
                return
        super().handle_message(message)

    def _handle_unreadable(self, message: wire.Unreadable) -> None:
        log.warning("%s", message.message())
        if message.is_request:
            assert message.msg_id is not None
            self._send_response(message.msg_id, error=message.response_error())
        elif message.method is None and message.msg_id is not None:
            # A response to one of our requests that we cannot read: fail that request
            # rather than leave it waiting.
            self._handle_response(message.msg_id, None, message.response_error())

    def _send_response(
        self, msg_id: Any, result: Any | None = None, error: ResponseError | None = None
    ) -> None:
        """Every answer passes here: an error keeps its one-line message and loses the
        traceback pygls puts in ``data``, which goes to the server log instead."""
        if error is not None:
            error, trace = wire.without_traceback(error)
            if trace is not None:
                log.error("request %r failed: %s\n%s", msg_id, error.message, trace.rstrip())
        super()._send_response(msg_id, result, error)
