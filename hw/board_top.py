"""Board top levels: the accelerator with on-chip RAMs and a UART bridge, or bare for Zynq.

* :class:`BoardTop` (Verilog module ``lowbit_board``) is for boards without a processor
  (iCEBreaker, ULX3S, Arty): ``lowbit_top`` + an instruction :class:`~lowbit.hw.axi_ram.AxiRam`
  on ``imem`` + a data ``AxiRam`` on ``dmem`` + a :class:`~lowbit.hw.uart.UartBridge` that
  loads the RAMs and drives the CSRs. The RAMs follow the memory timing contract exactly,
  so ``backend="sim"`` with ``mem_latency=latency`` predicts CYCLES exactly.
* :class:`ZynqTop` (module ``lowbit_zynq``) is ``lowbit_top`` with its AXI4 masters and its
  AXI4-Lite slave brought out for the Zynq processing system; no RAMs.

``docs/board_top.md`` has the address map, the protocol and how to wire ``ZynqTop``.
"""


import hashlib
import json

from amaranth import C, Cat, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from lowbit import isa
from lowbit.config import AccelConfig

from .axi import AXI4LiteSignature, AXI4ReadSignature, AXI4Signature
from .axi_ram import MIN_LATENCY, AxiRam, _check_int
from .top import Top
from .uart import BoardInfo, UartBridge, _check_cpb

__all__ = [
    "BOARD_TOP_NAME",
    "ZYNQ_TOP_NAME",
    "BoardTop",
    "ZynqTop",
    "config_hash",
    "generate_board_verilog",
    "generate_zynq_verilog",
]

BOARD_TOP_NAME = "lowbit_board"
ZYNQ_TOP_NAME = "lowbit_zynq"
HEARTBEAT_BITS = 24


