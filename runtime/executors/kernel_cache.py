"""The kernel cache: generated kernels as files, named by the hash of their text.

Triton reads a kernel's source from a real file (`inspect.getsourcelines`), so each kernel
is written to `<cache>/<sha256 of its text>.py` and imported with importlib. Files are
written atomically (a temporary file, then a rename), so two processes compiling the same
program both succeed; a file whose content does not hash to its name (corrupted, or not
ours) is rewritten before anything imports it.

The cache lives under $CHAINRULE_CACHE_DIR, else $XDG_CACHE_HOME/chainrule/kernels, else
~/.cache/chainrule/kernels; when that folder cannot be written, under
<tempdir>/chainrule-<uid>/kernels (with a warning).

The text is the same for a GPU and for Triton's interpreter on the CPU: the file a learner
reads, the one `Program.dump` writes and the one a GPU compiles. Loading it for the
interpreter changes two things, both here and nowhere else:

1. The interpreter's integer overflow checks are turned off (`for_interpreter`). It checks
   every int32 `+`, `-` and `*` (widening both operands and comparing the result: several
   more NumPy passes over each block of lane indices); a GPU kernel compiled without debug
   checks nothing, so the interpreter then computes exactly what the GPU computes.
2. The launch parameters come from the file's `INTERPRETER_CONFIGS` (few programs with
   large blocks: the interpreter runs programs one after another) instead of `CONFIGS`, the
   GPU's (`launch_configs`). Block sizes are launch parameters, so the kernel text is the same.
"""
from __future__ import annotations

import getpass
import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import replace

from compiler.files import write_atomic
from ops.errors import BackendError

_modules = {}


def cache_dir():
    """The kernel cache folder, created if needed. One that cannot be written (a read-only
    $CHAINRULE_CACHE_DIR, a home without a writable ~/.cache) is replaced by a per-user
    folder under the system's temporary directory, with a one-line warning saying why and how
    to fix it: compiling still works, only the cache is not kept where it was asked for."""
    root = os.environ.get("CHAINRULE_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "chainrule", "kernels")
    return usable_folder(root, fallback_dir())


def fallback_dir():
    """The per-user cache used when the configured one cannot be written."""
    user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    return os.path.join(tempfile.gettempdir(), f"chainrule-{user}", "kernels")


_warned = set()


def usable_folder(folder, fallback):
    """`folder`, created, if this process can write files into it; else `fallback` (created),
    after warning once per folder on stderr."""
    problem = _unwritable(folder)
    if problem is None:
        return folder
    also = _unwritable(fallback)
    if also is not None:
        raise BackendError(f"cannot write the kernel cache {folder} ({problem}) nor {fallback} ({also}): set "
                           f"CHAINRULE_CACHE_DIR to a writable folder", op="kernel cache")
    if folder not in _warned:
        _warned.add(folder)
        print(f"chainrule: warning: cannot write the kernel cache {folder} ({problem}); using {fallback} "
              f"instead: set CHAINRULE_CACHE_DIR to a writable folder", file=sys.stderr)
    return fallback


def _unwritable(folder):
    """Why files cannot be created in `folder` (made if missing), or None when they can."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return e.strerror or type(e).__name__
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def path_for(text):
    return os.path.join(cache_dir(), f"k_{digest(text)[:32]}.py")


def store(text):
    """The cache file holding `text`, written (or repaired) if needed."""
    path = path_for(text)
    if not _holds(path, text):
        write_atomic(path, text)
    return path


def _holds(path, text):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == digest(text)
    except OSError:
        return False


def launch_configs(module, interpret):
    """The launch parameters a kernel file offers where it runs, the code generator's pick
    first: its INTERPRETER_CONFIGS under the interpreter, its CONFIGS on a GPU ([{}]: only
    launch()'s own defaults)."""
    configs = getattr(module, "INTERPRETER_CONFIGS" if interpret else "CONFIGS", None)
    return list(configs) if configs else [{}]


def for_interpreter():
    """Prepare Triton's interpreter, once per process, to run our kernels as a GPU would (see
    the module docstring); it touches nothing a compiled kernel uses."""
    from triton.runtime import interpreter  # optional heavy dependency: the interpreter only
    from triton.runtime.jit import JITFunction  # optional heavy dependency: the interpreter only

    builder = interpreter.interpreter_builder
    builder.options = replace(builder.options, sanitize_overflow=False)
    if getattr(JITFunction.__call__, "chainrule", False):
        return

    def call_interpreted(self, *args, **kwargs):
        """Triton's own @jit helpers (tl.sum, tl.argmax, tl.rand, ...) were decorated when
        triton was imported: unless TRITON_INTERPRET=1 was set by then they are compiled-mode
        functions, whose __call__ only raises, while an interpreted kernel calls them as plain
        Python. So run the helper under the interpreter, with triton.language patched for it
        only while it runs: Triton's own InterpretedFunction.__call__ leaves its patch in place,
        and a GPU kernel compiled later in the process would then fail. (Compiled kernels never
        call __call__: the compiler inlines the helpers.)"""
        scope = interpreter._patch_lang(self.fn)
        try:
            return interpreter.InterpretedFunction(self.fn).rewrite()(*args, **kwargs)
        finally:
            scope.restore()

    call_interpreted.chainrule = True
    JITFunction.__call__ = call_interpreted


def load(text, interpret):
    """Import the kernel module for `text`; `interpret` chooses Triton's CPU interpreter."""
    key = (digest(text), interpret)
    module = _modules.get(key)
    if module is not None:
        return module
    path = store(text)
    import triton  # optional heavy dependency: loading kernels needs it, compiling them does not

    name = f"chainrule_kernel_{key[0][:16]}_{'interp' if interpret else 'jit'}"
    if interpret:
        for_interpreter()
    saved = triton.knobs.runtime.interpret
    environment = os.environ.get("TRITON_INTERPRET")     # the knob's setter writes it there
    triton.knobs.runtime.interpret = interpret        # read when @triton.jit decorates
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        triton.knobs.runtime.interpret = saved
        if environment is None:           # as it was: a child process (run.py) must not inherit "0"
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = environment
    if not _holds(path, text):       # replaced under us while importing: never trust it
        raise RuntimeError(f"kernel cache file {path} changed while it was imported")
    _modules[key] = module
    return module
