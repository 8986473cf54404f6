"""The training app: what `chainrule train` runs, and what tutorials and benchmarks train with.

- loop.py: `fit` (epochs of shuffled mini-batches through a compiled training step, validation,
  the best epoch's weights kept and checkpointed), `evaluate`, `train_command` (`chainrule
  train`), and the loop's guards: `EarlyStopping` and `check_finite` (a nan/inf loss stops
  the run, naming the epoch and step).
- data.py: data sets that need no network (the 8x8 digits, two moons, blobs), stratified
  splits, label checks and mini-batches.
- metrics.py: accuracy, confusion matrix, precision/recall/F1 and a classification report.
- curves.py: learning-curve pictures (loss and accuracy, training against validation).
- checkpoint.py: atomic `.npz` checkpoints (arrays plus JSON metadata).
- zoo.py: the model zoo: small DSL models and layer networks for the digits, or a model of
  your own from path/to/file.py:function.
- twins.py: each layer model's torch twin (same network, same weights) and torch's version
  of fit's loop, for the benchmarks; it imports torch.
"""
