"""Where the math runs: the device, torch's CPU threads (and threads computing beside training),
mixed precision and TF32.

Shared by training, sampling and the distributed launcher, so none of them imports another
just to pick a device.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from chargpt_tui.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then CPU. An explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}", "use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available here",
                          "use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {requested}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)", "use --device cuda:0 (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available here",
                          "use --device cpu (or auto)")
    return device


_THREADS_GIVEN: list[int] = []  # the --threads value, once given: no automatic choice then


def set_torch_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this process (None keeps torch's default, and
    lets training pick by measuring: :func:`pick_threads`)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError("--threads must be at least 1")
    torch.set_num_threads(threads)
    _THREADS_GIVEN[:] = [threads]


def threads_given() -> bool:
    """True when ``--threads``, or ``OMP_NUM_THREADS`` set before the start, fixed torch's
    threads: someone chose, so the automatic choice stays off."""
    return bool(_THREADS_GIVEN) or bool(os.environ.get("OMP_NUM_THREADS"))


@dataclass(frozen=True)
class ThreadChoice:
    """What :func:`pick_threads` measured: the median seconds of the work per thread count."""

    threads: int
    seconds: dict[int, float]

    def message(self) -> str:
        """One line for the user: which count won, and by how much over the other(s)."""
        own = self.seconds[self.threads]
        others = {n: t for n, t in self.seconds.items() if n != self.threads}
        runner_up = min(others, key=lambda n: others[n])
        factor = others[runner_up] / own if own else 1.0
        plural = "s" if self.threads > 1 else ""
        comparison = f"{factor:.1f}× faster here than {runner_up}"
        if self.threads == 1:
            return f"busy machine: training on 1 thread, {comparison} (--threads overrides)"
        return f"training on {self.threads} thread{plural}, {comparison} (--threads overrides)"


DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice (the cores), before any change


def thread_candidates() -> list[int]:
    """1, half and all of torch's default threads (the cores): what :func:`pick_threads` tries."""
    return sorted({1, max(1, DEFAULT_THREADS // 2), DEFAULT_THREADS})


def pick_threads(work: Callable[[], object], candidates: list[int], rounds: int = 3,
                 time_limit: float = 3.0) -> ThreadChoice:
    """Time ``work`` at each thread count, alternating them (so a change in the machine's load
    hits all alike), keep the fastest by median, and set it.

    Other jobs on the same cores can make more threads far slower than one: OpenMP threads spin
    and wait at every barrier for a core another process holds (25× here, load 3–5 on 2 cores).
    At most ``rounds`` rounds; none after ``time_limit`` seconds or once one count is twice as
    fast as another (one round at least).
    """
    timings: dict[int, list[float]] = {n: [] for n in candidates}
    torch.set_num_threads(min(candidates))
    work()  # warm-up (allocations), timed by no one, on the fewest threads: cheap when busy
    started = time.perf_counter()
    for _ in range(rounds):
        for threads in candidates:
            torch.set_num_threads(threads)
            begun = time.perf_counter()
            work()
            timings[threads].append(time.perf_counter() - begun)
        medians = [statistics.median(t) for t in timings.values()]
        if time.perf_counter() - started > time_limit or max(medians) > 2 * min(medians):
            break  # out of time, or the answer is plain already
    seconds = {n: statistics.median(t) for n, t in timings.items()}
    best = min(candidates, key=lambda n: (seconds[n], -n))
    torch.set_num_threads(best)
    return ThreadChoice(best, seconds)


def machine_load() -> tuple[float, int]:
    """(the 1-minute load average, the CPU cores this process may use); load 0.0 where the
    system does not tell."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return load, cores


def process_started() -> float:
    """When this process began, on :func:`time.monotonic`'s clock, so that a time budget
    counts Python's and torch's start-up too (Linux; elsewhere: now)."""
    now = time.monotonic()
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - max(0.0, age)


def autocast_context(device: torch.device, precision: str = "auto"
                     ) -> contextlib.AbstractContextManager:
    """bf16 autocast (fp32's range, so no loss scaling) on CUDA, and on a CPU when asked for.

    ``precision``: ``auto`` (bf16 on CUDA, fp32 on CPU: many CPUs run bf16 matmuls far slower),
    ``bf16`` or ``fp32``.
    """
    if device.type == "cuda" and precision != "fp32" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_tf32_matmuls() -> None:
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores (Ampere and newer):
    several times the fp32 speed at a 10-bit mantissa, which training does not notice. It
    speeds up what bf16 autocast leaves in fp32, and sampling, whose snapshot runs in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# --------------------------------------------------------------------------------------------
# Threads that compute beside training: each on a thread of its own that ends with its work.
#
# Measured here (2 cores, torch's OpenMP build): one torch operation run from a second thread
# that then stays alive (an idle pooled worker after answering a prompt) slowed training from
# 54 to 31 steps a second, for good. Each thread that runs a parallel operation gets its own
# OpenMP team; once libgomp manages more threads than there are cores it stops spinning at
# barriers and sleeps instead, and a small model's hundreds of barriers a step each pay a
# wake-up. The team is freed when its thread ends (training was back at 50 steps a second).
# So the app's workers (Textual runs them on asyncio's default executor) and the bench's
# measurements beside a training thread each get a thread that ends with their work; one
# costs ~0.1 ms to start, and a prompt takes milliseconds at least.

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


def on_own_thread(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on a new thread that ends with it; its result, or its exception."""
    executor = ThreadPerTask("own-thread")
    try:
        return executor.submit(work, *args).result()
    finally:
        executor.shutdown(wait=True)
