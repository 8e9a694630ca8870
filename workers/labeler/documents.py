"""Store label documents on disk, named by job and box, with their sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def store_document(
    root: Path, job_id: str, box_id: str, document: bytes, fmt: str
) -> tuple[str, str]:
    """Write atomically; returns (path, sha256). Writing the same label again is harmless."""
    digest = hashlib.sha256(document).hexdigest()
    folder = root / job_id
    folder.mkdir(parents=True, exist_ok=True)
    safe_box = "".join(c if c.isalnum() or c in "-_." else "_" for c in box_id)
    path = folder / f"{safe_box}.{fmt or 'bin'}"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(document)
    os.replace(tmp, path)
    return str(path), digest
