"""Several files of a root replaced as one step (catalog and manifest), with a journal replayed after a crash.

Both files are written into ``.publish-<uuid>/``, a journal naming them is written atomically, then they are
renamed into place and the journal removed. A journal found later is replayed (roll forward); a staging folder
without a journal is removed (roll back). Callers hold the root lock.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

JOURNAL = ".publish.journal"
STAGE_PREFIX = ".publish-"


def replay_journal(root: Path) -> bool:
    """Finish (or clean up) an interrupted publication; call under the root lock. True if a journal was found."""
    journal = root / JOURNAL
    found = journal.exists()
    if found:
        try:
            doc = json.loads(journal.read_text())
            stage = root / str(doc["stage"])
            for name in doc["files"]:
                if (stage / name).exists():
                    os.replace(stage / name, root / name)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a torn journal was never committed: the renames did not start; roll back below
        journal.unlink(missing_ok=True)
    for p in root.glob(f"{STAGE_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)
    return found


def commit_files(root: Path, files: dict[str, bytes]) -> None:
    """Replace several files of ``root`` as one step (see the module docstring); call under the root lock."""
    import uuid

    stage = root / f"{STAGE_PREFIX}{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    for name, data in files.items():
        with open(stage / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    from hestdata.store.atomic import atomic_write_bytes

    atomic_write_bytes(root / JOURNAL, json.dumps({"stage": stage.name, "files": list(files)}).encode())
    from hestdata.store.failpoints import failpoint

    for i, name in enumerate(files):
        if i:
            failpoint("publish-between-renames")
        os.replace(stage / name, root / name)
    (root / JOURNAL).unlink()
    shutil.rmtree(stage, ignore_errors=True)
