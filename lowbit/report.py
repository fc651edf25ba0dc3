"""Small output helpers shared by the CLI, the demo and the benchmarks.

* :func:`atomic_write` writes a file through a temporary file in the same folder and
  ``os.replace``, so an interrupted or failed command never leaves a half-written file.
* :func:`dumps_json` is the one JSON style of every report lowbit writes: sorted keys,
  two-space indent, a final newline, floats rounded so reruns compare byte for byte.
* :func:`format_table` renders a list of rows as a fixed-width text table.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write",
    "dumps_json",
    "format_table",
    "npy_bytes",
    "output_digest",
]


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically; create missing parent folders.

    The data go to a temporary file next to ``path`` which then replaces it, so readers see
    either the old file or the complete new one, and a failure leaves no partial file behind.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    if path.is_dir():
        raise IsADirectoryError(f"output path {str(path)!r} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(value, digits: int):
    """JSON-ready copy of ``value``: numpy scalars to Python, floats rounded."""
    if isinstance(value, dict):
        return {str(k): _clean(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist(), digits)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return round(value, digits)
    return value


def dumps_json(value, *, digits: int = 6) -> str:
    """Deterministic JSON text: sorted keys, indent 2, floats rounded to ``digits``."""
    return json.dumps(_clean(value, digits), sort_keys=True, indent=2) + "\n"


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` file of ``array`` as bytes (for :func:`atomic_write`)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def output_digest(outputs: dict[str, np.ndarray]) -> str:
    """A short hash of output tensors (name, shape and int64 values), for printing."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(outputs):
        arr = np.ascontiguousarray(np.asarray(outputs[name], dtype=np.int64))
        h.update(name.encode() + repr(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()[:12]


def format_table(headers: Sequence[str], rows: Sequence[Sequence], *,
                 align: str | None = None) -> str:
    """A plain-text table; ``align`` has one ``<`` or ``>`` per column (default: text left,
    numbers right)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    if align is None:
        align = "".join(">" if rows and isinstance(rows[0][i], (int, float, np.number))
                        and not isinstance(rows[0][i], bool) else "<"
                        for i in range(len(headers)))

    def line(values):
        parts = zip(values, align, widths, strict=True)
        return "  ".join(f"{v:{a}{w}}" for v, a, w in parts).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)
