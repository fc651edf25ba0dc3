"""Per-layer profile of a program on the cycle simulator, with plots.

``lowbit profile PROG`` (a saved ``.lbp``) or ``lowbit profile --zoo MODEL --config CFG``
prints, per layer: the edges from its first instruction's start to its last completion
(``span``), ideal cycles (its MACs / PEs), utilization (ideal / span), bytes moved and the
span's latency at the config clock; it writes a per-layer bar plot and a unit timeline
(load / compute / store busy over time). Layers overlap on the hardware, so spans add up to
more than the total; the total line is the program's exact cycle count.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .executors import DEFAULT_MEM_LATENCY
from .isa import Opcode, Unit
from .program import Program

__all__ = ["profile_program", "register_cli", "write_plots"]


def profile_program(program: Program, *, mem_latency: int = DEFAULT_MEM_LATENCY) -> dict:
    """Layer rows, totals and the timeline events of ``program``."""
    from .sim.cycle import simulate_timing

    cfg = program.config
    events: list = []
    cycles, counters = simulate_timing(program, mem_latency=mem_latency, events=events)
    names = list(program.meta.get("instr_layers", []))
    known = {ly.get("name") for ly in program.meta.get("layers", [])}
    layers: dict[str, dict] = {}
    current = ""
    for index, unit, start, _, _, end in events:
        ins = program.instrs[index]
        # Instructions without a layer of their own (token forwarding) join the last layer.
        name = names[index] if index < len(names) else ""
        name = name if name in known else current
        current = name or current
        row = layers.setdefault(name or "(program)", dict(
            layer=name or "(program)", first=start, last=end, macs=0, dram_read_bytes=0,
            dram_write_bytes=0, instrs=0))
        row["first"], row["last"] = min(row["first"], start), max(row["last"], end)
        row["instrs"] += 1
        if ins.opcode == Opcode.COMPUTE:
            row["macs"] += ins.rows * cfg.rows * cfg.cols
        elif ins.opcode == Opcode.LOAD:
            row["dram_read_bytes"] += ins.rows * ins.row_beats * cfg.beat_bytes
        elif ins.opcode == Opcode.STORE:
            row["dram_write_bytes"] += (ins.reps_m1 + 1) * ins.rows * cfg.out_line_bits // 8
        del unit
    useful = {ly.get("name"): ly.get("macs") for ly in program.meta.get("layers", [])}
    rows = []
    for row in layers.values():
        span = row["last"] - row["first"] + 1
        macs = useful.get(row["layer"]) or row["macs"]
        ideal = math.ceil(macs / cfg.pes)
        rows.append(dict(layer=row["layer"], span=span, ideal_cycles=ideal,
                         utilization=round(ideal / span, 4), macs=macs,
                         bytes_moved=row["dram_read_bytes"] + row["dram_write_bytes"],
                         latency_us=round(span / cfg.clock_mhz, 3), instrs=row["instrs"]))
    network = program.meta.get("network") or {}
    total_macs = network.get("macs") or (sum(useful.values()) if useful and all(useful.values())
                                         else counters["macs"])
    total = dict(cycles=cycles, ideal_cycles=math.ceil(total_macs / cfg.pes),
                 utilization=round(math.ceil(total_macs / cfg.pes) / cycles, 4),
                 bytes_moved=counters["dram_read_bytes"] + counters["dram_write_bytes"],
                 latency_us=round(cycles / cfg.clock_mhz, 3), instrs=len(program.instrs))
    return dict(config=cfg.name, mem_latency=mem_latency, layers=rows, total=total,
                events=[dict(unit=Unit(u).name.lower(), start=b0, end=b1)
                        for _, u, _, b0, b1, _ in events])


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """``layers.png`` (span and ideal cycles per layer) and ``timeline.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = report["layers"]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows)), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["span"] for r in rows], 0.4, label="span (cycles)")
    ax.bar([x + 0.2 for x in xs], [r["ideal_cycles"] for r in rows], 0.4, label="ideal")
    ax.set_xticks(list(xs), [r["layer"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("cycles")
    ax.set_title(f"per-layer cycles on {report['config']}")
    ax.legend()
    fig.tight_layout()
    paths = [out / "layers.png", out / "timeline.png"]
    _atomic(paths[0], lambda p: fig.savefig(p, format="png", dpi=110,
                                            metadata={"Software": None}))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 2.6))
    for y, unit in enumerate(("load", "compute", "store")):
        spans = [(e["start"], e["end"] - e["start"] + 1) for e in report["events"]
                 if e["unit"] == unit]
        ax.broken_barh(spans, (y - 0.35, 0.7))
    ax.set_yticks([0, 1, 2], ["load", "compute", "store"])
    ax.set_xlabel("cycle")
    ax.set_title(f"unit timeline ({report['total']['cycles']} cycles)")
    fig.tight_layout()
    _atomic(paths[1], lambda p: fig.savefig(p, format="png", dpi=110,
                                            metadata={"Software": None}))
    plt.close(fig)
    return paths


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("profile", help="per-layer cycles, utilization, bytes and a "
                                              "unit timeline of a program or zoo model")
    p.add_argument("program", nargs="?", metavar="PROG", help="program file (.lbp)")
    p.add_argument("--zoo", metavar="MODEL", help="profile a zoo model instead")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="config for --zoo (default: %(default)s)")
    p.add_argument("--mem-latency", type=int, default=DEFAULT_MEM_LATENCY, metavar="CYCLES")
    p.add_argument("--out", metavar="DIR", help="write layers.png, timeline.png, profile.json")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args) -> int:
    from .config import load_config

    if bool(args.program) == bool(args.zoo):
        raise ValueError("give either a program file or --zoo MODEL")
    if args.zoo:
        from .compiler.api import compile_network
        from .compiler.zoo import build

        cfg = load_config(args.config)
        prog = compile_network(build(args.zoo, weight_bits=cfg.weight_bits), cfg)
    else:
        prog = Program.load(args.program)
    report = profile_program(prog, mem_latency=args.mem_latency)
    head = f"{'layer':<24} {'span':>8} {'ideal':>8} {'util':>6} {'bytes':>9} {'us':>9}"
    print(head)
    print("-" * len(head))
    for r in report["layers"]:
        print(f"{r['layer']:<24} {r['span']:>8} {r['ideal_cycles']:>8} "
              f"{r['utilization']:>6.1%} {r['bytes_moved']:>9} {r['latency_us']:>9.2f}")
    t = report["total"]
    print(f"{'total':<24} {t['cycles']:>8} {t['ideal_cycles']:>8} {t['utilization']:>6.1%} "
          f"{t['bytes_moved']:>9} {t['latency_us']:>9.2f}")
    if args.out:
        out = Path(args.out)
        for path in write_plots(report, out):
            print(f"wrote {path}")
        _atomic(out / "profile.json",
                lambda p: Path(p).write_text(json.dumps(report, indent=1, sort_keys=True)))
        print(f"wrote {out / 'profile.json'}")
    return 0
