"""JSON-RPC messages pygls cannot read, and error answers without tracebacks.

pygls structures every incoming message into lsprotocol types inside ``json.loads``
(``object_hook``); when that fails (``"character": -1``, a string for a number, missing
params) it logs "Unable to deserialize message" and drops the message, so an editor waits
forever for the answer. The server's protocol (``lsp.protocol``) asks these functions
instead: a request that cannot be read gets ``-32602`` naming the method and the bad
fields, a notification is logged (it cannot be answered), a response the server cannot
read fails the request that waits for it. And where pygls would put a Python traceback in
``error.data``, the client gets one line; the traceback goes to the server log.

Everything here is plain data in and out, so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cattrs.errors import BaseValidationError, ClassValidationError, IterableValidationError
from lsprotocol.types import ResponseError

INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
PARSE_ERROR = -32700
JSONRPC_VERSION = "2.0"
NOT_AN_OBJECT = "must be an object"

MsgId = int | str


@dataclass(frozen=True)
class Unreadable:
    """A message whose params (or result) did not fit the method's LSP types.

    ``msg_id`` is the request's or response's id (None for a notification); ``method`` is
    None for a response. ``problems`` name each bad field, as ``params.position.character:
    ...``.
    """

    msg_id: MsgId | None
    method: str | None
    problems: tuple[str, ...]

    @property
    def is_request(self) -> bool:
        return self.msg_id is not None and self.method is not None

    def message(self) -> str:
        """The one-line error the client sees (and the server logs)."""
        what = (
            f"invalid params for {self.method}"
            if self.method is not None
            else f"unreadable response {self.msg_id!r}"
        )
        return f"{what}: {'; '.join(self.problems) or 'they do not match the method'}"

    def response_error(self) -> ResponseError:
        return ResponseError(code=INVALID_PARAMS, message=self.message())


def request_id(data: Mapping[str, Any]) -> MsgId | None:
    """The message's id if it is one JSON-RPC allows (a string or a whole number), else None.

    ``true`` is a JSON boolean, not an id, although Python counts it as an int.
    """
    value = data.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def with_default_params(data: dict[str, Any], typed: Callable[[str], object | None]) -> dict[str, Any]:
    """``data`` with ``"params": null`` added to a request or notification that has no
    params and no LSP type for its method (``codeglm/stats``).

    JSON-RPC lets params be omitted; pygls's fallback message types require the field, so
    such a request would be dropped. Typed LSP methods keep their own rules (a missing
    ``params`` for ``textDocument/inlineCompletion`` is an error, answered as one).
    """
    method = data.get("method")
    if isinstance(method, str) and "params" not in data and typed(method) is None:
        return {**data, "params": None}
    return data


def unreadable(data: Mapping[str, Any], error: BaseException | None) -> Unreadable:
    """What is wrong with ``data``, a message that failed to structure with ``error``."""
    method = data.get("method")
    problems = tuple(dict.fromkeys(f"{path}: {problem}" for path, problem in structure_problems(error)))
    return Unreadable(request_id(data), method if isinstance(method, str) else None, problems)


def structure_problems(error: BaseException | None, path: str = "") -> Iterator[tuple[str, str]]:
    """Each leaf of a cattrs structuring error as (field path in the client's spelling, problem).

    cattrs nests one error per class and list; the leaves are what the client sent wrong:
    ``("params.position.character", "should be in range [0:2147483647], but was -1")``.
    """
    if error is None:
        return
    if isinstance(error, ClassValidationError | IterableValidationError):
        with_notes, without_notes = error.group_exceptions()
        for sub, note in with_notes:
            name = getattr(note, "name", None)
            step = f"{path}.{_camel(name)}" if name is not None else f"{path}[{getattr(note, 'index', '?')}]"
            yield from structure_problems(sub, step)
        for sub in without_notes:
            yield from structure_problems(sub, path)
        return
    if isinstance(error, BaseValidationError):
        for sub in error.exceptions:
            yield from structure_problems(sub, path)
        return
    field, problem = _leaf_problem(error)
    if field:
        path = f"{path}.{_camel(field)}"
    elif problem == NOT_AN_OBJECT:
        path = path.rpartition(".")[0]  # reading a member failed: its owner is no object
    yield (path.lstrip(".") or "message"), problem


def _camel(name: str) -> str:
    """lsprotocol's attribute name in the JSON spelling (``text_document`` -> ``textDocument``)."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _leaf_problem(error: BaseException) -> tuple[str | None, str]:
    """(the field inside the path the error names, if any; what is wrong)."""
    if isinstance(error, KeyError):
        return None, "missing"
    if isinstance(error, TypeError) and "indices must be integers" in str(error):
        return None, NOT_AN_OBJECT
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # lsprotocol's range checks run on the whole object and name the field themselves
    # ("Position.character should be in range ..."): move the field into the path.
    head, _, tail = text.partition(" should ")
    owner, dot, field = head.partition(".")
    if tail and dot and owner.isidentifier() and field.isidentifier():
        return field, f"should {tail}"
    return None, text


def invalid_message(message: object) -> tuple[MsgId | None, str]:
    """Why a message is not a JSON-RPC 2.0 request, and its id if it has a usable one.

    ``message`` is what pygls made of it: a plain dict or list when it had no ``jsonrpc``
    member, else a message object. With an id the server answers ``-32600``; without one
    it can only log.
    """
    if isinstance(message, Mapping):
        fields: Mapping[str, Any] = message
    elif hasattr(message, "jsonrpc"):
        fields = {key: getattr(message, key) for key in ("jsonrpc", "id", "method") if hasattr(message, key)}
    else:
        return None, f"a JSON-RPC message must be an object, got {type(message).__name__}"
    msg_id = request_id(fields)
    if fields.get("jsonrpc") != JSONRPC_VERSION:
        return msg_id, f'not a JSON-RPC 2.0 message ("jsonrpc" is {fields.get("jsonrpc")!r}, expected "2.0")'
    if not isinstance(fields.get("method"), str):
        return msg_id, 'a request needs a "method" string'
    return msg_id, "not a request, notification or response"


def shutting_down_error(method: str) -> ResponseError:
    """The answer to a request after ``shutdown`` (LSP: InvalidRequest)."""
    return ResponseError(
        code=INVALID_REQUEST, message=f"{method}: the server is shutting down (only exit is accepted)"
    )


def parse_error_message(error: BaseException) -> str:
    """The log line for a message body that is not JSON (no id can be read, nobody to answer)."""
    return (
        f"{PARSE_ERROR} parse error: a message is not JSON and is ignored ({type(error).__name__}: {error})"
    )


def without_traceback(error: ResponseError) -> tuple[ResponseError, str | None]:
    """``error`` as the client should see it, and the traceback it carried (for the log).

    pygls's internal errors carry ``{"traceback": [...]}`` in ``data``: that is the
    server's business, not the editor's. The message stays one line.
    """
    data = error.data
    if not (isinstance(data, Mapping) and "traceback" in data):
        return error, None
    trace = data["traceback"]
    text = "".join(trace) if isinstance(trace, list | tuple) else str(trace)
    rest = {key: value for key, value in data.items() if key != "traceback"} or None
    message = (error.message or "internal error").strip().splitlines()
    return ResponseError(
        code=error.code, message=message[-1] if message else "internal error", data=rest
    ), text
