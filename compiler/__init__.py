"""lowbit.compiler: quantize float MLPs and compile them to lowbit programs.

Public API::

    compile_mlp(qmodel, cfg, *, batch) -> Program
    compile_gemm(cfg, *, a_shape, weights, bias=None, mult=None, shift=None, relu=False,
                 act_unsigned=False, out_bits=None) -> Program
    compile_network(graph, cfg, *, batch=1, host_im2col=True) -> Program
    Graph(...)                              # networks: conv, pooling, add, linear, ...
    quantize_mlp(model, calib, *, weight_bits=4, act_bits=8) -> QuantizedMLP
    train_digits_mlp(hidden=(64, 32), seed=0) -> DigitsMLP
    verify_tokens(cfg, instrs)              # token balance and race freedom

The passes and IR live in :mod:`.passes` and :mod:`.ir`; the schedule is described in the
docstring of :mod:`.passes`.
"""

from .api import (
    PASSES,
    compile_gemm,
    compile_graph,
    compile_mlp,
    compile_network,
    default_requant,
)
from .conv import pack_inputs, unpack_outputs
from .graph import Graph, GraphError
from .models import DigitsMLP, train_digits_mlp
from .passes import CompileError
from .quantize import (
    FloatLayer,
    FloatMLP,
    QuantizedMLP,
    QuantLayer,
    calibrate_scale,
    quantize_mlp,
    quantize_multiplier,
    quantize_weights,
    weight_range,
)
from .tokens import TokenError, verify_tokens

__all__ = [
    "CompileError",
    "DigitsMLP",
    "FloatLayer",
    "FloatMLP",
    "Graph",
    "GraphError",
    "PASSES",
    "QuantLayer",
    "QuantizedMLP",
    "TokenError",
    "calibrate_scale",
    "compile_gemm",
    "compile_graph",
    "compile_mlp",
    "compile_network",
    "default_requant",
    "pack_inputs",
    "quantize_mlp",
    "quantize_multiplier",
    "quantize_weights",
    "train_digits_mlp",
    "unpack_outputs",
    "verify_tokens",
    "weight_range",
]
