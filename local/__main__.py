"""`python -m local`: run the local stack in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from local.runtime import main

if __name__ == "__main__":
    sys.exit(main())
