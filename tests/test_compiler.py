"""The compiler: random GEMMs and MLPs on several configs, bit-exact against numpy.

The independent reference is a plain integer matmul (wrapped at ``acc_bits``) followed by
``lowbit.layout.requantize`` (the documented STORE arithmetic), or the quantizer's
``QuantizedMLP.forward_int``; neither builds instructions.
"""

import re
from dataclasses import replace

import numpy as np
import pytest

from lowbit import isa
from lowbit.compiler import (
    PASSES,
    CompileError,
    FloatLayer,
    FloatMLP,
    TokenError,
    compile_gemm,
    compile_mlp,
    passes,
    quantize_mlp,
    verify_tokens,
)
from lowbit.config import AccelConfig, preset
from lowbit.isa import LoadTarget, Opcode
from lowbit.layout import padded_rows, requantize, wrap
from lowbit.program import Program
from lowbit.sim.reference import run_reference

CONFIGS = {
    "tiny": preset("tiny"),
    "8x8": preset("8x8"),
    "2x2w2": AccelConfig(rows=2, cols=2, weight_bits=2, act_depth=64, weight_tiles=4,
                         acc_depth=32, param_depth=4, bus_bits=32, queue_depth=2,
                         mem_bytes=1 << 18),
    "2x2w3": AccelConfig(rows=2, cols=2, weight_bits=3, act_depth=16, weight_tiles=2,
                         acc_depth=16, param_depth=4, bus_bits=32, queue_depth=2,
                         mem_bytes=1 << 18),
    # act scratchpad of 16 lines x 4 bytes: a K above 64 cannot stay resident
    "smallact": AccelConfig(rows=4, cols=4, weight_bits=4, act_depth=16, weight_tiles=4,
                            acc_depth=32, param_depth=4, bus_bits=32, queue_depth=2,
                            mem_bytes=1 << 18),
    # two channels on a 256-bit bus: 16 lines per beat, parameter lines share beats
    "2x2b256": AccelConfig(rows=2, cols=2, weight_bits=8, act_depth=64, weight_tiles=4,
                           acc_depth=32, param_depth=4, bus_bits=256, queue_depth=4,
                           mem_bytes=1 << 18),
}

# (config, M, K, N, seed); none of M, K, N is a multiple of the array; K spans several tiles
GEMM_CASES = [
    ("tiny", 5, 9, 7, 1), ("tiny", 1, 3, 1, 2), ("tiny", 37, 45, 22, 3),
    ("tiny", 70, 13, 30, 4), ("tiny", 130, 21, 9, 5),
    ("8x8", 3, 17, 5, 6), ("8x8", 45, 70, 33, 7), ("8x8", 200, 19, 12, 8),
    ("2x2w2", 7, 13, 5, 9), ("2x2w2", 38, 12, 3, 10), ("2x2w2", 19, 31, 11, 11),
    ("2x2w3", 9, 15, 7, 12), ("2x2w3", 33, 9, 5, 13), ("2x2w3", 5, 41, 3, 14),
    ("smallact", 6, 70, 9, 15), ("smallact", 21, 101, 6, 16), ("smallact", 3, 250, 5, 17),
    ("2x2b256", 17, 9, 7, 18), ("2x2b256", 40, 13, 3, 19),
]


def _weights(cfg, rng, k, n):
    wb = cfg.weight_bits
    return rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(k, n))


