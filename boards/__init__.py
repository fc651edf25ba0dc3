"""FPGA board targets and builds with open toolchains.

* :mod:`~lowbit.boards.targets`: the boards (iCEBreaker, ULX3S-85F, Arty A7-35, PYNQ-Z2),
  their devices and resources; :func:`list_boards`, :func:`render_table`.
* :mod:`~lowbit.boards.build`: :func:`build` synthesizes, places and routes a config for a
  board (YoWASP yosys + nextpnr for iCE40 and ECP5; a Vivado project plus a yosys estimate
  for Xilinx) and returns a :class:`BuildReport`; :class:`BuildError` if it does not fit.
* :mod:`~lowbit.boards.cli`: ``lowbit boards`` and ``lowbit build``.

See ``docs/boards.md``.
"""

from .build import build, build_dir_for
from .report import BuildError, BuildReport
from .targets import (
    BOARDS,
    DSP_CHOICES,
    ROUTERS,
    TOPS,
    Board,
    Resources,
    UnknownBoardError,
    get_board,
    list_boards,
    render_table,
)

# Nothing here imports Amaranth (the build imports it when it runs), so ``lowbit --help``
# stays fast.
__all__ = ["BOARDS", "DSP_CHOICES", "ROUTERS", "TOPS", "Board", "BuildError", "BuildReport",
           "Resources", "UnknownBoardError", "build", "build_dir_for", "get_board",
           "list_boards", "render_table"]
