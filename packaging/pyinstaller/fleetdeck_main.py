"""Entry point of the bundled Fleetdeck app (PyInstaller runs this as __main__)."""

import sys

from gui.app import main

if __name__ == "__main__":
    sys.exit(main())
