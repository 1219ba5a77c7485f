"""Progress output of a training run, and the Ctrl-C / SIGTERM handling.

A tqdm bar per epoch (loss, accuracy, images/s, ETA) when stdout is a terminal; plain lines
every ``log_every`` steps otherwise (logs, CI, ``nohup``). Only rank 0 prints.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, Dict, Optional, TextIO

__all__ = ["EpochProgress", "StopRequest", "fmt_duration"]


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class EpochProgress:
    """``update(step, images)`` after every step; ``stats()`` is called only when something is shown
    (it reads device tensors, i.e. synchronizes a GPU, so not every step)."""

    def __init__(self, epoch: int, epochs: int, total: int, start: int, stats: Callable[[], Dict[str, float]],
                 enabled: bool = True, log_every: Optional[int] = None, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.total, self.start = total, start
        self.epoch, self.epochs = epoch, epochs
        self.stats = stats
        self.t0 = time.perf_counter()
        self.images = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every or max(1, total // 10)
        self.bar = None
        self._last_post = 0.0
        if enabled and self.tty:
            from tqdm import tqdm

            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                cols = 0
            sized = {"dynamic_ncols": True} if cols >= 40 else {"ncols": 100, "nrows": 24}  # a 0x0 pty
            self.bar = tqdm(total=total, initial=start, desc=f"epoch {epoch}/{epochs}", unit="step", file=self.stream,
                            mininterval=0.5, leave=True, **sized)

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.images / dt if dt > 0 else 0.0

    def update(self, step: int, images: int) -> None:
        """``step``: steps done in this epoch (1-based count); ``images``: in this step, all ranks."""
        self.images += images
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            now = time.perf_counter()
            if now - self._last_post > 1.0 or step == self.total:
                self._last_post = now
                s = self.stats()
                self.bar.set_postfix_str(f"loss {s['loss']:.4f} acc {s['acc']:.2f}% {self.rate():.0f} img/s", refresh=False)
            return
        if step % self.log_every == 0 or step == self.total:
            s = self.stats()
            done = step - self.start
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (self.total - step) if done > 0 else 0.0
            print(f"epoch {self.epoch}/{self.epochs} step {step}/{self.total} loss {s['loss']:.4f} "
                  f"acc {s['acc']:.2f}% {self.rate():.0f} img/s eta {fmt_duration(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next step boundary.

    The trainer polls :attr:`requested` between steps, saves ``last.pth`` consistently and
    exits 130. A second signal (Ctrl-C or SIGTERM) raises ``KeyboardInterrupt`` at once (the last checkpoint on
    disk stays intact: it is only ever replaced atomically).
    """

    def __init__(self, announce: bool = True, stream: Optional[TextIO] = None) -> None:
        self.signum: Optional[int] = None
        self.announce = announce
        self.stream = stream or sys.stderr
        self._old: Dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: abort now, without saving
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            name = signal.Signals(signum).name
            print(f"\n{name}: stopping after this step and saving last.pth (Ctrl-C again to abort without saving)",
                  file=self.stream, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
