"""ops.layers against torch.nn: every layer's forward with the same weights copied in (float64,
reference backend), a small model's gradients against autograd, BatchNorm's running
statistics, Dropout's masks and seeds, initializers, names, scopes, summary and errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import compiler as C
import ops as O
from ops.errors import ArgumentError, ShapeError
from ops import layers as L
from tests.helpers import nonzero, positive, rel_error

TOL = 1e-10


def tt(a):
    return torch.from_numpy(np.array(a, copy=True))


def random_params(layer, rng):
    """float64 parameters drawn away from zero (never the initializer's zeros and ones)."""
    return {k: nonzero(rng, v.shape) for k, v in layer.params.items()}


def load(module, params, state=()):
    """A torch module (float64) with our parameters and state copied in; torch's
    num_batches_tracked is the only entry it may have that we do not."""
    module = module.double()
    values = {**params, **dict(state)}
    missing, unexpected = module.load_state_dict({k: tt(v) for k, v in values.items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return module


def flat(model, rng):
    """float64 parameters and state of a built model, as flat lists (apply's order)."""
    params = [nonzero(rng, a.shape) for _, a in model.parameters()]
    state = [a.astype(np.float64) if a.dtype.kind == "f" else a for _, a in model.states()]
    return params, state


# -- every layer's forward against torch.nn ------------------------------------------------------------

LAYERS = [
    ("conv2d", lambda: L.Conv2d(3, 4, 3, stride=2, padding=1), lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
     (3, 7, 6)),
    ("conv2d_nobias", lambda: L.Conv2d(3, 4, (2, 3), bias=False, init="xavier"),
     lambda: nn.Conv2d(3, 4, (2, 3), bias=False), (3, 5, 6)),
    ("conv2d_same", lambda: L.Conv2d(2, 3, 3, padding="same"), lambda: nn.Conv2d(2, 3, 3, padding="same"), (2, 5, 4)),
    ("dense", lambda: L.Dense(5, 7), lambda: nn.Linear(5, 7), (5,)),
    ("linear_3d_nobias", lambda: L.Linear(5, 7, bias=False), lambda: nn.Linear(5, 7, bias=False), (2, 5)),
    ("relu", L.ReLU, nn.ReLU, (3, 4)),
    ("leaky_relu", lambda: L.LeakyReLU(0.2), lambda: nn.LeakyReLU(0.2), (3, 4)),
    ("sigmoid", L.Sigmoid, nn.Sigmoid, (6,)),
    ("tanh", L.Tanh, nn.Tanh, (6,)),
    ("softmax", L.Softmax, lambda: nn.Softmax(dim=-1), (3, 4)),
    ("softmax_dim1", lambda: L.Softmax(dim=1), lambda: nn.Softmax(dim=1), (3, 4)),
    ("max_pool2d", lambda: L.MaxPool2d(3, stride=2, padding=1), lambda: nn.MaxPool2d(3, stride=2, padding=1),
     (2, 9, 7)),
    ("avg_pool2d", lambda: L.AvgPool2d(2), lambda: nn.AvgPool2d(2), (2, 6, 5)),
    ("avg_pool2d_pad", lambda: L.AvgPool2d(3, 1, 1, count_include_pad=False),
     lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False), (2, 5, 4)),
    ("global_avg_pool2d", L.GlobalAvgPool2d, lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), (3, 4, 5)),
    ("flatten", L.Flatten, nn.Flatten, (2, 3, 4)),
    ("flatten_2", lambda: L.Flatten(2), lambda: nn.Flatten(2), (2, 3, 4)),
    ("layer_norm", lambda: L.LayerNorm((4, 5)), lambda: nn.LayerNorm((4, 5)), (3, 4, 5)),
    ("batch_norm2d_eval", lambda: L.BatchNorm2d(3, eps=1e-3), lambda: nn.BatchNorm2d(3, eps=1e-3), (3, 4, 5)),
]


@pytest.mark.parametrize("make, make_torch, in_shape", [pytest.param(*c[1:], id=c[0]) for c in LAYERS])
def test_layer_forward_matches_torch(make, make_torch, in_shape, rng):
    layer = make()
    out_shape = layer.build(in_shape, rng)
    params = random_params(layer, rng)
    state = {k: positive(rng, v.shape) for k, v in layer.state.items()}       # BatchNorm: running stats
    module = load(make_torch(), params, state).eval()
    x = nonzero(rng, (3,) + in_shape)
    y, new_state = layer.forward(params, state, x, training=False)
    with torch.no_grad():
        want = module(tt(x)).numpy()
    assert y.shape == want.shape == (3,) + out_shape
    assert rel_error(y, want) < TOL
    assert all(np.array_equal(new_state[k], state[k]) for k in state)      # eval: the state is unchanged
    assert layer.num_parameters() == sum(p.numel() for p in module.parameters())


def test_batch_norm2d_training_and_running_stats_match_torch(rng):
    layer = L.BatchNorm2d(3, eps=1e-3, momentum=0.3)
    layer.build((3, 4, 5), rng)
    params = random_params(layer, rng)
    state = {"running_mean": nonzero(rng, (3,)), "running_var": positive(rng, (3,))}
    module = load(nn.BatchNorm2d(3, eps=1e-3, momentum=0.3), params, state).train()
    for step in range(2):
        x = nonzero(rng, (4, 3, 4, 5)) * 2 + 1
        y, state = layer.forward(params, state, x, training=True)
        with torch.no_grad():
            want = module(tt(x)).numpy()
        assert rel_error(y, want) < TOL, f"step {step}"
        assert rel_error(state["running_mean"], module.running_mean.numpy()) < TOL
        assert rel_error(state["running_var"], module.running_var.numpy()) < TOL       # unbiased, as torch
    module.eval()
    x = nonzero(rng, (2, 3, 4, 5))
    y, same = layer.forward(params, state, x, training=False)
    with torch.no_grad():
        assert rel_error(y, module(tt(x)).numpy()) < TOL
    assert same is state or all(np.array_equal(same[k], state[k]) for k in state)


def test_batch_norm2d_state_keeps_its_dtype_and_eager_call_updates_it(rng):
    layer = L.BatchNorm2d(2)
    layer.build((2, 3, 3), rng)
    module = nn.BatchNorm2d(2).train()
    x = nonzero(rng, (5, 2, 3, 3)).astype(np.float32)
    y = layer(x, training=True)                                    # eager: updates the running stats
    with torch.no_grad():
        want = module(tt(x)).numpy()
    assert y.dtype == np.float32 and rel_error(y, want) < 1e-5
    assert layer.state["running_mean"].dtype == np.float32
    assert rel_error(layer.state["running_mean"], module.running_mean.numpy()) < 1e-5
    assert rel_error(layer.state["running_var"], module.running_var.numpy()) < 1e-5
    before = {k: v.copy() for k, v in layer.state.items()}
    layer(x)                                                       # eval: leaves them alone
    assert all(np.array_equal(layer.state[k], before[k]) for k in before)


# -- dropout --------------------------------------------------------------------------------------------------

def test_dropout_eval_is_identity_and_training_draws_a_new_mask_every_step(rng):
    p = 0.3
    layer = L.Dropout(p)
    layer.build((200, 150), rng)
    x = nonzero(rng, (2, 200, 150))
    state = layer.state
    assert state["seed"].dtype == np.int64 and state["seed"].shape == ()
    y, same = layer.forward({}, state, x, training=False)
    assert np.array_equal(y, x) and same["seed"] == state["seed"]

    y, new = layer.forward({}, state, x, training=True)
    kept = y != 0
    n = kept.size
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert rel_error(y[kept], x[kept] / (1 - p)) < 1e-15
    assert int(new["seed"]) == int(state["seed"]) + 1
    again, _ = layer.forward({}, state, x, training=True)           # the same state replays the mask
    assert np.array_equal(again, y)
    other = layer.forward({}, new, x, training=True)[0] != 0         # the next step: another mask
    assert (other != kept).mean() > 0.5 * 2 * p * (1 - p)

    # eager calls in training mode store the new seed, so each call draws another mask
    a, b = layer(x, training=True) != 0, layer(x, training=True) != 0
    assert (a != b).mean() > 0.5 * 2 * p * (1 - p)


def test_dropout_inside_a_compiled_step_threads_its_seed(rng):
    model = L.Sequential([L.Dense(6, 8), L.Dropout(0.5), L.Dense(8, 3), L.Dropout(0.5)], input_shape=(6,)).init(rng)
    params, state = flat(model, rng)
    assert [n for n, _ in model.states()] == ["dropout.seed", "dropout_1.seed"]
    step = C.jit(lambda *a: (lambda y, s: (y, *s))(*model.apply(list(a[:4]), list(a[4:6]), a[6])), backend="reference")
    x = nonzero(rng, (16, 6))
    y1, *s1 = step(*params, *state, x)
    y2, *s2 = step(*params, *s1, x)
    assert [int(s) for s in s1] == [int(s) + 1 for s in state] and [int(s) for s in s2] == [int(s) + 2 for s in state]
    assert not np.array_equal(y1 == 0, y2 == 0)
    assert np.array_equal(step(*params, *state, x)[0], y1)
    # the backward regenerates the mask: d sum(y * r) / dx matches torch with the same masks
    r = nonzero(rng, y1.shape)
    loss = lambda *a: O.sum(model.apply(list(a[:4]), list(a[4:6]), a[6])[0] * a[7])     # noqa: E731
    grads = C.grad(loss, argnums=tuple(range(4)), backend="reference")(*params, *state, x, r)
    w1, b1, w2, b2 = (tt(a).requires_grad_() for a in params)
    h = tt(x) @ w1.T + b1
    m1 = tt(model.layers[1].forward({}, {"seed": state[0]}, np.ones(h.shape), True)[0])  # mask * 2
    out = (h * m1) @ w2.T + b2
    m2 = tt(model.layers[3].forward({}, {"seed": state[1]}, np.ones(out.shape), True)[0])
    (out * m2 * tt(r)).sum().backward()
    for got, want in zip(grads, (w1, b1, w2, b2)):
        assert rel_error(got, want.grad.numpy()) < TOL


# -- a small model: gradients, state, num_parameters -----------------------------------------------------

def small_model():
    return L.Sequential([L.Conv2d(2, 3, 3, padding=1), L.BatchNorm2d(3), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
                         L.Dense(3 * 3 * 3, 4)], input_shape=(2, 6, 6))


def small_torch():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 4)).double()


