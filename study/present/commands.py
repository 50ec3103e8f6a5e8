"""How to call ``study`` again, as the user will type it: the words of every "resume with:" and "next:" line."""

from __future__ import annotations

import os
import sys


# set by Ray in the environment of a job's entrypoint (``ray job submit ... -- python -m study ...``)
IN_A_RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"
JOB_SUBMIT = "ray job submit --address http://HEAD:8265 --working-dir . -- python -m study"


def invocation() -> str:
    """How to call ``study`` again so that it works as printed: this interpreter, relative when it is below
    here; inside a Ray job, a job submitted the way docs/cluster.md submits one (the head's own interpreter
    path means nothing to the machine that submits)."""
    if os.environ.get(IN_A_RAY_JOB):
        return JOB_SUBMIT
    exe = os.path.relpath(sys.executable)
    return f"{exe if not exe.startswith('..') else sys.executable} -m study"
