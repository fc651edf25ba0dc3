"""On-chip AXI4 memory with the exact timing of ``docs/contracts.md``.

:class:`AxiRam` is the memory the accelerator sees on a board without external DRAM. It
answers its AXI4 port with the same edge-exact timing as the memory model of the ``sim`` and
``rtl`` backends (latency ``L``), so the cycle simulator run with ``mem_latency=L`` predicts
the board's CYCLES register exactly. A byte-wide ``host`` port (:class:`HostMemSignature`)
lets a host bridge load and read the memory; it only uses memory ports the AXI side leaves
free in that cycle, so host traffic never changes the AXI timing.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .axi import AXI4ReadSignature, AXI4Signature

__all__ = ["MIN_LATENCY", "AxiRam", "HostMemSignature"]

#: The smallest latency :class:`AxiRam` implements exactly (two cycles of address queue, one
#: of memory read, one of output register).
MIN_LATENCY = 4
#: Host port address width (byte addresses; the memory uses the low bits).
HOST_ADDR_BITS = 32


class HostMemSignature(wiring.Signature):
    """A byte-wide memory access port, master's view.

    Members: ``req``, ``we``, ``addr`` (byte address), ``wdata`` (out); ``ack``, ``rdata``
    (in). The master holds ``req`` and the request fields until ``ack`` is high for one
    cycle, then drops ``req`` or presents the next request. A write is done at the edge that
    sees ``ack``; a read returns its byte in ``rdata`` while ``ack`` is high.
    """

    def __init__(self, *, addr_width: int = HOST_ADDR_BITS):
        super().__init__({
            "req": Out(1), "we": Out(1), "addr": Out(addr_width), "wdata": Out(8),
            "ack": In(1), "rdata": In(8),
        })


def _check_int(name, value, lo, hi=None, *, pow2=False):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi) or (pow2 and value & (value - 1)):
        what = "a power of two" if pow2 else "an integer"
        bounds = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise ValueError(f"{name} must be {what} {bounds}, not {value}")


def _delay(m: Module, event, cycles: int, name: str):
    """``event`` delayed by ``cycles`` clock edges (a shift register; ``cycles`` >= 1)."""
    sr = Signal(cycles, name=name)
    m.d.sync += sr.eq(Cat(event, sr[:-1]) if cycles > 1 else event)
    return sr[cycles - 1]


class AxiRam(wiring.Component):
    """``size_bytes`` of block RAM behind an AXI4 slave port with latency ``latency``.

    Timing, with ``L`` = ``latency`` (``docs/contracts.md``, "Memory model timing"):

    * ``arready``, ``awready`` and ``wready`` are always 1; ``rresp`` = ``bresp`` = 0.
    * Beat ``k`` of a read burst accepted at edge ``t`` is available at edge ``t + L + k``;
      beats go out in order, one per edge, each at the later of its availability and the
      edge after the previous beat's handshake (``rready`` back-pressure is honoured).
    * The B response of a write burst is available at ``max(aw_edge, last_w_edge) + L``;
      responses in order, one per edge while ``bready``. W beats may precede their AW.

    Data: a read beat returns the memory as it is when the beat is read from the RAM (one
    cycle before it is offered), a write beat lands a few cycles after both it and its AW
    arrived and always before its B response. Programs whose tokens order every read after
    the writes it depends on (all compiled programs) see the same data as with the model.

    Addresses wrap modulo ``size_bytes`` (the RAM decodes the low address bits only). Only
    INCR bursts of full bus width are supported (what ``lowbit_top`` issues). Up to
    ``queue_depth`` bursts may wait per channel; a burst arriving at a full queue is lost
    and pulses ``overflow`` (the board bridge reports it; raise ``queue_depth``).

    ``read_only=True`` gives an AR/R-only port (instruction memory). The ``host`` port
    (:class:`HostMemSignature`, flipped) reads and writes single bytes; it is served only in
    cycles where the AXI side does not use the RAM's read or write port.
    """

    def __init__(self, *, size_bytes: int, data_width: int, addr_width: int, latency: int,
                 read_only: bool = False, queue_depth: int = 64):
        _check_int("data_width", data_width, 32, 1024, pow2=True)
        _check_int("addr_width", addr_width, 8, 32)
        _check_int("size_bytes", size_bytes, 2 * data_width // 8, 1 << addr_width, pow2=True)
        _check_int("latency", latency, MIN_LATENCY, 1024)
        _check_int("queue_depth", queue_depth, 2, 4096)
        self.size_bytes, self.data_width, self.addr_width = size_bytes, data_width, addr_width
        self.latency, self.read_only, self.queue_depth = latency, read_only, queue_depth
        sig = AXI4ReadSignature if read_only else AXI4Signature
        super().__init__({
            "axi": In(sig(addr_width=addr_width, data_width=data_width)),
            "host": In(HostMemSignature()),
            "overflow": Out(1),
        })

    @property
    def depth(self) -> int:
        """RAM words (one bus beat each)."""
        return self.size_bytes * 8 // self.data_width

    def elaborate(self, platform):
        m = Module()
        axi, host = self.axi, self.host
        W, L, Q = self.data_width, self.latency, self.queue_depth
        B = W // 8
        lane_bits = exact_log2(B)
        ab = ceil_log2(self.depth)

        m.submodules.mem = mem = memory.Memory(shape=unsigned(W), depth=self.depth, init=[])
        rp = mem.read_port()
        wp = mem.write_port(granularity=8)
        overflow = []

        # -- read channel: AR queue, release after L - 2 edges, one beat per cycle --------
        m.d.comb += [axi.arready.eq(1), axi.rresp.eq(0)]
        m.submodules.arq = arq = SyncFIFOBuffered(width=ab + 8, depth=Q + 1)
        m.d.comb += [arq.w_en.eq(axi.arvalid),
                     arq.w_data.eq(Cat(axi.araddr[lane_bits:lane_bits + ab], axi.arlen))]
        overflow.append(axi.arvalid & ~arq.w_rdy)
        # An AR at edge t is released in the cycle after edge t + L - 3, loaded into the
        # engine at t + L - 2, read from the RAM at t + L - 1 and offered before t + L.
        released = _delay(m, axi.arvalid, L - 2, "ar_release")
        rel_cnt = Signal(range(Q + 2))
        cur_valid = Signal()
        cur_addr = Signal(ab)
        cur_left = Signal(9)
        out_valid = Signal()
        out_last = Signal()
        m.d.comb += [axi.rvalid.eq(out_valid), axi.rlast.eq(out_last), axi.rdata.eq(rp.data)]

        space = ~out_valid | axi.rready          # the output register is free after this edge
        issue = cur_valid & space
        last_beat = cur_left == 1
        start = (~cur_valid | (issue & last_beat)) & ((rel_cnt != 0) | released)
        m.d.comb += arq.r_en.eq(start)
        m.d.sync += rel_cnt.eq(rel_cnt + released - start)
        with m.If(issue):
            m.d.sync += [out_valid.eq(1), out_last.eq(last_beat),
                         cur_addr.eq(cur_addr + 1), cur_left.eq(cur_left - 1)]
            with m.If(last_beat):
                m.d.sync += cur_valid.eq(0)
        with m.Elif(axi.rready):
            m.d.sync += out_valid.eq(0)
        with m.If(start):
            m.d.sync += [cur_valid.eq(1), cur_addr.eq(arq.r_data[:ab]),
                         cur_left.eq(arq.r_data[ab:] + 1)]

        # Host reads take the read port when no beat is read and the output may change.
        host_word = host.addr[lane_bits:lane_bits + ab]
        host_lane = host.addr[:lane_bits]
        rd_pending = Signal()
        rd_lane = Signal(lane_bits)
        host_rd = host.req & ~host.we & ~rd_pending & ~issue & space
        m.d.comb += [rp.en.eq(issue | host_rd), rp.addr.eq(Mux(issue, cur_addr, host_word))]
        m.d.sync += rd_pending.eq(host_rd)
        with m.If(host_rd):
            m.d.sync += rd_lane.eq(host_lane)
        m.d.comb += host.rdata.eq(rp.data.word_select(rd_lane, 8))

        # -- write channel ------------------------------------------------------------------
        eng_wr = Signal()
        if not self.read_only:
            eng_addr, eng_data, eng_strb = self._write_channel(m, axi, ab, lane_bits, overflow,
                                                               eng_wr)
        host_wr = host.req & host.we & ~eng_wr
        host_lanes = Signal(B)
        m.d.comb += host_lanes.eq(1 << host_lane)
        if self.read_only:
            m.d.comb += [wp.en.eq(Mux(host_wr, host_lanes, 0)), wp.addr.eq(host_word),
                         wp.data.eq(host.wdata.replicate(B))]
        else:
            m.d.comb += [
                wp.en.eq(Mux(eng_wr, eng_strb, Mux(host_wr, host_lanes, 0))),
                wp.addr.eq(Mux(eng_wr, eng_addr, host_word)),
                wp.data.eq(Mux(eng_wr, eng_data, host.wdata.replicate(B))),
            ]
        m.d.comb += [host.ack.eq(host_wr | rd_pending),
                     self.overflow.eq(Cat(*overflow).any())]
        return m

    def _write_channel(self, m, axi, ab, lane_bits, overflow, eng_wr):
        W, L, Q = self.data_width, self.latency, self.queue_depth
        B = W // 8
        m.d.comb += [axi.awready.eq(1), axi.wready.eq(1), axi.bresp.eq(0)]
        m.submodules.awq = awq = SyncFIFOBuffered(width=ab, depth=Q + 1)
        m.submodules.wq = wq = SyncFIFOBuffered(width=W + B + 1, depth=Q + 1)
        m.d.comb += [awq.w_en.eq(axi.awvalid),
                     awq.w_data.eq(axi.awaddr[lane_bits:lane_bits + ab]),
                     wq.w_en.eq(axi.wvalid), wq.w_data.eq(Cat(axi.wdata, axi.wstrb, axi.wlast))]
        overflow += [axi.awvalid & ~awq.w_rdy, axi.wvalid & ~wq.w_rdy]

        # A burst completes at the edge where both its AW and its last W beat have arrived:
        # the number of complete bursts is min(#AW, #last W), which grows by at most one
        # per edge. ``balance`` = #AW - #last W.
        balance = Signal(signed(ceil_log2(Q + 2) + 2))
        wl = axi.wvalid & axi.wlast
        complete = Signal()
        with m.If(axi.awvalid & wl):
            m.d.comb += complete.eq(1)
        with m.Elif(axi.awvalid):
            m.d.comb += complete.eq(balance < 0)
        with m.Elif(wl):
            m.d.comb += complete.eq(balance > 0)
        m.d.sync += balance.eq(balance + axi.awvalid - wl)
        # Completion at edge c -> counted at c + L - 1 -> bvalid before edge c + L.
        b_ready = _delay(m, complete, L - 1, "b_release")
        b_cnt = Signal(range(Q + 2))
        b_pop = (b_cnt != 0) & axi.bready
        m.d.comb += axi.bvalid.eq(b_cnt != 0)
        m.d.sync += b_cnt.eq(b_cnt + b_ready - b_pop)

        # Write engine: one W beat per cycle into the burst at the head of the AW queue.
        cur_valid = Signal()
        cur_addr = Signal(ab)
        data, strb, last = wq.r_data[:W], wq.r_data[W:W + B], wq.r_data[W + B]
        m.d.comb += [eng_wr.eq(cur_valid & wq.r_rdy), wq.r_en.eq(eng_wr)]
        with m.If(eng_wr):
            m.d.sync += cur_addr.eq(cur_addr + 1)
            with m.If(last):
                m.d.sync += cur_valid.eq(0)
        load = (~cur_valid | (eng_wr & last)) & awq.r_rdy
        m.d.comb += awq.r_en.eq(load)
        with m.If(load):
            m.d.sync += [cur_valid.eq(1), cur_addr.eq(awq.r_data)]
        return cur_addr, data, strb
