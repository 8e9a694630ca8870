"""Every offset reaches the join: Faust's skipped offsets removed at their source.

faust-streaming 0.15.3 (pinned in pyproject.toml: this leans on its internals) can skip
records at the end of table recovery, inside one consumer generation (traced in
``Recovery.on_recovery_completed``): it resumes the stream partitions before its seek to
the committed offsets finishes, so records from aiokafka's position reach the agent's
buffer; the seek moves the read offset back and the resume throws those buffered events
away; the message in flight moves the read offset ahead again and records a gap; and
every refetched record below that read offset is dropped as already read ("DROPPED
MESSAGE ROFF"). Those records never reach the agent.

Two changes close it, for the planner's consumer only:

- a read-offset map that never reports an offset: Faust then drops nothing as already
  read and records no gap to commit past; a refetched record is delivered again, and
  the join, idempotent per event id, absorbs it;
- partitions without a committed offset are rewound to their beginning when Faust seeks
  to the committed offsets (aiokafka's ``seek_to_committed`` leaves a partition whose
  committed offset is 0 or none where it is, possibly past records never joined).

The fix belongs upstream: seek before resuming the stream partitions in
``Recovery.on_recovery_completed``, or keep the stream buffers on that resume
(faust-streaming #216, #221, PR #223).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class NeverRead(MutableMapping[Any, int | None]):
    """Faust's read offsets, forgotten as they are written: every offset is 'unread'."""

    def __getitem__(self, tp: Any) -> int | None:
        return None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        pass

    def __delitem__(self, tp: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


def unset(committed: Mapping[Any, int | None]) -> list[Any]:
    """Partitions whose committed offset aiokafka's seek leaves alone (0 or none)."""
    return [tp for tp, offset in committed.items() if not offset]


def wait_at_most(consumer: Any, fetch_max_wait_ms: int) -> None:
    """Faust builds its worker consumer with fetch_max_wait_ms=1500, fixed: give the
    aiokafka consumer it creates our setting before it starts (a fetch on the embedded
    broker takes that long whenever it waits)."""
    thread = consumer._thread
    create = thread._create_worker_consumer

    def create_with_our_wait(*args: Any, **kwargs: Any) -> Any:
        made = create(*args, **kwargs)
        made._fetch_max_wait_ms = fetch_max_wait_ms
        return made

    thread._create_worker_consumer = create_with_our_wait


def deliver_every_offset(consumer: Any) -> None:
    """Apply both changes to a Faust aiokafka consumer (``app.consumer``)."""
    consumer._read_offset = NeverRead()
    thread = consumer._thread
    seek_to_committed = thread.seek_to_committed

    async def seek_to_committed_or_beginning() -> Mapping[Any, int | None]:
        committed: Mapping[Any, int | None] = await seek_to_committed()
        rewind = unset(committed)
        if rewind:
            aiokafka_consumer = thread._ensure_consumer()
            await thread.call_thread(aiokafka_consumer.seek_to_beginning, *rewind)
            log.info("rewound_uncommitted", partitions=sorted(str(tp) for tp in rewind))
        return committed

    thread.seek_to_committed = seek_to_committed_or_beginning
