"""Sweep specs: a TOML file naming a base config, the parameters to vary, the workloads and
the boards, expanded into design points.

The format is described in ``docs/sweep.md``; :func:`load_spec` parses and validates a spec,
:meth:`SweepSpec.points` expands it. Every error is a :class:`SweepSpecError` naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from lowbit import __version__
from lowbit.config import PRESETS, AccelConfig, ConfigError, load_config

__all__ = [
    "Axis",
    "GemmWorkload",
    "MlpWorkload",
    "Point",
    "ProgramWorkload",
    "SweepSpec",
    "SweepSpecError",
    "Workload",
    "WORKLOAD_KINDS",
    "code_digest",
    "design_key",
    "load_spec",
    "parse_spec",
    "point_key",
]

#: Most points one spec may expand to (a guard against a typo in a range).
MAX_POINTS = 100_000
#: Top-level keys of a spec.
SPEC_KEYS = ("base", "boards", "mem_latency", "resources", "vary", "workload")
CONFIG_FIELDS = tuple(f.name for f in fields(AccelConfig))


class SweepSpecError(ValueError):
    """An invalid sweep spec. The message names the key, the value and what is allowed."""


def _fail(key: str, value, allowed: str):
    raise SweepSpecError(f"{key} must be {allowed}, not {_show(value)}")


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canon(value):
    """A JSON-stable form (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    return value


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(_canon(data), sort_keys=True).encode()).hexdigest()


# -- workloads ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MlpWorkload:
    """The scikit-learn digits MLP, trained in the sweep's parent process, quantized at the
    point's ``weight_bits`` and ``act_bits`` (or ``act_bits`` given here, which must not
    exceed the config's), compiled for ``batch`` images."""

    name: str
    hidden: tuple[int, ...] = (64, 32)
    seed: int = 0
    train_iters: int = 300
    batch: int = 64
    act_bits: int | None = None

    kind = "mlp"

    def identity(self) -> dict:
        return {"kind": self.kind, "hidden": list(self.hidden), "seed": self.seed,
                "train_iters": self.train_iters, "batch": self.batch,
                "act_bits": self.act_bits}

    @property
    def context_key(self) -> str:
        """What the trained model depends on (shared by workloads that differ only in batch
        or bit-widths)."""
        return _digest({"hidden": list(self.hidden), "seed": self.seed,
                        "train_iters": self.train_iters})

    def describe(self) -> str:
        bits = "" if self.act_bits is None else f", act_bits {self.act_bits}"
        return f"digits MLP 64-{'-'.join(map(str, self.hidden))}-10, batch {self.batch}{bits}"


@dataclass(frozen=True)
class GemmWorkload:
    """``y = requantize(x @ w)`` for ``shape = (M, K, N)``: seeded random weights over the full
    ``weight_bits`` range and inputs over the ``act_bits`` range; the compiler's default
    requantization."""

    name: str
    shape: tuple[int, int, int]
    seed: int = 0
    relu: bool = False
    act_unsigned: bool = False

    kind = "gemm"
    context_key = None

    def identity(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "seed": self.seed,
                "relu": self.relu, "act_unsigned": self.act_unsigned}

    def describe(self) -> str:
        return f"GEMM {'x'.join(map(str, self.shape))}" + (" + ReLU" if self.relu else "")


@dataclass(frozen=True)
class ProgramWorkload:
    """A compiled program file run as it is on each point's config, with seeded random
    inputs. The program's layout fixes :data:`PROGRAM_FIXED_FIELDS`; points whose config
    differs there are recorded as errors."""

    name: str
    path: str
    sha256: str
    seed: int = 0

    kind = "program"

    @property
    def context_key(self) -> str:
        """The program's bytes are shipped to the workers under this key."""
        return f"program:{self.sha256}"

    def identity(self) -> dict:
        return {"kind": self.kind, "sha256": self.sha256, "seed": self.seed}

    def describe(self) -> str:
        return f"program {Path(self.path).name}"


@dataclass(frozen=True)
class ZooWorkload:
    """A network of the model zoo (:mod:`lowbit.compiler.zoo`) with seeded random weights at
    the point's ``weight_bits``, ``act_bits`` and ``acc_bits``, compiled on each point's
    config and run on seeded random inputs; outputs checked against the graph's integer
    model. No accuracy: the weights are random."""

    name: str
    model: str
    seed: int = 0
    host_im2col: bool = True

    kind = "zoo"
    context_key = None

    def identity(self) -> dict:
        return {"kind": self.kind, "model": self.model, "seed": self.seed,
                "host_im2col": self.host_im2col}

    def describe(self) -> str:
        return f"zoo {self.model}" + ("" if self.host_im2col else " (no host im2col)")


