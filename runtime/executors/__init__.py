"""The executors: each takes a `Compiled` (compiler/pipeline.py) and only loads and launches.

reference.py  every node of the graph by its NumPy reference, one by one
triton.py     the generated kernels, on a GPU or under Triton's interpreter on the CPU
replay.py     a step's launches recorded once and replayed (a CUDA graph on a GPU)
autotune.py   block sizes timed on the device, cached
kernel_cache.py  kernel sources as files, imported for Triton
"""
