"""``lowbit sweep SPEC [--out DIR] [--scheduler ADDR] [--workers N]``.

:func:`register_cli` adds the subcommand to the ``lowbit`` parser. A bad spec raises
:class:`~lowbit.sweep.spec.SweepSpecError` (a ``ValueError``), which the ``lowbit`` command
prints as one line ``lowbit: error: ...`` with exit status 2. A sweep in which some point
crashed (an unexpected exception, not stored) exits with status 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["cmd_sweep", "register_cli"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def cmd_sweep(args) -> int:
    from .runner import run_sweep
    from .spec import load_spec

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("lowbit-out", "sweep", Path(args.spec).stem)
    result = run_sweep(spec, out, workers=args.workers, scheduler=args.scheduler)
    print(result.summary, end="", flush=True)
    print(f"wrote {', '.join(result.files)} and {out / 'sweep.sqlite'}", flush=True)
    print(f"output folder: {out.resolve()}", flush=True)
    if result.crashed:
        crashed = [r for r in result.rows if r["status"] == "crash"]
        print(f"lowbit: {len(crashed)} points crashed (not stored; rerun to retry), first: "
              f"{crashed[0]['workload']} {crashed[0]['params']}: {crashed[0]['error']}",
              flush=True)
        return 1
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep`` to the ``lowbit`` command's subparsers."""
    p = subparsers.add_parser(
        "sweep", help="design-space sweep: configs x workloads x boards, Pareto fronts",
        description="Run (or resume) the sweep described by a TOML spec: cycles and "
                    "utilization from the cycle simulator, resources, accuracy; CSV, JSON, "
                    "Pareto plots and a summary in the output folder. See docs/sweep.md.")
    p.add_argument("spec", metavar="SPEC", help="sweep spec (.toml)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder with the result store (default: "
                        "lowbit-out/sweep/SPEC-NAME); rerunning resumes from its store")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run on a Dask distributed cluster at this scheduler address "
                        "(e.g. tcp://127.0.0.1:8786) instead of local processes")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="local worker processes (default: the usable cores)")
    p.set_defaults(func=cmd_sweep)
    return p
