"""The codeglm language server (pygls)."""
