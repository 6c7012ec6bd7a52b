"""``python -m benchmarks.gpu``: see ``benchmarks.gpu``."""

import sys

from . import main

if __name__ == "__main__":
    main()
    sys.exit(0)
