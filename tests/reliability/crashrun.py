"""Run ``neurointerp ARGS`` and SIGKILL itself at a chosen point (crash tests; not a test module).

``NEUROINTERP_CRASH_AT`` picks the point:

``atomic:<glob>:<n>``
    the n-th atomic write whose final name matches ``<glob>``: the temporary file is complete,
    the rename onto the final name has not happened (a kill at the worst moment of a write).
``sidecar:<glob>:<n>``
    the n-th sidecar written for an output matching ``<glob>``, before it is written: the output
    is on disk, the sidecar that marks it finished is not.

Usage: ``python crashrun.py preprocess in.csv out ...`` (same arguments as ``neurointerp``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import sys
from pathlib import Path


def _install(spec: str) -> None:
    import neurointerp.io as io_pkg
    from neurointerp.io import atomic, derivatives, nifti

    kind, pattern, nth = spec.split(":")
    nth = int(nth)
    seen = {"n": 0}

    def hit(path) -> bool:
        if fnmatch.fnmatch(Path(path).name, pattern):
            seen["n"] += 1
            return seen["n"] == nth
        return False

    def die() -> None:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "atomic":
        original = atomic.atomic_path

        @contextlib.contextmanager
        def atomic_path(path, *args, **kwargs):
            with original(path, *args, **kwargs) as tmp:
                yield tmp
                if hit(path):
                    die()

        for module in (atomic, nifti, io_pkg):
            module.atomic_path = atomic_path
    elif kind == "sidecar":
        original_sidecar = derivatives.write_sidecar

        def write_sidecar(image_path, record, force=False, **kwargs):
            if hit(image_path):
                die()
            return original_sidecar(image_path, record, force=force, **kwargs)

        for module in (derivatives, io_pkg):
            module.write_sidecar = write_sidecar
    else:
        raise SystemExit(f"unknown crash point kind {kind!r}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _install(os.environ["NEUROINTERP_CRASH_AT"])
    from neurointerp.cli.app import main

    sys.exit(main(sys.argv[1:]))
