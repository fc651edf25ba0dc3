"""The RTL infrastructure: toolchain, AXI4 memory model, cocotb runner, against a copy engine.

The memory-model tests are pure Python with hand-computed edge numbers (docs/contracts.md).
The RTL tests run ``tests/fixtures/copy_engine.py`` (same ports as ``lowbit_top``) through
``lowbit.sim.rtl.run_top`` with a fresh build cache, so they also show that builds are reused.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict

import pytest
from fixtures.copy_engine import COPY_OFFSET, MAX_BURST, copy_engine_verilog

from lowbit.isa import ID_VALUE
from lowbit.sim.axi_mem import AxiMemModel, AxiPortModel, AxiProtocolError
from lowbit.sim.rtl import RtlError, build_top, run_top
from lowbit.sim.toolchain import VerilatorLintError, lint_verilog, verilator_env

# -- pure-Python memory model ---------------------------------------------------------------

INCR, SIZE4 = 1, 2


def drive(port: AxiPortModel, edges: int, script: dict, *, rready=lambda e: True,
          bready=lambda e: True):
    """Run ``port`` over edges 1..edges; ``script[e]`` gives ``ar``/``aw``/``w`` requests.

    Returns the handshakes as ``("R", edge, data, last)`` and ``("B", edge)``.
    """
    log = []
    for e in range(1, edges + 1):
        out = port.outputs(e)
        if out.rvalid and rready(e):
            log.append(("R", e, out.rdata, out.rlast))
        if out.bvalid and bready(e):
            log.append(("B", e))
        port.edge(e, rready=rready(e), bready=bready(e), **script.get(e, {}))
    return log


def word_mem(n_words=1 << 12):
    mem = bytearray(4 * n_words)
    for i in range(n_words):
        mem[4 * i:4 * i + 4] = (0x1000 + i).to_bytes(4, "little")
    return mem


def port(mem=None, latency=5, writable=True):
    return AxiPortModel(word_mem() if mem is None else mem, name="dmem", beat_bytes=4,
                        latency=latency, writable=writable)


def rbeats(log):
    return [(e, data, last) for kind, e, *rest in log if kind == "R"
            for data, last in [rest]]


def test_read_first_beat_at_t_plus_latency():
    # AR at edge 10, 3 beats from word 0x40, L = 5: beats at 15, 16, 17; last on 17.
    p = port()
    log = drive(p, 30, {10: {"ar": (0x100, 2, SIZE4, INCR)}})
    assert rbeats(log) == [(15, 0x1040, False), (16, 0x1041, False), (17, 0x1042, True)]
    assert p.idle and p.read_bytes == 12 and p.read_bursts == 1


def test_read_latency_one():
    log = drive(port(latency=1), 20, {10: {"ar": (0, 0, SIZE4, INCR)}})
    assert rbeats(log) == [(11, 0x1000, True)]


def test_read_backpressure_delays_beats():
    # rready low at 15 and 16: the beats go at 17, 18, 19.
    log = drive(port(), 30, {10: {"ar": (0x100, 2, SIZE4, INCR)}},
                rready=lambda e: e not in (15, 16))
    assert [e for e, _, _ in rbeats(log)] == [17, 18, 19]


def test_read_bursts_queue_in_order():
    # AR at 10 and 11, two beats each: second burst's beat 0 is available at 16 but the
    # edge after the previous handshake (16) is 17.
    log = drive(port(), 30, {10: {"ar": (0x0, 1, SIZE4, INCR)},
                             11: {"ar": (0x40, 1, SIZE4, INCR)}})
    assert rbeats(log) == [(15, 0x1000, False), (16, 0x1001, True),
                           (17, 0x1010, False), (18, 0x1011, True)]


def test_read_gap_between_bursts():
    log = drive(port(), 50, {10: {"ar": (0x0, 0, SIZE4, INCR)},
                             30: {"ar": (0x4, 0, SIZE4, INCR)}})
    assert [e for e, _, _ in rbeats(log)] == [15, 35]


def test_rvalid_low_until_available():
    p = port()
    p.edge(10, ar=(0x0, 0, SIZE4, INCR))
    assert [p.outputs(e).rvalid for e in (11, 14)] == [False, False]
    assert p.outputs(15).rvalid


def test_write_response_after_last_beat():
    # AW at 10 (2 beats), W at 10 and 11 (last): B available at max(10, 11) + 5 = 16.
    p = port()
    log = drive(p, 30, {10: {"aw": (0x20, 1, SIZE4, INCR), "w": (0xAABBCCDD, 0xF, False)},
                        11: {"w": (0x11223344, 0xF, True)}})
    assert log == [("B", 16)]
    assert p.mem[0x20:0x28] == bytes.fromhex("ddccbbaa44332211")
    assert p.write_bytes == 8 and p.write_bursts == 1 and p.idle


def test_write_data_before_address():
    # W at 3 and 4 (last), AW at 8: B at 8 + 5 = 13; memory written at edge 8.
    p = port()
    script = {3: {"w": (1, 0xF, False)}, 4: {"w": (2, 0xF, True)},
              8: {"aw": (0x0, 1, SIZE4, INCR)}}
    log = drive(p, 7, script)
    assert p.mem[0:4] == (0x1000).to_bytes(4, "little")  # not yet: no AW
    for e in range(8, 31):
        if p.outputs(e).bvalid:
            log.append(("B", e))
        p.edge(e, rready=True, bready=True, **script.get(e, {}))
        if e == 8:
            assert p.mem[0:8] == bytes([1, 0, 0, 0, 2, 0, 0, 0])
    assert log == [("B", 13)]


def test_write_responses_one_per_edge_with_backpressure():
    # Single-beat bursts complete at 10 and 11: B available 15 and 16; bready low at 15.
    log = drive(port(), 30, {10: {"aw": (0x0, 0, SIZE4, INCR), "w": (1, 0xF, True)},
                             11: {"aw": (0x4, 0, SIZE4, INCR), "w": (2, 0xF, True)}},
                bready=lambda e: e != 15)
    assert log == [("B", 16), ("B", 17)]
    # both available at the same edge: one per edge
    log = drive(port(), 30, {10: {"aw": (0x0, 0, SIZE4, INCR)},
                             11: {"aw": (0x4, 0, SIZE4, INCR)},
                             12: {"w": (1, 0xF, True)}, 13: {"w": (2, 0xF, True)}})
    assert log == [("B", 17), ("B", 18)]


def test_write_strobes_and_read_after_write():
    p = port()
    # AW, W and AR at the same edge: the read sees the write (writes land first).
    p.edge(10, aw=(0x0, 0, SIZE4, INCR), w=(0x44332211, 0b0101, True),
           ar=(0x0, 0, SIZE4, INCR))
    assert p.mem[0:4] == bytes([0x11, 0x10, 0x33, 0x00])
    assert p.outputs(15).rdata == 0x00331011


def test_two_ports_share_memory():
    model = AxiMemModel(word_mem(), beat_bytes=4, latency=3)
    model.dmem.edge(1, aw=(0x8, 0, SIZE4, INCR), w=(0xCAFE, 0xF, True))
    model.imem.edge(1, ar=(0x8, 0, SIZE4, INCR))
    assert model.imem.outputs(4) == (True, 0xCAFE, True, False)
    assert model.counters()["imem_read_bytes"] == 4
    assert model.counters()["dram_write_bytes"] == 4
    with pytest.raises(AxiProtocolError, match="imem AW at edge 2: the port is read-only"):
        model.imem.edge(2, aw=(0x0, 0, SIZE4, INCR))


@pytest.mark.parametrize("request_, message", [
    (("ar", (0xFF8, 3, SIZE4, INCR)),
     r"dmem AR at edge 1 \(address 0xff8, len 3\): burst of 4 beats 0xff8..0x1007 crosses a "
     r"4 KiB boundary at 0x1000"),
    (("aw", (0x0, 0, SIZE4, 2)), r"burst type 2 \(WRAP\); only INCR \(1\) is supported"),
    (("ar", (0x0, 0, 3, INCR)), r"size 3 \(8 bytes per beat\); the bus needs size 2"),
    (("ar", (0x2, 0, SIZE4, INCR)), r"address is not aligned to the 4-byte beat"),
    (("ar", (0x4000, 1, SIZE4, INCR)), r"burst 0x4000..0x4007 is outside the 0x4000-byte memory"),
    (("ar", (0x0, 256, SIZE4, INCR)), r"burst of 257 beats; AXI4 allows 1 to 256"),
])
def test_protocol_violations(request_, message):
    kind, req = request_
    with pytest.raises(AxiProtocolError, match=message):
        port().edge(1, **{kind: req})


def test_wlast_checked():
    p = port()
    p.edge(1, aw=(0x0, 1, SIZE4, INCR))
    with pytest.raises(AxiProtocolError, match=r"dmem W at edge 2: beat 0 of the 2-beat burst "
                                               r"at 0x0 \(AW at edge 1\) has wlast=1 but is "
                                               r"not the last"):
        p.edge(2, w=(0, 0xF, True))
    p = port()
    p.edge(1, w=(0, 0xF, False))                       # before its AW: checked at the AW
    with pytest.raises(AxiProtocolError, match="is the last but has wlast=0"):
        p.edge(2, aw=(0x0, 0, SIZE4, INCR))


# -- toolchain --------------------------------------------------------------------------------

def test_verilator_env_is_idempotent():
    env1 = verilator_env()
    env2 = verilator_env(env1)
    assert env1 == env2
    assert env1["MAKEFLAGS"].split().count("CFG_CXXFLAGS_PCH_I=-include") == 1
    root = env1["VERILATOR_ROOT"]
    assert env1["PATH"].split(os.pathsep)[0] == os.path.join(root, "bin")


COPY_WAIVERS = ("DECLFILENAME", "WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE", "PROCASSINIT",
                "UNUSEDSIGNAL")


def test_lint(tmp_path):
    path = tmp_path / "lowbit_top.v"
    path.write_text(copy_engine_verilog())
    with pytest.raises(VerilatorLintError, match="WIDTHEXPAND"):
        lint_verilog(path, "lowbit_top")
    lint_verilog(path, "lowbit_top", waivers=COPY_WAIVERS)


# -- RTL runs of the copy engine ---------------------------------------------------------------

@pytest.fixture(scope="module")
def rtl_cache(tmp_path_factory):
    """A fresh build cache for this module (so the first build really builds)."""
    old = os.environ.get("LOWBIT_CACHE")
    os.environ["LOWBIT_CACHE"] = str(tmp_path_factory.mktemp("lowbit-cache"))
    yield
    if old is None:
        del os.environ["LOWBIT_CACHE"]
    else:
        os.environ["LOWBIT_CACHE"] = old


def bursts(addr, beats, beat_bytes):
    """The copy engine's bursts: <= 16 beats, split at 4 KiB boundaries."""
    out = []
    while beats:
        n = min(MAX_BURST, beats, (4096 - addr % 4096) // beat_bytes)
        out.append((addr, n))
        addr += n * beat_bytes
        beats -= n
    return out


def copy_image(beats, beat_bytes, addr, seed, mem_bytes=1 << 20):
    rnd = random.Random(seed)
    data = rnd.randbytes(beats * beat_bytes)
    mem = bytearray(rnd.randbytes(mem_bytes))
    mem[addr:addr + len(data)] = data
    return mem, data


def replay(trace, image, beat_bytes, latency):
    """Feed the adapter's recorded requests to the pure model; check every edge agrees."""
    model = AxiMemModel(bytearray(image), beat_bytes=beat_bytes, latency=latency)
    by_edge = defaultdict(dict)
    for e, pname, kind, *payload in trace:
        by_edge[e][(pname, kind)] = payload
    for e in range(1, max(by_edge) + 1):
        ev = by_edge.get(e, {})
        for pname in ("dmem", "imem"):                 # dmem first, as the adapter
            p = getattr(model, pname)
            out = p.outputs(e)
            r_hs, b_hs = (pname, "r") in ev, (pname, "b") in ev
            assert out.rvalid == (r_hs or (pname, "r_stall") in ev), (e, pname, "rvalid")
            assert out.bvalid == (b_hs or (pname, "b_stall") in ev), (e, pname, "bvalid")
            if r_hs:
                assert [out.rdata, out.rlast] == ev[(pname, "r")], (e, pname, "rdata")
            w = ev.get((pname, "w"))
            p.edge(e, rready=r_hs, bready=b_hs, ar=ev.get((pname, "ar")),
                   aw=ev.get((pname, "aw")), w=tuple(w) if w else None)
    return model


def test_copy_engine_copies_exactly(rtl_cache):
    beats, bb, latency = 200, 4, 7
    addr = 0x3000 - 5 * bb                      # the first burst is cut at the 4 KiB boundary
    image, data = copy_image(beats, bb, addr, seed=1)
    verilog = copy_engine_verilog(addr_bits=20, bus_bits=32)
    run = run_top(verilog, image, name="copy32", beat_bytes=bb, prog_addr=addr,
                  prog_len=beats, mem_latency=latency, trace=True)
    assert run.built
    dst = addr + COPY_OFFSET
    assert run.mem[dst:dst + len(data)] == data
    expect = bytearray(image)
    expect[dst:dst + len(data)] = data
    assert run.mem == expect                     # nothing else written
    regs, c = run.registers, run.counters
    assert regs["ID"] == ID_VALUE and regs["INSTRS"] == beats and regs["STATUS"] == 2
    n_bursts = len(bursts(addr, beats, bb))
    assert (c["imem_read_bytes"], c["imem_read_bursts"]) == (beats * bb, n_bursts)
    assert (c["dram_write_bytes"], c["dram_write_bursts"]) == (beats * bb, n_bursts)
    assert c["dram_read_bytes"] == 0
    assert beats <= regs["CYCLES_LO"] < c["wall_cycles"] and regs["CYCLES_HI"] == 0
    assert run.in_flight is None
    # the adapter's per-edge behaviour is exactly the pure model's, and so is the memory
    assert {(p, k) for _, p, k, *_ in run.trace} >= {("imem", "ar"), ("imem", "r"),
                                                     ("dmem", "aw"), ("dmem", "w"),
                                                     ("dmem", "b")}
    model = replay(run.trace, image, bb, latency)
    assert model.mem == run.mem and model.idle


def test_build_is_reused(rtl_cache):
    verilog = copy_engine_verilog(addr_bits=20, bus_bits=32)
    build_dir, built = build_top(verilog, name="copy32")
    assert not built                             # built by the previous test
    stamp = (build_dir / "build.json").stat().st_mtime_ns
    image, data = copy_image(64, 4, 0x100, seed=2)
    start = time.perf_counter()
    run = run_top(verilog, image, name="copy32", beat_bytes=4, prog_addr=0x100, prog_len=64,
                  mem_latency=1)
    assert time.perf_counter() - start < 5
    assert not run.built and run.build_dir == build_dir
    assert (build_dir / "build.json").stat().st_mtime_ns == stamp
    assert run.mem[0x10100:0x10100 + len(data)] == data


def test_protocol_violation_is_reported(rtl_cache):
    # CTRL bit 1 makes the copy engine ignore 4 KiB boundaries.
    image, _ = copy_image(32, 4, 0xFF0, seed=3)
    with pytest.raises(RtlError, match=r"imem AR at edge \d+ \(address 0xff0, len 15\): burst "
                                       r"of 16 beats 0xff0..0x102f crosses a 4 KiB boundary"):
        run_top(copy_engine_verilog(addr_bits=20, bus_bits=32), image, name="copy32",
                beat_bytes=4, prog_addr=0xFF0, prog_len=32, mem_latency=3, ctrl=3)


def test_timeout_is_reported(rtl_cache):
    image, _ = copy_image(256, 4, 0x0, seed=4)
    with pytest.raises(RtlError, match=r"RTL did not finish within 40 cycles"):
        run_top(copy_engine_verilog(addr_bits=20, bus_bits=32), image, name="copy32",
                beat_bytes=4, prog_addr=0, prog_len=256, mem_latency=3, timeout_cycles=40)


def test_waves_wide_bus(rtl_cache, tmp_path):
    beats, bb = 100, 16
    addr = 0x2000 - 3 * bb
    image, data = copy_image(beats, bb, addr, seed=5)
    run = run_top(copy_engine_verilog(addr_bits=20, bus_bits=128), image, name="copy128",
                  beat_bytes=bb, prog_addr=addr, prog_len=beats, mem_latency=4, waves=True,
                  out_dir=tmp_path / "run")
    assert run.built and run.build_dir.name.endswith("-fst")
    assert run.mem[addr + COPY_OFFSET:addr + COPY_OFFSET + len(data)] == data
    waves = run.artifacts["waves"]
    assert waves == str(tmp_path / "run" / "waves.fst")
    blob = open(waves, "rb").read()
    assert len(blob) > 1000 and blob[0] == 0       # FST: starts with a header block (type 0)
    try:
        import pywellen
    except ImportError:
        return
    wave = pywellen.Waveform(waves)
    names = {v.full_name for v in wave.all_vars()}
    assert "lowbit_top.dmem__wdata" in names and "lowbit_top.irq" in names
