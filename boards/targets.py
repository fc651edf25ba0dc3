"""Board targets: which FPGA, how much of each resource, which toolchain builds it.

A :class:`Board` is declarative data: a name usable on the command line, the Amaranth
platform class (from amaranth-boards, or :mod:`lowbit.boards.pynq_z2`), the FPGA family and
device, its resources and its oscillator. The build flow (:mod:`lowbit.boards.build`) reads
nothing else about a board.

Resource figures are the vendors' data-sheet numbers for the device:

* iCE40UP5K: 5280 logic cells (LUT4 + FF each), 8 SB_MAC16, 30 EBR of 4 kbit, 4 SPRAM of
  256 kbit (single-port; the build flow does not infer them), no LUT RAM.
* ECP5 LFE5U-85F: 83 640 LUT4 and FFs, 156 MULT18X18D, 208 DP16KD of 18 kbit, 669 kbit of
  distributed (LUT) RAM.
* Artix-7 xc7a35t: 20 800 LUT6, 41 600 FFs, 90 DSP48E1, 50 RAMB36 of 36 kbit, 400 kbit of
  distributed RAM.
* Zynq-7020 xc7z020 (programmable logic): 53 200 LUT6, 106 400 FFs, 220 DSP48E1, 140 RAMB36,
  17 400 LUTs usable as memory (about 1088 kbit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbit.report import format_table

__all__ = ["BOARDS", "DSP_CHOICES", "ROUTERS", "TOPS", "Board", "UnknownBoardError", "Resources",
           "get_board", "list_boards", "render_table"]

#: What a build synthesizes (see :mod:`lowbit.boards.wrapper`).
TOPS = ("accel", "array", "board")
#: Whether multipliers go to DSP blocks (see :func:`lowbit.boards.build`).
DSP_CHOICES = ("auto", "on", "off")
#: nextpnr routers a build may use; ``"auto"`` picks one from the synthesized size.
ROUTERS = ("auto", "router1", "router2")

#: DSP block multiplier size per family, as yosys maps a ``$mul`` onto it (mul2dsp: A x B
#: signed), and the narrowest operand yosys gives a DSP.
DSP_SIZE = {"ice40": (16, 16), "ecp5": (18, 18), "xc7": (25, 18)}
DSP_MIN_BITS = 2


class UnknownBoardError(ValueError):
    """An unknown board name."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """The FPGA's capacity. ``logic`` counts ``logic_unit`` (LC, LUT4 or LUT6)."""

    logic: int
    logic_unit: str
    ffs: int
    dsps: int
    dsp_unit: str
    bram_blocks: int
    bram_block_kbits: int
    bram_unit: str
    lutram_kbits: int = 0
    spram_kbits: int = 0

    @property
    def bram_kbits(self) -> int:
        return self.bram_blocks * self.bram_block_kbits

    def as_dict(self) -> dict[str, int | str]:
        return {"logic": self.logic, "logic_unit": self.logic_unit, "ffs": self.ffs,
                "dsps": self.dsps, "dsp_unit": self.dsp_unit,
                "bram_blocks": self.bram_blocks, "bram_block_kbits": self.bram_block_kbits,
                "bram_kbits": self.bram_kbits, "bram_unit": self.bram_unit,
                "lutram_kbits": self.lutram_kbits, "spram_kbits": self.spram_kbits}


