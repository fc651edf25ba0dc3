"""Run the whole accelerator under ``amaranth.sim`` (no Verilator build) for small tests.

The AXI memory follows the timing of ``docs/contracts.md``. Slow (a few thousand cycles per
second) but needs no C++ build, so unit tests of the top level use it.
"""

from collections import deque

from amaranth.sim import Simulator

from lowbit import isa
from lowbit.hw.top import Top


class _Port:
    def __init__(self, bus, mem, latency, beat_bytes, writes):
        self.bus, self.mem, self.lat, self.B = bus, mem, latency, beat_bytes
        self.rq = deque()        # (ready_edge, addr, last)
        self.wq = deque()        # pending AW: [addr, beats_left]
        self.wdata = deque()     # W beats (data, last) before their AW
        self.bq = deque()        # ready edges of B responses
        self.aw_edges = deque()
        self.writes = writes
        self.r_busy_until = -1

    def edge(self, ctx, e):
        """Handshakes happening at edge ``e`` (called just before it)."""
        b = self.bus
        if ctx.get(b.arvalid):
            addr, n = ctx.get(b.araddr), ctx.get(b.arlen) + 1
            for k in range(n):
                self.rq.append((e + self.lat + k, addr + k * self.B, k == n - 1))
        if self.writes:
            if ctx.get(b.awvalid):
                self.wq.append([ctx.get(b.awaddr), ctx.get(b.awlen) + 1, e])
            if ctx.get(b.wvalid):
                self.wdata.append((ctx.get(b.wdata), ctx.get(b.wlast), e))
            while self.wq and self.wdata:
                addr, left, aw_e = self.wq[0]
                data, last, w_e = self.wdata.popleft()
                self.mem[addr:addr + self.B] = data.to_bytes(self.B, "little")
                self.wq[0][0] += self.B
                self.wq[0][1] -= 1
                if self.wq[0][1] == 0:
                    assert last, "wlast missing"
                    self.wq.popleft()
                    self.bq.append(max(aw_e, w_e) + self.lat)
                else:
                    assert not last, "early wlast"

    def drive(self, ctx, e):
        """Outputs seen by edge ``e``; returns whether an R/B handshake happens at ``e``."""
        b = self.bus
        if self.rq and self.rq[0][0] <= e:
            ready, addr, last = self.rq.popleft()
            ctx.set(b.rvalid, 1)
            ctx.set(b.rdata, int.from_bytes(self.mem[addr:addr + self.B], "little"))
            ctx.set(b.rlast, last)
        else:
            ctx.set(b.rvalid, 0)
        if self.writes:
            if self.bq and self.bq[0] <= e:
                self.bq.popleft()
                ctx.set(b.bvalid, 1)
            else:
                ctx.set(b.bvalid, 0)


def run_top(cfg, image: bytearray, prog_addr: int, prog_len: int, *, latency: int = 20,
            max_cycles: int = 200_000, vcd: str | None = None):
    """Run a program; returns ``(memory, cycles_register, dispatched)``."""
    dut = Top(cfg)
    mem = bytearray(image)
    result = {}

    async def tb(ctx):
        for p in (dut.imem, dut.dmem):
            ctx.set(p.arready, 1)
        ctx.set(dut.dmem.awready, 1)
        ctx.set(dut.dmem.wready, 1)
        ports = [_Port(dut.imem, mem, latency, cfg.beat_bytes, False),
                 _Port(dut.dmem, mem, latency, cfg.beat_bytes, True)]

        async def csr_write(off, value):
            c = dut.csr
            ctx.set(c.awaddr, off)
            ctx.set(c.wdata, value)
            ctx.set(c.awvalid, 1)
            ctx.set(c.wvalid, 1)
            ctx.set(c.bready, 1)
            while not ctx.get(c.awready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(c.awvalid, 0)
            ctx.set(c.wvalid, 0)
            while not ctx.get(c.bvalid):
                await ctx.tick()
            await ctx.tick()

        async def csr_read(off):
            c = dut.csr
            ctx.set(c.araddr, off)
            ctx.set(c.arvalid, 1)
            ctx.set(c.rready, 1)
            while not ctx.get(c.arready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(c.arvalid, 0)
            while not ctx.get(c.rvalid):
                await ctx.tick()
            value = ctx.get(c.rdata)
            await ctx.tick()
            return value

        await csr_write(isa.csr_offset("PROG_ADDR"), prog_addr)
        await csr_write(isa.csr_offset("PROG_LEN"), prog_len)
        await csr_write(isa.csr_offset("CTRL"), 1)
        e = 0
        while not ctx.get(dut.irq):
            for p in ports:
                p.drive(ctx, e)
            for p in ports:
                p.edge(ctx, e)
            await ctx.tick()
            e += 1
            if e > max_cycles:
                raise TimeoutError(f"no done after {max_cycles} cycles")
        result["cycles"] = await csr_read(isa.csr_offset("CYCLES_LO"))
        result["instrs"] = await csr_read(isa.csr_offset("INSTRS"))
        result["status"] = await csr_read(isa.csr_offset("STATUS"))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return mem, result
