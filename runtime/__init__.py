"""chainrule's runtime: the executors (runtime/executors/) that load and launch a compiled
program, and the apps on top of them: training, the command line, benchmarks, tutorials."""
