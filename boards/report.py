"""Build reports and build errors.

A :class:`BuildReport` is what :func:`lowbit.boards.build` returns and what it stores as
``report.json`` in the build folder (written atomically; the cache reads it back). A
:class:`BuildError` is raised when a design does not fit its board or a tool fails; it is a
``ValueError`` whose message is one line and which carries the report (with its resource
table) and the config parameter to lower.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lowbit.report import atomic_write, dumps_json, format_table

__all__ = ["BuildError", "BuildReport", "REPORT_VERSION"]

#: Bumped whenever the report format or the build flow changes (invalidates the cache).
REPORT_VERSION = 1

#: Resource rows in report order.
RESOURCE_ORDER = ("logic", "ffs", "dsps", "bram")


@dataclass(kw_only=True)
class BuildReport:
    """The outcome of one build.

    ``status`` is ``"routed"`` (placed, routed and packed: iCE40 and ECP5), ``"exported"``
    (Vivado project written, resources estimated by yosys: Xilinx) or ``"does-not-fit"``.
    ``resources`` maps ``logic``/``ffs``/``dsps``/``bram`` to ``{"used", "available",
    "unit"}``; ``resource_source`` says where the used figures come from (``nextpnr`` after
    placement, ``yosys`` after synthesis, or ``estimate``, an analytic lower bound).
    ``fmax_mhz`` is nextpnr's post-route figure for the accelerator clock, ``target_mhz`` the
    constraint it was routed against. ``critical_path`` names its start and end cells and
    splits its delay into logic and routing. Paths in ``files`` are relative to ``build_dir``.
    """

    board: str
    part: str
    family: str
    config: str
    config_fields: dict
    top: str
    top_description: str
    status: str
    resources: dict
    resource_source: str
    target_mhz: float
    fmax_mhz: float | None = None
    meets_timing: bool | None = None
    critical_path: dict | None = None
    dsp_mapping: bool | None = None
    seed: int = 1
    router: str | None = None
    seconds: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    cells: dict = field(default_factory=dict)
    message: str = ""
    limit_param: str | None = None
    key: str = ""
    version: int = REPORT_VERSION
    build_dir: str = ""
    cached: bool = False

    # -- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("cached")
        return data

    def to_json(self) -> str:
        return dumps_json(self.to_dict(), digits=3)

    def save(self, path: str | Path) -> Path:
        """Write ``report.json`` atomically; this report then holds exactly what was written
        (floats rounded), so it equals the report a later cached build loads."""
        text = self.to_json()
        written = atomic_write(path, text)
        for key, value in json.loads(text).items():
            setattr(self, key, value)
        return written

    @classmethod
    def from_dict(cls, data: dict) -> BuildReport:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> BuildReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- presentation ---------------------------------------------------------------------

    def resource_table(self) -> str:
        rows = []
        for name in RESOURCE_ORDER:
            r = self.resources.get(name)
            if r is None:
                continue
            used, avail = r["used"], r["available"]
            pct = f"{100.0 * used / avail:.1f}%" if avail else "-"
            rows.append([name, r["unit"], _num(used), _num(avail), pct])
        return format_table(["resource", "unit", "used", "available", "use"], rows,
                            align="<<>>>")

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [f"{self.config} on {self.board} ({self.part}), top {self.top}: {self.status}"
                 + (" (cached)" if self.cached else "")]
        lines += ["  " + ln for ln in self.resource_table().splitlines()]
        lines.append(f"  resources from {self.resource_source}")
        if self.fmax_mhz is not None:
            verdict = "meets" if self.meets_timing else "MISSES"
            lines.append(f"  Fmax {self.fmax_mhz:.1f} MHz: {verdict} the {self.target_mhz:g} "
                         f"MHz target")
        if self.critical_path:
            cp = self.critical_path
            lines.append(f"  critical path {cp['delay_ns']:.2f} ns ({cp['logic_ns']:.2f} logic, "
                         f"{cp['routing_ns']:.2f} routing, {cp['logic_levels']} cells): "
                         f"{cp['from']} -> {cp['to']}")
            if cp.get("sources"):
                lines.append(f"  critical path source: {', '.join(cp['sources'])}")
        if self.message:
            lines.append(f"  {self.message}")
        for key, value in sorted(self.files.items()):
            lines.append(f"  {key:<12} {Path(self.build_dir) / value}")
        if self.seconds:
            order = ("synth", "pnr", "pack", "export", "estimate", "total")
            keys = sorted(self.seconds, key=lambda k: order.index(k) if k in order else 9)
            lines.append("  seconds      " + ", ".join(f"{k} {self.seconds[k]:.1f}"
                                                    for k in keys))
        return "\n".join(lines)


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class BuildError(ValueError):
    """A build that cannot succeed: the design does not fit, or a tool failed.

    ``report`` is the :class:`BuildReport` (status ``"does-not-fit"``, with the resource
    table) or ``None`` for a tool failure; ``param`` is the config field to lower, if any.
    The message is one line.
    """

    def __init__(self, message: str, *, report: BuildReport | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.report, self.param = report, param
