"""Progress lines of the importer on stderr."""

from __future__ import annotations

import sys


def progress(message: str) -> None:
    """A progress line on stderr (jobs run with absl logging at WARNING)."""
    print(f"import_logs: {message}", file=sys.stderr, flush=True)