def copy_into(module, model, params, state):
    """Our flat params/state into a torch module whose parameters come in the same order."""
    theirs = list(module.parameters())
    assert [tuple(p.shape) for p in theirs] == [p.shape for p in params]
    with torch.no_grad():
        for p, a in zip(theirs, params):
            p.copy_(tt(a))
        buffers = [b for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))]
        for b, a in zip(buffers, state):
            b.copy_(tt(a))


def test_sequential_gradients_and_state_match_torch(rng):
    model = small_model().init(rng)
    params, state = flat(model, rng)
    module = small_torch().train()
    copy_into(module, model, params, state)
    x, r = nonzero(rng, (5, 2, 6, 6)), nonzero(rng, (5, 4))
    n, ns = len(params), len(state)

    def loss(*a):
        y, _ = model.apply(list(a[:n]), list(a[n:n + ns]), a[-2], training=True)
        return O.sum(y * a[-1])

    value, grads = C.value_and_grad(loss, argnums=tuple(range(n)), backend="reference")(*params, *state, x, r)
    want = (module(tt(x)) * tt(r)).sum()
    want.backward()
    assert rel_error(value, want.item()) < TOL
    assert len(grads) == n == len(list(module.parameters()))
    # conv2d.bias's gradient is 0 in exact arithmetic (BatchNorm subtracts the channel's mean):
    # measure errors against the size of all the gradients
    scale = math.sqrt(sum(float((p.grad ** 2).sum()) for p in module.parameters()))
    for (name, _), g, p in zip(model.parameters(), grads, module.parameters()):
        err = np.linalg.norm(g - p.grad.numpy()) / max(np.linalg.norm(p.grad.numpy()), 1e-6 * scale)
        assert err < 1e-9, name
    # the new state (apply's second output) is torch's running stats after this step
    y, new_state = model.apply(params, state, x, training=True)
    assert isinstance(y, np.ndarray) and isinstance(new_state, list)
    assert rel_error(new_state[0], module[1].running_mean.numpy()) < TOL
    assert rel_error(new_state[1], module[1].running_var.numpy()) < TOL
    # eval mode uses them
    model.set_parameters(params)
    model.set_states(new_state)
    module.eval()
    with torch.no_grad():
        assert rel_error(model(x), module(tt(x)).numpy()) < TOL


