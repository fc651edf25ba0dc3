"""Real networks through the generated Verilog (Verilator): the digits CNN (trained and
quantized, mixed precision, 4-bit activations), the MLPerf Tiny FC autoencoder and the first
residual stack of ResNet-8 at the full 32x32x3 input, all on the ``tiny`` preset (4x4, W4,
32-bit bus; its Verilator build is shared with the other RTL tests).

Each network is compiled once and run on ``reference``, ``sim`` and ``rtl``: the outputs must
equal the graph's numpy model bit for bit, the simulator's cycle count must equal the RTL's
``CYCLES`` register and the memory traffic counters must agree. About 30 s in all
(autoencoder ~11 s, ResNet-8 stack ~8 s, the CNN ~1.5 s per variant after a 3 s training).
"""

import numpy as np
import pytest

from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
from lowbit.compiler.cnn import quantize_cnn, train_digits_cnn
from lowbit.compiler.zoo import build, resnet8, sample_inputs
from lowbit.config import PRESETS
from lowbit.executors import run
from lowbit.isa import Opcode

TINY = PRESETS["tiny"]
COUNTERS = ("dram_read_bytes", "dram_write_bytes", "imem_read_bytes")


def _cosim(g, inputs, *, batch=1):
    prog = compile_network(g, TINY, batch=batch)
    want = g.forward(inputs)
    results = {}
    for backend in ("reference", "sim", "rtl"):
        res = run(prog, pack_inputs(prog, inputs), backend=backend)
        got = unpack_outputs(prog, res.outputs)
        for name, value in want.items():
            assert np.array_equal(got[name], value), (backend, name)
        results[backend] = res
    sim, rtl = results["sim"], results["rtl"]
    assert sim.cycles == rtl.cycles > 0
    for key in COUNTERS:
        assert sim.counters[key] == rtl.counters[key], key
    return dict(results, program=prog)


@pytest.fixture(scope="module")
def digits():
    return train_digits_cnn(epochs=4)


@pytest.mark.parametrize("weight_bits,act_bits", [((4, 2, 4), 4), ((4, 4, 4), 8)],
                         ids=["W4-2-4A4", "W4A8"])
def test_digits_cnn_on_rtl(digits, weight_bits, act_bits):
    q = quantize_cnn(digits.model, digits.x_train[:300], weight_bits=weight_bits,
                     act_bits=act_bits)
    assert q.graph.weight_bits <= TINY.weight_bits
    xq = q.quantize_input(digits.x_test[:1])
    prog = _cosim(q.graph, {"image": xq[0]})["program"]
    # the 3x3 convolution's 4x4 tiles (rows 6 accumulator lines apart) go out as one 2-D
    # STORE per channel block
    assert any(i.opcode == Opcode.STORE and i.reps_m1 for i in prog.instrs)


def test_fc_autoencoder_on_rtl():
    g = build("fc_autoencoder", weight_bits=TINY.weight_bits)
    _cosim(g, sample_inputs(g, seed=1, batch=2), batch=2)


def test_resnet8_first_stack_on_rtl():
    """Stem convolution and the first residual stack (16 channels, 32x32): ~334 K cycles."""
    g = resnet8(weight_bits=TINY.weight_bits, stacks=1)
    assert g.tensor("s1_add").shape == (32, 32, 16)
    _cosim(g, sample_inputs(g, seed=1))
