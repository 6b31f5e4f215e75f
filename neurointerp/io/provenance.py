"""Provenance: what made an output, recorded in its JSON sidecar.

Each sidecar holds the tool version, the full command line (or the Python call), the
parameters, the input files with their sha256, the seed and anything command-specific
(template/space, checkpoint sha256, target class, baseline, ...). A run can be repeated from it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from neurointerp._version import __version__

_COMMAND_LINE: list[str] | None = None


def set_command_line(argv: list[str] | None) -> None:
    """Record the command line of this process (called by the CLI entry point)."""
    global _COMMAND_LINE
    _COMMAND_LINE = list(argv) if argv is not None else None


def command_line() -> list[str]:
    """The command line that started this run (the CLI's argv, else ``sys.argv``)."""
    return list(_COMMAND_LINE) if _COMMAND_LINE is not None else list(sys.argv)


def sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached on (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_record(paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    return [{"path": str(Path(p).absolute()), "sha256": sha256(p)} for p in paths]


def provenance(
    command: str,
    parameters: Mapping[str, Any],
    inputs: Iterable[str | os.PathLike] = (),
    seed: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the provenance record for a sidecar."""
    record: dict[str, Any] = {
        "GeneratedBy": {"Name": "neurointerp", "Version": __version__, "Command": command},
        "CommandLine": command_line(),
        "Parameters": {k: _plain(v) for k, v in parameters.items()},
        "Inputs": input_record(inputs),
        "Seed": seed,
        "Created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "Environment": {"python": platform.python_version(), "platform": platform.platform(), **_versions()},
    }
    record.update({k: _plain(v) for k, v in extra.items()})
    return record


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    return v


def _versions() -> dict[str, str]:
    """Versions of the scientific packages already imported (never imports new ones)."""
    out = {}
    for name in ("numpy", "scipy", "nibabel", "nilearn", "torch", "ants", "statsmodels"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "__version__"):
            out[name] = str(mod.__version__)
    return out
