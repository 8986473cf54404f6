"""A progress bar for training epochs, with no dependency (no tqdm):

    epoch 3/10 [██████████░░░░░░░░░░] 12/20  loss 0.4123  acc 0.912

Why two modes: in a terminal the bar redraws its one line with '\\r' after every step, so a
learner watches the loss move. Written to a file, a CI log or pytest's captured output,
those redraws would become one line per step (thousands of lines of noise, as '\\r' is not
interpreted there), so when `out` is not a TTY nothing is printed per step and `close()`
prints one final line per bar. The mode is decided once, from `out.isatty()`.

    bar = Progress(steps, f"epoch {epoch}/{epochs}")
    for x, y in batches(...):
        ...
        bar.update(loss=float(loss))
    bar.close()                       # or: with Progress(...) as bar:
"""
from __future__ import annotations

import numbers
import sys

from ops.errors import ArgumentError


def _format(value):
    """A metric as printed: 4 significant digits for floats (0.4123, 0.912, 1.2e-05)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.4g}"


def _is_tty(out):
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):     # no isatty, or a closed stream
        return False


def _can_encode(out, text):
    encoding = getattr(out, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


class Progress:
    """A bar for `total` steps labelled `desc`, written to `out` (default: sys.stdout at the
    time the bar is made). `width` is the number of characters of the bar itself."""

    def __init__(self, total, desc="", out=None, width=30):
        if isinstance(total, bool) or not isinstance(total, numbers.Integral) or total < 0:
            raise ArgumentError(f"total must be a number of steps >= 0, got {total!r}", op="Progress")
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ArgumentError(f"width must be an integer >= 1, got {width!r}", op="Progress")
        self.total, self.desc, self.width = int(total), str(desc), int(width)
        self.out = sys.stdout if out is None else out
        self.tty = _is_tty(self.out)
        self.count = 0
        self.metrics = {}
        self.closed = False
        self._full, self._empty = ("█", "░") if _can_encode(self.out, "█░") else ("#", "-")
        self._drawn = 0                       # length of the line on screen (TTY mode)

    def update(self, n=1, **metrics):
        """Advance by n steps; `metrics` (e.g. loss=0.41, acc=0.91) replace the shown values."""
        if self.closed:
            raise ArgumentError(f"update() on a closed progress bar ({self.desc or 'no description'!s})",
                                op="Progress")
        self.count += n
        self.metrics.update(metrics)
        if self.tty:
            self._draw()

    def line(self):
        """The bar as one line of text, without '\\r' or newline."""
        fraction = 1.0 if self.total == 0 else min(max(self.count / self.total, 0.0), 1.0)
        filled = int(fraction * self.width)
        bar = self._full * filled + self._empty * (self.width - filled)
        text = f"{self.desc} [{bar}] {self.count}/{self.total}" if self.desc else f"[{bar}] {self.count}/{self.total}"
        for name, value in self.metrics.items():
            text += f"  {name} {_format(value)}"
        return text

    def _draw(self):
        text = self.line()
        pad = max(self._drawn - len(text), 0)            # blank out the rest of a longer old line
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self._drawn = len(text)

    def close(self):
        """Finish the bar: on a TTY, end its line; otherwise print the final line. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.tty:
            if self._drawn == 0:
                self._draw()
            self.out.write("\n")
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
