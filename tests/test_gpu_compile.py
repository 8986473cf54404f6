"""What a GPU would build, checked without one: the kernels of representative programs are
compiled by Triton's whole pipeline down to a cubin for sm_80 and sm_90 (its bundled ptxas;
../shared/DESIGN.md), from the same text the interpreter runs. It catches what the interpreter
accepts and the GPU compiler does not: a float64 tl.dot without out_dtype, a helper such as
the NaN-propagating max combine inside tl.reduce, tl.math.erf."""
import inspect

import numpy as np
import pytest
import triton
from triton.backends.compiler import GPUTarget

import ops as O
from compiler.pipeline import TARGETS, Options, compile_function
from runtime.executors import kernel_cache
from runtime.training import zoo

POINTER_TYPE = {"float32": "*fp32", "float64": "*fp64", "int64": "*i64", "int32": "*i32", "bool": "*i1"}


def lenet_step():
    model = zoo.get("lenet")
    params = model.init(np.random.default_rng(0))
    return model.loss, model.specs(params, 16), tuple(range(len(params)))


PROGRAMS = {
    "softmax (NaN-propagating max)": (lambda x: O.softmax(x, 1), [O.spec((64, 100))], None),
    "argmax and amax over long rows": (lambda x: (O.argmax(x, 1), O.amax(x, 1)), [O.spec((4, 5000))], None),
    "gelu and its gradient (erf)": (lambda x: O.sum(O.gelu(x)), [O.spec((300,))], (0,)),
    "float64 matmul and its gradient": (lambda a, b: O.sum(a @ b), [O.spec((32, 16), "float64"),
                                                                  O.spec((16, 8), "float64")], (0,)),
    "lenet training step": lenet_step(),
}


def compile_to_cubin(text, kernel, names_to_dtype, arch):
    """One kernel file, compiled for `arch` with launch()'s defaults (the GPU's first config)."""
    module = kernel_cache.load(text, interpret=False)
    jit = getattr(module, kernel.name)
    defaults = {k: p.default for k, p in inspect.signature(module.launch).parameters.items()
                if p.default is not inspect.Parameter.empty}
    signature = {arg: POINTER_TYPE[names_to_dtype[arg[:-len("_ptr")]]] if arg.endswith("_ptr") else "constexpr"
                 for arg in jit.arg_names}
    constexprs = {arg: defaults[arg] for arg, kind in signature.items() if kind == "constexpr"}
    options = {k: defaults[k] for k in ("num_warps", "num_stages") if k in defaults}
    return triton.compile(triton.compiler.ASTSource(jit, signature, constexprs),
                          target=GPUTarget("cuda", arch, 32), options=options)


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_every_kernel_compiles_to_a_cubin(program, arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))        # compile for real, not from Triton's cache
    fn, specs, grad = PROGRAMS[program]
    compiled = compile_function(fn, specs, Options(grad_argnums=grad, target=TARGETS[f"sm_{arch}"]))
    names_to_dtype = {name: node.dtype for node, name in compiled.names.items()}
    for kernel, text in zip(compiled.kernels, compiled.sources):
        cubin = compile_to_cubin(text, kernel, names_to_dtype, arch).asm["cubin"]
        assert len(cubin) > 1000, kernel.name
