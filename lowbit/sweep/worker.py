"""What runs in a sweep worker: one design (a config on a board) and its workloads.

A :class:`DesignTask` carries plain data only (config dict, workloads, keys), so it pickles
to a process pool or a Dask worker. Workload *contexts* (the trained digits model, program
bytes) are prepared once in the parent by :func:`prepare_contexts` and shipped to each
worker once, not per task.

Per workload the worker compiles, runs the cycle simulator (``backend="sim"``, whose outputs
come from the reference interpreter) and checks the outputs against an independent numpy
model where there is one (digits MLP: ``QuantizedMLP.forward_int`` on the batch; GEMM:
``wrap``/``requantize``). Expected failures (``ValueError``: an invalid combination, a model
that does not fit the memories, a mismatch) become a stored ``error`` result; anything else
is a ``crash``, reported but not stored, so a rerun tries again.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowbit.config import AccelConfig

from .spec import (
    PROGRAM_FIXED_FIELDS,
    GemmWorkload,
    MlpWorkload,
    OnnxWorkload,
    ProgramWorkload,
    Workload,
    ZooWorkload,
)

__all__ = ["DELAY_ENV", "DesignResult", "DesignTask", "MlpContext", "compute_design",
           "prepare_contexts"]

#: Seconds each point sleeps before it is computed (a hook for tests and demonstrations of
#: interrupted sweeps; unset or 0 in normal use).
DELAY_ENV = "LOWBIT_SWEEP_POINT_DELAY"


@dataclass(frozen=True)
class MlpContext:
    """A trained float digits MLP with its fixed split."""

    model: object
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    float_accuracy: float


@dataclass(frozen=True)
class DesignTask:
    config: dict
    board: str | None
    resources: str                      # resource model name
    resources_cached: dict | None       # from the store, or None to compute
    points: tuple[tuple[str, Workload], ...]   # (point key, workload) still missing
    mem_latency: int
    work_dir: str


@dataclass
class DesignResult:
    resources: dict | None
    resources_error: str | None
    points: list[tuple[str, dict]] = field(default_factory=list)   # (key, result)
    computed_resources: bool = False


def prepare_contexts(workloads) -> dict:
    """Train each distinct digits model and read each program file, keyed by context key."""
    contexts = {}
    for wl in workloads:
        key = wl.context_key
        if key is None or key in contexts:
            continue
        if isinstance(wl, MlpWorkload):
            from lowbit.compiler import train_digits_mlp

            # scikit-learn turns Ctrl-C during fit() into a warning and returns a partly
            # trained model; results from it must not reach the store.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = train_digits_mlp(wl.hidden, wl.seed, max_iter=wl.train_iters)
            if any("interrupted by user" in str(w.message) for w in caught):
                raise KeyboardInterrupt
            contexts[key] = MlpContext(model=data.model, x_train=data.x_train,
                                       x_test=data.x_test, y_test=data.y_test,
                                       float_accuracy=data.accuracy)
        elif isinstance(wl, (ProgramWorkload, OnnxWorkload)):
            contexts[key] = Path(wl.path).read_bytes()
    return contexts


# -- per-process state ------------------------------------------------------------------------

_CONTEXTS: dict = {}
_QUANTIZED: dict = {}


def init_worker(path: str) -> None:
    """Process-pool initializer: load the contexts (pickled by the parent into ``path``)
    for every task of this process."""
    import pickle

    with open(path, "rb") as f:
        contexts = pickle.load(f)
    _CONTEXTS.clear()
    _CONTEXTS.update(contexts)


def pool_entry(task: DesignTask) -> DesignResult:
    return compute_design(task, _CONTEXTS)


def _quantized(ctx_key: str, ctx: MlpContext, weight_bits: int, act_bits: int, acc_bits: int):
    key = (ctx_key, weight_bits, act_bits, acc_bits)
    if key not in _QUANTIZED:
        from lowbit.compiler import quantize_mlp

        qm = quantize_mlp(ctx.model, ctx.x_train, weight_bits=weight_bits, act_bits=act_bits,
                          acc_bits=acc_bits)
        xq = qm.quantize_input(ctx.x_test)
        want = qm.forward_int(xq)
        accuracy = float((want.argmax(axis=1) == ctx.y_test).mean())
        _QUANTIZED[key] = (qm, xq, want, accuracy)
    return _QUANTIZED[key]


# -- workloads ------------------------------------------------------------------------------

class SweepMismatch(ValueError):
    """The accelerator's outputs differ from the independent numpy model."""


