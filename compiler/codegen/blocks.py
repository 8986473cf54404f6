"""Block sizes: where a kernel runs changes how large its blocks should be, never its text.

A kernel's block sizes are `tl.constexpr` parameters of its launch, so one text serves every
device. What suits a device differs a lot:

- On a GPU a program instance is cheap and blocks of ~1K elements keep the machine busy;
  matmul and conv tiles come from a small table the autotuner chooses from
  (runtime/executors/autotune.py).
- Under Triton's interpreter every block operation is a NumPy call over the whole block
  plus ~0.1 ms of Python, whatever the block's size, and the programs of a launch run one
  after the other: few programs with large blocks. Past ~2^16 elements the NumPy work
  outweighs the Python (a fused pointwise kernel over 2^19 elements: 48 ms in blocks of
  2^14, 25 ms in blocks of 2^16, 32 ms in blocks of 2^17).

So each generator asks this module for two lists of launch parameters, one per kind of
device, and `launch_lines` writes them into the kernel file: `CONFIGS` (the GPU's, its
first the defaults of `launch()`) and `INTERPRETER_CONFIGS` (the interpreter's, its first
what the executor launches with there). The kernel text above them is the same for both.
"""
from __future__ import annotations

from ..fusion import ROW_LIMIT


def next_pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


GPU_BLOCK = 1024                 # elements in a pointwise or window kernel's block on a GPU
INTERPRETER_BLOCK = 1 << 16      # ... and under the interpreter
INTERPRETER_ROW_STEP = 16384     # under the interpreter, a looped row's step along the row


def pointwise(n):
    """(GPU configs, interpreter configs) of a kernel whose programs take BLOCK of `n` elements."""
    return [{"BLOCK": min(next_pow2(n), GPU_BLOCK)}], [{"BLOCK": min(next_pow2(n), INTERPRETER_BLOCK)}]


def rows(rows, cols, looped):
    """(GPU configs, interpreter configs) of a kernel whose programs take BLOCK_ROWS rows of
    `cols` columns: the whole of each row in one block, or (looped) BLOCK_COLS at a time."""
    def config(cols_block, elements, most_rows):
        return {"BLOCK_ROWS": max(1, min(next_pow2(rows), elements // cols_block, most_rows)),
                "BLOCK_COLS": cols_block}

    whole = next_pow2(cols)
    gpu = config(min(whole, ROW_LIMIT), ROW_LIMIT, 64)
    interpreter = config(min(whole, INTERPRETER_ROW_STEP) if looped else whole, INTERPRETER_BLOCK, INTERPRETER_BLOCK)
    return [gpu], [interpreter]


def fits_one_block(cols):
    """Whether a row of `cols` elements is held in one block (else it is walked in steps), the
    same rule for row kernels (compiler/fusion.py) and reduction kernels."""
    return cols <= ROW_LIMIT


def tile(size, largest):
    """A tile edge for the GEMM-like kernels: the size rounded up to a power of two, at most
    `largest`, at least 16 (tl.dot needs it)."""
    return max(16, min(next_pow2(size), largest))


def distinct(configs):
    """Configs whose block sizes differ (the first of each: the others would time the same)."""
    kept = []
    for config in configs:
        if all(any(config[k] != other[k] for k in config if k.startswith("BLOCK")) for other in kept):
            kept.append(config)
    return kept


def launch_lines(kernel_name, args, gpu, interpreter, grid):
    """The kernel file's launch parameters and its launch(): `gpu` and `interpreter` are lists
    of configs (dicts of launch parameters), each led by the code generator's own pick; `grid`
    is the launch grid as source, in terms of the parameters. A list says nothing the
    defaults do not (one GPU config; an interpreter config equal to the defaults) is left out."""
    keys = list(gpu[0])
    lines = []
    if len(gpu) > 1:
        lines += ["# launch parameters on a GPU: runtime/executors/autotune.py times each on the device and keeps",
                  "# the fastest; launch() on its own takes the first, the code generator's pick", "CONFIGS = ["]
        lines += [f"    {_config(c)}," for c in gpu]
        lines += ["]"]
    if interpreter != [{k: v for k, v in gpu[0].items() if k in interpreter[0]}]:
        lines += ["# under Triton's interpreter on the CPU, whose programs run one after another: few programs",
                  "# with large blocks (the first is launched; runtime/executors/kernel_cache.py)",
                  "INTERPRETER_CONFIGS = ["]
        lines += [f"    {_config(c)}," for c in interpreter]
        lines += ["]"]
    if lines:
        lines += ["", ""]
    return lines + [f"def launch({args}, " + ", ".join(f"{k}={gpu[0][k]}" for k in keys) + "):",
                    f"    grid = {grid}",
                    f"    {kernel_name}[grid]({args}, " + ", ".join(f"{k}={k}" for k in keys) + ")"]


def _config(config):
    return "{" + ", ".join(f'"{k}": {v}' for k, v in config.items()) + "}"
