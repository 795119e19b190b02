"""Makes the chaos helpers (`linearizability`, `history`, the harness modules) importable from the
tests beside them, and tests/integration's ProcCluster (`cluster`) that the harness builds on."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).parent
for _path in (_HERE.parent / "integration", _HERE):
    sys.path.insert(0, str(_path))
