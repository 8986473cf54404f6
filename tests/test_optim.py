"""O.optim: update rules written in ops, against torch.optim, torch.nn.utils' clipping and
torch's learning-rate schedulers; and the update as part of a compiled step (no
parameter-sized constants, the generated kernels agree with the reference, sibling fusion
puts the updates of all parameters into few launches)."""
import inspect

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from tests.helpers import assert_close, nonzero, rel_error

SHAPES = [(4, 3), (5,), (2, 3, 2)]
TOL = 1e-10          # float64, against torch


def _flat_step(opt, n, with_lr=False):
    """step(*params, *grads, *state[, lr]) -> (*new_params, *new_state): opt.update on Tensors."""
    k = len(opt.state_names(["p"] * n))

    def step(*args):
        params, grads, state = list(args[:n]), list(args[n:2 * n]), list(args[2 * n:2 * n + k])
        new_params, new_state = opt.update(params, grads, state, lr=args[-1] if with_lr else None)
        return tuple(new_params + new_state)
    return step


def _updater(opt, n, how):
    """(params, grads, state) -> (params, state), eagerly on arrays or through a C.jit of update."""
    if how == "eager":
        return opt.update
    jitted = C.jit(_flat_step(opt, n), backend="reference")

    def update(params, grads, state):
        out = jitted(*params, *grads, *state)
        return list(out[:n]), list(out[n:])
    return update


def _against_torch(rng, opt, torch_opt, how, shapes=SHAPES, steps=3, clip=None):
    params = [nonzero(rng, s) for s in shapes]
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    reference = torch_opt(tensors)
    state = opt.init(params)
    update = _updater(opt, len(params), how)
    for _ in range(steps):
        grads = [nonzero(rng, s) for s in shapes]          # fresh gradients every step
        params, state = update(params, grads, state)
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        if clip is not None:
            clip(tensors)
        reference.step()
        for p, t in zip(params, tensors):
            assert p.dtype == np.float64 and p.shape == t.shape
            assert rel_error(p, t.detach().numpy()) < TOL
        # the state too, under torch's names: "1.exp_avg" is torch's state[param 1]["exp_avg"]
        for name, value in zip(opt.state_names([str(i) for i in range(len(tensors))]), state):
            index, _, slot = name.rpartition(".")
            want = reference.state[tensors[int(index or 0)]].get(slot)
            if want is not None:           # (SGD's step, which knows the first step, is ours alone)
                assert rel_error(value, want.numpy()) < TOL
    return params, state


# -- the update rules against torch.optim --------------------------------------------------------

SGD_CASES = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    "weight_decay": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
    "weight_decay_no_momentum": {"lr": 0.1, "weight_decay": 0.1},
    "dampening": {"lr": 0.1, "momentum": 0.9, "dampening": 0.3},
}


@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_matches_torch(case, how, rng):
    kw = SGD_CASES[case]
    _against_torch(rng, O.optim.SGD(**kw), lambda ts: torch.optim.SGD(ts, **kw, foreach=False), how)


RMSPROP_CASES = {
    "plain": {"lr": 0.01},
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "weight_decay": {"lr": 0.02, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1},
    "centered_momentum": {"lr": 0.01, "momentum": 0.5, "centered": True},
}


@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("case", list(RMSPROP_CASES))
def test_rmsprop_matches_torch(case, how, rng):
    kw = RMSPROP_CASES[case]
    _against_torch(rng, O.optim.RMSprop(**kw), lambda ts: torch.optim.RMSprop(ts, **kw, foreach=False), how)


