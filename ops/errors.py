"""Errors that point at the user's own line.

Every error chainrule raises about a model names the op, the shapes or values
involved, and the file:line (and the code) where the user wrote the call, because
the traceback of a traced program mostly shows chainrule's insides.
"""
from __future__ import annotations

import difflib

from .source import capture_source, source_text


class ChainruleError(Exception):
    """Base class: `op` is the user-facing op, `source` the user's Source (or None)."""

    def __init__(self, message, op=None, source=None):
        self.op = op
        self.source = source
        self.bare_message = message
        super().__init__(self._format())

    def _format(self):
        head = f"{self.op}: {self.bare_message}" if self.op else self.bare_message
        if self.source is None:
            return head
        code = source_text(self.source)
        return f"{head}\n  at {self.source}" + (f":  {code}" if code else "")


class ShapeError(ChainruleError, ValueError):
    """Shapes that do not fit the op (caught at trace time, before anything runs)."""


class DTypeError(ChainruleError, TypeError):
    """A dtype the op cannot take, such as a float where integer labels are expected."""


class ArgumentError(ChainruleError, TypeError):
    """Wrong number of arguments, an unknown keyword, a bad argument value."""


class GradientError(ChainruleError, ValueError):
    """A gradient that cannot be taken: non-scalar output, integer input, ..."""


class BackendError(ChainruleError, RuntimeError):
    """A backend that is unknown or not available here."""


class TracedValueError(ArgumentError):
    """A traced tensor used as if it had a value: Python control flow (`if`, `float()`,
    `len()`, iteration) or a NumPy function on it. Tracing records ops; values come later."""


class UnknownNameError(ChainruleError, AttributeError):
    """A name the DSL does not have (`O.softmaxx`, `L.Dens`): the message names the closest ones."""


def unknown_name(owner, name, names, listed_in, close=None):
    """The error for `owner.name` that does not exist, suggesting the closest of `names`
    (a module's `__getattr__` raises it; an AttributeError, so `hasattr` and
    `from ops import submodule` still work)."""
    if close is None:       # case-blind: L.Gelu finds GELU
        by_lower = {n.lower(): n for n in sorted(set(names))}
        close = [by_lower[n] for n in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownNameError(f"{owner} has no {name!r}{hint} (all of them are listed in {listed_in})",
                            source=capture_source())
