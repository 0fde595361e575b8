"""What aptune tells the user while it works: warnings (on stderr) and progress.

`progress(...)` is a tqdm bar when stderr is a terminal; in a log file (stderr not a terminal) it
prints plain periodic lines instead (`desc: 40/100 step (40%), 12s elapsed, ETA 18s, loss=0.3`), at most
one every `interval` seconds and every tenth of the total, so logs hold no carriage-return clutter.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def warn(message: str) -> None:
    """One line on stderr, `aptune: warning: ...` (stdout stays for results)."""
    print(f"aptune: warning: {message}", file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


class PlainProgress:
    """The tqdm subset aptune uses (iterate, update, set_postfix, close, context manager), as lines."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float = 30.0, file=None, **_):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.start_n, self.interval, self.file = initial, initial, interval, file or sys.stderr
        self.t0 = self.last = time.time()
        self.next_fraction, self.postfix, self.closed, self.printed = 0.1, "", False, initial

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        frac = self.n / self.total if self.total else 0.0
        if now - self.last >= self.interval or (self.total and frac >= self.next_fraction):
            self.next_fraction = (int(frac * 10) + 1) / 10
            self.last = now
            self._print()

    def line(self) -> str:
        elapsed = time.time() - self.t0
        done = self.n - self.start_n
        text = f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
        text += (f" ({100 * self.n / self.total:.0f}%)" if self.total else "") + f", {format_duration(elapsed)} elapsed"
        if self.total and done > 0 and self.n < self.total:
            text += f", ETA {format_duration(elapsed / done * (self.total - self.n))}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _print(self) -> None:
        self.printed = self.n
        print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.printed:          # the final state, unless just printed
                self._print()


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", show: bool = True, **kw):
    """A progress bar (tqdm on a terminal, plain periodic lines otherwise); `show=False` (or tqdm's
    `disable=True`) hides it."""
    if kw.pop("disable", False) or not show:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, **kw)
    kw.pop("leave", None)
    kw.pop("dynamic_ncols", None)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, **kw)