ADAM_CASES = {
    "plain": {"lr": 0.01},
    "weight_decay": {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    "amsgrad": {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True},
}


@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_matches_torch(case, how, rng):
    kw = ADAM_CASES[case]
    opt = O.optim.Adam(**kw)
    _, state = _against_torch(rng, opt, lambda ts: torch.optim.Adam(ts, **kw, foreach=False), how)
    assert state[-1].dtype == np.float32 and state[-1].shape == () and state[-1] == 3.0    # the step counter


def test_defaults_are_torchs():
    for ours, theirs in ((O.optim.SGD, torch.optim.SGD), (O.optim.RMSprop, torch.optim.RMSprop),
                         (O.optim.Adam, torch.optim.Adam)):
        want = inspect.signature(theirs).parameters
        for name, p in inspect.signature(ours).parameters.items():
            if name in want:
                assert p.default == want[name].default, (ours.__name__, name)


def test_init_and_state_names():
    params = [np.ones((3, 2), np.float32), np.ones(4, np.float32)]
    opt = O.optim.Adam(amsgrad=True)
    state = opt.init(params)
    assert opt.state_names(["w", "b"]) == ["w.exp_avg", "w.exp_avg_sq", "w.max_exp_avg_sq",
                                           "b.exp_avg", "b.exp_avg_sq", "b.max_exp_avg_sq", "step"]
    assert [s.shape for s in state] == [(3, 2)] * 3 + [(4,)] * 3 + [()]
    assert all(s.dtype == np.float32 and not s.any() for s in state)
    assert O.optim.SGD().init(params) == [] and O.optim.SGD().state_names(["w", "b"]) == []
    assert O.optim.SGD(momentum=0.9).state_names(["w", "b"]) == ["w.momentum_buffer", "b.momentum_buffer"]
    assert O.optim.RMSprop(momentum=0.9, centered=True).state_names(["w"]) == \
        ["w.square_avg", "w.momentum_buffer", "w.grad_avg"]
    with pytest.raises(C.ArgumentError, match="the state has 0 arrays, expected 2"):
        O.optim.SGD(momentum=0.9).update(params, params, [])
    with pytest.raises(C.ArgumentError, match="Nesterov"):
        O.optim.SGD(nesterov=True)


def test_float32_parameters_stay_float32(rng):
    params = [nonzero(rng, s, dtype=np.float32) for s in SHAPES]
    grads = [nonzero(rng, s, dtype=np.float32) for s in SHAPES]
    opt = O.optim.Adam(lr=0.01)
    new_params, new_state = opt.update(params, grads, opt.init(params), lr=np.float64(0.01))
    assert all(p.dtype == np.float32 for p in new_params + new_state)


# -- clipping -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("above", [True, False])
def test_clip_by_norm_matches_torch(above, how, rng):
    grads = [nonzero(rng, s) for s in SHAPES]
    total = np.sqrt(sum(np.sum(g * g) for g in grads))
    max_norm = total / 3 if above else total * 2
    if how == "eager":
        got = O.optim.clip_by_norm(grads, max_norm)
        norm = O.optim.global_norm(grads)
    else:
        got = C.jit(lambda *gs: tuple(O.optim.clip_by_norm(gs, max_norm)), backend="reference")(*grads)
        norm = C.jit(lambda *gs: O.optim.global_norm(gs), backend="reference")(*grads)
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    want_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False)
    assert rel_error(norm, want_norm.numpy()) < TOL
    for g, t, original in zip(got, tensors, grads):
        assert rel_error(g, t.grad.numpy()) < TOL
        assert (rel_error(g, original) > 0.5) == above            # clipped only above the threshold
    if not above:
        assert all(np.array_equal(g, o) for g, o in zip(got, grads))


@pytest.mark.parametrize("how", ["eager", "jit"])
@pytest.mark.parametrize("above", [True, False])
def test_clip_by_value_matches_torch(above, how, rng):
    grads = [nonzero(rng, s) for s in SHAPES]          # |g| in [0.1, 2]
    clip_value = 0.5 if above else 3.0
    if how == "eager":
        got = O.optim.clip_by_value(grads, clip_value)
    else:
        got = C.jit(lambda *gs: tuple(O.optim.clip_by_value(gs, clip_value)), backend="reference")(*grads)
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    torch.nn.utils.clip_grad_value_(tensors, clip_value, foreach=False)
    for g, t, original in zip(got, tensors, grads):
        assert np.array_equal(g, t.grad.numpy())
        assert np.array_equal(g, original) != above


@pytest.mark.parametrize("how", ["eager", "jit"])
def test_optimizers_clip_before_the_update(how, rng):
    """max_norm= and clip_value= clip the gradients first, as clip_grad_norm_ / clip_grad_value_
    before torch's optimizer.step()."""
    _against_torch(rng, O.optim.Adam(lr=0.01, max_norm=0.5), lambda ts: torch.optim.Adam(ts, lr=0.01, foreach=False),
                   how, clip=lambda ts: torch.nn.utils.clip_grad_norm_(ts, 0.5, foreach=False))
    _against_torch(rng, O.optim.SGD(lr=0.1, momentum=0.9, clip_value=0.7),
                   lambda ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9, foreach=False),
                   how, clip=lambda ts: torch.nn.utils.clip_grad_value_(ts, 0.7, foreach=False))


# -- the learning rate as an input ---------------------------------------------------------------

def _arrays(rng, opt, dtype=np.float64, steps=2):
    """params, grads and a state that is not zeros (a few updates in)."""
    params = [nonzero(rng, s, dtype=dtype) for s in SHAPES]
    state = opt.init(params)
    for _ in range(steps):
        params, state = opt.update(params, [nonzero(rng, s, dtype=dtype) for s in SHAPES], state)
    return params, [nonzero(rng, s, dtype=dtype) for s in SHAPES], state


@pytest.mark.parametrize("make", [lambda lr: O.optim.SGD(lr=lr, momentum=0.9),
                                  lambda lr: O.optim.RMSprop(lr=lr, momentum=0.5),
                                  lambda lr: O.optim.Adam(lr=lr, weight_decay=0.01)], ids=["sgd", "rmsprop", "adam"])
