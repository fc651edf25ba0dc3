"""The load unit: a 2-D strided AXI4 read DMA into the scratchpads."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from lowbit import isa
from lowbit.isa import Opcode
from lowbit.timing import LOAD_BURSTS_OUTSTANDING, LOAD_OUTSTANDING

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
        m.submodules.desc = desc = SyncFIFO(width=sum(w for _, w in d_layout),
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
        blen = burst_len(m, ar_addr, ar_row_rem, beat_bytes=B, max_burst=cfg.max_burst)

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
                        self.axi.arlen.eq(blen - 1),
                    ]
                    with m.If(blen == ar_row_rem):
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
                        m.d.sync += [
                            ar_addr.eq(ar_addr + (blen << exact_log2(B))),
                            ar_row_rem.eq(ar_row_rem - blen),
                        ]

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