def _check_equal(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not np.array_equal(got, want):
        bad = int(np.count_nonzero(got != want)) if got.shape == want.shape else "shape"
        raise SweepMismatch(f"{what}: outputs differ from the numpy model ({bad} of "
                            f"{want.size} values)")


def _timing_metrics(cfg: AccelConfig, res, useful_macs: int) -> dict:
    cycles = int(res.cycles)
    macs = int(res.counters.get("macs", 0))
    return {
        "cycles": cycles, "macs": macs, "useful_macs": int(useful_macs),
        "pe_utilization": macs / (cycles * cfg.pes) if cycles else 0.0,
        "useful_utilization": useful_macs / (cycles * cfg.pes) if cycles else 0.0,
        "counters": {k: int(v) for k, v in sorted(res.counters.items())
                     if isinstance(v, (int, np.integer))},
    }


def _run_mlp(cfg: AccelConfig, wl: MlpWorkload, ctx: MlpContext, mem_latency: int) -> dict:
    from lowbit.compiler import compile_mlp
    from lowbit.executors import run

    act_bits = cfg.act_bits if wl.act_bits is None else wl.act_bits
    if act_bits > cfg.act_bits:
        raise ValueError(f"workload {wl.name!r} has act_bits={act_bits} but the config has "
                         f"act_bits={cfg.act_bits}; allowed at most {cfg.act_bits}")
    qm, xq, want, accuracy = _quantized(wl.context_key, ctx, cfg.weight_bits, act_bits,
                                        cfg.acc_bits)
    program = compile_mlp(qm, cfg, batch=wl.batch)
    sample = xq[:wl.batch]
    res = run(program, {"x": sample}, backend="sim", mem_latency=mem_latency)
    _check_equal(res.outputs["y"], want[:wl.batch], wl.name)
    useful = wl.batch * sum(ly.in_features * ly.out_features for ly in qm.layers)
    return {**_timing_metrics(cfg, res, useful), "instructions": len(program.instrs),
            "batch": wl.batch, "accuracy": accuracy, "float_accuracy": ctx.float_accuracy,
            "verified": int(sample.shape[0]), "weight_bits": cfg.weight_bits,
            "act_bits": act_bits}


def _run_gemm(cfg: AccelConfig, wl: GemmWorkload, mem_latency: int) -> dict:
    from lowbit.compiler import compile_gemm, default_requant
    from lowbit.executors import run
    from lowbit.layout import requantize, wrap

    m, k, n = wl.shape
    rng = np.random.default_rng(wl.seed)
    wlo, whi = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    w = rng.integers(wlo, whi + 1, size=(k, n), dtype=np.int64)
    if wl.act_unsigned:
        alo, ahi = 0, (1 << cfg.act_bits) - 1
    else:
        alo, ahi = -(1 << (cfg.act_bits - 1)), (1 << (cfg.act_bits - 1)) - 1
    x = rng.integers(alo, ahi + 1, size=(m, k), dtype=np.int64)
    mult, shift = default_requant(w, act_unsigned=wl.act_unsigned, act_bits=cfg.act_bits,
                                  out_bits=cfg.act_bits, out_unsigned=False)
    program = compile_gemm(cfg, a_shape=(m, k), weights=w, mult=mult, shift=shift,
                           relu=wl.relu, act_unsigned=wl.act_unsigned)
    res = run(program, {"x": x}, backend="sim", mem_latency=mem_latency)
    want = requantize(wrap(x @ w, cfg.acc_bits), 0, mult, shift, relu=wl.relu,
                      out_bits=cfg.act_bits, out_unsigned=False)
    _check_equal(res.outputs["y"], want, wl.name)
    return {**_timing_metrics(cfg, res, m * k * n), "instructions": len(program.instrs),
            "batch": m, "accuracy": None, "float_accuracy": None, "verified": m,
            "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits}


def _run_program(cfg: AccelConfig, wl: ProgramWorkload, blob: bytes, mem_latency: int) -> dict:
    from lowbit.executors import run
    from lowbit.program import Program

    original = Program.from_bytes(blob, source=f"program {Path(wl.path).name!r}")
    for name in PROGRAM_FIXED_FIELDS:
        have, want = getattr(cfg, name), getattr(original.config, name)
        if have != want:
            raise ValueError(f"program {Path(wl.path).name!r} was compiled for {name}={want}; "
                             f"this point has {name}={have}")
    program = dataclasses.replace(original, config=cfg)
    program.validate()
    rng = np.random.default_rng(wl.seed)
    inputs = {}
    for ref in program.inputs:
        lo = -(1 << (ref.bits - 1)) if ref.signed else 0
        hi = (1 << (ref.bits - 1)) - 1 if ref.signed else (1 << ref.bits) - 1
        inputs[ref.name] = rng.integers(lo, hi + 1, size=(ref.rows, ref.cols), dtype=np.int64)
    res = run(program, inputs, backend="sim", mem_latency=mem_latency)
    macs = int(res.counters.get("macs", 0))
    return {**_timing_metrics(cfg, res, macs), "instructions": len(program.instrs),
            "batch": None, "accuracy": None, "float_accuracy": None, "verified": 0,
            "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits}


def _run_graph(cfg: AccelConfig, g, wl, mem_latency: int) -> dict:
    """Compile a network graph for ``cfg``, run it on seeded random inputs, check the
    outputs against ``g.forward``."""
    from lowbit.compiler import compile_network, pack_inputs, unpack_outputs
    from lowbit.compiler.zoo import sample_inputs
    from lowbit.executors import run

    program = compile_network(g, cfg, host_im2col=wl.host_im2col)
    inputs = sample_inputs(g, seed=wl.seed + 1)
    res = run(program, pack_inputs(program, inputs), backend="sim", mem_latency=mem_latency)
    got = unpack_outputs(program, res.outputs)
    for name, want in g.forward(inputs).items():
        _check_equal(got[name], want, f"{wl.name} output {name}")
    return {**_timing_metrics(cfg, res, g.macs()), "instructions": len(program.instrs),
            "batch": 1, "accuracy": None, "float_accuracy": None, "verified": 1,
            "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits}


def _run_zoo(cfg: AccelConfig, wl: ZooWorkload, mem_latency: int) -> dict:
    from lowbit.compiler import zoo

    g = zoo.build(wl.model, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits,
                  acc_bits=cfg.acc_bits, seed=wl.seed)
    return _run_graph(cfg, g, wl, mem_latency)


def _run_onnx(cfg: AccelConfig, wl: OnnxWorkload, blob: bytes, mem_latency: int) -> dict:
    from lowbit.compiler.onnx_import import import_onnx

    g = import_onnx(blob, weight_bits=cfg.weight_bits, acc_bits=cfg.acc_bits,
                    name=Path(wl.path).stem)
    metrics = _run_graph(cfg, g, wl, mem_latency)
    metrics["act_bits"] = max(g.tensor(t).bits for t in g.inputs)
    return metrics


def compute_point(cfg: AccelConfig, wl: Workload, contexts: dict, mem_latency: int) -> dict:
    """The stored result of one workload on one config: ``{"status", "error", "metrics"}``."""
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    try:
        if isinstance(wl, MlpWorkload):
            metrics = _run_mlp(cfg, wl, contexts[wl.context_key], mem_latency)
        elif isinstance(wl, GemmWorkload):
            metrics = _run_gemm(cfg, wl, mem_latency)
        elif isinstance(wl, ZooWorkload):
            metrics = _run_zoo(cfg, wl, mem_latency)
        elif isinstance(wl, OnnxWorkload):
            metrics = _run_onnx(cfg, wl, contexts[wl.context_key], mem_latency)
        else:
            metrics = _run_program(cfg, wl, contexts[wl.context_key], mem_latency)
    except ValueError as exc:
        return {"status": "error", "error": _one_line(exc), "metrics": {}}
    except Exception as exc:  # noqa: BLE001 - reported as a crash, not stored
        tail = traceback.format_exc().strip().splitlines()[-1]
        return {"status": "crash", "error": f"{type(exc).__name__}: {_one_line(exc)} ({tail})",
                "metrics": {}}
    return {"status": "ok", "error": None, "metrics": metrics}


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def compute_design(task: DesignTask, contexts: dict) -> DesignResult:
    """Resources of the design (unless cached) and every missing workload on it."""
    from .resources import Resources, resolve_resource_model

    cfg = AccelConfig.from_dict(task.config)
    resources, error, computed = task.resources_cached, None, False
    if resources is None:
        try:
            model = resolve_resource_model(task.resources)
            work_dir = Path(task.work_dir)
            value = model(cfg, board=task.board, work_dir=work_dir)
            if isinstance(value, dict):
                value = Resources(**value)
            resources, computed = value.to_dict(), True
        except Exception as exc:  # noqa: BLE001 - a failed build is reported per point
            error = f"resources ({task.resources}): {type(exc).__name__}: {_one_line(exc)}"
    out = DesignResult(resources=resources, resources_error=error,
                       computed_resources=computed)
    for key, wl in task.points:
        out.points.append((key, compute_point(cfg, wl, contexts, task.mem_latency)))
    return out