def _check_program(prog: Program):
    """ISA rules, layout alignment and the token protocol of a compiled program."""
    cfg = prog.config
    prog.validate()
    assert verify_tokens(cfg, prog.instrs) <= 4 * cfg.queue_depth + 8
    lpb, B = cfg.lines_per_beat, cfg.beat_bytes
    for ins in prog.instrs:
        if ins.opcode == Opcode.LOAD and ins.target == LoadTarget.ACT:
            assert (ins.sp_addr * B // cfg.rows) % lpb == 0
        if ins.opcode == Opcode.STORE:
            assert (ins.rows * cfg.cols) % B == 0 and ins.dram_addr % B == 0
    for addr, _ in prog.segments:
        assert addr % B == 0
    for ref in prog.inputs + prog.outputs:
        assert ref.addr % B == 0
    try:
        from lowbit.sim.cycle import simulate_timing
    except ImportError:      # pragma: no cover - the cycle simulator is another module
        return None
    _, counters = simulate_timing(prog, mem_latency=20)   # raises on a token deadlock
    assert "unbalanced_tokens" not in counters
    return counters


def _same_counters(ref: dict, sim: dict | None):
    """Counters both executors report must agree (``lowbit.executors`` contract)."""
    if sim is not None:
        shared = set(ref) & set(sim)
        assert {"instrs", "macs", "dram_read_bytes", "dram_write_bytes"} <= shared
        assert {k: ref[k] for k in shared} == {k: sim[k] for k in shared}


@pytest.mark.parametrize("name,m,k,n,seed", GEMM_CASES)
def test_gemm_matches_numpy(name, m, k, n, seed):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    w = _weights(cfg, rng, k, n)
    act_unsigned, relu = bool(seed % 2), bool(seed % 3 == 0)
    out_unsigned, out_bits = relu and seed % 2 == 0, int(rng.integers(2, 9))
    bias = rng.integers(-3000, 3000, size=n)
    mult = rng.integers(1 << 14, 1 << 16, size=n)
    shift = rng.integers(10, 20, size=n)
    prog = compile_gemm(cfg, a_shape=(m, k), weights=w, bias=bias, mult=mult, shift=shift,
                        relu=relu, act_unsigned=act_unsigned, out_bits=out_bits,
                        out_unsigned=out_unsigned)
    sim = _check_program(prog)
    x = rng.integers(0, 256, (m, k)) if act_unsigned else rng.integers(-128, 128, (m, k))
    res = run_reference(prog, {"x": x})
    _same_counters(res.counters, sim)
    got = res.outputs["y"]
    want = requantize(wrap(x @ w, cfg.acc_bits), bias, mult, shift, relu=relu,
                      out_bits=out_bits, out_unsigned=out_unsigned)
    assert got.shape == (m, n)
    assert np.array_equal(got, want)
    assert res.counters["macs"] == sum(i.rows for i in prog.instrs
                                       if i.opcode == Opcode.COMPUTE) * cfg.pes
    lt = prog.meta["layers"][0]
    if name == "smallact" and k > 64:
        assert not lt["act_resident"]          # K larger than the scratchpad: streamed


def test_default_requant_uses_the_output_range():
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(0)
    w = _weights(cfg, rng, 40, 12)
    x = rng.integers(-128, 128, size=(64, 40))
    y = run_reference(compile_gemm(cfg, a_shape=(64, 40), weights=w), {"x": x}).outputs["y"]
    assert 40 <= np.abs(y).max() <= 127 and y.std() > 10


def _random_mlp(rng, dims, wb, ab, *, signed_input=False):
    layers = [FloatLayer(rng.normal(size=(dims[i], dims[i + 1])) / np.sqrt(dims[i]),
                         rng.normal(size=dims[i + 1]) * 0.1, relu=i < len(dims) - 2)
              for i in range(len(dims) - 1)]
    calib = rng.uniform(-1 if signed_input else 0, 1, size=(64, dims[0]))
    return quantize_mlp(FloatMLP(tuple(layers)), calib, weight_bits=wb, act_bits=ab), calib


MLP_CASES = [   # config, layer widths, batch, act bits, signed input
    ("tiny", (10, 13, 6), 9, 8, False),
    ("tiny", (23, 17, 9, 5), 40, 6, True),
    ("8x8", (30, 20, 11), 19, 8, True),
    ("2x2w2", (7, 5, 3), 6, 4, False),
    ("2x2w3", (9, 6, 4), 11, 8, True),
    ("smallact", (90, 12, 7), 5, 8, False),
]


@pytest.mark.parametrize("name,dims,batch,ab,signed", MLP_CASES)
def test_mlp_matches_forward_int(name, dims, batch, ab, signed):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(len(dims) * 100 + batch)
    q, calib = _random_mlp(rng, dims, cfg.weight_bits, ab, signed_input=signed)
    prog = compile_mlp(q, cfg, batch=batch)
    _check_program(prog)
    assert [r.name for r in prog.inputs] == ["x"] and [r.name for r in prog.outputs] == ["y"]
    assert prog.inputs[0].scale == q.input_scale and prog.outputs[0].scale == q.output_scale
    xq = q.quantize_input(rng.uniform(-1 if signed else 0, 1, size=(batch, dims[0])))
    got = run_reference(prog, {"x": xq}).outputs["y"]
    assert np.array_equal(got, q.forward_int(xq))


@pytest.mark.parametrize("name,wb", [("tiny", 4), ("8x8", 8)])
def test_digits_mlp_end_to_end(name, wb):
    from lowbit.compiler import train_digits_mlp

    d = train_digits_mlp(max_iter=60)
    q = quantize_mlp(d.model, d.x_train, weight_bits=wb, act_bits=8)
    prog = compile_mlp(q, CONFIGS[name], batch=50)
    _check_program(prog)
    xq = q.quantize_input(d.x_test[:50])
    got = run_reference(prog, {"x": xq}).outputs["y"]
    assert np.array_equal(got, q.forward_int(xq))


def test_program_file_round_trip(tmp_path):
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(4)
    w = _weights(cfg, rng, 11, 6)
    prog = compile_gemm(cfg, a_shape=(7, 11), weights=w)
    again = Program.load(prog.save(tmp_path / "g.lbp"))
    x = rng.integers(-128, 128, size=(7, 11))
    assert np.array_equal(run_reference(again, x).outputs["y"],
                          run_reference(prog, x).outputs["y"])


def test_memory_map_and_schedule_shape():
    cfg = CONFIGS["tiny"]
    w = _weights(cfg, np.random.default_rng(1), 9, 10)
    prog = compile_gemm(cfg, a_shape=(6, 9), weights=w)
    mm = prog.meta["memory_map"]
    assert mm["code"] == 0 == prog.prog_addr
    assert len(prog.code) <= mm["$w0"] < mm["$p0"] < mm["x"] < mm["y"]
    assert prog.inputs[0].addr == mm["x"] and prog.outputs[0].addr == mm["y"]
    # weights are stored in the order the loads consume them: tile (n, k), n-major
    kinds = [(i.opcode, i.get("target")) for i in prog.instrs]
    wloads = [i for i in prog.instrs if i.opcode == Opcode.LOAD and i.target == 1]
    assert [i.dram_addr for i in wloads] == sorted(i.dram_addr for i in wloads)
    assert wloads[0].dram_addr == mm["$w0"]
    assert kinds[-1] == (Opcode.END, 0)
    stores = [i for i in prog.instrs if i.opcode == Opcode.STORE]
    mt = prog.meta["layers"][0]["mt"]
    assert mt == 6           # one M tile; short tiles: three accumulator buffers of 6 lines
    assert [s.acc_addr for s in stores] == [0, 6, 12]     # a new buffer per output tile


# -- the token verifier ---------------------------------------------------------------------


def _compiled():
    cfg = CONFIGS["tiny"]
    w = _weights(cfg, np.random.default_rng(2), 10, 9)
    return compile_gemm(cfg, a_shape=(8, 10), weights=w)


def _edit(instrs, index, **fields):
    ins = instrs[index]
    d = dict(ins.fields)
    d.update(fields)
    out = list(instrs)
    out[index] = isa.make(ins.opcode, **d)
    return out


def test_verifier_catches_a_missing_pop():
    prog = _compiled()
    i = next(i for i, ins in enumerate(prog.instrs)
             if ins.opcode == Opcode.COMPUTE and ins.pop_prev)
    broken = _edit(prog.instrs, i, pop_prev=0)
    with pytest.raises(TokenError, match=re.escape(f"instruction {i} (COMPUTE(") +
                       r".*reads what instruction \d+ \(LOAD\(.*\) writes, but no token "
                       r"orders them") as exc:
        verify_tokens(prog.config, broken)
    assert str(exc.value).startswith("race (RAW) on ")


def test_verifier_catches_a_missing_push():
    prog = _compiled()
    i = next(i for i, ins in enumerate(prog.instrs)
             if ins.opcode == Opcode.LOAD and ins.push_next)
    broken = _edit(prog.instrs, i, push_next=0)
    # later pops now match the wrong pushes; the last one has none
    with pytest.raises(TokenError, match=r"pops a load->compute token that no earlier "
                                         r"instruction pushes \(pop #\d+; \d+ pushed so far\)"):
        verify_tokens(prog.config, broken)


def test_verifier_catches_unbalanced_tokens():
    prog = _compiled()
    i = max(i for i, ins in enumerate(prog.instrs) if ins.opcode == Opcode.COMPUTE)
    broken = _edit(prog.instrs, i, push_prev=1)
    with pytest.raises(TokenError, match=re.escape("tokens do not balance: ")):
        verify_tokens(prog.config, broken)


def test_verifier_catches_a_store_before_its_compute():
    prog = _compiled()
    instrs = list(prog.instrs)
    s = next(i for i, ins in enumerate(instrs) if ins.opcode == Opcode.STORE)
    bare = isa.make(Opcode.STORE, **{k: v for k, v in instrs[s].fields if not k.startswith("p")
                                     or k == "param_addr"})
    instrs[s] = bare                              # no pop: reads accumulators unordered
    with pytest.raises(TokenError, match=r"race \(RAW\) on (acc|param) cell \d+: "
                                         rf"instruction {s} \(STORE"):
        verify_tokens(prog.config, instrs)


def test_verifier_catches_write_after_read():
    cfg = CONFIGS["tiny"]
    mk = isa.make
    instrs = [
        mk(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=0, rows=1, row_beats=4, dram_addr=0,
           stride=0, push_next=1),
        mk(Opcode.COMPUTE, act_addr=0, weight_addr=0, acc_addr=0, rows=4, pop_prev=1),
        mk(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=2, rows=1, row_beats=1, dram_addr=64,
           stride=0),
        mk(Opcode.END),
    ]
    with pytest.raises(TokenError, match=re.escape("race (WAR) on act cell 2: instruction 2 "
                                                   "(LOAD(") + r".*overwrites what "
                                                   r"instruction 1 \(COMPUTE\(.*still reads"):
        verify_tokens(cfg, instrs)
    instrs[1] = _edit(instrs, 1, push_prev=1)[1]
    instrs[2] = _edit(instrs, 2, pop_next=1)[2]
    verify_tokens(cfg, instrs)                   # ordered now


def test_verifier_knows_every_group_of_a_2d_store():
    """A 2-D STORE reads accumulator lines acc_addr + g * acc_pitch + (0..rows-1) and writes
    the beats of each group: a COMPUTE overwriting a line only a later group reads, and a
    LOAD reading a beat only a later group writes, race with it until tokens order them;
    the gaps between groups are free."""
    cfg = CONFIGS["tiny"]                          # 4-byte lines, 4-byte beats
    mk = isa.make
    store = mk(Opcode.STORE, acc_addr=0, rows=2, reps_m1=2, acc_pitch=5, dram_pitch=7,
               out_bits=8, dram_addr=0x400)   # acc 0-1, 5-6, 10-11; beats 256-257, 263-264,
    gap = mk(Opcode.COMPUTE, act_addr=0, weight_addr=0, acc_addr=12, rows=3)   # 270-271
    verify_tokens(cfg, [store, gap, mk(Opcode.END)])       # lines 12-14: untouched
    late = mk(Opcode.COMPUTE, act_addr=0, weight_addr=0, acc_addr=11, rows=1)
    with pytest.raises(TokenError, match=re.escape("race (WAR) on acc cell 11: instruction 1 "
                                                   "(COMPUTE(")):
        verify_tokens(cfg, [store, late, mk(Opcode.END)])
    last = 0x400 // 4 + 2 * 7 + 1                  # the last beat of group 2
    for beat, race in ((last, True), (last + 1, False), (0x400 // 4 + 3, False)):
        load = mk(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=0, rows=1, row_beats=1,
                  dram_addr=beat * 4, stride=0)
        if race:
            with pytest.raises(TokenError, match=re.escape(
                    f"race (RAW) on dram cell {beat}: instruction 1 (LOAD(")):
                verify_tokens(cfg, [store, load, mk(Opcode.END)])
        else:
            verify_tokens(cfg, [store, load, mk(Opcode.END)])


def test_verifier_bounds_outstanding_tokens():
    """300 loads pushing before 300 computes popping could overflow the 8-bit counter."""
    cfg = CONFIGS["tiny"]
    mk = isa.make
    n = 300
    loads = [mk(Opcode.LOAD, target=LoadTarget.ACT, sp_addr=i, rows=1, row_beats=1,
                dram_addr=0, stride=0, push_next=1) for i in range(n)]     # line i
    computes = [mk(Opcode.COMPUTE, act_addr=i, weight_addr=0, acc_addr=0, rows=1, pop_prev=1)
                for i in range(n)]
    with pytest.raises(TokenError, match=re.escape(
            "up to 300 load->compute tokens may be outstanding when instruction 300 "
            "(COMPUTE(") + r".*\) pops; the hardware counter holds 255"):
        verify_tokens(cfg, loads + computes + [mk(Opcode.END)])
    interleaved = [x for pair in zip(loads, computes, strict=True) for x in pair]
    assert verify_tokens(cfg, interleaved + [mk(Opcode.END)]) == cfg.queue_depth + 1


def test_layer_boundary_forwards_store_to_load_through_compute():
    """The next layer's activation LOAD reads what the last STORE wrote (RAW through DRAM):
    a SYNC on the compute unit takes the store's token and gives one to the load."""
    rng = np.random.default_rng(0)
    fm = FloatMLP((FloatLayer(rng.normal(size=(20, 16)), np.zeros(16)),
                   FloatLayer(rng.normal(size=(16, 5)), np.zeros(5), relu=False)))
    q = quantize_mlp(fm, rng.uniform(0, 1, (50, 20)), weight_bits=8)
    prog = compile_mlp(q, preset("16x16"), batch=3)
    _check_program(prog)
    ops = [(i.opcode, i.get("unit"), i.get("target"), i.pop_prev, i.pop_next, i.push_prev,
            i.push_next) for i in prog.instrs]
    store = ops.index((Opcode.STORE, 0, 0, 1, 0, 1, 0))           # pops C, pushes to C
    assert ops[store + 1] == (Opcode.SYNC, 1, 0, 0, 1, 1, 0)       # takes S, gives L
    assert ops[store + 2][:5] == (Opcode.LOAD, 0, LoadTarget.ACT, 0, 1)   # takes it
    assert sum(op[0] == Opcode.SYNC for op in ops) == 1


def test_token_pass_is_checked_by_its_verifier(monkeypatch):
    """A token pass that drops a flag is caught right after the pass."""
    real = passes.assign_tokens

    def lossy(cfg, ops, bases):
        out = real(cfg, ops, bases)
        i = next(i for i, op in enumerate(out) if op.get("pop_prev") and
                 op.opcode == Opcode.COMPUTE)
        out[i] = out[i].with_args(pop_prev=0)
        return out

    monkeypatch.setattr(passes, "assign_tokens", lossy)
    with pytest.raises(CompileError, match=r"^tokens: race \(RAW\) on .*: op \d+ \(COMPUTE"):
        _compiled()


# -- errors, dumps ---------------------------------------------------------------------------


def test_model_too_large_for_memory():
    cfg = CONFIGS["tiny"]          # 1 MiB of external memory
    w = _weights(cfg, np.random.default_rng(0), 600, 8)
    with pytest.raises(ValueError, match=re.escape(
            "model needs 1218464 bytes of external memory but mem_bytes is 1048576 (code not "
            "counted, weights 2400, params 64, act 1216000 bytes); use a config with "
            "mem_bytes >= 2097152 or a smaller batch")):
        compile_gemm(cfg, a_shape=(2000, 600), weights=w)
    # data fits but the code does not: refused when the memory map is made
    small = replace(CONFIGS["2x2w2"], mem_bytes=1 << 16)
    w = _weights(small, np.random.default_rng(0), 87, 36)
    with pytest.raises(ValueError, match=r"^model needs \d+ bytes of external memory but "
                                         r"mem_bytes is 65536 \(code \d+, weights"):
        compile_gemm(small, a_shape=(21, 87), weights=w)


def test_gemm_argument_errors():
    cfg = CONFIGS["tiny"]
    w = np.zeros((5, 2), np.int64)
    w[0, 1] = 9
    with pytest.raises(ValueError, match=re.escape(
            "weight 9 at [0, 1] is out of range for weight_bits=4; allowed -8..7")):
        compile_gemm(cfg, a_shape=(3, 5), weights=w)
    with pytest.raises(ValueError, match=re.escape(
            "weights must have shape (5, N) for a_shape (3, 5), not (4, 2)")):
        compile_gemm(cfg, a_shape=(3, 5), weights=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=re.escape("mult 70000 is out of range; allowed "
                                                   "0..65535")):
        compile_gemm(cfg, a_shape=(3, 5), weights=np.zeros((5, 2)), mult=70000, shift=0)
    with pytest.raises(ValueError, match=re.escape("out_bits must be an integer from 2 to 8, "
                                                   "not 9")):
        compile_gemm(cfg, a_shape=(3, 5), weights=np.zeros((5, 2)), out_bits=9)


def test_mlp_argument_errors():
    rng = np.random.default_rng(0)
    q, _ = _random_mlp(rng, (6, 4, 3), 8, 8)
    with pytest.raises(ValueError, match=re.escape(
            "model has 8-bit weights but the accelerator has weight_bits=4; quantize with "
            "weight_bits=4")):
        compile_mlp(q, CONFIGS["tiny"], batch=4)
    with pytest.raises(ValueError, match=re.escape("batch must be a positive integer, "
                                                   "not 0")):
        compile_mlp(q, CONFIGS["8x8"], batch=0)


def test_dump_after_every_pass():
    cfg = CONFIGS["tiny"]
    seen = []
    w = _weights(cfg, np.random.default_rng(3), 9, 5)
    compile_gemm(cfg, a_shape=(5, 9), weights=w, dump="all",
                 dump_fn=lambda name, text: seen.append((name, text)))
    assert [n for n, _ in seen] == list(PASSES)
    text = dict(seen)
    assert "gemm: y = linear(x, w[9, 5]" in text["graph"]
    assert "layer 0: M=5 (padded 5) K=9 N=5" in text["tile"]
    assert "tokens not assigned" in text["schedule"] and "COMPUTE" in text["schedule"]
    assert "tokens assigned" in text["tokens"] and "[" in text["tokens"]
    assert "region $w0: weights" in text["allocate"] and "@ 0x" in text["allocate"]
    with pytest.raises(ValueError, match="dump names unknown pass 'lower'; passes are "
                                         "graph, tile, schedule, tokens, allocate"):
        compile_gemm(cfg, a_shape=(5, 9), weights=w, dump=["lower"])


# -- performance ----------------------------------------------------------------------------


def test_gemm_256_on_16x16_reaches_80_percent_of_ideal():
    simulate_timing = pytest.importorskip("lowbit.sim.cycle").simulate_timing
    cfg = preset("16x16")
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(256, 256))
    prog = compile_gemm(cfg, a_shape=(256, 256), weights=w)
    cycles, counters = simulate_timing(prog, mem_latency=20)
    ideal = 256 ** 3 // cfg.pes
    assert counters["macs"] == 256 ** 3
    assert ideal / cycles >= 0.8, (cycles, ideal)
    assert len(prog.instrs) < 2000
    # weights prefetch several tiles per LOAD; M tiles are large
    assert max(i.rows for i in prog.instrs
               if i.opcode == Opcode.LOAD and i.target == LoadTarget.WEIGHT) > 1
    assert prog.meta["layers"][0]["mt"] >= 64
    assert padded_rows(cfg, 256) == 256


# -- pass verifiers ---------------------------------------------------------------------------


def test_pass_verifiers_reject_corrupted_ir():
    from lowbit.compiler import ir as irmod

    cfg = CONFIGS["tiny"]
    w = _weights(cfg, np.random.default_rng(0), 9, 6)
    graph = irmod.GraphIR(
        config=cfg, tensors=(irmod.TensorSpec("x", 5, 9, True, 8, 1.0, "input"),
                             irmod.TensorSpec("y", 5, 6, True, 8, 1.0, "output")),
        layers=(irmod.LinearSpec("gemm", "x", "y", w, np.zeros(6, np.int64),
                                 np.ones(6, np.int64), np.zeros(6, np.int64), False, 8,
                                 False, False),),
        inputs=("x",), outputs=("y",))
    passes.verify_graph(graph)
    bad_graph = replace(graph, layers=(replace(graph.layers[0], weight=w[:8]),))
    with pytest.raises(CompileError, match=re.escape(
            "gemm: weight shape (8, 6) does not match x [5, 9] -> y [5, 6]")):
        passes.verify_graph(bad_graph)

    tiled = passes.plan_tiles(graph)
    passes.verify_tiling(tiled)
    lt = tiled.tilings[0]
    bad = replace(tiled, tilings=(replace(lt, m_tiles=((0, 3),)),))
    with pytest.raises(CompileError, match=re.escape("layer 0: M tiles cover 3 rows, not 5")):
        passes.verify_tiling(bad)

    sched = passes.schedule(tiled)
    passes.verify_schedule(sched)
    dropped = replace(sched, ops=tuple(op for op in sched.ops if op.opcode != Opcode.STORE))
    with pytest.raises(CompileError, match="schedule has 0 STOREs, expected 2"):
        passes.verify_schedule(dropped)
    too_far = replace(sched, ops=(sched.ops[0].with_args(sp_addr=10 ** 5),) + sched.ops[1:])
    with pytest.raises(CompileError, match=r"^schedule: instruction 0 \(LOAD\(.*\): writes "
                                           r"beats 100000\.\."):
        passes.verify_schedule(too_far)

    tok = passes.tokens(sched)
    passes.verify_tokens_pass(tok)
    with pytest.raises(CompileError, match=r"^tokens: "):
        passes.verify_tokens_pass(replace(tok, ops=sched.ops))     # flags removed

    alloc = passes.allocate(tok)
    passes.verify_allocation(alloc)
    overlap = dict(alloc.addresses, y=alloc.addresses["x"])
    with pytest.raises(CompileError, match="allocation: (x overlaps y|y overlaps x)"):
        passes.verify_allocation(replace(alloc, addresses=overlap))
    prog = passes.emit(alloc)
    passes.verify_program(prog)