def test_residual_matches_torch(rng):
    block = L.Residual([L.Conv2d(3, 3, 3, padding=1), L.ReLU(), L.Conv2d(3, 3, 3, padding=1)])
    assert [c.name for c in block.children()] == ["conv2d", "relu", "conv2d_1"]
    projected = L.Residual([L.Conv2d(3, 5, 3, padding=1), L.Tanh()], shortcut=L.Conv2d(3, 5, 1, bias=False))
    model = L.Sequential([block, projected], input_shape=(3, 5, 4)).init(rng)
    assert [n for n, _ in model.parameters()] == [
        "residual.conv2d.weight", "residual.conv2d.bias", "residual.conv2d_1.weight", "residual.conv2d_1.bias",
        "residual_1.conv2d_2.weight", "residual_1.conv2d_2.bias", "residual_1.conv2d_3.weight"]
    params, _ = flat(model, rng)
    x, r = nonzero(rng, (2, 3, 5, 4)), nonzero(rng, (2, 5, 5, 4))
    w1, b1, w2, b2, w3, b3, ws = (tt(a).requires_grad_() for a in params)
    conv = torch.nn.functional.conv2d
    h = conv(torch.relu(conv(tt(x), w1, b1, padding=1)), w2, b2, padding=1) + tt(x)     # y = block(x) + x
    want = torch.tanh(conv(h, w3, b3, padding=1)) + conv(h, ws)
    y, _ = model.apply(params, [], x)
    assert rel_error(y, want.detach().numpy()) < TOL
    grads = C.grad(lambda *a: O.sum(model.apply(list(a[:7]), [], a[7])[0] * a[8]), argnums=tuple(range(7)),
                   backend="reference")(*params, x, r)
    (want * tt(r)).sum().backward()
    for g, p in zip(grads, (w1, b1, w2, b2, w3, b3, ws)):
        assert rel_error(g, p.grad.numpy()) < 1e-9


