"""Requests that arrive together → one call of a batch function, in one worker thread.

``Batcher(run, max_batch, window_s)``: ``await batcher.submit(key, item)`` queues the item and returns its result.
One loop takes the oldest waiting item, waits ``window_s`` (a few ms) for more to arrive unless ``max_batch``
already wait, and calls ``run(key, items)`` in its own worker thread with up to ``max_batch`` items that share the
oldest item's ``key`` (items with another key wait for a later call, in arrival order). While that call runs,
new requests queue up and form the next batch — under load that is where most of the batching comes from.

The model and the guard judge each have one batcher, so each runs in one thread: the event loop keeps answering
(health checks, errors, other requests) while they compute. A request whose client went away before its batch
started is dropped from the batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Batcher:
    def __init__(self, run: Callable[[Hashable, Sequence[Any]], Sequence[Any]], *, max_batch: int = 32,
                 window_s: float = 0.005, name: str = "batch"):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"safealign-{name}")
        self.calls = 0  # calls of ``run`` so far
        self.items = 0  # items they took
        self._waiting: deque[tuple[Hashable, Any, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, key: Hashable, item: Any) -> Any:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((key, item, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting.clear()  # the worker thread stays: a new event loop (a restarted server) may use it again

    def _take(self) -> tuple[Hashable, list[tuple[Hashable, Any, asyncio.Future]]]:
        """Up to ``max_batch`` waiting items with the oldest one's key; the others keep their order."""
        key = self._waiting[0][0]
        batch, rest = [], deque()
        while self._waiting:
            entry = self._waiting.popleft()
            if entry[0] == key and len(batch) < self.max_batch:
                batch.append(entry)
            else:
                rest.append(entry)
        self._waiting = rest
        return key, [e for e in batch if not e[2].done()]  # a cancelled request (client gone) is not computed

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._waiting) < self.max_batch and self.window_s > 0:
                await asyncio.sleep(self.window_s)  # let requests that arrive together join
            key, batch = self._take()
            if not batch:
                continue
            self.calls += 1
            self.items += len(batch)
            try:
                results = await loop.run_in_executor(self.executor, self.run, key, [item for _, item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # noqa: BLE001 - handed to every request of the batch
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, _, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
