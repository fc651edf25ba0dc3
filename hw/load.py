"""The load unit: a 2-D strided AXI4 read DMA into the scratchpads."""

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from lowbit import isa
from lowbit.isa import Opcode
from lowbit.timing import LOAD_BURSTS_OUTSTANDING, LOAD_OUTSTANDING

from .axi import BURST_INCR, AXI4ReadSignature
from .decode import TokenPort, field, opcode_of

__all__ = ["Burst", "LoadUnit", "next_burst"]


class Burst(NamedTuple):
    """The next INCR burst of a walk at ``addr`` with ``left`` beats to go (:func:`next_burst`).
    ``len_m1``: its length minus one (AXI ``AxLEN``); ``ends``: it is the walk's last
    (``left`` fits it); ``addr_next``, ``left_next``: the walk after it (``addr_next`` only
    when not ``ends``)."""

    len_m1: Value
    ends: Value
    addr_next: Value
    left_next: Value


def next_burst(m, addr, left, *, beat_bytes, max_burst) -> Burst:
    """The next burst of at most ``max_burst`` beats, at most ``left``, never crossing a
    4 KiB boundary: its length is ``left``, ``max_burst`` or the beats to the boundary.

    Which one is decided by compares made in parallel straight from the registers, and each
    candidate's length, next address and remaining beats are computed alongside, so one mux
    level follows them (rather than a minimum of a minimum feeding the address adder)."""
    shift = exact_log2(beat_bytes)
    span = 4096 // beat_bytes                    # beats in a 4 KiB page
    off = addr[shift:12]                         # the burst's first beat in its page
    to_4k = Signal(range(span + 1))
    m.d.comb += to_4k.eq(span - off)
    ends = Signal()
    by_max = Signal()        # not ends: max_burst beats (else up to the boundary)
    m.d.comb += [ends.eq((left <= max_burst) & (left <= to_4k)),
                 by_max.eq(off <= span - max_burst if max_burst <= span else 0)]
    len_m1 = Signal(range(max(max_burst, span)))
    addr_next = Signal(len(addr))
    left_next = Signal(len(left))
    page_end = Cat(Const(0, 12), addr[12:] + 1)[:len(addr)]
    m.d.comb += [
        # to_4k - 1 is the offset's complement
        len_m1.eq(Mux(ends, left - 1, Mux(by_max, max_burst - 1, ~off))),
        addr_next.eq(Mux(by_max, addr + max_burst * beat_bytes, page_end)),
        left_next.eq(Mux(ends, 0, Mux(by_max, left - max_burst, left - to_4k))),
    ]
    return Burst(len_m1, ends, addr_next, left_next)