def test_num_parameters_and_summary(rng):
    model = L.Sequential([L.Conv2d(1, 8, 3, padding=1), L.BatchNorm2d(8), L.ReLU(), L.MaxPool2d(2),
                          L.Residual([L.Conv2d(8, 8, 3, padding=1), L.LayerNorm((8, 4, 4))]), L.Dropout(0.2),
                          L.Flatten(), L.Dense(128, 10)], input_shape=(1, 8, 8))
    module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(8, 8, 3, padding=1), nn.LayerNorm((8, 4, 4)), nn.Dropout(0.2), nn.Flatten(),
                           nn.Linear(128, 10))
    total = sum(p.numel() for p in module.parameters())
    assert model.num_parameters() == total            # known before init
    text = model.summary()                            # also before init: shapes come from input_shape
    model.init(rng)
    assert model.summary() == text
    assert sum(a.size for _, a in model.parameters()) == total
    assert [a.shape for _, a in model.parameters()] == [tuple(p.shape) for p in module.parameters()]
    rows = {"conv2d": "(None, 8, 8, 8)", "batch_norm2d": "(None, 8, 8, 8)", "relu": "(None, 8, 8, 8)",
            "max_pool2d": "(None, 8, 4, 4)", "residual": "(None, 8, 4, 4)", "conv2d_1": "(None, 8, 4, 4)",
            "layer_norm": "(None, 8, 4, 4)", "dropout": "(None, 8, 4, 4)", "flatten": "(None, 128)",
            "dense": "(None, 10)"}
    lines = text.splitlines()
    for name, shape in rows.items():
        line = next(line for line in lines if line.strip().startswith(name + " ("))
        assert shape in line, line
    assert "dense (Dense)" in text and f"{1290:,}" in text
    assert f"Total params: {total:,}" in text
    assert "State values" in text and f"{8 + 8 + 1}" in text


