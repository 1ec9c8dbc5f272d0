"""Suite-wide settings: Qt offscreen, and no test may leave a process behind."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
