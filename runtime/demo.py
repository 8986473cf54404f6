"""`chainrule demo`: the whole foundation on the digits, in a minute.

1. A two-layer network is written with the DSL and traced: its forward graph is printed.
2. The chain rule derives the backward graph: the joint program is printed.
3. The gradients are checked against finite differences (float64) and torch autograd.
4. The compiled step trains the network with plain SGD; the test accuracy is printed.
"""
from __future__ import annotations

import time

import numpy as np

import compiler as C
import ops as O
from ops.ir import mark_as_user_code

from .training.data import digits

mark_as_user_code(__file__)        # the model below is "user code": graphs point at its lines


def mlp_loss(w1, b1, w2, b2, x, y):
    """A two-layer perceptron: 64 pixels -> 32 hidden units (tanh) -> 10 classes."""
    hidden = O.tanh(O.linear(x, w1, b1))
    logits = O.linear(hidden, w2, b2)
    return O.cross_entropy(logits, y)


def mlp_predict(w1, b1, w2, b2, x):
    return O.argmax(O.linear(O.tanh(O.linear(x, w1, b1)), w2, b2), dim=1)


def init_params(rng, hidden=32):
    """Xavier-uniform weights (tanh), zero biases."""
    def xavier(fan_out, fan_in):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)

    return [xavier(hidden, 64), np.zeros(hidden, np.float32), xavier(10, hidden), np.zeros(10, np.float32)]


def check_gradients(params, x, y, rng, out):
    """Finite differences in float64 along random directions, and torch autograd."""
    p64 = [p.astype(np.float64) for p in params]
    x64 = x.astype(np.float64)
    loss, grads = C.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3), backend="reference")(*p64, x64, y)
    worst = 0.0
    for _ in range(3):
        direction = [rng.standard_normal(p.shape) for p in p64]
        h = 1e-6
        plus = C.jit(mlp_loss, backend="reference")(*[p + h * d for p, d in zip(p64, direction)], x64, y)
        minus = C.jit(mlp_loss, backend="reference")(*[p - h * d for p, d in zip(p64, direction)], x64, y)
        numeric = (plus - minus) / (2 * h)
        analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, direction))
        worst = max(worst, abs(numeric - analytic) / max(abs(numeric), 1e-12))
    out(f"  finite differences (3 random directions): worst relative error {worst:.1e}")
    try:
        import torch  # optional and heavy: the comparison with autograd is skipped without it
    except ImportError:
        out("  torch is not installed: skipping the comparison with autograd")
        return worst
    tp = [torch.tensor(p, requires_grad=True) for p in p64]
    logits = torch.tanh(torch.tensor(x64) @ tp[0].T + tp[1]) @ tp[2].T + tp[3]
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    tloss.backward()
    err = max(float(np.max(np.abs(g - t.grad.numpy()))) for g, t in zip(grads, tp))
    out(f"  torch autograd: loss {tloss.item():.10f} vs ours {float(loss):.10f}; largest gradient "
        f"difference {err:.1e}")
    return max(worst, err)


def run(epochs=8, batch_size=32, lr=0.5, seed=0, show_graphs=True, out=print):
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = digits(seed=seed)
    out(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels, 10 classes\n")
    params = init_params(rng)
    specs = [O.spec(p.shape) for p in params] + [O.spec((batch_size, 64)), O.spec((batch_size,), "int64")]

    step = C.compile(mlp_loss, *specs, grad_argnums=(0, 1, 2, 3), backend="reference")
    if show_graphs:
        out("1. The forward graph, traced from mlp_loss (runtime/demo.py):\n")
        out(str(step.forward))
        out("2. The joint graph: forward + the backward the chain rule derived, after simplify:\n")
        out(str(step.graph))
    counts = step.report()["nodes"]
    out(f"   {counts['forward']} forward ops -> {counts['joint']} joint ops -> {counts['simplified']} after "
        f"simplify; compiled in {sum(step.compile_seconds.values()) * 1000:.0f} ms\n")

    out("3. Gradient check (float64):")
    worst = check_gradients(params, x_train[:16], y_train[:16], rng, out)

    out(f"\n4. Training with SGD (lr={lr}, batch {batch_size}, {epochs} epochs) on the reference backend:")
    predict = C.jit(mlp_predict, backend="reference")
    start = time.perf_counter()
    steps = len(x_train) // batch_size
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(steps):
            batch = order[i * batch_size:(i + 1) * batch_size]
            loss, grads = step(*params, x_train[batch], y_train[batch])
            params = [p - lr * g for p, g in zip(params, grads)]
            total += float(loss)
        accuracy = float(np.mean(predict(*params, x_test) == y_test))
        out(f"  epoch {epoch:2d}/{epochs}  loss {total / steps:.4f}  test accuracy {accuracy:.4f}")
    out(f"  {epochs * steps} steps in {time.perf_counter() - start:.1f} s")
    out(f"test accuracy: {accuracy:.4f}")
    return {"test_accuracy": accuracy, "gradient_error": worst}
