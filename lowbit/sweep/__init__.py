"""Design-space sweeps: vary config parameters over workloads and boards, keep the Pareto
front.

::

    from lowbit.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("examples/sweep.toml"), "lowbit-out/sweep")
    print(result.summary)

On the command line: ``lowbit sweep SPEC [--out DIR] [--scheduler ADDR] [--workers N]``.
The spec format, the resource model and the outputs are described in ``docs/sweep.md``.
"""

from .report import FRONTS, build_rows, pareto_front, summary_text, write_outputs
from .resources import Resources, analytic_resources, resolve_resource_model
from .runner import STORE_NAME, Progress, SweepResult, run_sweep
from .spec import (
    Axis,
    GemmWorkload,
    MlpWorkload,
    Point,
    ProgramWorkload,
    SweepSpec,
    SweepSpecError,
    load_spec,
    parse_spec,
    point_key,
)
from .store import Store

__all__ = [
    "Axis",
    "FRONTS",
    "GemmWorkload",
    "MlpWorkload",
    "Point",
    "ProgramWorkload",
    "Progress",
    "Resources",
    "STORE_NAME",
    "Store",
    "SweepResult",
    "SweepSpec",
    "SweepSpecError",
    "analytic_resources",
    "build_rows",
    "load_spec",
    "pareto_front",
    "parse_spec",
    "point_key",
    "resolve_resource_model",
    "run_sweep",
    "summary_text",
    "write_outputs",
]
