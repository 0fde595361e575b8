"""What aptune tells the user while it works: warnings (on stderr) and progress."""
from __future__ import annotations

import sys


def warn(message: str) -> None:
    """One line on stderr, `aptune: warning: ...` (stdout stays for results)."""
    print(f"aptune: warning: {message}", file=sys.stderr, flush=True)
