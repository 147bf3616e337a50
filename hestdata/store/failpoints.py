"""Named crash points for the crash-consistency tests.

``HESTDATA_FAILPOINT=<name>`` (or ``<name>@<key>``, e.g. ``before-sample-rename@s3`` for one sample) kills the
process with SIGKILL when it reaches that point — no cleanup, no atexit, exactly as the OOM killer or a power cut
would. ``HESTDATA_FAILPOINT_ACTION=hang`` makes it hang instead (a library stuck on a corrupt file). Unset, a
failpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import time


def failpoint(name: str, key: str | None = None) -> None:
    """Die (or hang) here if ``$HESTDATA_FAILPOINT`` names this point (and this key, when it gives one)."""
    want = os.environ.get("HESTDATA_FAILPOINT")
    if not want:
        return
    point, _, wanted_key = want.partition("@")
    if point != name or (wanted_key and wanted_key != key):
        return
    if os.environ.get("HESTDATA_FAILPOINT_ACTION") == "hang":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
