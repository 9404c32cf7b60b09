"""A fresh thread for every thread worker, so torch's CPU threads are never oversubscribed.

Measured here (2 cores, torch's OpenMP build): one torch operation run from a second thread
that then stays alive — an idle pooled worker after answering a prompt — slowed training from
54 to 31 steps a second, for good. Each thread that runs a parallel operation gets its own
OpenMP team; once libgomp manages more threads than there are cores it stops spinning at
barriers and sleeps instead, and a small model's hundreds of barriers a step each pay a wake-up.
The team is freed when its thread ends (training was back at 50 steps a second), so the app's
workers — Textual runs them on asyncio's default executor — each get a thread of their own
that ends with its work. A thread costs ~0.1 ms to start; a prompt takes milliseconds at least.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadPerTask(ThreadPoolExecutor):
    """An executor whose every task runs on a new thread that ends with it.

    A ThreadPoolExecutor by type only (asyncio's ``set_default_executor`` asks for one); none
    of its pool is used. ``shutdown(wait=True)`` waits for the tasks still running.
    """

    def __init__(self, name: str = "worker") -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._name = name
        self._count = itertools.count(1)
        self._running: set[threading.Thread] = set()
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as error:  # noqa: BLE001 - handed to the future
                        future.set_exception(error)
                    else:
                        future.set_result(result)
            finally:
                with self._guard:
                    self._running.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"{self._name}-{next(self._count)}")
        with self._guard:
            if self._closed:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            self._running.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._guard:
            self._closed = True
            running = list(self._running)
        if wait:
            for thread in running:
                thread.join()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
