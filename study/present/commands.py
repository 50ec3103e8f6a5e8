"""How to call ``study`` again, as the user will type it: the words of every "resume with:" and "next:" line."""

from __future__ import annotations

import os
import sys


def invocation() -> str:
    """How to call ``study`` again so that it works as printed: this interpreter, relative when it is below here."""
    exe = os.path.relpath(sys.executable)
    return f"{exe if not exe.startswith('..') else sys.executable} -m study"
