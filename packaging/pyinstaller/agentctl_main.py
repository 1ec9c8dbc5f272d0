"""Entry point of the bundled agentctl (shipped beside the app in the same folder)."""

import sys

from agentd.cli import main

if __name__ == "__main__":
    sys.exit(main())
