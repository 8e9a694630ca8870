"""Label document names: a digest of (job id, box id), never raw ids (workers/labeler/store.py).

``<root>/<first two hex digits>/<64 hex digits>.<format>``: no id can reach outside the
folder (the store refuses any other name), two parcels never share a file, and every
name has the same short length. Files are 0600 and folders 0700: labels carry
recipients' addresses.
"""

from __future__ import annotations

import hashlib

FORMATS = frozenset({"pdf", "png", "zpl"})
DIR_MODE = 0o700


def document_name(job_id: str, box_id: str, fmt: str) -> str:
    """The file name of one parcel's label, relative to the store's root."""
    framed = f"{len(job_id)}:{job_id}{len(box_id)}:{box_id}"
    digest = hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()
    suffix = fmt.lower() if fmt.lower() in FORMATS else "bin"
    return f"{digest[:2]}/{digest}.{suffix}"
