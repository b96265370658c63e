"""``python -m lsp``: start the codeglm language server (stdio by default)."""

import sys

from lsp.cli import main

if __name__ == "__main__":
    sys.exit(main())
