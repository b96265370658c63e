"""Running a model fast: the engine, decode path, KV and prefix caches, sampling, int8, CPU kernels."""
