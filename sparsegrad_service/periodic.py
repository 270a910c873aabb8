"""A daemon thread that runs one pass of a background loop every ``interval_s`` until stopped.

The API's reaper and the webhook workers' outbox relay are such loops: a subclass gives ``name``, ``interval_s``
and ``run_once`` (which logs its own failures and never raises, so one bad pass never ends the loop).
"""

from __future__ import annotations

import threading


class PeriodicThread:
    name = "sparsegrad-periodic"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()
