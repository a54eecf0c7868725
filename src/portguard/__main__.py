"""`python3 -m portguard`."""

import sys

from portguard.cli import main

if __name__ == "__main__":
    sys.exit(main())