class LoadUnit(wiring.Component):
    """Executes LOAD (and SYNC on the load unit) in order, up to ``LOAD_OUTSTANDING`` LOADs
    in flight.

    The unit has two decoupled halves joined by a FIFO of per-LOAD descriptors (target,
    ``sp_addr``, ``rows``, ``row_beats``, ``push_next``):

    * Address side: takes a LOAD (and its token) on its start edge ``S`` when the FIFO has
      room, pushes its descriptor and issues one AR per cycle, from edge ``S + 2`` on
      (bursts of at most ``max_burst`` beats, split at 4 KiB), each only while fewer than
      ``LOAD_BURSTS_OUTSTANDING`` bursts are in flight. On the edge that registers
      the LOAD's last AR it may already take the next LOAD, so that LOAD's ARs follow
      without a gap while earlier data is still in flight.
    * Data side: ``rready`` is always high; each R beat is written to the target memory of
      the descriptor at the FIFO head, at consecutive beat addresses from its ``sp_addr``
      (R data returns in AR order, one ID). The LOAD completes (pushes its token, pops its
      descriptor) on the edge of its own last R beat, so LOADs complete in order.

    A SYNC starts only when no LOAD is in flight (address side idle, FIFO empty) and gives
    its token on the next edge; the next instruction may start one edge after that.
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

        # Descriptor of one in-flight LOAD, for the data side.
        d_layout = (("target", 2), ("sp_addr", 20), ("rows_m1", 16), ("row_beats_m1", 16),
                    ("push", 1))
        # (buffered: the data side compares the head's fields straight from a register)
        m.submodules.desc = desc = SyncFIFOBuffered(width=sum(w for _, w in d_layout),
                                                    depth=LOAD_OUTSTANDING)
        head, pos = {}, 0
        for name, width in d_layout:
            head[name] = desc.r_data[pos:pos + width]
            pos += width

        stride = Signal(32)
        row_beats = Signal(16)
        push_next = Signal()            # of a SYNC
        ar_row_base = Signal(32)
        ar_addr = Signal(32)
        ar_row_rem = Signal(17)
        ar_rows_rem = Signal(17)

        m.d.comb += [
            self.axi.arsize.eq(exact_log2(B)),
            self.axi.arburst.eq(BURST_INCR),
            self.axi.rready.eq(1),
        ]
        burst = next_burst(m, ar_addr, ar_row_rem, beat_bytes=B, max_burst=cfg.max_burst)

        pop = field(ins, F, "pop_next")
        is_load = opcode_of(ins) == Opcode.LOAD
        offer = self.instr.valid & (~pop | self.tok_next.avail)

        def take(loads_only):
            """Start the offered instruction if it may start now."""
            ok = offer & is_load & desc.w_rdy
            if not loads_only:
                ok = ok | (offer & ~is_load & ~desc.r_rdy)
            with m.If(ok):
                m.d.comb += [self.instr.ready.eq(1), self.tok_next.take.eq(pop)]
                with m.If(is_load):
                    addr = field(ins, F, "dram_addr")
                    m.d.comb += [
                        desc.w_en.eq(1),
                        desc.w_data.eq(Cat(field(ins, F, "target"), field(ins, F, "sp_addr"),
                                           (field(ins, F, "rows") - 1)[:16],
                                           (field(ins, F, "row_beats") - 1)[:16],
                                           field(ins, F, "push_next"))),
                    ]
                    m.d.sync += [
                        stride.eq(field(ins, F, "stride")),
                        row_beats.eq(field(ins, F, "row_beats")),
                        ar_row_base.eq(addr), ar_addr.eq(addr),
                        ar_row_rem.eq(field(ins, F, "row_beats")),
                        ar_rows_rem.eq(field(ins, F, "rows")),
                    ]
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += push_next.eq(field(ins, F, "push_next"))
                    m.next = "SYNC"
            return ok

        # Bursts in flight: counted from the edge registering the AR to its last R beat.
        bursts_out = Signal(range(LOAD_BURSTS_OUTSTANDING + 1))
        ar_new = Signal()
        m.d.sync += bursts_out.eq(bursts_out + ar_new
                                  - (self.axi.rvalid & self.axi.rready & self.axi.rlast))

        # An AR stays valid until accepted; a new one may be registered in the same cycle.
        with m.If(self.axi.arready):
            m.d.sync += self.axi.arvalid.eq(0)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                take(loads_only=False)
            with m.State("SYNC"):
                m.d.comb += self.tok_next.give.eq(push_next)
                m.next = "IDLE"
            with m.State("RUN"):
                # Address channel: one burst per cycle while bursts remain and fewer than
                # LOAD_BURSTS_OUTSTANDING are in flight.
                with m.If((~self.axi.arvalid | self.axi.arready)
                          & (bursts_out != LOAD_BURSTS_OUTSTANDING)):
                    m.d.comb += ar_new.eq(1)
                    m.d.sync += [
                        self.axi.arvalid.eq(1),
                        self.axi.araddr.eq(ar_addr),
                        self.axi.arlen.eq(burst.len_m1),
                    ]
                    with m.If(burst.ends):
                        m.d.sync += [
                            ar_rows_rem.eq(ar_rows_rem - 1),
                            ar_row_base.eq(ar_row_base + stride),
                            ar_addr.eq(ar_row_base + stride),
                            ar_row_rem.eq(row_beats),
                        ]
                        with m.If(ar_rows_rem == 1):
                            # Last AR of this LOAD: the next LOAD may start on this edge.
                            m.next = "IDLE"
                            take(loads_only=True)
                    with m.Else():
                        m.d.sync += [ar_addr.eq(burst.addr_next),
                                     ar_row_rem.eq(burst.left_next)]

        # Data channel: each beat goes where the oldest in-flight LOAD wants it.
        beat = Signal(16)
        row = Signal(16)
        off = Signal(20)
        with m.If(self.axi.rvalid & desc.r_rdy):
            m.d.comb += [
                self.wr_en.eq(1 << head["target"]),
                self.wr_addr.eq(head["sp_addr"] + off),
                self.wr_data.eq(self.axi.rdata),
            ]
            m.d.sync += [off.eq(off + 1), beat.eq(beat + 1)]
            with m.If(beat == head["row_beats_m1"]):
                m.d.sync += [beat.eq(0), row.eq(row + 1)]
                with m.If(row == head["rows_m1"]):
                    m.d.sync += [row.eq(0), off.eq(0)]
                    m.d.comb += [desc.r_en.eq(1), self.tok_next.give.eq(head["push"])]

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | desc.r_rdy)
        return m
