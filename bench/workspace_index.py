"""Size and time of the workspace index (``codeglm.completion.workspace_index``) on trees.

For each root: one build timed (wall and CPU of the process), a second ``build()`` with
nothing changed (the refresh: a walk and a ``stat`` per file), then a separate build under
``tracemalloc`` for the memory the index holds. One JSON object per root, one per line.

    .venv/bin/python bench/workspace_index.py . /usr/lib/python3.11
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

from codeglm.completion.workspace_index import WorkspaceIndex


def measure(root: str) -> dict[str, object]:
    index = WorkspaceIndex(root)
    wall, cpu = time.perf_counter(), time.process_time()
    stats = index.build()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    again = time.perf_counter()
    index.refresh()
    again = time.perf_counter() - again
    tracemalloc.start()
    held = WorkspaceIndex(root)
    held.build()
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "root": str(index.root), "files": stats.files, "definitions": stats.symbols, "symbol_chars": stats.symbol_chars,
        "skipped": stats.skipped, "full": stats.full, "build_s": round(wall, 2), "build_cpu_s": round(cpu, 2),
        "refresh_unchanged_s": round(again, 3), "memory_mb": round(memory / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("roots", nargs="+")
    for root in parser.parse_args().roots:
        print(json.dumps(measure(root)), flush=True)


if __name__ == "__main__":
    main()
