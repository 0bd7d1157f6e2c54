"""Micro-batching of concurrent requests: the encoders and the SavedModel cost far less per product in
one batch of 32 than in 32 calls, so requests that arrive together are run together.

One worker task takes the oldest job, waits at most `max_wait_s` for more until `max_batch` items are
gathered, and runs `process` on a single compute thread (the encoders and TensorFlow spread one batch
over every core; two batches at once would only contend). The queue is bounded in items, so a burst past
capacity is refused at once (`OverloadedError`) instead of queueing past every caller's timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
LOGGER = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """The queue holds `max_queue` items already: the caller should retry later (HTTP 503)."""


@dataclass
class _Job(Generic[Item, Result]):
    items: Sequence[Item]
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher(Generic[Item, Result]):
    """Runs `process` over the items of several jobs at once; each job gets its own results back.

    Args:
        process: jobs' item lists → one result list per job, in order (runs on the compute thread).
        max_batch: items per `process` call (a larger job runs alone, whole).
        max_wait_s: how long the first job of a batch waits for company.
        max_queue: items waiting at most; more is `OverloadedError`.
    """

    def __init__(self, process: Callable[[list[Sequence[Item]]], list[list[Result]]], max_batch: int = 32,
                 max_wait_s: float = 0.005, max_queue: int = 1024) -> None:
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued_items = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="compute")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish the jobs already queued, then stop the worker and the compute thread."""
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The results of `items`; cancelling the caller (a timeout) withdraws a job not yet started."""
        if self._queued_items + len(items) > self.max_queue:
            raise OverloadedError(f"{self._queued_items} products are waiting already "
                                  f"(limit {self.max_queue})")
        job: _Job = _Job(items)
        self._queued_items += len(items)
        self._queue.put_nowait(job)
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        size = len(jobs[0].items)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait() if self._queue.qsize() else await asyncio.wait_for(
                    self._queue.get(), max(deadline - asyncio.get_running_loop().time(), 0))
            except TimeoutError:
                break
            jobs.append(job)
            size += len(job.items)
            if size >= self.max_batch:
                break
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            live = [job for job in jobs if not job.future.done()]  # callers that timed out are gone
            try:
                if live:
                    await self._run_jobs(loop, live)
            finally:
                for job in jobs:
                    self._queued_items -= len(job.items)
                    self._queue.task_done()

    async def _run_jobs(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        """One `process` call for all jobs; if it fails, each job alone, so one bad job fails only itself."""
        try:
            results = await loop.run_in_executor(self._executor, self.process, [job.items for job in jobs])
        except Exception as error:
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_jobs(loop, [job])
            elif not jobs[0].future.done():
                LOGGER.exception("a job of %d items failed", len(jobs[0].items))
                jobs[0].future.set_exception(error)
            return
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
