"""``lowbit boards`` and ``lowbit build``: hooked into :mod:`lowbit.cli` by :func:`register_cli`.

::

    lowbit boards [--json]
    lowbit build --board NAME [--config CFG] [--out DIR] [--top accel|array|board]
                 [--seed N] [--dsp auto|on|off] [--dsp-budget N] [--router auto|router1|router2]
                 [--no-estimate] [--force] [--json]

Errors (an unknown board, a config that does not fit, a failing tool) are raised as
``ValueError`` subclasses; :func:`lowbit.cli.main` prints them as one line
``lowbit: error: ...`` and exits with status 2. For a design that does not fit, the resource
table is printed on standard output first.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register_cli"]

DEFAULT_OUT = "lowbit-out/build"


def cmd_boards(args) -> int:
    from .targets import list_boards, render_table

    if args.json:
        rows = [{"name": b.name, "title": b.title, "part": b.part, "family": b.family,
                 "device": b.device, "platform": f"{b.platform_module}.{b.platform_class}",
                 "clock_mhz": b.clock_mhz, "resources": b.resources.as_dict()}
                for b in list_boards()]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        print(render_table(), flush=True)
    return 0


def cmd_build(args) -> int:
    from .build import build
    from .report import BuildError

    def say(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    try:
        report = build(args.board, args.config, out_dir=args.out, top=args.top, seed=args.seed,
                       dsp=args.dsp, dsp_budget=args.dsp_budget, router=args.router,
                       estimate=not args.no_estimate,
                       force=args.force, progress=say)
    except BuildError as exc:
        if exc.report is not None and not args.json:
            print(exc.report.resource_table(), flush=True)
        raise
    if args.json:
        sys.stdout.write(report.to_json())
    else:
        print(report.summary(), flush=True)
    return 0


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, not {value}")
    return value


def register_cli(subparsers) -> None:
    """Add the ``boards`` and ``build`` subcommands to ``lowbit``'s subparsers."""
    from .targets import DSP_CHOICES, ROUTERS, TOPS

    p = subparsers.add_parser("boards", help="list the FPGA board targets")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_boards)

    p = subparsers.add_parser(
        "build", help="synthesize, place and route a config for a board",
        description="Build a config for a board: bitstream and resource/Fmax report (iCE40, "
                    "ECP5), or a Vivado project and a yosys resource estimate (Xilinx). "
                    "Builds are cached in OUT/<board>/<config name>.")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="board target (see 'lowbit boards')")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="accelerator config (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="build folder (default: %(default)s)")
    p.add_argument("--top", choices=TOPS, default="accel",
                   help="what to build: the accelerator in a scan wrapper, the PE array "
                        "alone, or the UART board top (default: %(default)s)")
    p.add_argument("--seed", type=_natural, default=1, help="nextpnr seed (default: %(default)s)")
    p.add_argument("--dsp", choices=DSP_CHOICES, default="auto",
                   help="map multipliers to DSP blocks (default: %(default)s)")
    p.add_argument("--dsp-budget", type=_natural, default=None, metavar="N",
                   help="with --dsp auto: use at most N DSP blocks (default: all)")
    p.add_argument("--router", choices=ROUTERS, default="auto",
                   help="nextpnr router; auto: router2 above half the device's logic "
                        "(default: %(default)s)")
    p.add_argument("--no-estimate", action="store_true",
                   help="Xilinx: skip the yosys synth_xilinx resource estimate")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_build)
