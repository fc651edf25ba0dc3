"""Build tops: what gets synthesized for a board.

Three choices (``build(..., top=...)``):

``"accel"`` (default)
    The accelerator :class:`~lowbit.hw.top.Top` alone inside a *scan wrapper*
    (:class:`ScanWrapper`): every input port of ``Top`` (the CSR slave's requests, the AXI
    responses) is driven from one long shift register fed by a button pin, and every output
    bit feeds a pipelined XOR tree whose one-bit result drives an LED. Nothing is constant and
    everything is observable, so synthesis can optimize nothing away, and the wrapper adds only
    flip-flops and one LUT level per register stage (it is never on the critical path). The
    resource figures are those of the accelerator plus ``in_bits`` + about ``out_bits / 3``
    flip-flops of wrapper.
``"array"``
    The :class:`~lowbit.hw.pe.SystolicArray` alone in the same wrapper: how the PE array
    scales, on devices too small for the whole accelerator.
``"board"``
    :class:`lowbit.hw.board_top.BoardTop` (the UART bridge with on-chip instruction and data
    RAMs) on the board's UART pins: the bitstream one would flash. It runs from the board
    oscillator.
"""

from __future__ import annotations

from amaranth import (
    Cat,
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.build import ResourceError
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In

from .targets import TOPS

__all__ = ["TOPS", "BoardWrapper", "ScanWrapper", "make_top"]


#: Length of the power-on reset pulse of the scan wrapper.
_POR_CYCLES = 4
#: Fan-in of each stage of the output XOR tree (one LUT4 per output bit).
_XOR_FANIN = 4


def _xor_tree(m: Module, bits: list) -> Signal:
    """Registered XOR reduction of ``bits``: one LUT level per register stage."""
    level = 0
    while len(bits) > 1:
        nxt = []
        for k in range(0, len(bits), _XOR_FANIN):
            s = Signal(name=f"scan_xor{level}_{k // _XOR_FANIN}")
            m.d.sync += s.eq(Cat(*bits[k:k + _XOR_FANIN]).xor())
            nxt.append(s)
        bits, level = nxt, level + 1
    if not bits:
        return Signal(name="scan_xor_empty")
    out = Signal(name="scan_out")
    m.d.sync += out.eq(bits[0])
    return out


def port_bits(component: wiring.Component) -> tuple[int, int]:
    """(input bits, output bits) of a component's signature."""
    n_in = n_out = 0
    for _path, member, value in component.signature.flatten(component):
        if member.flow == In:
            n_in += len(value)
        else:
            n_out += len(value)
    return n_in, n_out


class ScanWrapper(Elaboratable):
    """``inner`` with its inputs fed from a shift register and its outputs XOR-reduced.

    Uses the platform's ``button`` 0 (scan input), ``led`` 0 (scan output) and default clock,
    which drives the ``sync`` domain directly (its frequency constraint is the platform's).
    Reset is a 4-cycle power-on pulse from a shift register, so no reset logic of the
    platform's own lands on the critical path; on ECP5 it is distributed over a global
    network (a ``DCCA``).
    """

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        self.in_bits, self.out_bits = port_bits(inner)

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer(
            "i", platform.request(platform.default_clk, 0, dir="-"))
        clk = clk_buf.i
        m.domains.por = ClockDomain(reset_less=True)
        m.domains.sync = ClockDomain()
        por = Signal(_POR_CYCLES, init=(1 << _POR_CYCLES) - 1)
        m.d.por += por.eq(por >> 1)
        rst = por[0]
        if getattr(platform, "family", None) == "ecp5":
            # The reset reaches the control flip-flops of every unit, all over the die. On
            # general routing it was the critical path of a 16x16 build (21.6 ns from one
            # register to the far corner, when it also reached every datapath register); a
            # DCCA puts it on a global network (nextpnr promotes only clocks by itself).
            rst = Signal(name="rst_global")
            m.submodules.rst_buf = Instance("DCCA", i_CLKI=por[0], i_CE=1, o_CLKO=rst)
        m.d.comb += [ClockSignal("por").eq(clk), ClockSignal("sync").eq(clk),
                     ResetSignal("sync").eq(rst)]
        m.submodules.accel = inner = self.inner
        ins, outs = [], []
        for _path, member, value in inner.signature.flatten(inner):
            (ins if member.flow == In else outs).append(value)
        m.submodules.scan_in = scan_in = io.Buffer("i", platform.request("button", 0, dir="-"))
        m.submodules.scan_out = scan_out = io.Buffer("o", platform.request("led", 0, dir="-"))
        chain = Signal(max(1, self.in_bits), name="scan_chain")
        m.d.sync += chain.eq(Cat(scan_in.i, chain[:-1]))
        if ins:
            m.d.comb += Cat(*ins).eq(chain)
        m.d.comb += scan_out.o.eq(_xor_tree(m, [b for v in outs for b in v]))
        return m


class BoardWrapper(Elaboratable):
    """:class:`~lowbit.hw.board_top.BoardTop` on the platform's ``uart`` 0 and LEDs."""

    def __init__(self, board_top):
        self.inner = board_top

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = top = self.inner
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.uart_rx.eq(rx.i), tx.o.eq(top.uart_tx)]
        for k in range(len(top.leds)):
            try:
                port = platform.request("led", k, dir="-")
            except ResourceError:  # fewer LEDs than flags: drop the rest
                break
            m.submodules[f"led{k}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(top.leds[k])
        return m


def make_top(top: str, cfg, *, board_clock_hz: float, baud: int = 115200,
             board_mem_bytes: int | None = None):
    """The elaboratable for ``top`` (one of :data:`TOPS`) and a short description."""
    if top == "accel":
        from lowbit.hw.top import Top

        w = ScanWrapper(Top(cfg))
        return w, (f"lowbit_top in a scan wrapper ({w.in_bits} input bits from a shift "
                   f"register, {w.out_bits} output bits XOR-reduced)")
    if top == "array":
        from lowbit.hw.pe import SystolicArray

        w = ScanWrapper(SystolicArray(rows=cfg.rows, cols=cfg.cols,
                                      weight_bits=cfg.weight_bits, acc_bits=cfg.acc_bits,
                                      dw_taps=cfg.fir_taps))
        return w, (f"the {cfg.rows}x{cfg.cols} PE array alone in a scan wrapper "
                   f"({w.in_bits} input bits, {w.out_bits} output bits)")
    if top == "board":
        try:
            from lowbit.hw.axi_ram import MIN_LATENCY
            from lowbit.hw.board_top import BoardTop
        except ImportError as exc:
            raise ValueError(f"top 'board' needs lowbit.hw.board_top ({exc})") from None
        mem = board_mem_bytes or min(cfg.mem_bytes, 16 << 10)
        cpb = max(4, round(board_clock_hz / baud))
        bt = BoardTop(cfg, mem_bytes=mem, latency=MIN_LATENCY, clocks_per_bit=cpb)
        return BoardWrapper(bt), (f"lowbit_board: UART bridge at {baud} baud "
                                  f"({cpb} clocks per bit), {bt.mem_bytes} B data RAM, "
                                  f"{bt.imem_bytes} B instruction RAM")
    raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