@dataclass(frozen=True)
class OnnxWorkload:
    """A quantized ONNX / QONNX file imported and compiled on each point's config (its
    weights must fit the point's ``weight_bits``; activation widths are the file's), run on
    seeded random inputs; outputs checked against the imported graph's integer model."""

    name: str
    path: str
    sha256: str
    seed: int = 0
    host_im2col: bool = True

    kind = "onnx"

    @property
    def context_key(self) -> str:
        """The file's bytes are shipped to the workers under this key."""
        return f"onnx:{self.sha256}"

    def identity(self) -> dict:
        return {"kind": self.kind, "sha256": self.sha256, "seed": self.seed,
                "host_im2col": self.host_im2col}

    def describe(self) -> str:
        return f"ONNX {Path(self.path).name}"


Workload = MlpWorkload | GemmWorkload | ProgramWorkload | ZooWorkload | OnnxWorkload
WORKLOAD_KINDS = ("mlp", "gemm", "program", "zoo", "onnx")

#: Config fields a compiled program's instructions and memory image depend on.
PROGRAM_FIXED_FIELDS = ("rows", "cols", "weight_bits", "act_bits", "acc_bits", "bus_bits")


# -- axes and points ------------------------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    """One dimension of the sweep: one config field, or several varied together."""

    names: tuple[str, ...]
    values: tuple[tuple, ...]       # one tuple of len(names) values per step

    @property
    def label(self) -> str:
        return ",".join(self.names)


@dataclass(frozen=True)
class Point:
    """One design point: a config (or the ConfigError that refuses it), a workload, a board."""

    index: int                      # position in the spec's cartesian order
    params: dict                    # the varied fields' values
    config: dict                    # every field (base + params), as given
    workload: Workload
    board: str | None
    key: str                        # results stored under this (see point_key)
    design: str                     # resources stored under this (see design_key)
    error: str | None = None        # the ConfigError message of an invalid config

    @property
    def valid(self) -> bool:
        return self.error is None


def code_digest() -> str:
    """A hash of the sources that compute a point's results: config, ISA, layouts, program
    checks, executors, the compiler, the reference and cycle simulators, the PE (its
    activation width), the memory list of ``lowbit.boards.estimate``, the analytic resource
    model and this package's worker. Stored results are reused only while these
    are unchanged (a compiler change alters cycle counts within one lowbit version)."""
    import importlib.util

    def folder(package: str) -> Path:
        return Path(importlib.util.find_spec(package).submodule_search_locations[0])

    top = folder("lowbit")
    files = [top / f"{n}.py" for n in ("config", "isa", "layout", "program", "checks",
                                       "executors", "timing")]
    files += sorted(folder("lowbit.compiler").glob("*.py"))
    files += [folder("lowbit.sim") / f"{n}.py" for n in ("cycle", "reference")]
    files += [folder("lowbit.hw") / "pe.py", folder("lowbit.boards") / "estimate.py"]
    files += [Path(__file__).parent / f"{n}.py" for n in ("worker", "resources")]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def point_key(config: dict, workload: Workload, board: str | None, *, resources: str,
              mem_latency: int, code: str) -> str:
    """The stable hash a point's results are stored under (``code``: :func:`code_digest`)."""
    return _digest({"config": config, "workload": workload.identity(), "board": board,
                    "resources": resources, "mem_latency": mem_latency,
                    "lowbit": __version__, "code": code})


def design_key(config: dict, board: str | None, *, resources: str, code: str) -> str:
    """The stable hash a design's (a config on a board) resources are stored under."""
    return _digest({"config": config, "board": board, "resources": resources,
                    "lowbit": __version__, "code": code})


