"""Which webhook notification ids were stored recently: TikTok redelivers, attackers replay.

Bounded by age and by count. Two concurrent requests with one id share one write: the
second waits for the first and writes only if the first failed. Best effort per process
(several receivers, or a restart, may store a duplicate); downstream dedupes by event id.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable


class Dedupe:
    def __init__(
        self, window_s: float, max_ids: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self.clock = clock
        self._stored: OrderedDict[str, float] = OrderedDict()  # id -> stored at, oldest first
        self._writing: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._stored)

    def _forget_old(self) -> None:
        oldest_kept = self.clock() - self.window_s
        while self._stored and (
            len(self._stored) > self.max_ids or next(iter(self._stored.values())) < oldest_kept
        ):
            self._stored.popitem(last=False)

    async def once(self, key: str, write: Callable[[], Awaitable[None]]) -> bool:
        """Run ``write`` unless ``key`` was stored within the window.

        Returns True when this call wrote, False for a duplicate. An exception from
        ``write`` propagates and the key is not remembered.
        """
        while True:
            self._forget_old()
            if key in self._stored:
                return False
            running = self._writing.get(key)
            if running is None:
                break
            await asyncio.shield(running)  # then look again: stored, or try ourselves
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._writing[key] = done
        stored = False
        try:
            await write()
            stored = True
        finally:
            del self._writing[key]
            done.set_result(stored)
            if stored and self.max_ids > 0 and self.window_s > 0:
                self._stored[key] = self.clock()
                self._forget_old()
        return True
