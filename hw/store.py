"""The store unit: post-processing (bias, requantize, ReLU, clamp) and an AXI4 write DMA."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from lowbit import isa
from lowbit.isa import Opcode
from lowbit.layout import MULT_BITS

from .axi import BURST_INCR, AXI4WriteSignature
from .decode import TokenPort, field, opcode_of
from .load import burst_len

__all__ = ["StoreUnit"]


class StoreUnit(wiring.Component):
    """Executes STORE (and SYNC on the store unit) in order.

    A STORE reads its parameter line once at start, then reads accumulator lines through
    a 3-stage pipeline (read, ``(acc + bias) * mult``, round/shift/ReLU/clamp) into a
    packer that emits one W beat per cycle (a line is ``cols`` bytes; several lines share a
    beat on wide buses, a line spans several beats on narrow ones). AW bursts are issued one
    per cycle independently of the data. Every stage stalls while ``wvalid & ~wready``.
    It completes (and pushes) on the edge of its last B response.
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

        # Per-instruction registers.
        push_prev = Signal()
        relu = Signal()
        lo = Signal(signed(10))
        hi = Signal(signed(10))
        rd_ptr = Signal(16)
        rd_left = Signal(17)
        throttle = Signal(range(max(2, L // W + 1)))
        aw_addr = Signal(32)
        aw_left = Signal(21)
        w_addr = Signal(32)
        w_left = Signal(21)
        w_in_burst = Signal(9)
        b_pending = Signal(16)
        active = Signal()

        m.d.comb += [
            axi.awsize.eq(exact_log2(B)), axi.awburst.eq(BURST_INCR),
            axi.wstrb.eq((1 << B) - 1), axi.bready.eq(1),
        ]
        adv = Signal()
        m.d.comb += adv.eq(~axi.wvalid | axi.wready)

        # -- start ----------------------------------------------------------------------
        beats_of = field(ins, F, "rows") << exact_log2(L)
        with m.FSM():
            with m.State("IDLE"):
                pop = field(ins, F, "pop_prev")
                with m.If(self.instr.valid & (~pop | self.tok_prev.avail)):
                    m.d.comb += [self.instr.ready.eq(1), self.tok_prev.take.eq(pop)]
                    m.d.sync += push_prev.eq(field(ins, F, "push_prev"))
                    with m.If(opcode_of(ins) == Opcode.STORE):
                        bits = field(ins, F, "out_bits")
                        uns = field(ins, F, "out_unsigned")
                        nbeats = beats_of >> exact_log2(W)
                        m.d.comb += [self.prm_en.eq(1),
                                     self.prm_addr.eq(field(ins, F, "param_addr"))]
                        m.d.sync += [
                            relu.eq(field(ins, F, "relu")),
                            hi.eq(Mux(uns, (1 << bits) - 1, (1 << (bits - 1)[:4]) - 1)),
                            lo.eq(Mux(uns, 0, -(1 << (bits - 1)[:4]))),
                            rd_ptr.eq(field(ins, F, "acc_addr")),
                            rd_left.eq(field(ins, F, "rows")),
                            throttle.eq(0),
                            aw_addr.eq(field(ins, F, "dram_addr")),
                            aw_left.eq(nbeats),
                            w_addr.eq(field(ins, F, "dram_addr")),
                            w_left.eq(nbeats),
                            w_in_burst.eq(0),
                            active.eq(1),
                        ]
                        m.next = "RUN"
                    with m.Else():
                        m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [self.busy.eq(1), self.tok_prev.give.eq(push_prev)]
                m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                # Finished when every beat went out and every response came back.
                b_fire = axi.bvalid & axi.bready
                with m.If((aw_left == 0) & (w_left == 0) & ~axi.wvalid & ~axi.awvalid
                          & (b_pending == 1) & b_fire):
                    m.d.comb += self.tok_prev.give.eq(push_prev)
                    m.d.sync += active.eq(0)
                    m.next = "IDLE"

        # -- address channel ----------------------------------------------------------------
        aw_len = burst_len(m, aw_addr, aw_left, beat_bytes=B, max_burst=cfg.max_burst)
        aw_fire = axi.awvalid & axi.awready
        b_fire = axi.bvalid & axi.bready
        with m.If(~axi.awvalid | axi.awready):
            with m.If(active & (aw_left != 0)):
                m.d.sync += [axi.awvalid.eq(1), axi.awaddr.eq(aw_addr),
                             axi.awlen.eq(aw_len - 1),
                             aw_addr.eq(aw_addr + (aw_len << exact_log2(B))),
                             aw_left.eq(aw_left - aw_len)]
            with m.Else():
                m.d.sync += axi.awvalid.eq(0)
        m.d.sync += b_pending.eq(b_pending + aw_fire - b_fire)

        # -- data pipeline ----------------------------------------------------------------
        # Stage 0: accumulator read. Lines wider than a beat are read every L/W cycles.
        v0 = Signal()
        issue = Signal()
        m.d.comb += [issue.eq(active & (rd_left != 0) & (throttle == 0)),
                     self.acc_en.eq(adv), self.acc_addr.eq(rd_ptr)]
        with m.If(adv):
            m.d.sync += v0.eq(issue)
            with m.If(issue):
                m.d.sync += [rd_ptr.eq(rd_ptr + 1), rd_left.eq(rd_left - 1)]
                if L > W:
                    m.d.sync += throttle.eq(L // W - 1)
            with m.Elif(throttle != 0):
                m.d.sync += throttle.eq(throttle - 1)

        # Stage 1: x = (acc + bias) * mult.
        v1 = Signal()
        acc_w, prod_w = cfg.acc_bits, 32 + 2 + MULT_BITS
        x = [Signal(signed(prod_w), name=f"x{j}") for j in range(C)]
        shifts = [Signal(6, name=f"shift{j}") for j in range(C)]
        with m.If(adv):
            m.d.sync += v1.eq(v0)
            for j in range(C):
                acc = self.acc_data[j * acc_w:(j + 1) * acc_w].as_signed()
                rec = self.prm_data[j * 64:(j + 1) * 64]
                bias = rec[0:32].as_signed()
                mult = rec[32:48]
                m.d.sync += [x[j].eq((acc + bias) * mult), shifts[j].eq(rec[48:54])]

        # Stage 2: round half away from zero, shift, ReLU, clamp.
        v2 = Signal()
        y = Signal(L)
        with m.If(adv):
            m.d.sync += v2.eq(v1)
            for j in range(C):
                s = shifts[j]
                half = Mux(s == 0, 0, 1 << (s - 1)[:6])
                neg = Mux((s != 0) & x[j][-1], 1, 0)
                r = Signal(signed(prod_w + 1), name=f"r{j}")
                m.d.comb += r.eq((x[j] + half - neg) >> s)
                c = Signal(signed(10), name=f"c{j}")
                with m.If(relu & r[-1]):
                    m.d.comb += c.eq(0)
                with m.Elif(r > hi):
                    m.d.comb += c.eq(hi)
                with m.Elif(r < lo):
                    m.d.comb += c.eq(lo)
                with m.Else():
                    m.d.comb += c.eq(r)
                m.d.sync += y[j * 8:(j + 1) * 8].eq(c[:8])

        # Stage 3: pack lines into beats.
        beat = Signal(W)
        beat_valid = Signal()
        if L == W:
            m.d.comb += [beat.eq(y), beat_valid.eq(v2)]
        elif L > W:
            hold = Signal(L - W)
            left = Signal(range(L // W))
            m.d.comb += [beat.eq(Mux(left != 0, hold[:W], y[:W])),
                         beat_valid.eq(v2 | (left != 0))]
            with m.If(adv):
                with m.If(left != 0):
                    m.d.sync += [hold.eq(hold >> W), left.eq(left - 1)]
                with m.Elif(v2):
                    m.d.sync += [hold.eq(y[W:]), left.eq(L // W - 1)]
        else:
            per = W // L
            acc_beat = Signal(W - L)
            count = Signal(range(per))
            # Lines enter at the top and move down, so line 0 ends in the lowest bits.
            m.d.comb += [beat.eq(Cat(acc_beat, y)),
                         beat_valid.eq(v2 & (count == per - 1))]
            with m.If(adv & v2):
                m.d.sync += [acc_beat.eq(beat >> L), count.eq(count + 1)]

        # Output register with burst framing.
        w_len = burst_len(m, w_addr, w_left, beat_bytes=B, max_burst=cfg.max_burst)
        with m.If(adv):
            m.d.sync += axi.wvalid.eq(beat_valid)
            with m.If(beat_valid):
                m.d.sync += axi.wdata.eq(beat)
                with m.If(w_in_burst == 0):
                    m.d.sync += [axi.wlast.eq(w_len == 1), w_in_burst.eq(w_len - 1),
                                 w_addr.eq(w_addr + (w_len << exact_log2(B))),
                                 w_left.eq(w_left - w_len)]
                with m.Else():
                    m.d.sync += [axi.wlast.eq(w_in_burst == 1), w_in_burst.eq(w_in_burst - 1)]
        return m
