"""picograd: a small deep-learning compiler. Lazy tensors -> UOp graph -> fused kernels -> LLVM IR (CPU) or CUDA C (GPU).

Start with `from picograd import Tensor`; the path of a tensor through the package is
tensor.py (frontend) -> ir/ (graph, rewrites, gradients) -> engine/ (fusion, realize) ->
codegen/ (lowering, rendering) -> runtime/ (devices, compilers, memory).
"""
from picograd.dtype import dtypes, DType
from picograd.helpers import Context
from picograd.tensor import Tensor, ShapeError, where, cat, stack, normal, no_grad
from picograd.engine.realize import schedule
from picograd.engine.events import CompileEvent, compile_listener
from picograd.engine.jit import jit
from picograd.frontend.scan import (einsum, meshgrid, repeat_interleave, prod, cumprod, cummax, cummin, logcumsumexp, roll, diag, diagonal,
                                    scatter, scatter_add, scatter_reduce, masked_select, nonzero)
from picograd.frontend.sort import sort, argsort, topk
from picograd.frontend.autocast import autocast, get_float32_matmul_precision, set_float32_matmul_precision
from picograd.frontend.multi import MultiTensor, all_reduce, all_gather, reduce_scatter, broadcast
from picograd.frontend.transforms import jvp, vjp, jacobian, hessian, checkpoint
from picograd.runtime.device import device_memory, reset_peak_memory
import picograd.indexing  # noqa: F401  (registers Tensor.__getitem__'s implementation)
import picograd.viz  # noqa: F401  (picograd.viz; VIZ=, PROFILE= and DUMP='s extra files subscribe to the engine)

__all__ = ["Tensor", "no_grad", "dtypes", "DType", "Context", "ShapeError", "where", "cat", "stack", "normal", "schedule", "jit", "CompileEvent",
           "compile_listener", "einsum", "meshgrid", "repeat_interleave", "prod", "cumprod", "cummax", "cummin", "logcumsumexp", "roll", "diag",
           "diagonal", "sort", "argsort", "topk", "scatter", "scatter_add", "scatter_reduce", "masked_select", "nonzero",
           "autocast", "set_float32_matmul_precision", "get_float32_matmul_precision",
           "jvp", "vjp", "jacobian", "hessian", "checkpoint", "device_memory", "reset_peak_memory"]
__all__ += ["MultiTensor", "all_reduce", "all_gather", "reduce_scatter", "broadcast"]
