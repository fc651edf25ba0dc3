"""The load unit: a 2-D strided AXI4 read DMA into the scratchpads."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from lowbit import isa
from lowbit.isa import Opcode

from .axi import BURST_INCR, AXI4ReadSignature
from .decode import TokenPort, field, opcode_of

__all__ = ["LoadUnit", "burst_len"]


def burst_len(m, addr, remaining, *, beat_bytes, max_burst):
    """Combinational length of the next INCR burst: at most ``max_burst`` beats, at most
    ``remaining``, never crossing a 4 KiB boundary."""
    shift = exact_log2(beat_bytes)
    to_4k = Signal(range(4096 // beat_bytes + 1))
    m.d.comb += to_4k.eq((4096 - addr[:12]) >> shift)
    first = Signal(range(max(max_burst, 4096 // beat_bytes) + 1))
    out = Signal.like(first)
    m.d.comb += [first.eq(Mux(remaining < max_burst, remaining, max_burst)),
                 out.eq(Mux(to_4k < first, to_4k, first))]
    return out


class LoadUnit(wiring.Component):
    """Executes LOAD (and SYNC on the load unit) in order.

    A LOAD issues one AR per cycle (bursts of at most ``max_burst`` beats, split at 4 KiB),
    keeps ``rready`` high and writes each beat to the target memory as it arrives, in
    order, at consecutive beat addresses from ``sp_addr``. It completes (and pushes its
    token) on the edge of its last R beat; the next instruction may start on the cycle
    after. Tokens are taken on the start edge.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        W = cfg.bus_bits
        super().__init__({
            "instr": In(stream.Signature(isa.INSTR_BITS)),
            "tok_next": Out(TokenPort()),
            "axi": Out(AXI4ReadSignature(addr_width=cfg.addr_bits, data_width=W)),
            "wr_en": Out(3),          # one-hot over LoadTarget
            "wr_addr": Out(20),
            "wr_data": Out(W),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        B = cfg.beat_bytes
        ins = self.instr.payload
        F = Opcode.LOAD

        target = Signal(2)
        stride = Signal(32)
        row_beats = Signal(16)
        push_next = Signal()
        # AR side
        ar_row_base = Signal(32)
        ar_addr = Signal(32)
        ar_row_rem = Signal(17)
        ar_rows_rem = Signal(17)
        # R side
        r_ptr = Signal(20)
        r_row_rem = Signal(17)
        r_rows_rem = Signal(17)

        m.d.comb += [
            self.axi.arsize.eq(exact_log2(B)),
            self.axi.arburst.eq(BURST_INCR),
            self.axi.rready.eq(1),
        ]
        blen = burst_len(m, ar_addr, ar_row_rem, beat_bytes=B, max_burst=cfg.max_burst)

        with m.FSM():
            with m.State("IDLE"):
                pop = field(ins, F, "pop_next")
                with m.If(self.instr.valid & (~pop | self.tok_next.avail)):
                    m.d.comb += [self.instr.ready.eq(1), self.tok_next.take.eq(pop)]
                    m.d.sync += push_next.eq(field(ins, F, "push_next"))
                    with m.If(opcode_of(ins) == Opcode.LOAD):
                        addr = field(ins, F, "dram_addr")
                        m.d.sync += [
                            target.eq(field(ins, F, "target")),
                            stride.eq(field(ins, F, "stride")),
                            row_beats.eq(field(ins, F, "row_beats")),
                            ar_row_base.eq(addr), ar_addr.eq(addr),
                            ar_row_rem.eq(field(ins, F, "row_beats")),
                            ar_rows_rem.eq(field(ins, F, "rows")),
                            r_ptr.eq(field(ins, F, "sp_addr")),
                            r_row_rem.eq(field(ins, F, "row_beats")),
                            r_rows_rem.eq(field(ins, F, "rows")),
                        ]
                        m.next = "RUN"
                    with m.Else():
                        m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [self.busy.eq(1), self.tok_next.give.eq(push_next)]
                m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                # Address channel: one burst per cycle while bursts remain.
                with m.If(~self.axi.arvalid | self.axi.arready):
                    with m.If(ar_rows_rem != 0):
                        m.d.sync += [
                            self.axi.arvalid.eq(1),
                            self.axi.araddr.eq(ar_addr),
                            self.axi.arlen.eq(blen - 1),
                        ]
                        with m.If(blen == ar_row_rem):
                            m.d.sync += [
                                ar_rows_rem.eq(ar_rows_rem - 1),
                                ar_row_base.eq(ar_row_base + stride),
                                ar_addr.eq(ar_row_base + stride),
                                ar_row_rem.eq(row_beats),
                            ]
                        with m.Else():
                            m.d.sync += [
                                ar_addr.eq(ar_addr + (blen << exact_log2(B))),
                                ar_row_rem.eq(ar_row_rem - blen),
                            ]
                    with m.Else():
                        m.d.sync += self.axi.arvalid.eq(0)
                # Data channel: write each beat where it belongs.
                with m.If(self.axi.rvalid):
                    m.d.comb += [
                        self.wr_en.eq(1 << target),
                        self.wr_addr.eq(r_ptr),
                        self.wr_data.eq(self.axi.rdata),
                    ]
                    m.d.sync += r_ptr.eq(r_ptr + 1)
                    with m.If(r_row_rem == 1):
                        m.d.sync += [r_rows_rem.eq(r_rows_rem - 1), r_row_rem.eq(row_beats)]
                        with m.If(r_rows_rem == 1):
                            m.d.comb += self.tok_next.give.eq(push_next)
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += r_row_rem.eq(r_row_rem - 1)
        return m
