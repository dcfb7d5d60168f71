"""Writing files so that a crash never leaves a half-written one behind under the real name.

Each writer goes to ``<name>.tmp`` beside the target and renames it over the target, which is
atomic on POSIX file systems and on Windows' NTFS: a reader sees the old file or the new one,
never a mix. JSON is written strictly (``NaN`` and infinities become ``null``) so that any JSON
parser, not only Python's, reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_atomically(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) and prove that a file can be written there; raises OSError."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".write-test"
    probe.write_bytes(b"")
    probe.unlink()
    return folder


def to_json(data: Any) -> str:
    """Strict JSON text (NaN -> null; numpy scalars and arrays, paths as plain values)."""
    return json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json_atomically(path: str | Path, data: Any) -> Path:
    """:func:`write_atomically` of :func:`to_json`."""
    return write_atomically(path, to_json(data).encode())


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return repr(o)
