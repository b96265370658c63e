"""``codeglm serve-api``: an OpenAI-compatible completions API in front of any backend."""

from __future__ import annotations

import argparse
import sys

from codeglm.backends import BackendError, ModelFilesError, load_backend
from codeglm.backends.options import add_backend_argument, add_device_arguments
from codeglm.server.api import ServerSettings, create_app, served_model_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--model-name", default=None, help="model id reported by /v1/models (default: from the backend)")
    add_device_arguments(parser)
    parser.add_argument("--max-n", type=int, default=16, help="most samples per prompt (default 16)")
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="how long to gather concurrent requests into one batch (default 10 ms)")
    parser.add_argument("--max-batch-requests", type=int, default=8, help="most requests in one batch (default 8)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")


def run(args: argparse.Namespace) -> int:
    import uvicorn  # only the command needs the HTTP server itself

    try:
        backend = load_backend(args.backend, progress=True, device=args.device, dtype=args.dtype)
    except BackendError as error:
        print(f"codeglm serve-api: {error}", file=sys.stderr)
        return 2 if isinstance(error, ModelFilesError) else 1  # a --backend that cannot load is a bad argument
    settings = ServerSettings(
        model_name=args.model_name or served_model_name(backend),
        max_n=args.max_n,
        max_choices=max(args.max_n, 64),
        batch_window=args.batch_window_ms / 1000.0,
        max_batch_requests=args.max_batch_requests,
    )
    app = create_app(backend, settings)
    print(
        f"codeglm serve-api: serving {backend.name} as {settings.model_name!r} at http://{args.host}:{args.port}/v1",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