@dataclass(frozen=True)
class SweepSpec:
    base: AccelConfig
    axes: tuple[Axis, ...]
    workloads: tuple[Workload, ...]
    boards: tuple[str | None, ...] = (None,)
    resources: str = "analytic"
    mem_latency: int = 20
    source: str = "<spec>"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def varied(self) -> tuple[str, ...]:
        return tuple(n for a in self.axes for n in a.names)

    @property
    def n_configs(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    @property
    def n_points(self) -> int:
        return self.n_configs * len(self.workloads) * len(self.boards)

    def points(self) -> list[Point]:
        """Every point in cartesian order: configs (first axis slowest), then workloads,
        then boards. Invalid configs carry their ConfigError message."""
        out = []
        code = code_digest()
        base = self.base.to_dict()
        for combo in itertools.product(*(a.values for a in self.axes)):
            params = {}
            for axis, values in zip(self.axes, combo, strict=True):
                params.update(zip(axis.names, values, strict=True))
            raw = {**base, **params}
            try:
                config, error = AccelConfig.from_dict(raw).to_dict(), None
            except ConfigError as exc:
                config, error = raw, str(exc)
            for workload in self.workloads:
                for board in self.boards:
                    key = point_key(config, workload, board, resources=self.resources,
                                    mem_latency=self.mem_latency, code=code)
                    design = design_key(config, board, resources=self.resources, code=code)
                    out.append(Point(index=len(out), params=params, config=config,
                                     workload=workload, board=board, key=key, design=design,
                                     error=error))
        return out


# -- parsing --------------------------------------------------------------------------------

def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (TOML)."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep spec {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"sweep spec {str(path)!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SweepSpecError(f"sweep spec {str(path)!r} is not UTF-8 text") from None
    return parse_spec(data, base_dir=path.parent, source=str(path))


def parse_spec(data: dict, *, base_dir: str | Path = ".", source: str = "<spec>") -> SweepSpec:
    """Validate a parsed spec (the TOML document as a dict)."""
    base_dir = Path(base_dir)
    if not isinstance(data, dict):
        _fail("spec", data, "a table")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise SweepSpecError(f"unknown spec key {unknown[0]!r} = {_show(data[unknown[0]])}; "
                             f"allowed keys are {', '.join(SPEC_KEYS)}")
    base = _parse_base(data.get("base", "default"), base_dir)
    axes = _parse_vary(data.get("vary", {}))
    workloads = _parse_workloads(data.get("workload"), base_dir)
    boards = _parse_boards(data.get("boards"))
    resources = data.get("resources", "analytic")
    from .resources import check_resource_model

    check_resource_model(resources, boards)
    mem_latency = data.get("mem_latency", 20)
    if not _is_int(mem_latency) or not 1 <= mem_latency <= 1000:
        _fail("mem_latency", mem_latency, "an integer from 1 to 1000")
    spec = SweepSpec(base=base, axes=axes, workloads=workloads, boards=boards,
                     resources=resources, mem_latency=mem_latency, source=source, raw=data)
    if spec.n_points > MAX_POINTS:
        raise SweepSpecError(f"vary expands to {spec.n_points} points; allowed at most "
                             f"{MAX_POINTS}")
    return spec


def _parse_base(value, base_dir: Path) -> AccelConfig:
    if isinstance(value, str):
        text = value
        if text not in PRESETS and Path(text).suffix in (".json", ".toml") \
                and not Path(text).is_absolute():
            text = str(base_dir / text)
        try:
            return load_config(text)
        except ConfigError as exc:
            raise SweepSpecError(f"base: {exc}") from None
    if isinstance(value, dict):
        table = dict(value)
        start = table.pop("preset", "default")
        if start not in PRESETS:
            _fail("base.preset", start, f"one of {', '.join(sorted(PRESETS))}")
        unknown = sorted(set(table) - set(CONFIG_FIELDS))
        if unknown:
            raise SweepSpecError(f"unknown config field base.{unknown[0]} = "
                                 f"{_show(table[unknown[0]])}; allowed fields are preset, "
                                 f"{', '.join(CONFIG_FIELDS)}")
        try:
            return PRESETS[start].replace(**table)
        except ConfigError as exc:
            raise SweepSpecError(f"base: {exc}") from None
    _fail("base", value, f"a preset ({', '.join(sorted(PRESETS))}), a .json/.toml config "
                         f"file or a table of config fields")


def _expand_range(key: str, table: dict) -> list:
    allowed = "a table {start, stop, step} or {start, stop, mul}"
    extra = sorted(set(table) - {"start", "stop", "step", "mul"})
    if extra:
        raise SweepSpecError(f"{key} has unknown range key {extra[0]!r}; {key} must be a list "
                             f"of values or {allowed}")
    if "start" not in table or "stop" not in table or ("step" in table) == ("mul" in table):
        _fail(key, table, allowed)
    start, stop = table["start"], table["stop"]
    for part in ("start", "stop"):
        if not _is_num(table[part]):
            _fail(f"{key}.{part}", table[part], "a number")
    if stop < start:
        _fail(f"{key}.stop", stop, f"at least start ({start})")
    values = []
    if "step" in table:
        step = table["step"]
        if not _is_num(step) or step <= 0:
            _fail(f"{key}.step", step, "a positive number")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > MAX_POINTS:
            _fail(f"{key}.step", step, f"large enough for at most {MAX_POINTS} values")
        values = [start + i * step for i in range(n)]
        if all(_is_int(v) for v in (start, step)):
            values = [int(v) for v in values]
        else:
            values = [round(float(v), 9) for v in values]
    else:
        mul = table["mul"]
        if not _is_num(mul) or mul <= 1:
            _fail(f"{key}.mul", mul, "a number greater than 1")
        if start <= 0:
            _fail(f"{key}.start", start, "positive with mul")
        v = start
        while v <= stop * (1 + 1e-9):
            values.append(v)
            v = v * mul
            if len(values) > MAX_POINTS:
                break
        if not all(_is_int(x) for x in (start, mul)):
            values = [round(float(x), 9) for x in values]
    return values


def _parse_vary(vary) -> tuple[Axis, ...]:
    if not isinstance(vary, dict):
        _fail("vary", vary, "a table of config fields to lists or ranges")
    axes, seen = [], set()
    for key, value in vary.items():
        names = tuple(n.strip() for n in key.split(","))
        for name in names:
            if name not in CONFIG_FIELDS:
                raise SweepSpecError(f"vary.{key}: unknown config field {name!r}; allowed "
                                     f"fields are {', '.join(CONFIG_FIELDS)}")
            if name in seen:
                raise SweepSpecError(f"vary.{key}: field {name!r} is varied twice")
            seen.add(name)
        vkey = f"vary.{key}" if len(names) == 1 else f"vary.{json.dumps(key)}"
        if isinstance(value, dict):
            if len(names) > 1:
                _fail(vkey, value, f"a list of [{', '.join(names)}] lists")
            values = _expand_range(vkey, value)
        elif isinstance(value, list):
            values = value
        else:
            _fail(vkey, value, "a list of values or a table {start, stop, step} or "
                               "{start, stop, mul}")
        if not values:
            _fail(vkey, value, "a non-empty list")
        steps = []
        for v in values:
            if len(names) > 1:
                if not isinstance(v, list) or len(v) != len(names):
                    _fail(vkey, v, f"a list of {len(names)} values [{', '.join(names)}] "
                                   f"in each entry")
                step = tuple(v)
            else:
                step = (v,)
            for x in step:
                if not isinstance(x, (int, float, str, bool)):
                    _fail(vkey, v, "a list of numbers")
            if step in steps:
                raise SweepSpecError(f"{vkey} lists {_show(list(step) if len(step) > 1 else v)}"
                                     f" twice; each value must appear once")
            steps.append(step)
        axes.append(Axis(names=names, values=tuple(steps)))
    return tuple(axes)


_WORKLOAD_KEYS = {
    "mlp": ("kind", "name", "hidden", "seed", "train_iters", "batch", "act_bits"),
    "gemm": ("kind", "name", "shape", "seed", "relu", "act_unsigned"),
    "program": ("kind", "name", "path", "seed"),
    "zoo": ("kind", "name", "model", "seed", "host_im2col"),
    "onnx": ("kind", "name", "path", "seed", "host_im2col"),
}


def _int_key(key: str, table: dict, name: str, default, lo: int, hi: int) -> int:
    value = table.get(name, default)
    if not _is_int(value) or not lo <= value <= hi:
        _fail(f"{key}.{name}", value, f"an integer from {lo} to {hi}")
    return value


def _bool_key(key: str, table: dict, name: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        _fail(f"{key}.{name}", value, "true or false")
    return value


def _file_key(key: str, table: dict, base_dir: Path, what: str) -> tuple[str, Path, bytes]:
    """A workload's ``path`` (relative to the spec's folder): as given, resolved, its bytes."""
    path = table.get("path")
    if not isinstance(path, str) or not path:
        _fail(f"{key}.path", path, f"the path of a {what}")
    full = Path(path) if Path(path).is_absolute() else base_dir / path
    if not full.is_file():
        _fail(f"{key}.path", path, f"an existing {what}")
    return path, full, full.read_bytes()


def _parse_workloads(value, base_dir: Path) -> tuple[Workload, ...]:
    if value is None:
        raise SweepSpecError("workload is missing; add at least one [[workload]] table with "
                             f"kind = one of {', '.join(WORKLOAD_KINDS)}")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail("workload", value, "a non-empty array of tables ([[workload]])")
    out, names = [], set()
    for i, table in enumerate(value):
        key = f"workload[{i}]"
        if not isinstance(table, dict):
            _fail(key, table, "a table")
        kind = table.get("kind")
        if kind not in WORKLOAD_KINDS:
            _fail(f"{key}.kind", kind, f"one of {', '.join(WORKLOAD_KINDS)}")
        unknown = sorted(set(table) - set(_WORKLOAD_KEYS[kind]))
        if unknown:
            raise SweepSpecError(f"unknown key {key}.{unknown[0]} = {_show(table[unknown[0]])}"
                                 f"; a {kind} workload allows "
                                 f"{', '.join(_WORKLOAD_KEYS[kind])}")
        seed = _int_key(key, table, "seed", 0, 0, 2**32 - 1)
        if kind == "mlp":
            hidden = table.get("hidden", [64, 32])
            if not isinstance(hidden, list) or not hidden or len(hidden) > 8 \
                    or not all(_is_int(h) and 1 <= h <= 4096 for h in hidden):
                _fail(f"{key}.hidden", hidden, "a list of 1 to 8 layer sizes from 1 to 4096")
            act_bits = table.get("act_bits")
            if act_bits is not None and (not _is_int(act_bits) or not 2 <= act_bits <= 8):
                _fail(f"{key}.act_bits", act_bits, "an integer from 2 to 8")
            hidden = tuple(hidden)
            default = f"mlp-{'-'.join(map(str, hidden))}"
            wl = MlpWorkload(name=table.get("name", default), hidden=hidden, seed=seed,
                             train_iters=_int_key(key, table, "train_iters", 300, 1, 100000),
                             batch=_int_key(key, table, "batch", 64, 1, 450),
                             act_bits=act_bits)
        elif kind == "gemm":
            shape = table.get("shape")
            if not isinstance(shape, list) or len(shape) != 3 \
                    or not all(_is_int(s) and 1 <= s <= 65536 for s in shape):
                _fail(f"{key}.shape", shape, "[M, K, N] with integers from 1 to 65536")
            wl = GemmWorkload(name=table.get("name", f"gemm-{'x'.join(map(str, shape))}"),
                              shape=tuple(shape), seed=seed,
                              relu=_bool_key(key, table, "relu"),
                              act_unsigned=_bool_key(key, table, "act_unsigned"))
        elif kind == "zoo":
            from lowbit.compiler.zoo import MODELS

            model = table.get("model")
            if model not in MODELS:
                _fail(f"{key}.model", model, f"one of {', '.join(MODELS)}")
            wl = ZooWorkload(name=table.get("name", model), model=model, seed=seed,
                             host_im2col=table.get("host_im2col", True))
            if not isinstance(wl.host_im2col, bool):
                _fail(f"{key}.host_im2col", wl.host_im2col, "true or false")
        elif kind == "onnx":
            path, full, data = _file_key(key, table, base_dir, "quantized ONNX or QONNX file")
            from lowbit.compiler.onnx_import import import_onnx

            try:
                import_onnx(data)
            except ValueError as exc:
                raise SweepSpecError(f"{key}.path: {path}: {exc}") from None
            wl = OnnxWorkload(name=table.get("name", f"onnx-{Path(path).stem}"),
                              path=str(full), sha256=hashlib.sha256(data).hexdigest(),
                              seed=seed, host_im2col=table.get("host_im2col", True))
            if not isinstance(wl.host_im2col, bool):
                _fail(f"{key}.host_im2col", wl.host_im2col, "true or false")
        else:
            path, full, data = _file_key(key, table, base_dir, "program file (.lbp)")
            from lowbit.program import Program, ProgramError

            try:
                Program.from_bytes(data, source=f"program {path!r}")
            except ProgramError as exc:
                raise SweepSpecError(f"{key}.path: {exc}") from None
            wl = ProgramWorkload(name=table.get("name", f"prog-{Path(path).stem}"),
                                 path=str(full), sha256=hashlib.sha256(data).hexdigest(),
                                 seed=seed)
        if not isinstance(wl.name, str) or not wl.name or any(c in wl.name for c in ",\n/"):
            _fail(f"{key}.name", wl.name, "a non-empty string without ',', '/' or newlines")
        if wl.name in names:
            raise SweepSpecError(f"{key}.name {wl.name!r} is used twice; workload names must "
                                 f"be unique")
        names.add(wl.name)
        out.append(wl)
    return tuple(out)


def _parse_boards(value) -> tuple[str | None, ...]:
    if value is None:
        return (None,)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value \
            or not all(isinstance(b, str) and b for b in value):
        _fail("boards", value, "a non-empty list of board names")
    if len(set(value)) != len(value):
        _fail("boards", value, "a list without duplicates")
    from .resources import known_boards

    known = known_boards()
    if known is not None:
        for board in value:
            if board not in known:
                _fail("boards", board, f"one of {', '.join(sorted(known))}")
    return tuple(value)
