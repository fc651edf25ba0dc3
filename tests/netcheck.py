"""Shared by the network tests: compile a graph and check every backend against its model."""

import numpy as np

from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
from lowbit.executors import run


def execute(g, cfg, inputs, *, host_im2col=True, backends=("reference", "sim")):
    """Compile ``g``; every backend's outputs must equal ``g.forward(inputs)``. Returns the
    program, the expected outputs and the results by backend."""
    prog = compile_network(g, cfg, host_im2col=host_im2col)
    want = g.forward(inputs)
    results = {}
    for backend in backends:
        res = run(prog, pack_inputs(prog, inputs), backend=backend)
        got = unpack_outputs(prog, res.outputs)
        for name, value in want.items():
            assert got[name].shape == value.shape, (backend, name)
            assert np.array_equal(got[name], value), (backend, name)
        results[backend] = res
    return prog, want, results
