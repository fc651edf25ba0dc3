"""Unit tests of hardware blocks against Python models, under amaranth.sim."""

import numpy as np
import pytest
from amaranth import Cat, ClockSignal, Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import memory
from amaranth.sim import Simulator

from lowbit import isa
from lowbit.config import AccelConfig
from lowbit.hw import mul
from lowbit.hw.decode import field
from lowbit.hw.linemem import LineMemory
from lowbit.hw.load import LoadUnit, next_burst
from lowbit.hw.mul import fits_dsp, product_register
from lowbit.hw.pe import PE, SystolicArray
from lowbit.hw.store import StoreUnit
from lowbit.layout import param_zero, requantize
from lowbit.timing import LOAD_BURSTS_OUTSTANDING, LOAD_OUTSTANDING

from amaranth_top import _Port


def _run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def _wrap(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.parametrize("wb", [2, 3, 4, 8])
def test_pe_matches_model(wb):
    acc_bits = 20
    dut = PE(weight_bits=wb, psum_bits=acc_bits)
    rng = np.random.default_rng(wb)
    banks = [0, 0]

    async def tb(ctx):
        prod = 0
        for _ in range(300):
            a = int(rng.integers(-256, 256))
            sel = int(rng.integers(0, 2))
            p = int(rng.integers(-(1 << 19), 1 << 19))
            load = int(rng.random() < 0.3)
            bank = int(rng.integers(0, 2))
            w = int(rng.integers(-(1 << (wb - 1)), 1 << (wb - 1)))
            for sig, v in ((dut.a_in, a), (dut.sel_in, sel), (dut.p_in, p),
                           (dut.w_load, load), (dut.w_bank, bank), (dut.w_data, w)):
                ctx.set(sig, v)
            # p_out adds the product registered on the previous edge
            expect = _wrap(p + prod, acc_bits)
            prod = a * banks[sel]
            await ctx.tick()
            if load:
                banks[bank] = w
            assert ctx.get(dut.p_out) == expect and ctx.get(dut.prod) == prod
            assert ctx.get(dut.a_out) == a and ctx.get(dut.sel_out) == sel

    _run(dut, tb)


def _tile_bits(w, wb):
    value = 0
    for k, x in enumerate(w.reshape(-1)):
        value |= (int(x) & ((1 << wb) - 1)) << (k * wb)
    return value


@pytest.mark.parametrize("n,wb,acc,taps", [(2, 2, 32, 2), (4, 3, 32, 4), (8, 8, 32, 8),
                                           (4, 8, 16, 4), (16, 4, 32, 16), (4, 4, 32, 3),
                                           (8, 4, 32, 5), (4, 2, 32, 0)])
def test_array_matches_matmul_with_bank_reload(n, wb, acc, taps):
    """Random vectors alternate banks and modes (matrix / depthwise FIR mode); bank 0 is
    reloaded at the earliest allowed edge. Expected values come from numpy per vector: in
    FIR mode lane i sums the products of the next ``taps`` vectors that use the same bank
    (without taps the mode bit is ignored)."""
    dut = SystolicArray(rows=n, cols=n, weight_bits=wb, acc_bits=acc, dw_taps=taps)
    rng = np.random.default_rng(n + acc + taps)
    lo, hi = -(1 << (wb - 1)), 1 << (wb - 1)
    tiles = [rng.integers(lo, hi, (n, n)) for _ in range(3)]
    back = 20 + max(20, dut.drain + 1)    # first vector back on bank 0 (tile 2)
    total = back + 20
    vecs = rng.integers(-256, 256, (total, n))
    sels = rng.integers(0, 2, total)
    sels[20:] = 1          # vectors 20..back-1 use bank 1 while bank 0 is reloaded
    sels[back:] = 0
    dws = rng.integers(0, 2, total)
    reload_at = 19 + dut.drain + 1   # last bank-0 vector entered at 19
    got = {}

    async def tb(ctx):
        for b in range(2):
            # the tile is written on the edge after w_load and must hold until then
            ctx.set(dut.w_load, 1)
            ctx.set(dut.w_bank, b)
            ctx.set(dut.w_tile, _tile_bits(tiles[b], wb))
            await ctx.tick()
            ctx.set(dut.w_load, 0)
            await ctx.tick()
        for t in range(total + dut.latency + 1):
            if t < total:
                for i in range(n):
                    ctx.set(dut.a[i], int(vecs[t, i]))
                ctx.set(dut.sel, int(sels[t]))
                ctx.set(dut.dw, int(dws[t]))
            load = t == reload_at - 1
            ctx.set(dut.w_load, load)
            if load:
                ctx.set(dut.w_bank, 0)
                ctx.set(dut.w_tile, _tile_bits(tiles[2], wb))
            if t >= dut.latency:
                got[t - dut.latency] = [ctx.get(dut.p[j]) for j in range(n)]
            await ctx.tick()

    _run(dut, tb)
    # w_load at reload_at - 1: vector `back` may use the new tile from two cycles later
    assert reload_at + 1 <= back

    def tile_of(t):
        return tiles[1] if sels[t] else (tiles[0] if t < back else tiles[2])

    def wrap(v):
        return [(int(x) + (1 << (acc - 1))) % (1 << acc) - (1 << (acc - 1)) for x in v]

    checked = 0
    for t in range(total - n + 1):
        if dws[t] and taps:
            # each product uses the bank of the vector in that PE; other banks are masked
            want = [sum(int(vecs[t + o, i]) * int(tile_of(t + o)[i, n - 1 - o])
                        for o in range(taps) if sels[t + o] == sels[t]) for i in range(n)]
        else:
            want = list(vecs[t] @ tile_of(t))
        assert got[t] == wrap(want), t
        checked += int(dws[t])
    assert checked > 10 or not taps


@pytest.mark.parametrize("line,beat", [(32, 32), (128, 32), (16, 64), (64, 256)])
def test_line_memory_matches_flat_model(line, beat):
    lines = 32
    dut = LineMemory(line_bits=line, beat_bits=beat, lines=lines)
    rng = np.random.default_rng(line + beat)
    flat = bytearray(lines * line // 8)
    nbeats = len(flat) * 8 // beat

    async def tb(ctx):
        for _ in range(200):
            if rng.random() < 0.5:
                b = int(rng.integers(0, nbeats))
                data = int(rng.integers(0, 1 << 62)) * int(rng.integers(1, 1 << 62))
                data &= (1 << beat) - 1
                ctx.set(dut.w_en, 1)
                ctx.set(dut.w_addr, b)
                ctx.set(dut.w_data, data)
            else:
                ctx.set(dut.w_en, 0)
                b = None
            r = int(rng.integers(0, lines))
            ctx.set(dut.r_en, 1)
            ctx.set(dut.r_addr, r)
            expect = int.from_bytes(flat[r * line // 8:(r + 1) * line // 8], "little")
            await ctx.tick()
            if b is not None:
                flat[b * beat // 8:(b + 1) * beat // 8] = data.to_bytes(beat // 8, "little")
            got = ctx.get(dut.r_data)
            # A read in the same cycle as a write to that line may see either; compare only
            # lines the write did not touch.
            touched = b is not None and (b * beat) // line <= r <= ((b + 1) * beat - 1) // line
            if not touched:
                assert got == expect

    _run(dut, tb)


def test_decoder_fields_match_isa():
    """The hardware's field slices decode what the compiler's encoder wrote."""
    rng = np.random.default_rng(7)
    cases = []
    for op in isa.Opcode:
        for _ in range(20):
            fields = {name: int(rng.integers(0, 1 << min(width, 62)))
                      for name, (lsb, width) in isa.field_offsets(op).items() if name != "opcode"}
            cases.append((op, isa.make(op, **fields)))
    m = Module()
    instr = Signal(isa.INSTR_BITS)
    m.d.sync += instr.eq(instr)

    async def tb(ctx):
        for op, ins in cases:
            ctx.set(instr, int.from_bytes(isa.encode(ins), "little"))
            for name in isa.field_offsets(op):
                want = int(op) if name == "opcode" else ins.get(name)
                assert ctx.get(field(instr, op, name)) == want, (op, name)

    _run(m, tb)


def test_load_unit_dma_bursts_and_writes():
    """LOAD rows split into legal bursts; beats land at consecutive target addresses of the
    right target while later LOADs' ARs are already out; per-beat model of the timing: the
    next LOAD starts on the edge of the previous LOAD's last AR (at most LOAD_OUTSTANDING in
    flight), ARs one per edge from start + 2, beats in order one per edge no earlier than
    AR + L + k, each LOAD completes on its last beat."""
    cfg = AccelConfig(rows=4, cols=4, bus_bits=64, max_burst=5, act_depth=1024,
                      weight_tiles=4, acc_depth=64, param_depth=8, mem_bytes=1 << 20)
    dut = LoadUnit(cfg)
    rng = np.random.default_rng(3)
    mem = bytearray(rng.integers(0, 256, cfg.mem_bytes, dtype=np.uint8).tobytes())
    lat = 40
    port = _Port(dut.axi, mem, lat, cfg.beat_bytes, False)
    loads = [dict(target=1, sp_addr=3, rows=3, row_beats=9, dram_addr=4096 - 3 * 8, stride=8 * 40),
             dict(target=0, sp_addr=0, rows=1, row_beats=17, dram_addr=8192 - 8, stride=0),
             dict(target=2, sp_addr=5, rows=2, row_beats=1, dram_addr=64, stride=4096)]
    # Back-to-back small LOADs to all targets: more than LOAD_OUTSTANDING in flight; then
    # one-beat rows: more than LOAD_BURSTS_OUTSTANDING bursts in flight.
    loads += [dict(target=0, sp_addr=100, rows=LOAD_BURSTS_OUTSTANDING + 9, row_beats=1,
                   dram_addr=4096 * 5, stride=24)]
    loads += [dict(target=k % 3, sp_addr=40 + 2 * k, rows=1 + k % 2, row_beats=1,
                   dram_addr=4096 * 3 - 8 * k, stride=8 * (k + 1)) for k in range(12)]
    writes, ars, done_edges, starts = [], [], [], []

    async def tb(ctx):
        ctx.set(dut.axi.arready, 1)
        ctx.set(dut.tok_next.avail, 1)
        queue = [isa.make(isa.Opcode.LOAD, push_next=1, **ld) for ld in loads]
        e = 0
        while len(done_edges) < len(loads):
            if queue:
                ctx.set(dut.instr.valid, 1)
                ctx.set(dut.instr.payload, int.from_bytes(isa.encode(queue[0]), "little"))
            else:
                ctx.set(dut.instr.valid, 0)
            port.drive(ctx, e)
            if ctx.get(dut.axi.arvalid):
                ars.append((ctx.get(dut.axi.araddr), ctx.get(dut.axi.arlen) + 1, e))
            port.edge(ctx, e)
            if queue and ctx.get(dut.instr.ready):
                queue.pop(0)
                starts.append(e)
            en = ctx.get(dut.wr_en)
            if en:
                writes.append((en.bit_length() - 1, ctx.get(dut.wr_addr), ctx.get(dut.wr_data)))
            if ctx.get(dut.tok_next.give):
                done_edges.append(e)
            await ctx.tick()
            e += 1
            assert e < 2000

    _run(dut, tb)
    B = cfg.beat_bytes
    expect_writes = []
    for ld in loads:
        sp = ld["sp_addr"]
        for r in range(ld["rows"]):
            for k in range(ld["row_beats"]):
                addr = ld["dram_addr"] + r * ld["stride"] + k * B
                expect_writes.append((ld["target"], sp, int.from_bytes(mem[addr:addr + B],
                                                                        "little")))
                sp += 1
    assert writes == expect_writes
    for addr, n, _ in ars:
        assert 1 <= n <= cfg.max_burst
        assert addr // 4096 == (addr + n * B - 1) // 4096, "burst crosses 4 KiB"
    # Independent per-burst/per-beat model of the schedule.
    e_start, e_ar, e_done, b_done, r_edge = [], [], [], [], -1
    bursts = []
    for i, ld in enumerate(loads):
        s = 0 if i == 0 else e_ar[-1] - 1
        if i >= LOAD_OUTSTANDING:
            s = max(s, e_done[i - LOAD_OUTSTANDING] + 1)
        e_start.append(s)
        ar = s + 2
        for r in range(ld["rows"]):
            addr, left = ld["dram_addr"] + r * ld["stride"], ld["row_beats"]
            while left:
                n = min(left, cfg.max_burst, (4096 - addr % 4096) // B)
                if len(b_done) >= LOAD_BURSTS_OUTSTANDING:
                    ar = max(ar, b_done[-LOAD_BURSTS_OUTSTANDING] + 2)
                bursts.append((addr, n, ar))
                e_ar.append(ar)
                for j in range(n):
                    r_edge = max(ar + lat + j, r_edge + 1)
                b_done.append(r_edge)
                addr, left, ar = addr + n * B, left - n, ar + 1
        e_done.append(r_edge)
    assert ars == bursts
    assert starts == e_start
    assert done_edges == e_done
    assert any(s < d for s, d in zip(starts[1:], done_edges, strict=False))  # overlap
    assert any(s > d for s, d in zip(starts[LOAD_OUTSTANDING:], done_edges, strict=False))
    assert any(b[2] - a[2] > 1 for a, b in zip(ars, ars[1:], strict=False))  # burst bound


def _store_harness(cfg, acc_init, prm_init):
    """A StoreUnit with its accumulator and parameter memories."""
    m = Module()
    m.submodules.store = st = StoreUnit(cfg)
    m.submodules.acc = acc = memory.Memory(shape=unsigned(cfg.cols * cfg.acc_bits),
                                           depth=len(acc_init), init=acc_init)
    m.submodules.prm = prm = memory.Memory(shape=unsigned(cfg.param_line_bits),
                                           depth=len(prm_init), init=prm_init)
    ra, rp = acc.read_port(), prm.read_port()
    m.d.comb += [ra.en.eq(st.acc_en), ra.addr.eq(st.acc_addr), st.acc_data.eq(ra.data),
                 rp.en.eq(st.prm_en), rp.addr.eq(st.prm_addr), st.prm_data.eq(rp.data)]
    return m, st


def _groups(s, line):
    """(first accumulator line, first byte) of each group of a 2-D STORE given as fields
    (an independent reading of docs/isa.md)."""
    return [(s["acc_addr"] + g * s.get("acc_pitch", 0),
             s["dram_addr"] + g * s.get("dram_pitch", 0) * line)
            for g in range(s.get("reps_m1", 0) + 1)]


def _bursts(addr, nbytes, beat, max_burst):
    """(address, beats) of the INCR bursts writing ``nbytes`` from ``addr``: at most
    ``max_burst`` beats, never across 4 KiB."""
    out = []
    while nbytes:
        n = min(nbytes // beat, max_burst, (4096 - addr % 4096) // beat)
        out.append((addr, n))
        addr, nbytes = addr + n * beat, nbytes - n * beat
    return out


@pytest.mark.parametrize("cols,bus", [(4, 32), (4, 64), (8, 32)])   # line =, <, > beat
def test_store_unit_requantizes_under_backpressure(cols, bus):
    """Exact requantization (lowbit.layout.requantize) of extreme accumulators and
    parameters, with random awready/wready back-pressure and B responses that arrive late:
    STOREs overlap their write responses (at most STORE_INFLIGHT in flight), each pushes its
    token on the edge of its own last B response, in order, and a SYNC waits for all. Random
    output zero points (parameter byte 7) are added after the ReLU, before the clamp.
    Most STOREs are 2-D: groups at accumulator pitches from 0 (the same lines again) up and
    DRAM pitches from 0 (a later group overwrites an earlier one) to ones that cross 4 KiB;
    every group gets its own bursts and lands where the independent model puts it."""
    cfg = AccelConfig(rows=cols, cols=cols, bus_bits=bus, max_burst=3, act_depth=64,
                      weight_tiles=2, acc_depth=64, param_depth=8, mem_bytes=1 << 16)
    C, B = cfg.cols, cfg.beat_bytes
    rng = np.random.default_rng(cols * 1000 + bus)

    def extreme(lo, hi, n):
        v = rng.integers(lo, hi + 1, n)
        pick = rng.random(n)
        v = np.where(pick < 0.1, lo, np.where(pick < 0.2, hi, v))
        return np.where((pick > 0.2) & (pick < 0.5), v >> rng.integers(0, 31, n), v)

    acc = extreme(-(1 << 31), (1 << 31) - 1, (64, C))
    bias = extreme(-(1 << 31), (1 << 31) - 1, (8, C))
    mult = extreme(0, (1 << 16) - 1, (8, C))
    shift = np.where(rng.random((8, C)) < 0.3, rng.integers(0, 64, (8, C)),
                     rng.integers(8, 40, (8, C)))
    # Tame halves: parameter lines 0-3 and accumulator lines 0-31 give results near the
    # clamp bounds and exact ties of the rounding (x = (q + 1/2) * 2^shift), of both signs.
    s_lane = rng.integers(0, 12, C)
    m = rng.integers(0, 4, (4, C))
    bias[:4] = rng.integers(-3, 4, (4, C)) << s_lane
    mult[:4] = 1 << m
    shift[:4] = s_lane + m
    half = np.where(s_lane > 0, 1 << np.maximum(s_lane - 1, 0), 0)
    acc[:32] = (rng.integers(-40, 40, (32, C)) << s_lane) \
        + np.where(rng.random((32, C)) < 0.6, half, rng.integers(0, 1 << s_lane, (32, C)))
    # Output zero points (parameter byte 7): small offsets around zero or any byte, read as
    # int8 or uint8 by the STORE's out_unsigned.
    zbyte = np.where(rng.random((8, C)) < 0.5, rng.integers(-6, 7, (8, C)),
                     rng.integers(0, 256, (8, C))) & 0xFF
    acc_init = [sum((int(v) & 0xFFFFFFFF) << (32 * j) for j, v in enumerate(line))
                for line in acc]
    prm_init = [sum(((int(b) & 0xFFFFFFFF) | int(mu) << 32 | int(s) << 48 | int(z) << 56)
                    << (64 * j) for j, (b, mu, s, z) in enumerate(zip(*rec, strict=True)))
                for rec in zip(bias, mult, shift, zbyte, strict=True)]
    lpb = max(1, bus // cfg.out_line_bits)
    line = cfg.out_line_bits // 8
    stores = []
    base = 4096 - 5 * B                      # the first bursts cross a 4 KiB boundary
    for k in range(16):
        rows = int(rng.integers(1, 7)) * lpb
        tame = k % 3 != 2
        reps = 1 if k % 4 == 0 else int(rng.integers(2, 5))
        acc_pitch = int(rng.integers(0, (32 - rows) // max(1, reps - 1) + 1))
        cross = (4095 - base % 4096) // (line * lpb)      # group 1 ends past 4 KiB
        dram_pitch = lpb * (0, rows // lpb, rows // lpb + 1, 700 // line, cross)[k % 5]
        top = 32 - (reps - 1) * acc_pitch - rows
        stores.append(dict(acc_addr=int(rng.integers(0, top + 1)) + (0 if tame else 32),
                           rows=rows, param_addr=int(rng.integers(0, 4)) + (0 if tame else 4),
                           relu=int(rng.random() < 0.3), out_bits=int(rng.integers(2, 9)),
                           out_unsigned=int(rng.random() < 0.3), dram_addr=base,
                           push_prev=1, reps_m1=reps - 1,
                           acc_pitch=acc_pitch if reps > 1 else 0,
                           dram_pitch=dram_pitch if reps > 1 else 0))
        base += (reps - 1) * dram_pitch * line + rows * line + B * int(rng.integers(0, 3))
    program = [isa.make(isa.Opcode.STORE, **s) for s in stores[:7]]
    program.append(isa.make(isa.Opcode.SYNC, unit=isa.Unit.STORE, push_prev=1))
    program += [isa.make(isa.Opcode.STORE, **s) for s in stores[7:]]
    dut, st = _store_harness(cfg, acc_init, prm_init)
    mem = {}
    gives, b_edges, aws = [], [], []

    async def tb(ctx):
        queue = list(program)
        wq, beats, pend = [], [], []        # AWs, W beats, B ready edges
        e = 0
        ctx.set(st.tok_prev.avail, 1)
        while len(gives) < len(program):
            ctx.set(st.instr.valid, bool(queue))
            if queue:
                ctx.set(st.instr.payload, int.from_bytes(isa.encode(queue[0]), "little"))
            ctx.set(st.axi.awready, int(rng.random() < 0.5))
            ctx.set(st.axi.wready, int(rng.random() < 0.6))
            ctx.set(st.axi.bvalid, int(bool(pend) and pend[0] <= e))
            if queue and ctx.get(st.instr.ready):
                queue.pop(0)
            if ctx.get(st.axi.awvalid) and ctx.get(st.axi.awready):
                wq.append([ctx.get(st.axi.awaddr), ctx.get(st.axi.awlen) + 1])
                aws.append(tuple(wq[-1]))
            if ctx.get(st.axi.wvalid) and ctx.get(st.axi.wready):
                beats.append((ctx.get(st.axi.wdata), ctx.get(st.axi.wlast)))
            while wq and beats:
                data, last = beats.pop(0)
                for i in range(B):
                    mem[wq[0][0] + i] = (data >> (8 * i)) & 0xFF
                wq[0][0] += B
                wq[0][1] -= 1
                assert last == (wq[0][1] == 0), "wlast"
                if last:
                    wq.pop(0)
                    pend.append(e + int(rng.integers(1, 40)))
            if ctx.get(st.axi.bvalid):
                pend.pop(0)
                b_edges.append(e)
            if ctx.get(st.tok_prev.give):
                gives.append(e)
            await ctx.tick()
            e += 1
            assert e < 20000

    _run(dut, tb)
    want_mem, want_aws, ends = {}, [], []
    for s in stores:
        for a0, d0 in _groups(s, line):           # in order: later groups overwrite
            p = s["param_addr"]
            y = requantize(acc[a0:a0 + s["rows"]], bias[p], mult[p], shift[p],
                           relu=bool(s["relu"]), out_bits=s["out_bits"],
                           out_unsigned=bool(s["out_unsigned"]),
                           zero=param_zero(zbyte[p], out_unsigned=bool(s["out_unsigned"])))
            for i, v in enumerate(y.reshape(-1)):
                want_mem[d0 + i] = int(v) & 0xFF
            want_aws += _bursts(d0, s["rows"] * line, B, cfg.max_burst)
        ends.append(len(want_aws) - 1)
    assert {a: mem.get(a) for a in want_mem} == want_mem
    assert len(mem) == len(want_mem)
    assert aws == want_aws                     # every group its own bursts, in order
    # some group after the first crosses 4 KiB, some group is overwritten by a later one
    assert any(s["reps_m1"] and any(d % 4096 + s["rows"] * line > 4096
                                    for _, d in _groups(s, line)[1:]) for s in stores)
    assert any(s["reps_m1"] and s["dram_pitch"] < s["rows"] for s in stores)
    # A STORE completes on the B response of its last burst (bursts never span STOREs).
    store_gives = gives[:7] + gives[8:]
    assert store_gives == [b_edges[i] for i in ends]
    assert gives[7] > gives[6]                      # the SYNC waited for every STORE
    # Several STOREs were waiting for their responses at once, never more than the limit.
    starts_before_end = [sum(1 for g in store_gives[:k] if g >= store_gives[k] - 40)
                         for k in range(len(store_gives))]
    assert max(starts_before_end) >= 1


class _Mult18x18dModel(Elaboratable):
    """MULT18X18D (Lattice sysDSP, as FPGA-TN-02205 describes it) for the subset the
    generator uses, built from the ``Instance`` keywords: A and B registered on CLK0 with
    CE0 when their REG_INPUT*_CLK is CLK0, multiplied as signed 18-bit values (SIGNEDA/B
    high), the 36-bit product registered on CLK0 with CE0 when REG_OUTPUT_CLK is CLK0 (else
    straight out)."""

    def __init__(self, kw):
        self.kw = kw

    def elaborate(self, platform):
        kw, m = self.kw, Module()
        assert kw["p_REG_PIPELINE_CLK"] == "NONE" and kw["p_REG_INPUTC_CLK"] == "NONE"
        assert str(kw["i_CLK0"]) == str(ClockSignal("sync"))
        for const, want in (("i_RST0", 0), ("i_SIGNEDA", 1), ("i_SIGNEDB", 1),
                            ("i_SOURCEA", 0), ("i_SOURCEB", 0)):
            assert kw[const].value == want, const
        assert all(kw[f"i_C{k}"].value == 0 for k in range(18))
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):     # every register on CE0 and RST0
            assert (kw[f"p_REG_{reg}_CE"], kw[f"p_REG_{reg}_RST"]) == ("CE0", "RST0")
        ce = kw["i_CE0"]

        def operand(name):
            v = Signal(signed(18), name=f"{name}_in")
            m.d.comb += v.eq(Cat(*(kw[f"i_{name}{k}"] for k in range(18))))
            if kw[f"p_REG_INPUT{name}_CLK"] == "NONE":
                return v
            assert kw[f"p_REG_INPUT{name}_CLK"] == "CLK0"
            q = Signal(signed(18), name=f"{name}_q")
            with m.If(ce):
                m.d.sync += q.eq(v)
            return q

        prod = Signal(signed(36))
        m.d.comb += prod.eq(operand("A") * operand("B"))
        out = prod
        if kw["p_REG_OUTPUT_CLK"] != "NONE":
            assert kw["p_REG_OUTPUT_CLK"] == "CLK0"
            out = Signal(signed(36))
            with m.If(ce):
                m.d.sync += out.eq(prod)
        for k in range(36):
            if f"o_P{k}" in kw:
                m.d.comb += kw[f"o_P{k}"].eq(out[k])
        return m


@pytest.mark.parametrize("dsp_output_reg", [True, False])
@pytest.mark.parametrize("a_shape,b_shape,p_shape,input_regs,use_en", [
    (signed(9), signed(4), signed(13), False, False),       # a PE's product
    (signed(17), unsigned(9), signed(32), True, False),     # the compute unit's scaling
    (unsigned(17), unsigned(16), unsigned(33), False, True),    # the store's partial products
    (signed(16), unsigned(16), signed(33), False, True),
    (signed(18), signed(18), signed(36), True, True),       # the widest operands
    (unsigned(5), signed(7), signed(16), True, True),
])
def test_product_register_on_a_dsp_equals_the_logic(monkeypatch, a_shape, b_shape, p_shape,
                                                     input_regs, use_en, dsp_output_reg):
    """product_register's logic and its MULT18X18D (the instance's keywords driving a model
    of the primitive in its place) hold the product a * b of the operands of the enabled
    edge(s) before, low bits of it, cycle by cycle with random operands and enable; with the
    block's output register or a fabric one after it."""
    m = Module()
    a, b, en = Signal(a_shape), Signal(b_shape), Signal()
    p_logic = Signal(p_shape, reset_less=True)
    p_dsp = Signal(p_shape, reset_less=True)
    enable = en if use_en else None
    product_register(m, a=a, b=b, p=p_logic, en=enable, input_regs=input_regs, dsp=False,
                     name="logic")
    assert fits_dsp(a, b)
    made = []

    def instance(kind, **kw):
        assert kind == "MULT18X18D"
        made.append(kw)
        return _Mult18x18dModel(kw)
    monkeypatch.setattr(mul, "Instance", instance)
    product_register(m, a=a, b=b, p=p_dsp, en=enable, input_regs=input_regs, dsp=True,
                     name="dsp", dsp_output_reg=dsp_output_reg)
    assert len(made) == 1
    assert made[0]["p_REG_OUTPUT_CLK"] == ("CLK0" if dsp_output_reg else "NONE")
    rng = np.random.default_rng(len(a) * 100 + len(b) + input_regs)

    def draw(shape):
        lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed \
            else (0, 1 << shape.width)
        return int(rng.integers(lo, hi))

    async def tb(ctx):
        regs_a = regs_b = 0
        p_model = 0
        for _ in range(300):
            x, y, e = draw(a_shape), draw(b_shape), (int(rng.integers(0, 2)) if use_en else 1)
            ctx.set(a, x)
            ctx.set(b, y)
            ctx.set(en, e)
            await ctx.tick()
            if e:
                if input_regs:
                    p_model, regs_a, regs_b = regs_a * regs_b, x, y
                else:
                    p_model = x * y
            want = p_model & ((1 << p_shape.width) - 1)
            if p_shape.signed and want >> (p_shape.width - 1):
                want -= 1 << p_shape.width
            ctx.set(a, draw(a_shape))       # a registered product ignores the new operands
            ctx.set(b, draw(b_shape))
            assert ctx.get(p_logic) == want
            assert ctx.get(p_dsp) == want

    _run(m, tb)


@pytest.mark.parametrize("beat_bytes,max_burst", [(4, 16), (8, 5), (16, 1), (64, 64),
                                                  (64, 100), (32, 256)])
def test_next_burst_matches_model(beat_bytes, max_burst):
    """Length, last-burst flag and the walk after it, for random beat-aligned addresses
    (many near a 4 KiB boundary) and remaining beats, against min(left, max_burst, beats to
    the boundary)."""
    m = Module()
    addr, left = Signal(32), Signal(21)
    burst = next_burst(m, addr, left, beat_bytes=beat_bytes, max_burst=max_burst)
    rng = np.random.default_rng(beat_bytes * 1000 + max_burst)
    span = 4096 // beat_bytes

    async def tb(ctx):
        for _ in range(400):
            page = int(rng.integers(0, 1 << 20))
            beat = int(rng.choice([int(rng.integers(0, span)), span - 1,
                                   int(rng.integers(max(0, span - max_burst - 2), span))]))
            a = page * 4096 + beat * beat_bytes
            lf = int(rng.choice([int(rng.integers(1, 3 * max_burst + 2)),
                                 int(rng.integers(1, 1 << 21))]))
            ctx.set(addr, a)
            ctx.set(left, lf)
            n = min(lf, max_burst, span - beat)
            assert ctx.get(burst.len_m1) == n - 1
            assert ctx.get(burst.ends) == (n == lf)
            assert ctx.get(burst.left_next) == lf - n
            if n != lf:
                assert ctx.get(burst.addr_next) == (a + n * beat_bytes) % (1 << 32)

    sim = Simulator(m)      # combinational: no clock
    sim.add_testbench(tb)
    sim.run()