@dataclass(frozen=True, kw_only=True)
class Board:
    """One FPGA board target.

    ``family`` is ``"ice40"`` or ``"ecp5"`` (built with YoWASP yosys + nextpnr) or ``"xc7"``
    (exported as a Vivado project, with a yosys ``synth_xilinx`` resource estimate).
    ``clock_mhz`` is the board oscillator; builds constrain the accelerator clock at the
    config's ``clock_mhz`` instead (see ``docs/boards.md``).
    """

    name: str
    title: str
    platform_module: str
    platform_class: str
    family: str
    device: str
    package: str
    speed: str
    resources: Resources
    clock_mhz: float
    nextpnr_args: tuple[str, ...] = field(default=())

    @property
    def part(self) -> str:
        """The full part name as the vendor tools spell it."""
        if self.family == "xc7":
            return f"{self.device}{self.package}-{self.speed}"
        if self.family == "ecp5":
            return f"{self.device}-{self.speed}{self.package}C"
        return f"{self.device}-{self.package}"

    @property
    def toolchain(self) -> str:
        return "vivado (export)" if self.family == "xc7" else "yosys + nextpnr (YoWASP)"

    def platform_cls(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.platform_module), self.platform_class)

    def platform(self):
        """A fresh platform instance (Amaranth platforms are single-use)."""
        return self.platform_cls()()


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board(name="icebreaker", title="1BitSquared iCEBreaker",
          platform_module="amaranth_boards.icebreaker", platform_class="ICEBreakerPlatform",
          family="ice40", device="iCE40UP5K", package="SG48", speed="",
          resources=Resources(logic=5280, logic_unit="LC", ffs=5280, dsps=8,
                              dsp_unit="SB_MAC16", bram_blocks=30, bram_block_kbits=4,
                              bram_unit="EBR", spram_kbits=1024),
          clock_mhz=12.0, nextpnr_args=("--up5k", "--package", "sg48")),
    Board(name="ulx3s-85f", title="Radiona ULX3S (85F)",
          platform_module="amaranth_boards.ulx3s", platform_class="ULX3S_85F_Platform",
          family="ecp5", device="LFE5U-85F", package="BG381", speed="6",
          resources=Resources(logic=83640, logic_unit="LUT4", ffs=83640, dsps=156,
                              dsp_unit="MULT18X18D", bram_blocks=208, bram_block_kbits=18,
                              bram_unit="DP16KD", lutram_kbits=669),
          clock_mhz=25.0, nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6")),
    Board(name="arty-a7-35", title="Digilent Arty A7-35",
          platform_module="amaranth_boards.arty_a7", platform_class="ArtyA7_35Platform",
          family="xc7", device="xc7a35ti", package="csg324", speed="1L",
          resources=Resources(logic=20800, logic_unit="LUT6", ffs=41600, dsps=90,
                              dsp_unit="DSP48E1", bram_blocks=50, bram_block_kbits=36,
                              bram_unit="RAMB36", lutram_kbits=400),
          clock_mhz=100.0),
    Board(name="pynq-z2", title="TUL PYNQ-Z2 (Zynq-7020 PL)",
          platform_module="lowbit.boards.pynq_z2", platform_class="PynqZ2Platform",
          family="xc7", device="xc7z020", package="clg400", speed="1",
          resources=Resources(logic=53200, logic_unit="LUT6", ffs=106400, dsps=220,
                              dsp_unit="DSP48E1", bram_blocks=140, bram_block_kbits=36,
                              bram_unit="RAMB36", lutram_kbits=1088),
          clock_mhz=125.0),
)}


def list_boards() -> list[Board]:
    """Every board target, in a fixed order."""
    return list(BOARDS.values())


def get_board(name: str | Board) -> Board:
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise UnknownBoardError(f"unknown board {name!r}; boards are "
                         f"{', '.join(BOARDS)}") from None


def render_table(boards: list[Board] | None = None) -> str:
    """The ``lowbit boards`` table."""
    rows = []
    for b in boards or list_boards():
        r = b.resources
        bram = f"{r.bram_blocks} x {r.bram_block_kbits}k ({r.bram_kbits} kbit)"
        rows.append([b.name, b.part, b.family, f"{r.logic} {r.logic_unit}", str(r.ffs),
                     f"{r.dsps} {r.dsp_unit}", bram,
                     f"{r.spram_kbits} kbit" if r.spram_kbits else "-",
                     f"{b.clock_mhz:g} MHz", b.toolchain])
    return format_table(["board", "part", "family", "logic", "FFs", "DSP", "BRAM", "SPRAM",
                         "clock", "flow"], rows, align="<<<>><<>><")
