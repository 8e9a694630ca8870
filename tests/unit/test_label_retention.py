"""Label retention in the folder store: what is past PARCELFLOW_LABEL_RETENTION_DAYS goes,
the rest stays, and nothing but the store's own names is ever touched."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from workers.labels.retention import sweep
from workers.labels.store import FolderStore, claim_name, document_name, manifest_name


def test_the_sweep_deletes_what_is_past_retention_and_nothing_else(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "labels")
    old = [document_name("J1", "B1", "pdf"), manifest_name("J1"), claim_name("W", "B1")]
    new = [document_name("J2", "B1", "pdf"), manifest_name("J2")]

    async def run() -> int:
        for name in old + new:
            await store.put(name, b"label", "application/pdf")
        forty_days_ago = time.time() - 40 * 86_400
        for name in old:
            os.utime(store.path(name), (forty_days_ago, forty_days_ago))
        stranger = tmp_path / "labels" / "notes.txt"  # not a name the store makes
        stranger.write_text("keep")
        os.utime(stranger, (forty_days_ago, forty_days_ago))
        return await sweep(store, retention_days=30)

    assert asyncio.run(run()) == 3
    assert [n for n in old if store.path(n).exists()] == []
    assert all(store.path(n).exists() for n in new)
    assert (tmp_path / "labels" / "notes.txt").exists()
