"""``python -m codeglm.cli``: the ``codeglm`` command without the console script."""

import sys

from codeglm.cli import main

sys.exit(main())
