"""Named crash points for the crash-consistency tests: ``HESTDATA_FAILPOINT=<name>`` kills the process (SIGKILL)
when it reaches that point, exactly as the OOM killer or a power cut would. Unset, a failpoint costs one
environment lookup."""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup, no atexit) if ``$HESTDATA_FAILPOINT`` names this point."""
    if os.environ.get("HESTDATA_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
