"""`chainrule bench`: the benchmark suite, one table of ratios measured in the same run.

CPU (always), for each model's whole training step (forward, backward and the Adam update,
compiled as `chainrule train` compiles it: `C.compile_train_step`): the zoo's logreg, mlp,
lenet and resnet (batch 64 on the 1x8x8 digits) and a ResNet-18-sized CNN (the network of
benchmarks/compile_time.py as layers: batch 8 on 3x64x64):

- compile seconds per pass (`Program.compile_seconds`; the train step is traced as one
  function, so "trace" includes autodiff and the optimizer), with a cold kernel cache;
- torch.compile's cold time to the first training step of the same model (its torch twin,
  runtime/training/twins.py), each in a fresh process with an empty inductor cache, as the
  ratio torch.compile cold / chainrule compile;
- kernels fused vs unfused, dram_bytes / min_dram_bytes, arena_bytes / live_lower_bound_bytes;
- seconds per step under Triton's interpreter against torch eager on the same CPU.

GPU (when torch.cuda.is_available()): each kernel family against torch on the same GPU and
against the roofline (measured copy bandwidth and matmul peak), and training steps against
torch eager and torch.compile, with peak memory. Without a GPU that part is skipped with one
line saying so.

Timing: warm-up calls first, then the median of many; inputs are random (never zeros) and
rotated between calls; on the GPU, CUDA events, and enough input sets that the bytes touched
before a set comes back exceed the L2 cache (so caches do not flatter). torch runs on one CPU
thread (the interpreter's NumPy work does too): on a small shared machine two threads stall
at random (see benchmarks/train.py).

    chainrule bench [--quick] [--models logreg resnet18] [--out DIR] [--no-torch-compile]

Writes DIR/bench.json and DIR/bench.md (default: benchmarks/results of this checkout).

The modules, by role:

- workloads.py: the models (zoo networks, a ResNet-18) and their batches, and the two
  training steps compared: chainrule's compiled step and its torch twin's.
- timing.py: timers (median after warm-up, paired, CUDA events), input rotation, a cold
  kernel cache, torch's thread count, ratios and geometric means.
- cpu.py: the CPU suite (compile seconds, torch.compile's cold start, fusion, memory, step
  time under the interpreter against torch eager).
- gpu.py: the GPU suite (kernel families against torch and the roofline, training steps
  against torch eager and torch.compile), skipped with one line without a GPU.
- report.py: the goals, the tables (text and Markdown), the machine, JSON and text files.
- suite.py: `chainrule bench` itself: its arguments and `run`, which runs the rest.
"""
from .suite import add_arguments, run

__all__ = ["add_arguments", "run"]
