"""Blocking model work off the event loop, bounded: a small thread pool (one thread by default: a CPU serves one
generation at a time best) and at most ``max_pending`` requests held, running or waiting; one more is refused
at once with a 503 (:func:`~inference.errors.busy`) instead of queueing without end.

:meth:`ThreadRunner.stream` runs a generator in the pool and hands its items to the event loop as they come; when
the consumer stops (the client went away) the generator is told through its ``cancelled`` callable and ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import busy

T = TypeVar("T")
_END = object()


class ThreadRunner:
    def __init__(self, workers: int = 1, max_pending: int = 16) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _submit(self, fn: Callable[[], Any]) -> Future[Any]:
        with self._lock:
            if self._pending >= self.max_pending:
                raise busy(self.max_pending)
            self._pending += 1
        future = self._executor.submit(fn)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the pool."""
        return await asyncio.wrap_future(self._submit(fn))  # type: ignore[no-any-return]

    async def stream(self, produce: Callable[[Callable[[], bool]], Iterator[T]]) -> AsyncIterator[T]:
        """The items of ``produce(cancelled)``, run in the pool, as they are made."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any, error: BaseException | None = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (item, error))
            except RuntimeError:  # the loop is closed: nobody listens any more
                stop.set()

        def run() -> None:
            try:
                for item in produce(stop.is_set):
                    if stop.is_set():
                        break
                    put(item)
            except BaseException as exc:
                put(None, exc)
                return
            put(_END)

        self._submit(run)
        try:
            while True:
                item, error = await queue.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                yield item
        finally:
            stop.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
