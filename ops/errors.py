"""Errors that point at the user's own line.

Every error chainrule raises about a model names the op, the shapes or values
involved, and the file:line (and the code) where the user wrote the call, because
the traceback of a traced program mostly shows chainrule's insides.
"""
from __future__ import annotations

from .source import source_text


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
