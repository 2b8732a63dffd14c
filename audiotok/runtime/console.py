"""What audiotok prints on stderr besides errors: progress, drawn only where someone watches.

A progress bar redraws itself with carriage returns; in a log file or a CI console that is
noise, so bars are drawn only when stderr is a terminal, and elsewhere a plain line is written
per file instead.
"""

from __future__ import annotations

import sys


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (False when it was replaced or closed)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # an object without isatty, or a closed stream
        return False
