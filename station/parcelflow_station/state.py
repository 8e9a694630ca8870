"""What the agent keeps on the station's disk, so that a restart prints nothing twice and
loses nothing: where the label stream stands, the labels still to print, and the labels
printed lately. One JSON file, written whole and renamed into place (0600)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

KEEP_PRINTED = 10_000  # (job, box) pairs remembered: far more than a stream can repeat


@dataclass
class Pending:
    job_id: str
    box_id: str
    tracking_id: str
    document: str  # the path of its document on the receiver
    received_at_ms: int


@dataclass
class State:
    path: Path
    last_event_id: str = ""
    queue: list[Pending] = field(default_factory=list)
    printed: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        return cls(
            path,
            last_event_id=str(raw.get("last_event_id", "")),
            queue=[Pending(**p) for p in raw.get("queue", [])],
            printed=[(j, b) for j, b in raw.get("printed", [])],
        )

    def knows(self, job_id: str, box_id: str) -> bool:
        key = (job_id, box_id)
        return key in self.printed or any((p.job_id, p.box_id) == key for p in self.queue)

    def done(self, pending: Pending) -> None:
        self.queue.remove(pending)
        self.printed.append((pending.job_id, pending.box_id))
        del self.printed[:-KEEP_PRINTED]

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {
            "last_event_id": self.last_event_id,
            "queue": [asdict(p) for p in self.queue],
            "printed": self.printed,
        }
        descriptor, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state.")  # 0600
        with os.fdopen(descriptor, "w") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