def test_lr_as_an_input_does_not_recompile(make, rng):
    n = len(SHAPES)
    params, grads, state = _arrays(rng, make(0.05))
    specs = [O.spec(a.shape, str(a.dtype)) for a in params + grads + state]
    program = C.compile(_flat_step(make(0.05), n, with_lr=True), *specs, O.spec((), "float64"),
                        backend="reference")
    jitted = C.jit(_flat_step(make(0.05), n, with_lr=True), backend="reference")
    for lr in (0.05, 0.003):
        want = C.compile(_flat_step(make(lr), n), *specs, backend="reference")(*params, *grads, *state)
        for got in (program(*params, *grads, *state, np.float64(lr)),        # one program, both lrs
                    jitted(*params, *grads, *state, np.float64(lr))):
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert rel_error(g, w) < 1e-14
        eager_params, eager_state = make(0.05).update(params, grads, state, lr=np.float64(lr))
        for g, w in zip(eager_params + eager_state, want):
            assert rel_error(g, w) < 1e-14
    assert len(jitted.cache) == 1            # a new lr value is a new input, not a new program


# -- the update inside a compiled step -------------------------------------------------------------

TRACED = {
    "sgd": lambda: O.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd_dampening": lambda: O.optim.SGD(lr=0.1, momentum=0.9, dampening=0.5),
    "rmsprop": lambda: O.optim.RMSprop(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
    "adam": lambda: O.optim.Adam(lr=0.01, weight_decay=0.01, amsgrad=True, max_norm=1.0),
    "adam_clip_value": lambda: O.optim.Adam(lr=0.01, clip_value=0.5),
}


@pytest.mark.parametrize("with_lr", [False, True], ids=["lr_constant", "lr_input"])
@pytest.mark.parametrize("name", list(TRACED))
def test_update_traces_with_scalar_constants_only_and_kernels_agree(name, with_lr, rng):
    opt = TRACED[name]()
    n = len(SHAPES)
    params, grads, state = _arrays(rng, opt, dtype=np.float32)
    lr = [np.float32(0.02)] if with_lr else []
    specs = [O.spec(a.shape, str(a.dtype)) for a in params + grads + state + lr]
    graph = C.trace(_flat_step(opt, n, with_lr), *specs)
    constants = [node for node in graph.nodes if node.op == "const"]
    assert constants and all(node.shape == () for node in constants)     # hyperparameters only
    assert len(graph.outputs) == len(params) + len(state)
    want = C.compile(_flat_step(opt, n, with_lr), *specs, backend="reference")(*params, *grads, *state, *lr)
    got = C.compile(_flat_step(opt, n, with_lr), *specs, backend="interpret")(*params, *grads, *state, *lr)
    assert all(w.dtype == np.float32 for w in want)
    assert_close(want, got, tol=1e-5)


def _kernels(opt, with_lr):
    specs = [O.spec(s) for s in SHAPES]
    state = [O.spec(np.shape(a), str(a.dtype)) for a in opt.init([np.zeros(s, np.float32) for s in SHAPES])]
    step = _flat_step(opt, len(SHAPES), with_lr)
    return C.compile(step, *specs, *specs, *state, *([O.spec(())] if with_lr else []), backend="interpret").report()


def test_the_updates_of_all_parameters_share_few_launches():
    """Each parameter's update fuses into one kernel (vertical fusion); sibling (horizontal)
    fusion bundles kernels that read one buffer, here the learning rate or Adam's step count,
    into one launch. A constant learning rate is a literal in each kernel, no buffer: then the
    updates of SGD stay one launch per parameter."""
    sgd = O.optim.SGD(lr=0.1, momentum=0.9)
    report = _kernels(sgd, with_lr=True)
    assert report["unfused_kernels"] == 3 * 4           # 3 parameters × (mul, add, mul, sub)
    assert report["kernels"] == 1
    assert _kernels(sgd, with_lr=False)["kernels"] <= 3
    assert _kernels(O.optim.RMSprop(momentum=0.9), with_lr=True)["kernels"] == 1
    # Adam: one scalar kernel for the step count and the bias corrections, then the three
    # updates, which read it, in one launch
    assert _kernels(O.optim.Adam(), with_lr=False)["kernels"] == 2


# -- schedules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["step", "exponential"])
def test_schedules_match_torch(kind):
    base_lr = 0.1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    if kind == "step":
        ours, theirs = O.optim.StepLR(base_lr, step_size=3, gamma=0.5), torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    else:
        ours, theirs = O.optim.ExponentialLR(base_lr, gamma=0.9), torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    for epoch in range(10):
        assert abs(ours.lr(epoch) - theirs.get_last_lr()[0]) <= 1e-12 * base_lr
        assert ours(epoch) == ours.lr(epoch)
        opt.step()
        theirs.step()
    assert [O.optim.constant(0.3).lr(e) for e in range(3)] == [0.3] * 3
