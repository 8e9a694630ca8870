"""Label documents on disk, named by a digest of (job id, box id), never by raw ids.

``<root>/<first two hex digits>/<64 hex digits>.<format>``: no id can reach outside the
folder (the resolved path is checked anyway), two parcels never share a file, and every
name has the same short length. Files are 0600 and folders 0700: labels carry
recipients' addresses.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FORMATS = frozenset({"pdf", "png", "zpl"})
FILE_MODE = 0o600
DIR_MODE = 0o700


def document_name(job_id: str, box_id: str, fmt: str) -> str:
    """The file name of one parcel's label, relative to the store's root."""
    framed = f"{len(job_id)}:{job_id}{len(box_id)}:{box_id}"
    digest = hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()
    suffix = fmt.lower() if fmt.lower() in FORMATS else "bin"
    return f"{digest[:2]}/{digest}.{suffix}"


def store_document(
    root: Path, job_id: str, box_id: str, document: bytes, fmt: str
) -> tuple[str, str]:
    """Write atomically; returns (path, sha256). Writing the same label again is harmless."""
    base = root.resolve()
    path = (base / document_name(job_id, box_id, fmt)).resolve()
    if not path.is_relative_to(base):  # cannot happen with a digest name: kept as a guard
        raise ValueError(f"label path {path} is outside {base}")
    for folder in (base, path.parent):
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(folder, DIR_MODE)
    tmp = path.with_name(path.name + ".tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "wb") as out:
        out.write(document)
    os.replace(tmp, path)
    return str(path), hashlib.sha256(document).hexdigest()
