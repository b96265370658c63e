"""Translating whole files between languages: units, the pipeline, progress."""