# -- initializers ---------------------------------------------------------------------------------------------

def test_he_and_xavier_initializers(rng):
    dense = L.Dense(2000, 400)
    dense.build((2000,), rng)
    w = dense.params["weight"]
    assert w.dtype == np.float32 and w.shape == (400, 2000)
    assert np.abs(w).max() <= math.sqrt(6 / 2000)
    assert abs(w.std() / math.sqrt(2 / 2000) - 1) < 0.02        # He: Var(w) = 2 / fan_in
    assert not dense.params["bias"].any() and dense.params["bias"].dtype == np.float32

    conv = L.Conv2d(64, 128, 3, init="xavier")
    conv.build((64, 5, 5), rng)
    w, fan_in, fan_out = conv.params["weight"], 64 * 9, 128 * 9
    assert np.abs(w).max() <= math.sqrt(6 / (fan_in + fan_out))
    assert abs(w.std() / math.sqrt(2 / (fan_in + fan_out)) - 1) < 0.02
    assert not conv.params["bias"].any()
    he_conv = L.Conv2d(64, 128, 3)
    he_conv.build((64, 5, 5), rng)
    assert np.abs(he_conv.params["weight"]).max() <= math.sqrt(6 / fan_in)
    assert abs(he_conv.params["weight"].std() / math.sqrt(2 / fan_in) - 1) < 0.02

    normal = L.Dense(2000, 400, init="he_normal")
    normal.build((2000,), rng)
    assert abs(normal.params["weight"].std() / math.sqrt(2 / 2000) - 1) < 0.02

    bn = L.BatchNorm2d(4)
    bn.build((4, 2, 2), rng)
    assert (bn.params["weight"] == 1).all() and (bn.params["bias"] == 0).all()
    assert (bn.state["running_mean"] == 0).all() and (bn.state["running_var"] == 1).all()
    with pytest.raises(ArgumentError, match="unknown init"):
        L.Dense(3, 4, init="lecun")
    # the same seed gives the same model
    a, b = small_model().init(7), small_model().init(np.random.default_rng(7))
    assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(a.parameters(), b.parameters()))


# -- names, scopes and errors ------------------------------------------------------------------------------

def test_names_are_keras_style_and_unique_within_a_model():
    model = L.Sequential([L.Conv2d(1, 2, 3), L.ReLU(), L.Conv2d(2, 2, 3), L.ReLU(name="act"), L.Flatten(),
                          L.Dense(2, 3), L.Dense(3, 3, name="head")])
    assert [layer.name for layer in model] == ["conv2d", "relu", "conv2d_1", "act", "flatten", "dense", "head"]
    other = L.Sequential([L.Dense(2, 3)])
    assert other[0].name == "dense"                                   # unique within a model, not globally
    assert all(layer.name.isidentifier() for layer in model)
    with pytest.raises(ArgumentError, match="identifier"):
        L.ReLU(name="my relu")
    with pytest.raises(ArgumentError, match="named 'x'"):
        L.Sequential([L.ReLU(name="x"), L.Tanh(name="x")])
    relu = L.ReLU()
    with pytest.raises(ArgumentError, match="appears twice"):
        L.Sequential([relu, relu])


