"""Where a run executes, as far as the machine is concerned: the device check, torch's thread count for a block, and
the allocator setting that worker processes start with."""

from __future__ import annotations

import contextlib
import os

import torch

from .options import OptionsError

DIGEST_ROLE = "not computing"  # codehash: see its module docstring

ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
"""glibc's malloc settings for long runs, read by glibc when a process starts: keep freed blocks of up to 32 MB for
reuse instead of handing them back to the OS. Training and bound fitting allocate and free the same activation-sized
buffers thousands of times; by default glibc returns them and every reuse page-faults fresh zeroed pages (mmac's fit:
32 M page faults in one quick run). The Makefile exports them; :func:`paper_repro.runner.run_many` starts its workers
with them. Harmless where there is no glibc."""


def check_device(device: str) -> None:
    """Raise :class:`OptionsError` before any work when ``device`` is not available on this machine."""
    kind, _, index = device.partition(":")
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(kind)
    if count is not None and count() <= int(index or 0):
        raise OptionsError(
            f"device={device!r}, but torch sees {count()} {kind} device(s) on this machine; "
            "use RunOptions(device='cpu') (the smoke and quick profiles run on CPU)"
        )


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op thread count set to ``n`` (0: unchanged) for the block, restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def allocator_env():
    """:data:`ALLOCATOR_ENV` in ``os.environ`` for the block (what processes started inside it inherit), unless the
    user set those variables already."""
    added = {k: v for k, v in ALLOCATOR_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def worker_init(num_threads: int, poll_seconds: float = 1.0) -> None:
    """Initialiser of a run-worker process: ``num_threads`` torch threads, and a watchdog that ends the worker
    when the process that started it is gone (killed, or stopped with Ctrl-C before it could shut its pool down),
    instead of leaving it computing, unseen, beside the next job on the same cores."""
    import threading
    import time

    torch.set_num_threads(num_threads)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)  # orphaned: the parent cannot collect a result any more

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
