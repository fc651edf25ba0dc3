"""The store unit: post-processing (bias, requantize, ReLU, zero point, clamp) and an AXI4
write DMA."""

import functools

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from lowbit import isa
from lowbit.isa import Opcode
from lowbit.layout import MULT_BITS
from lowbit.timing import STORE_INFLIGHT, STORE_STAGES

from .axi import BURST_INCR, AXI4WriteSignature
from .decode import TokenPort, field, opcode_of
from .load import next_burst
from .mul import dsp_choice, product_register

__all__ = ["CLAMP_BITS", "StoreUnit"]

#: Signed width the store unit keeps of the shifted value ``(x + round) >> shift``: every
#: clamp threshold (``lo - z``, ``hi - z``) and every stored value lies in
#: ``[-2^(CLAMP_BITS-1), 2^(CLAMP_BITS-1))``, so an overflow flag stands for the other bits.
CLAMP_BITS = 11


class StoreUnit(wiring.Component):
    """Executes STORE (and SYNC on the store unit) in order.

    A STORE reads its parameter line once, on the edge after its start (registered over the
    next two edges), then reads accumulator lines through a pipeline of
    :data:`~lowbit.timing.STORE_STAGES` register stages (read, memory output, ``+ bias``, two
    17x16 partial products, their sum ``x``, the rounding add, the shift, ReLU/zero
    point/clamp) into a packer that emits one W beat per cycle (a line is ``cols`` bytes;
    several lines share a beat on wide buses, a line spans several beats on narrow ones). AW
    bursts are issued one per cycle independently of the data. Every stage stalls while
    ``wvalid & ~wready``.

    A 2-D STORE (``reps_m1 + 1`` groups of ``rows`` lines) is one stream through that
    pipeline: the read side walks the groups without a gap (after a group's last line the
    next read is at the group's base plus ``acc_pitch``), and the address and W sides each
    walk the groups' DRAM addresses (base plus ``dram_pitch`` lines), splitting every group
    into its own bursts (at most ``max_burst`` beats, never across 4 KiB), so no burst and,
    as a group is whole beats, no beat mixes two groups. The group bases are registers
    advanced by a registered pitch. Started at edge ``S``, a STORE offers its last W beat at
    edge ``S + STORE_STAGES + 1 + max(beats, lines)`` (``lines = reps * rows``, ``beats``
    their bus beats) without back-pressure, as a 1-D STORE of that many lines would.

    Once its last beat is in the W register the next STORE may start, while the write
    responses are outstanding: up to :data:`~lowbit.timing.STORE_INFLIGHT` STOREs are
    started and not completed. Each completes (and pushes) on the edge of its own last B
    response, in order. A SYNC waits until every earlier STORE completed.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        C, W = cfg.cols, cfg.bus_bits
        super().__init__({
            "instr": In(stream.Signature(isa.INSTR_BITS)),
            "tok_prev": Out(TokenPort()),
            "axi": Out(AXI4WriteSignature(addr_width=cfg.addr_bits, data_width=W)),
            "acc_en": Out(1),
            "acc_addr": Out(16),
            "acc_data": In(C * cfg.acc_bits),
            "prm_en": Out(1),
            "prm_addr": Out(16),
            "prm_data": In(cfg.param_line_bits),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C, W, B = cfg.cols, cfg.bus_bits, cfg.beat_bytes
        L = cfg.out_line_bits
        F = Opcode.STORE
        ins = self.instr.payload
        axi = self.axi
        N = STORE_INFLIGHT

        # Per-instruction registers.
        push_prev = Signal()
        relu = Signal()
        uns = Signal()
        lo = Signal(signed(10))
        hi = Signal(signed(10))
        # 2-D walk: per side, the current group's base and what is left of it, and the groups
        # after it. ``rows_r`` / ``group_beats`` reload a group; the pitches advance a base.
        width = {name: w for name, (_, w) in isa.field_offsets(F).items()}
        RG = width["reps_m1"]
        rows_r = Signal(16)
        group_beats = Signal(21)
        acc_pitch = Signal(width["acc_pitch"])
        dram_pitch = Signal(width["dram_pitch"] + exact_log2(L // 8))    # in bytes
        rd_ptr = Signal(16)
        rd_base = Signal(16)
        rd_left = Signal(16)        # lines of the current group not yet read
        rd_groups = Signal(RG)      # groups after the current one
        throttle = Signal(range(max(2, L // W + 1)))
        aw_addr = Signal(32)
        aw_base = Signal(32)
        aw_left = Signal(21)        # beats of the current group without an AW yet
        aw_groups = Signal(RG)
        w_addr = Signal(32)
        w_base = Signal(32)
        w_left = Signal(21)         # beats of the current group not yet in a framed burst
        w_groups = Signal(RG)
        w_in_burst = Signal(9)
        active = Signal()           # a STORE is reading / streaming
        prm_rd = Signal()           # read the parameter line (the edge after the start)
        prm_addr = Signal.like(self.prm_addr)
        prm_load = Signal()         # the parameter line is on prm_data: register it
        sync_st = Signal()          # a SYNC gives its token on this cycle
        outstanding = Signal(range(N + 1))   # STOREs started and not completed
        # Bursts issued and responses received, ever, modulo 2^CW: a STORE has at most
        # STORE_MAX_LINES lines, so at most MB bursts, and fewer than 2^CW are ever outstanding.
        MB = isa.STORE_MAX_LINES * max(1, L // W)
        CW = ceil_log2(MB + 1) + ceil_log2(N) + 1
        aw_issued = Signal(CW)
        b_seen = Signal(CW)

        m.d.comb += [
            axi.awsize.eq(exact_log2(B)), axi.awburst.eq(BURST_INCR),
            axi.wstrb.eq((1 << B) - 1), axi.bready.eq(1),
        ]
        adv = Signal()
        m.d.comb += adv.eq(~axi.wvalid | axi.wready)
        b_fire = axi.bvalid & axi.bready

        # -- completion: one entry per STORE whose data went out, oldest first ------------
        # An entry holds the value of ``aw_issued`` after the STORE's last burst; the STORE
        # completes on the B response that brings ``b_seen`` to it. (Not a buffered FIFO: with
        # W beats ahead of the last AW, that B response can come on the edge after the entry
        # is written, and a buffered head would show it an edge too late.)
        m.submodules.done_q = done_q = SyncFIFO(width=CW + 1, depth=N)
        complete = Signal()
        m.d.comb += [
            complete.eq(done_q.r_rdy & b_fire & ((b_seen + 1)[:CW] == done_q.r_data[:CW])),
            done_q.r_en.eq(complete),
        ]
        m.d.sync += b_seen.eq(b_seen + b_fire)
        fin = Signal()
        # The last beat is in the W register once the last group's last burst is framed and
        # sent (a group with more after it reloads w_left when its last burst is framed).
        m.d.comb += [fin.eq(active & (w_left == 0) & (w_in_burst == 0) & (aw_left == 0)),
                     done_q.w_en.eq(fin), done_q.w_data.eq(Cat(aw_issued, push_prev))]
        with m.If(fin):
            m.d.sync += active.eq(0)

        # -- start ----------------------------------------------------------------------
        beats_of = field(ins, F, "rows") << exact_log2(L)
        pop = field(ins, F, "pop_prev")
        is_store = opcode_of(ins) == Opcode.STORE
        can = Signal()
        m.d.comb += can.eq(~sync_st & Mux(is_store, (~active | fin) & (outstanding < N),
                                          ~active & (outstanding == 0)))
        start = Signal()
        m.d.comb += start.eq(self.instr.valid & can & (~pop | self.tok_prev.avail))
        m.d.comb += [self.instr.ready.eq(start), self.tok_prev.take.eq(start & pop)]
        m.d.sync += [prm_rd.eq(0), prm_load.eq(prm_rd), sync_st.eq(0)]
        # The parameter read is issued from registers, an edge after the start, so that no
        # path runs from the instruction queue into the memory's address; the values are
        # still in place before the first line needs them (bias: stage 2, at S + 3).
        m.d.comb += [self.prm_en.eq(prm_rd), self.prm_addr.eq(prm_addr)]
        m.d.comb += self.tok_prev.give.eq(Mux(sync_st, push_prev,
                                              complete & done_q.r_data[CW]))
        m.d.sync += outstanding.eq(outstanding + (start & is_store) - complete)
        m.d.comb += self.busy.eq(sync_st | (outstanding != 0))
        with m.If(start):
            m.d.sync += push_prev.eq(field(ins, F, "push_prev"))
            with m.If(is_store):
                bits = field(ins, F, "out_bits")
                unsigned = field(ins, F, "out_unsigned")
                nbeats = beats_of >> exact_log2(W)
                m.d.sync += [prm_rd.eq(1), prm_addr.eq(field(ins, F, "param_addr"))]
                m.d.sync += [
                    relu.eq(field(ins, F, "relu")),
                    uns.eq(unsigned),
                    hi.eq(Mux(unsigned, (1 << bits) - 1, (1 << (bits - 1)[:4]) - 1)),
                    lo.eq(Mux(unsigned, 0, -(1 << (bits - 1)[:4]))),
                    rows_r.eq(field(ins, F, "rows")),
                    group_beats.eq(nbeats),
                    acc_pitch.eq(field(ins, F, "acc_pitch")),
                    dram_pitch.eq(field(ins, F, "dram_pitch") << exact_log2(L // 8)),
                    rd_ptr.eq(field(ins, F, "acc_addr")),
                    rd_base.eq(field(ins, F, "acc_addr")),
                    rd_left.eq(field(ins, F, "rows")),
                    rd_groups.eq(field(ins, F, "reps_m1")),
                    throttle.eq(0),
                    aw_addr.eq(field(ins, F, "dram_addr")),
                    aw_base.eq(field(ins, F, "dram_addr")),
                    aw_left.eq(nbeats),
                    aw_groups.eq(field(ins, F, "reps_m1")),
                    w_addr.eq(field(ins, F, "dram_addr")),
                    w_base.eq(field(ins, F, "dram_addr")),
                    w_left.eq(nbeats),
                    w_groups.eq(field(ins, F, "reps_m1")),
                    w_in_burst.eq(0),
                    active.eq(1),
                ]
            with m.Else():
                m.d.sync += sync_st.eq(1)

        # -- address channel ----------------------------------------------------------------
        aw_burst = next_burst(m, aw_addr, aw_left, beat_bytes=B, max_burst=cfg.max_burst)
        with m.If(~axi.awvalid | axi.awready):
            with m.If(active & (aw_left != 0)):
                m.d.sync += [axi.awvalid.eq(1), axi.awaddr.eq(aw_addr),
                             axi.awlen.eq(aw_burst.len_m1), aw_issued.eq(aw_issued + 1)]
                _advance(m, burst=aw_burst, addr=aw_addr, left=aw_left, base=aw_base,
                         groups=aw_groups, pitch=dram_pitch, group_beats=group_beats)
            with m.Else():
                m.d.sync += axi.awvalid.eq(0)

        # -- parameters: registered once per STORE, stable while its lines flow ------------
        # |x| = |(acc + bias) * mult| < 2^XM, so every shift >= XM + 1 rounds x to 0 (x +
        # 2^(shift-1) - (x < 0) lies in [0, 2^shift)): shifts are capped at XM + 1, which keeps
        # the rounding add and the shifter XM + 2 bits wide.
        acc_w = cfg.acc_bits
        XM = max(acc_w, 32) + MULT_BITS
        Y = CLAMP_BITS
        # The parameters and the data pipeline have no reset: valid bits (``v``) qualify
        # every value, and the reset net stays with the control logic.
        Reg = functools.partial(Signal, reset_less=True)
        bias = [Reg(signed(32), name=f"bias{j}") for j in range(C)]
        mult = [Reg(MULT_BITS, name=f"mult{j}") for j in range(C)]
        shift_in = [Reg(6, name=f"shift_in{j}") for j in range(C)]
        shift = [Reg(range(XM + 2), name=f"shift{j}") for j in range(C)]
        # Rounding: x + 2^(shift-1) - (x < 0) = x + half_n + (x >= 0 and shift > 0), with
        # half_n = 2^(shift-1) - 1 (0 for shift 0) and the last term the adder's carry in.
        half_n = [Reg(XM + 1, name=f"half_n{j}") for j in range(C)]
        rounds = [Reg(1, name=f"rounds{j}") for j in range(C)]            # shift > 0
        # Edge S + 2: the raw fields; edge S + 3: the capped shift and the rounding constant,
        # bits of one thermometer code ``shift > c`` (no carry chains).
        prm_load2 = Signal()
        m.d.sync += prm_load2.eq(prm_load)
        with m.If(prm_load):
            for j in range(C):
                rec = self.prm_data[j * 64:(j + 1) * 64]
                m.d.sync += [bias[j].eq(rec[0:32].as_signed()), mult[j].eq(rec[32:48]),
                             shift_in[j].eq(rec[48:54])]
        with m.If(prm_load2):
            for j in range(C):
                s = Signal(range(XM + 2), name=f"s{j}")
                m.d.comb += s.eq(Mux(shift_in[j] > XM + 1, XM + 1, shift_in[j]))
                # above[c] = s > c; s <= XM + 1
                above = _above(shift_in[j], XM + 1) + [Const(0, 1)]
                m.d.sync += [shift[j].eq(s),
                             half_n[j].eq(Cat(*above[1:XM + 2])),
                             rounds[j].eq(above[0])]
        # Output zero point z (byte 7, int8 or uint8 by out_unsigned), edge S + 2; edge S + 3:
        # the clamp thresholds on y, ``lo_th = max(lo - z, 0 if relu)`` and ``hi_th = hi - z``,
        # and the value stored below lo_th, ``lo_q = clamp(lo_th + z)`` (``lo``, or
        # ``clamp(z)`` with ReLU), so that the clamp stage needs no add before its compares.
        zero = [Reg(signed(10), name=f"zero{j}") for j in range(C)]
        lo_th = [Reg(signed(10), name=f"lo_th{j}") for j in range(C)]
        hi_th = [Reg(signed(10), name=f"hi_th{j}") for j in range(C)]
        lo_q = [Reg(8, name=f"lo_q{j}") for j in range(C)]
        with m.If(prm_load):
            for j in range(C):
                zb = self.prm_data[j * 64 + 56:(j + 1) * 64]
                m.d.sync += zero[j].eq(Mux(uns, zb, zb.as_signed()))
        with m.If(prm_load2):
            for j in range(C):
                z = zero[j]
                m.d.sync += [
                    lo_th[j].eq(Mux(relu & (z > lo), 0, lo - z)),
                    hi_th[j].eq(hi - z),
                    lo_q[j].eq(Mux(relu, Mux(z > hi, hi, Mux(z < lo, lo, z)), lo)[:8]),
                ]

        # -- data pipeline ----------------------------------------------------------------
        # Stage 0: accumulator read. Lines wider than a beat are read every L/W cycles.
        v = [Signal(name=f"v{k}") for k in range(STORE_STAGES)]
        issue = Signal()
        m.d.comb += [issue.eq(active & (rd_left != 0) & (throttle == 0)),
                     self.acc_en.eq(adv), self.acc_addr.eq(rd_ptr)]
        with m.If(adv):
            m.d.sync += v[0].eq(issue)
            m.d.sync += [v[k].eq(v[k - 1]) for k in range(1, STORE_STAGES)]
            with m.If(issue):
                with m.If((rd_left == 1) & (rd_groups != 0)):     # on to the next group
                    nxt = (rd_base + acc_pitch)[:16]
                    m.d.sync += [rd_ptr.eq(nxt), rd_base.eq(nxt), rd_left.eq(rows_r),
                                 rd_groups.eq(rd_groups - 1)]
                with m.Else():
                    m.d.sync += [rd_ptr.eq(rd_ptr + 1), rd_left.eq(rd_left - 1)]
                if L > W:
                    m.d.sync += throttle.eq(L // W - 1)
            with m.Elif(throttle != 0):
                m.d.sync += throttle.eq(throttle - 1)

        # Stages 1-7, per lane: requantize (lowbit.layout.requantize) with one adder,
        # multiplier, shifter or comparator between registers. Stage 6 shifts only the Y
        # bits the clamp can use (a log shifter that drops what later levels cannot bring
        # down) and flags t >> shift beyond Y signed bits; stage 7 saturates on the flag.
        y = Reg(L, name="y")
        dsp = "store" in dsp_choice(platform).units
        for j in range(C):
            a = Reg(signed(acc_w), name=f"a{j}")              # 1: memory output
            sb = Reg(signed(33), name=f"sb{j}")               # 2: acc + bias
            p_lo = Reg(17 + MULT_BITS, name=f"p_lo{j}")       # 3: partial products
            p_hi = Reg(signed(17 + MULT_BITS), name=f"p_hi{j}")
            x = Reg(signed(XM + 1), name=f"x{j}")             # 4: (acc + bias) * mult
            t = Reg(signed(XM + 2), name=f"t{j}")             # 5: + half - (x < 0)
            r = Reg(signed(Y), name=f"r{j}")                  # 6: (t >> shift)[:Y]
            ovf = Reg(1, name=f"ovf{j}")                      #    it needs more bits
            neg = Reg(1, name=f"neg{j}")                      #    t < 0
            c = Signal(8, name=f"c{j}")                          # 7: ReLU, + z, clamp
            with m.If(ovf):
                m.d.comb += c.eq(Mux(neg, lo_q[j], hi[:8]))
            with m.Elif(r < lo_th[j]):
                m.d.comb += c.eq(lo_q[j])
            with m.Elif(r > hi_th[j]):
                m.d.comb += c.eq(hi[:8])
            with m.Else():
                m.d.comb += c.eq(r[:8] + zero[j][:8])
            # Bits of t that must all equal its sign for t >> shift to fit in Y signed bits:
            # i >= shift + Y - 1, i.e. not shift > i - Y + 1, a bit of the same thermometer.
            above = Cat(rounds[j], half_n[j])
            high = Cat(*(~above[i - Y + 1] if i >= Y - 1 else Const(0, 1)
                         for i in range(XM + 2)))
            # 3: the partial products (on an ECP5 DSP, in its output register)
            product_register(m, a=sb[:17], b=mult[j], p=p_lo, en=adv, input_regs=False,
                             dsp=dsp, name=f"mul_lo{j}")
            product_register(m, a=sb[17:].as_signed(), b=mult[j], p=p_hi, en=adv,
                             input_regs=False, dsp=dsp, name=f"mul_hi{j}")
            shifted = t
            for k in reversed(range(len(shift[j]))):
                # after this level the shift left to do is below 2^k: keep Y + 2^k - 1 bits
                keep = min(Y + (1 << k) - 1, len(shifted))
                shifted = Mux(shift[j][k], shifted >> (1 << k), shifted)[:keep].as_signed()
            with m.If(adv):
                m.d.sync += [
                    a.eq(self.acc_data[j * acc_w:(j + 1) * acc_w].as_signed()),
                    sb.eq(a + bias[j]),
                    x.eq((p_hi << 17) + p_lo),
                    t.eq(x + half_n[j] + (rounds[j] & ~x[-1])),
                    r.eq(shifted[:Y]),
                    ovf.eq(((t ^ t[-1].replicate(XM + 2)) & high).any()),
                    neg.eq(t[-1]),
                    y[j * 8:(j + 1) * 8].eq(c[:8]),
                ]
        vy = v[STORE_STAGES - 1]

        # Pack lines into beats.
        beat = Signal(W)
        beat_valid = Signal()
        if L == W:
            m.d.comb += [beat.eq(y), beat_valid.eq(vy)]
        elif L > W:
            hold = Signal(L - W)
            left = Signal(range(L // W))
            m.d.comb += [beat.eq(Mux(left != 0, hold[:W], y[:W])),
                         beat_valid.eq(vy | (left != 0))]
            with m.If(adv):
                with m.If(left != 0):
                    m.d.sync += [hold.eq(hold >> W), left.eq(left - 1)]
                with m.Elif(vy):
                    m.d.sync += [hold.eq(y[W:]), left.eq(L // W - 1)]
        else:
            per = W // L
            acc_beat = Signal(W - L)
            count = Signal(range(per))
            # Lines enter at the top and move down, so line 0 ends in the lowest bits.
            m.d.comb += [beat.eq(Cat(acc_beat, y)),
                         beat_valid.eq(vy & (count == per - 1))]
            with m.If(adv & vy):
                m.d.sync += [acc_beat.eq(beat >> L), count.eq(count + 1)]

        # Output register with burst framing.
        w_burst = next_burst(m, w_addr, w_left, beat_bytes=B, max_burst=cfg.max_burst)
        with m.If(adv):
            m.d.sync += axi.wvalid.eq(beat_valid)
            with m.If(beat_valid):
                m.d.sync += axi.wdata.eq(beat)
                with m.If(w_in_burst == 0):
                    m.d.sync += [axi.wlast.eq(w_burst.len_m1 == 0),
                                 w_in_burst.eq(w_burst.len_m1)]
                    _advance(m, burst=w_burst, addr=w_addr, left=w_left, base=w_base,
                             groups=w_groups, pitch=dram_pitch, group_beats=group_beats)
                with m.Else():
                    m.d.sync += [axi.wlast.eq(w_in_burst == 1), w_in_burst.eq(w_in_burst - 1)]
        return m


def _above(v, n):
    """``[v > c for c in range(n)]`` for an unsigned ``v``, as shared decodes of its two
    halves (``hi > ch | hi == ch & lo > cl``) instead of ``n`` carry-chain comparators."""
    lo, hi = v[:len(v) // 2], v[len(v) // 2:]
    nl, nh = 1 << len(lo), 1 << len(hi)
    hi_eq = [hi == k for k in range(nh)]
    lo_eq = [lo == k for k in range(nl)]
    hi_gt = [Cat(*hi_eq[k + 1:]).any() if k + 1 < nh else Const(0, 1) for k in range(nh)]
    lo_gt = [Cat(*lo_eq[k + 1:]).any() if k + 1 < nl else Const(0, 1) for k in range(nl)]
    return [hi_gt[c // nl] | (hi_eq[c // nl] & lo_gt[c % nl]) if c < nl * nh else Const(0, 1)
            for c in range(n)]


def _advance(m, *, burst, addr, left, base, groups, pitch, group_beats):
    """After ``burst`` (:func:`~lowbit.hw.load.next_burst` at ``addr``, ``left``): the next
    burst of the group, or, when it ends a group with more after it, the first of the next
    group, at ``base + pitch`` (two registers; the sum is in parallel with the burst's
    compares, which select it)."""
    with m.If(burst.ends & (groups != 0)):
        nxt = (base + pitch)[:32]
        m.d.sync += [addr.eq(nxt), base.eq(nxt), left.eq(group_beats), groups.eq(groups - 1)]
    with m.Else():
        m.d.sync += [addr.eq(burst.addr_next), left.eq(burst.left_next)]