def test_traced_nodes_carry_the_layer_names_as_outermost_scope(rng):
    model = L.Sequential([L.Conv2d(1, 4, 3, padding=1), L.BatchNorm2d(4), L.ReLU(), L.MaxPool2d(2),
                          L.Residual([L.Conv2d(4, 4, 3, padding=1), L.ReLU()]), L.Flatten(), L.Dense(64, 10)],
                         input_shape=(1, 8, 8)).init(rng)
    params = [a for _, a in model.parameters()]
    state = [a for _, a in model.states()]
    n, ns = len(params), len(state)

    def forward(*a):
        y, new_state = model.apply(list(a[:n]), list(a[n:n + ns]), a[-1], training=True)
        return (y, *new_state)

    graph = C.trace(forward, *params, *state, O.spec((2, 1, 8, 8)))
    ops = [node for node in graph.nodes if node.op not in ("input", "const")]
    assert {node.scope[0] for node in ops} == {layer.name for layer in model}
    assert any(node.scope[0] == "conv2d" and node.op == "conv2d" for node in ops)
    assert any(node.scope[:2] == ("residual", "conv2d_1") and node.op == "conv2d" for node in ops)
    # the compiler names kernels after the outermost scope
    program = C.compile(lambda *a: O.sum(forward(*a)[0]), *params, *state, O.spec((2, 1, 8, 8)),
                        grad_argnums=tuple(range(n)), backend="reference")
    names = " ".join(k.name for k in program.schedule.kernels)
    assert "conv2d" in names and "dense" in names and "batch_norm2d" in names


def test_a_mis_shaped_model_names_the_layer_and_both_shapes():
    model = L.Sequential([L.Conv2d(1, 6, 3), L.Flatten(), L.Dense(100, 10)], input_shape=(1, 6, 6))
    with pytest.raises(ShapeError) as info:
        model.init(0)  # mis-shaped
    message = str(info.value)
    assert message.startswith("dense: Dense(100, 10)")
    assert "(None, 100)" in message and "(None, 96)" in message and "flatten" in message
    assert "test_layers.py" in message and "model.init(0)" in message          # the user's line
    with pytest.raises(ShapeError, match=r"conv2d.*\(None, 3, H, W\).*\(None, 1, 8, 8\)"):
        L.Sequential([L.Conv2d(3, 4, 3)], input_shape=(1, 8, 8)).summary()
    with pytest.raises(ShapeError, match=r"residual.*\(None, 5, 4, 4\).*\(None, 3, 4, 4\)"):
        L.Residual(L.Conv2d(3, 5, 1)).build((3, 4, 4), 0)
    with pytest.raises(ShapeError, match=r"max_pool2d.*does not fit"):
        L.Sequential([L.MaxPool2d(5)], input_shape=(1, 4, 4)).init()
    with pytest.raises(ArgumentError, match="input shape"):
        L.Sequential([L.ReLU()]).init()
    with pytest.raises(ArgumentError, match="takes 2 parameters"):
        m = L.Sequential([L.Dense(3, 2)], input_shape=(3,)).init()
        m.apply([np.ones((2, 3))], [], np.ones((1, 3)))


def test_a_layers_nodes_and_their_backward_point_at_the_line_that_created_the_layer():
    import inspect as pyinspect

    line = pyinspect.currentframe().f_lineno
    model = L.Sequential(L.Conv2d(1, 2, 3, padding=1),       # line + 1
                         L.ReLU(),                            # line + 2
                         L.Flatten(), L.Dense(128, 3),        # line + 3
                         input_shape=(1, 8, 8)).init(0)
    optimizer = O.optim.SGD(0.1)                              # line + 5
    step = C.compile_train_step(model, O.cross_entropy, optimizer, O.spec((2, 1, 8, 8)), O.spec((2,), "int64"),
                                backend="reference")
    lines = {}
    for node in step.program.forward.nodes:
        if node.scope:
            lines.setdefault(node.scope[0], set()).add(node.source.line)
    assert lines["conv2d"] == {line + 1} and lines["relu"] == {line + 2} and lines["dense"] == {line + 3}
    assert lines["sgd"] == {line + 5}
    backward = [n for n in step.program.forward.nodes if n.op == "conv2d_grad_weight"]
    assert backward and backward[0].source.line == line + 1
