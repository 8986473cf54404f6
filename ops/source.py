"""Where the user wrote each call: the file:line that errors, printed graphs, pictures and
kernel headers name. Found by walking the stack to the first frame outside chainrule."""
from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where the user wrote the call that made a node."""

    file: str
    line: int
    code: str = ""

    def __str__(self):
        return f"{os.path.basename(self.file)}:{self.line}"


# -- source locations ----------------------------------------------------------------------

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL_DIRS = tuple(os.path.join(_PACKAGE_ROOT, p) + os.sep for p in ("ops", "compiler", "runtime"))
_USER_FILES = set()   # files inside the packages that hold user-level code (the model zoo)
_FRAMEWORK_DIRS = (os.path.dirname(os.__file__) + os.sep,)  # stdlib: contextlib, functools, ...
_ENTRY_POINTS = set()  # code objects of command-line entry points: the user's code is never above them


def mark_as_user_code(path):
    """Model code shipped inside the packages (the zoo) counts as the user's source."""
    _USER_FILES.add(os.path.abspath(path))


def entry_point(function):
    """Mark `function` (the `chainrule` command's main) as an entry point: whatever called it
    (the console script, `python -m`, a test) is not the user's model code, so source capture
    stops there instead of naming `chainrule:8: sys.exit(main())`. Returns `function`."""
    _ENTRY_POINTS.add(function.__code__)
    return function


def is_internal(filename):
    if filename.startswith("<frozen") or filename.startswith(_FRAMEWORK_DIRS):
        return True
    return filename.startswith(_INTERNAL_DIRS) and filename not in _USER_FILES


def capture_source(depth=1):
    """The innermost stack frame outside chainrule: the user's file and line (None when there
    is none below an entry point)."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_code not in _ENTRY_POINTS:
        filename = frame.f_code.co_filename
        if not is_internal(filename):
            return Source(filename, frame.f_lineno)
        frame = frame.f_back
    return None


def source_text(source):
    """The line of code a Source points at, stripped; '' if unreadable."""
    if source is None:
        return ""
    return linecache.getline(source.file, source.line).strip()
