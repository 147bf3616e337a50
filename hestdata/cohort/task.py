"""The child side of an isolated registration task: read a job (JSON on stdin), convert, print the outcome.

Run as ``python -m hestdata.cohort.task`` by :func:`hestdata.cohort.register.convert_task`; a crash, kill or hang
here costs that one sample, never the registration or its Dask worker.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    job = json.loads(sys.stdin.read())
    spec = job["spec"]
    try:
        from hestdata.cohort.register import read_sample
        from hestdata.convert import convert
        from hestdata.sources.registry import get_source
        from hestdata.store.failpoints import failpoint

        failpoint("registration-task", spec["id"])
        sample = read_sample(spec, job["base"])
        opts = get_source(spec["technology"]).parse_options(spec["options"])
        convert(sample, job["root"], options=opts, overwrite=True, metadata=dict(spec["metadata"]),
                publish_root=False, input_sha256=job["digest"])
        out = {"status": "converted"}
    except Exception as exc:  # reported for this sample; the parent decides about the others
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out = {"status": "failed", "reason": f"{type(exc).__name__}: {msg}"}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