def config_hash(cfg: AccelConfig) -> int:
    """32-bit hash of the fields that shape the hardware (all but ``clock_mhz``)."""
    fields = {k: v for k, v in cfg.to_dict().items() if k != "clock_mhz"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _check_pow2(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi or value & (value - 1):
        raise ValueError(f"{name} must be a power of two from {lo} to {hi}, not {value}")


class BoardTop(wiring.Component):
    """Accelerator + instruction RAM + data RAM + UART host bridge.

    Parameters
    ----------
    cfg:
        The accelerator config.
    mem_bytes:
        Data RAM size (power of two, at most ``cfg.mem_bytes``): byte addresses
        ``0 .. mem_bytes-1`` of the ``dmem`` port. Higher addresses wrap.
    latency:
        Memory latency ``L`` of both RAMs (:data:`~lowbit.hw.axi_ram.MIN_LATENCY` or more).
    clocks_per_bit:
        UART bit time in clock cycles (clock frequency / baud rate, at least 4).
    imem_bytes:
        Instruction RAM size (default ``mem_bytes // 4``, at least 256): byte addresses
        ``0 .. imem_bytes-1`` of the ``imem`` port, the same addresses as in the data RAM.
    queue_depth:
        Bursts each RAM channel may queue (see :class:`~lowbit.hw.axi_ram.AxiRam`).

    Ports: ``uart_rx`` (in), ``uart_tx`` (out, idle high), ``irq`` (the accelerator's),
    ``leds``: bit 0 irq, bit 1 a heartbeat (clock / 2**24), bit 2 a UART command in
    progress, bit 3 a sticky bridge error flag (cleared by a STATUS command).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    irq: Out(1)
    leds: Out(4)

    def __init__(self, cfg: AccelConfig, *, mem_bytes: int, latency: int,
                 clocks_per_bit: int, imem_bytes: int | None = None, queue_depth: int = 64):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"cfg must be an AccelConfig, not {type(cfg).__name__}")
        beat = cfg.beat_bytes
        _check_pow2("mem_bytes", mem_bytes, max(256, 2 * beat), cfg.mem_bytes)
        if imem_bytes is None:
            imem_bytes = max(256, 2 * beat, mem_bytes // 4)
        _check_pow2("imem_bytes", imem_bytes, max(256, 2 * beat), cfg.mem_bytes)
        self.cfg, self.mem_bytes, self.imem_bytes = cfg, mem_bytes, imem_bytes
        self.latency, self.clocks_per_bit, self.queue_depth = latency, clocks_per_bit, \
            queue_depth
        _check_int("latency", latency, MIN_LATENCY, 1024)
        _check_int("queue_depth", queue_depth, 2, 4096)
        _check_cpb(clocks_per_bit)
        self.info = BoardInfo(beat_bytes=beat, latency=latency, mem_bytes=mem_bytes,
                              imem_bytes=imem_bytes, config_hash=config_hash(cfg))
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        common = dict(data_width=cfg.bus_bits, addr_width=cfg.addr_bits, latency=self.latency,
                      queue_depth=self.queue_depth)
        m.submodules.accel = top = Top(cfg)
        m.submodules.iram = iram = AxiRam(size_bytes=self.imem_bytes, read_only=True, **common)
        m.submodules.dram = dram = AxiRam(size_bytes=self.mem_bytes, **common)
        m.submodules.bridge = bridge = UartBridge(clocks_per_bit=self.clocks_per_bit,
                                                  info=self.info)
        connect(m, top.imem, iram.axi)
        connect(m, top.dmem, dram.axi)
        connect(m, bridge.csr, top.csr)
        connect(m, bridge.dram, dram.host)
        connect(m, bridge.iram, iram.host)
        heartbeat = Signal(HEARTBEAT_BITS)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [
            bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx),
            bridge.irq.eq(top.irq), bridge.ram_overflow.eq(iram.overflow | dram.overflow),
            self.irq.eq(top.irq),
            self.leds.eq(Cat(top.irq, heartbeat[-1], bridge.active, bridge.error)),
        ]
        return m


class ZynqTop(wiring.Component):
    """``lowbit_top`` for a Zynq: ports ``csr`` (AXI4-Lite slave, 8-bit address, to an
    M_AXI_GP port), ``imem`` (AXI4 read master) and ``dmem`` (AXI4 master) with 32-bit
    addresses (to S_AXI_HP ports), and ``irq`` (to IRQ_F2P).

    The accelerator's ``cfg.addr_bits``-bit addresses are placed at ``dram_base`` (a multiple
    of ``cfg.mem_bytes``): the PS sees the accelerator's memory as the DDR window
    ``dram_base .. dram_base + cfg.mem_bytes - 1``. Everything else is ``Top`` unchanged.
    """

    def __init__(self, cfg: AccelConfig, *, dram_base: int = 0):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"cfg must be an AccelConfig, not {type(cfg).__name__}")
        if isinstance(dram_base, bool) or not isinstance(dram_base, int):
            raise TypeError(f"dram_base must be an integer, not {type(dram_base).__name__}")
        if not 0 <= dram_base < 1 << 32 or dram_base % cfg.mem_bytes:
            raise ValueError(f"dram_base must be a 32-bit multiple of mem_bytes "
                             f"({cfg.mem_bytes:#x}), not {dram_base:#x}")
        self.cfg, self.dram_base = cfg, dram_base
        super().__init__({
            "csr": In(AXI4LiteSignature(addr_width=8)),
            "imem": Out(AXI4ReadSignature(addr_width=32, data_width=cfg.bus_bits)),
            "dmem": Out(AXI4Signature(addr_width=32, data_width=cfg.bus_bits)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = top = Top(self.cfg)
        aw = self.cfg.addr_bits
        high = C(self.dram_base >> aw, 32 - aw)
        connect(m, flipped(self.csr), top.csr)
        m.d.comb += self.irq.eq(top.irq)
        for ours, theirs in ((self.imem, top.imem), (self.dmem, top.dmem)):
            for name, member in theirs.signature.members.items():
                mine, inner = getattr(ours, name), getattr(theirs, name)
                if member.flow == Out and name in ("araddr", "awaddr"):
                    m.d.comb += mine.eq(Cat(inner, high))
                elif member.flow == Out:
                    m.d.comb += mine.eq(inner)
                else:
                    m.d.comb += inner.eq(mine)
        return m


def _banner(cfg: AccelConfig, what: str) -> str:
    return (f"// Generated by lowbit: {what}, config {cfg.name} (ISA v{isa.ISA_VERSION}).\n"
            f"// Config: {cfg.to_json()}\n// Do not edit by hand.\n")


def generate_board_verilog(cfg: AccelConfig, *, mem_bytes: int, latency: int,
                           clocks_per_bit: int, imem_bytes: int | None = None,
                           queue_depth: int = 64) -> str:
    """Verilog of :class:`BoardTop` (module ``lowbit_board``), with a banner."""
    top = BoardTop(cfg, mem_bytes=mem_bytes, latency=latency, clocks_per_bit=clocks_per_bit,
                   imem_bytes=imem_bytes, queue_depth=queue_depth)
    what = (f"board top (data RAM {top.mem_bytes} B, instruction RAM {top.imem_bytes} B, "
            f"latency {latency}, {clocks_per_bit} clocks per UART bit)")
    return _banner(cfg, what) + verilog.convert(top, name=BOARD_TOP_NAME, emit_src=False)


def generate_zynq_verilog(cfg: AccelConfig, *, dram_base: int = 0) -> str:
    """Verilog of :class:`ZynqTop` (module ``lowbit_zynq``), with a banner."""
    top = ZynqTop(cfg, dram_base=dram_base)
    return _banner(cfg, f"Zynq top (DDR window at {dram_base:#x})") + \
        verilog.convert(top, name=ZYNQ_TOP_NAME, emit_src=False)
