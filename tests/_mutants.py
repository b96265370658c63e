"""Mutant sample bodies shared by the execution tests (tests/test_evals_execute.py, tests/test_evals_ray.py)."""

from __future__ import annotations

# A body per language that compiles but returns the wrong answer for task 0 (has_close_elements).
WRONG_TASK0: dict[str, str] = {
    "python": "    return False\n",
    "cpp": "    return false;\n}\n",
    "java": "        return false;\n    }\n}\n",
    "javascript": "  return false\n}\n",
    "go": "    return false\n}\n",
    "rust": "    return false;\n}\n",
}
