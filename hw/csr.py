"""Control and status registers on an AXI4-Lite slave (map: ``lowbit.isa.CSRS``)."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit import isa

from .axi import AXI4LiteSignature

__all__ = ["ControlRegisters"]

_OFF = {name: offset for name, offset, _, _ in isa.CSRS}


class ControlRegisters(wiring.Component):
    """AXI4-Lite slave with registered outputs; one write and one read in flight.

    A write is accepted when AW and W are both valid (both ready pulse together, B follows
    a cycle later). Writing CTRL bit 0 while idle pulses ``start`` and clears the cycle
    counter; ``cycles`` then counts every clock edge until (and including) ``done``.
    """

    def __init__(self):
        super().__init__({
            "bus": In(AXI4LiteSignature(addr_width=8)),
            "start": Out(1), "prog_addr": Out(32), "prog_len": Out(32),
            "done": In(1), "error": In(1), "dispatched": In(32),
            "irq": Out(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        cycles = Signal(64)
        done_flag = Signal()
        m.d.comb += self.irq.eq(done_flag)

        # Writes.
        m.d.comb += bus.bresp.eq(0)
        with m.If(bus.awready):
            m.d.sync += [bus.awready.eq(0), bus.wready.eq(0), bus.bvalid.eq(1)]
            with m.Switch(bus.awaddr):
                with m.Case(_OFF["CTRL"]):
                    with m.If(bus.wdata[0] & ~self.busy):
                        m.d.comb += self.start.eq(1)
                with m.Case(_OFF["PROG_ADDR"]):
                    m.d.sync += self.prog_addr.eq(bus.wdata)
                with m.Case(_OFF["PROG_LEN"]):
                    m.d.sync += self.prog_len.eq(bus.wdata)
        with m.Elif(bus.awvalid & bus.wvalid & ~bus.bvalid):
            m.d.sync += [bus.awready.eq(1), bus.wready.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # Reads.
        m.d.comb += bus.rresp.eq(0)
        with m.If(bus.arready):
            m.d.sync += [bus.arready.eq(0), bus.rvalid.eq(1)]
            regs = {
                "CTRL": 0, "STATUS": self.busy | (done_flag << 1) | (self.error << 2),
                "PROG_ADDR": self.prog_addr, "PROG_LEN": self.prog_len,
                "CYCLES_LO": cycles[:32], "CYCLES_HI": cycles[32:],
                "INSTRS": self.dispatched, "ID": isa.ID_VALUE,
            }
            m.d.sync += bus.rdata.eq(0)
            with m.Switch(bus.araddr):
                for name, value in regs.items():
                    with m.Case(_OFF[name]):
                        m.d.sync += bus.rdata.eq(value)
        with m.Elif(bus.arvalid & ~bus.rvalid):
            m.d.sync += bus.arready.eq(1)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)

        # Run state and the cycle counter.
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), done_flag.eq(0), cycles.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(self.done):
                m.d.sync += [self.busy.eq(0), done_flag.eq(1)]
        return m
