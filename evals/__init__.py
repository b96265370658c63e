"""The HumanEval-X harness: generation, sandboxed execution, pass@k, reports."""
