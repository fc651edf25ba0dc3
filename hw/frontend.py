"""Instruction fetch over AXI4 and in-order dispatch to the unit queues."""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from lowbit import isa
from lowbit.isa import Opcode, Unit

from .axi import BURST_INCR, AXI4ReadSignature
from .decode import field, opcode_of

__all__ = ["Frontend"]


class Frontend(wiring.Component):
    """Fetches ``fetch_burst`` instructions per AXI4 burst, then dispatches them in order.

    Fetch and dispatch alternate: one AR, the burst's beats into a buffer, then one
    instruction per cycle into its unit's queue (``valid`` held while the queue is full).
    END (or an unknown opcode, which also sets ``error``) waits until every unit is idle
    and then pulses ``done``. ``PROG_ADDR`` must be aligned to ``fetch_burst * 16`` bytes.

    The burst buffer is a small memory with an asynchronous read port (LUT RAM on FPGAs)
    rather than ``fetch_burst * 128`` flip-flops and a wide read multiplexer.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "start": In(1), "prog_addr": In(32), "prog_len": In(32),
            "imem": Out(AXI4ReadSignature(addr_width=cfg.addr_bits, data_width=cfg.bus_bits)),
            "q_load": Out(stream.Signature(isa.INSTR_BITS)),
            "q_compute": Out(stream.Signature(isa.INSTR_BITS)),
            "q_store": Out(stream.Signature(isa.INSTR_BITS)),
            "units_idle": In(1),
            "done": Out(1), "error": Out(1), "dispatched": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        W, FB = cfg.bus_bits, cfg.fetch_burst
        IB = isa.INSTR_BITS
        pc = Signal(32)
        left = Signal(32)
        n = Signal(range(FB + 1))
        idx = Signal(range(FB + 1))
        beat = Signal(range(max(FB * IB // W, 1) + 1))
        imem = self.imem
        m.d.comb += [imem.arsize.eq(exact_log2(W // 8)), imem.arburst.eq(BURST_INCR),
                     imem.rready.eq(1)]

        # The burst buffer: words of max(W, IB) bits; a beat fills part of a word (W < IB)
        # or a word holds several instructions (W > IB).
        word = max(W, IB)
        depth = max(2, FB * IB // word)     # no zero-width address
        m.submodules.buf = buf = memory.Memory(shape=unsigned(word), depth=depth, init=[])
        beat_wr = Signal()
        wlanes = word // W
        if wlanes > 1:
            wp = buf.write_port(granularity=W)
            lane = beat[:exact_log2(wlanes)]
            m.d.comb += [wp.addr.eq(beat[exact_log2(wlanes):]),
                         wp.data.eq(imem.rdata.replicate(wlanes)),
                         wp.en.eq(beat_wr << lane)]
        else:
            wp = buf.write_port()
            m.d.comb += [wp.addr.eq(beat), wp.data.eq(imem.rdata), wp.en.eq(beat_wr)]
        rp = buf.read_port(domain="comb")
        ilanes = word // IB
        i = idx[:exact_log2(FB)] if FB > 1 else 0
        if ilanes > 1:
            m.d.comb += rp.addr.eq(i >> exact_log2(ilanes))
            cur = rp.data.word_select(i[:exact_log2(ilanes)] if FB > 1 else 0, IB)
        else:
            m.d.comb += rp.addr.eq(i)
            cur = rp.data
        op = opcode_of(cur)
        sync_unit = field(cur, Opcode.SYNC, "unit")
        queues = {Unit.LOAD: self.q_load, Unit.COMPUTE: self.q_compute,
                  Unit.STORE: self.q_store}
        for q in queues.values():
            m.d.comb += q.payload.eq(cur)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.prog_addr), left.eq(self.prog_len),
                                 self.dispatched.eq(0), self.error.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                take = Mux(left < FB, left, FB)
                with m.If(left == 0):
                    m.d.sync += self.error.eq(1)
                    m.next = "END"
                with m.Elif(~imem.arvalid):
                    if W >= IB:
                        beats = (take + (W // IB - 1)) >> exact_log2(W // IB)
                    else:
                        beats = take << exact_log2(IB // W)
                    m.d.sync += [imem.arvalid.eq(1), imem.araddr.eq(pc),
                                 imem.arlen.eq(beats - 1), n.eq(take), beat.eq(0)]
                with m.Elif(imem.arready):
                    m.d.sync += imem.arvalid.eq(0)
                    m.next = "RECV"
            with m.State("RECV"):
                with m.If(imem.rvalid):
                    m.d.comb += beat_wr.eq(1)
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(imem.rlast):
                        m.d.sync += idx.eq(0)
                        m.next = "DISPATCH"
            with m.State("DISPATCH"):
                fire = Signal()
                with m.Switch(op):
                    for opc in (Opcode.LOAD, Opcode.COMPUTE, Opcode.STORE):
                        with m.Case(opc):
                            q = queues[isa.UNIT_OF[opc]]
                            m.d.comb += [q.valid.eq(1), fire.eq(q.ready)]
                    with m.Case(Opcode.SYNC):
                        for u, q in queues.items():
                            with m.If(sync_unit == u):
                                m.d.comb += [q.valid.eq(1), fire.eq(q.ready)]
                        with m.If(sync_unit > max(Unit)):
                            m.d.sync += self.error.eq(1)
                            m.next = "END"
                    with m.Case(Opcode.END):
                        m.next = "END"
                    with m.Default():
                        m.d.sync += self.error.eq(1)
                        m.next = "END"
                with m.If(fire):
                    m.d.sync += [idx.eq(idx + 1), self.dispatched.eq(self.dispatched + 1)]
                    with m.If(idx == n - 1):
                        m.d.sync += [pc.eq(pc + (n << 4)), left.eq(left - n)]
                        m.next = "FETCH"
            with m.State("END"):
                with m.If(self.units_idle):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += self.dispatched.eq(self.dispatched + 1)
                    m.next = "IDLE"
        return m
