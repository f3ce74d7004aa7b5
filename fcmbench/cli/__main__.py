"""``python -m fcmbench.cli``."""

import sys

from fcmbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
