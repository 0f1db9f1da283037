"""The security tests use the system tests' helpers (weblab, daemonlab, runns): importable however the
tests are picked, not only when a run happens to collect tests/system too."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "system"))
