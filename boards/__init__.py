"""FPGA board targets and builds with open toolchains.

* :mod:`~lowbit.boards.targets`: the boards (iCEBreaker, ULX3S-85F, Arty A7-35, PYNQ-Z2),
  their devices and resources; :func:`list_boards`, :func:`render_table`.
* :mod:`~lowbit.boards.build`: :func:`build` synthesizes, places and routes a config for a
  board (YoWASP yosys + nextpnr for iCE40 and ECP5; a Vivado project plus a yosys estimate
  for Xilinx) and returns a :class:`BuildReport`; :class:`BuildError` if it does not fit.
* :mod:`~lowbit.boards.cli`: ``lowbit boards`` and ``lowbit build``.

See ``docs/boards.md``.
"""

import importlib

__all__ = ["BOARDS", "DSP_CHOICES", "TOPS", "Board", "BoardError", "BuildError", "BuildReport",
           "Resources", "build", "build_dir_for", "get_board", "list_boards", "render_table"]

# Imported on first use, so that ``lowbit --help`` does not import Amaranth.
_WHERE = {"build": "build", "build_dir_for": "build", "BuildError": "report",
          "BuildReport": "report"}


def __getattr__(name: str):
    if name in __all__:
        module = importlib.import_module(f".{_WHERE.get(name, 'targets')}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
