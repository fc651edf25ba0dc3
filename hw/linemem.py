"""A scratchpad written in bus beats and read in logical lines."""

from amaranth import Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

__all__ = ["LineMemory"]


class LineMemory(wiring.Component):
    """``lines`` lines of ``line_bits`` bits, filled by ``beat_bits``-wide DMA writes.

    Both widths are powers of two. The physical word is the wider of the two: a beat fills
    part of a line (lane write) or a line is part of a beat (read selects it).

    Ports
    -----
    w_en, w_addr, w_data:
        Write beat ``w_addr`` (beat index over the whole memory) at the clock edge.
    r_en, r_addr:
        Read line ``r_addr``. ``r_data`` is valid one cycle after ``r_en`` (latency 1) and holds
        while ``r_en`` is low.
    """

    def __init__(self, *, line_bits: int, beat_bits: int, lines: int):
        exact_log2(line_bits), exact_log2(beat_bits)
        self.line_bits, self.beat_bits, self.lines = line_bits, beat_bits, lines
        self.word_bits = max(line_bits, beat_bits)
        self.depth = lines * line_bits // self.word_bits
        beats = lines * line_bits // beat_bits
        super().__init__({
            "w_en": In(1), "w_addr": In(max(1, ceil_log2(beats))), "w_data": In(beat_bits),
            "r_en": In(1), "r_addr": In(max(1, ceil_log2(lines))), "r_data": Out(line_bits),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(
            shape=unsigned(self.word_bits), depth=self.depth, init=[])
        if self.line_bits > self.beat_bits:
            lanes = self.line_bits // self.beat_bits
            wp = mem.write_port(granularity=self.beat_bits)
            lane_bits = exact_log2(lanes)
            lane = self.w_addr[:lane_bits]
            m.d.comb += [
                wp.addr.eq(self.w_addr[lane_bits:]),
                wp.data.eq(self.w_data.replicate(lanes)),
                wp.en.eq(self.w_en << lane),
            ]
        else:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
        rp = mem.read_port()
        if self.line_bits >= self.beat_bits:
            m.d.comb += [rp.addr.eq(self.r_addr), rp.en.eq(self.r_en),
                         self.r_data.eq(rp.data)]
        else:
            per_word = self.beat_bits // self.line_bits
            sel_bits = exact_log2(per_word)
            sel = Signal(sel_bits)
            with m.If(self.r_en):
                m.d.sync += sel.eq(self.r_addr[:sel_bits])
            m.d.comb += [rp.addr.eq(self.r_addr[sel_bits:]), rp.en.eq(self.r_en),
                         self.r_data.eq(rp.data.word_select(sel, self.line_bits))]
        return m

