"""``python -m benchmarks.gpu``: see ``benchmarks.gpu``.

Exit status 1 if a section failed (its error is in ``gpu.json`` and ``gpu.md``); a section
stopped by its share of the budget is not a failure.
"""

import sys

from . import main

if __name__ == "__main__":
    record = main()
    failed = record is not None and any(s.get("status") == "failed" for s in record["sections"].values())
    sys.exit(1 if failed else 0)
