"""``lowbit demo``: a digits MLP from training to accelerator cycles, end to end.

1. Train a small ReLU MLP on scikit-learn's digits (:func:`lowbit.compiler.train_digits_mlp`).
2. Quantize it post-training to W8A8, W4A8 and W2A8 (:func:`lowbit.compiler.quantize_mlp`).
3. Compile each variant (:func:`lowbit.compiler.compile_mlp`) for the chosen config with
   ``weight_bits`` set to the variant's width (the PE array is generated per weight width).
4. Run the whole test split on the ``reference`` and ``sim`` executors (and ``rtl`` with
   ``--rtl``); every executor's outputs must equal the reference executor's and the numpy
   integer model's bit for bit, and ``rtl`` cycles must equal ``sim`` cycles.
5. Print a table and write, into the output folder: ``report.json`` (deterministic, no wall
   times), ``timing.json`` (wall times), ``cycles.png`` (per-layer cycles and utilization),
   ``accel.v`` (the Verilog of the chosen config) and the programs (``mlp_w4a8.lbp`` ...).
6. The digits CNN (:mod:`lowbit.compiler.cnn`): train it in numpy, quantize it post-training
   to W8A8, W4A8, W4A4, W3A8, W2A8 and two mixed-precision variants (per-channel MSE
   clipping and bias correction; min/max scales for comparison), compile each for the config
   with the variant's widest weight width and run the test images one by one on ``reference``
   and ``sim`` (``rtl``: the first two); the logits must equal the graph's numpy model, so the
   accelerator's accuracy is the quantized model's. The table goes to the log and
   ``report.json`` (``"cnn"``), the programs to ``cnn_w4a8.lbp`` ...

Per-layer numbers come from compiling each layer on its own (same batch) and running the
cycle simulator on it: the cycles that layer takes alone. The whole program overlaps layers,
so its cycle count is at most their sum.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, isa
from .config import AccelConfig, load_config
from .executors import DEFAULT_MEM_LATENCY, run
from .report import atomic_write, dumps_json, format_table

__all__ = ["DemoMismatch", "VARIANTS", "run_demo"]

#: (name, weight_bits, act_bits) of the quantized variants, widest first.
VARIANTS: tuple[tuple[str, int, int], ...] = (("W8A8", 8, 8), ("W4A8", 4, 8), ("W2A8", 2, 8))

HIDDEN = (64, 32)
TRAIN_ITERS = 300
QUICK_ITERS = 60
QUICK_TEST_IMAGES = 96
CNN_CHANNELS = (16, 32)
CNN_EPOCHS = 15
CNN_QUICK_EPOCHS = 4
CNN_QUICK_TEST_IMAGES = 32
CNN_CALIB_IMAGES = 512
CNN_QUICK_CALIB_IMAGES = 128
CNN_RTL_IMAGES = 2


class DemoMismatch(AssertionError):
    """Two executors, or an executor and the numpy integer model, disagree."""


@dataclass
class _Backend:
    outputs: np.ndarray
    cycles: int | None
    seconds: float
    counters: dict[str, int] = field(default_factory=dict)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _compile(qm, cfg: AccelConfig, n: int, log) -> tuple[object, int]:
    """A program for the largest batch that compiles (the whole split, else halves)."""
    from .compiler import compile_mlp

    batch = n
    while True:
        try:
            return compile_mlp(qm, cfg, batch=batch), batch
        except ValueError as exc:
            if batch == 1:
                raise
            log(f"  batch {batch} does not fit ({exc}); trying {(batch + 1) // 2}")
            batch = (batch + 1) // 2


def _run_chunks(program, xq: np.ndarray, batch: int, backend: str, mem_latency: int,
                **opts) -> _Backend:
    """Run ``xq`` through ``program`` in chunks of ``batch`` rows (the last one padded)."""
    name_in, name_out = program.inputs[0].name, program.outputs[0].name
    outs, cycles, seconds, counters = [], 0, 0.0, {}
    for start in range(0, len(xq), batch):
        chunk = xq[start:start + batch]
        rows = len(chunk)
        if rows < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - rows, xq.shape[1]), xq.dtype)])
        res = run(program, {name_in: chunk}, backend=backend, mem_latency=mem_latency, **opts)
        outs.append(np.asarray(res.outputs[name_out])[:rows])
        cycles = None if res.cycles is None or cycles is None else cycles + res.cycles
        seconds += res.seconds
        for key, value in res.counters.items():
            if isinstance(value, (int, np.integer)):
                counters[key] = counters.get(key, 0) + int(value)
    return _Backend(np.concatenate(outs), cycles, seconds, counters)


def _layer_stats(qm, cfg: AccelConfig, batch: int, mem_latency: int) -> list[dict]:
    """Each layer compiled alone for ``batch`` rows: its cycles and PE utilization."""
    from .compiler import compile_mlp
    from .compiler.quantize import QuantizedMLP
    from .sim.cycle import simulate_timing

    stats = []
    for i, layer in enumerate(qm.layers):
        single = QuantizedMLP(layers=(layer,), weight_bits=qm.weight_bits, act_bits=qm.act_bits,
                              input_scale=layer.in_scale,
                              input_unsigned=qm.layer_input_unsigned(i),
                              output_scale=layer.out_scale, acc_bits=qm.acc_bits)
        prog = compile_mlp(single, cfg, batch=batch)
        cycles, counters = simulate_timing(prog, mem_latency=mem_latency)
        macs = int(counters.get("macs", 0))
        useful = batch * layer.in_features * layer.out_features
        stats.append({
            "layer": i, "shape": [batch, layer.in_features, layer.out_features],
            "cycles_alone": int(cycles), "macs": macs, "useful_macs": useful,
            "pe_utilization": macs / (cycles * cfg.pes) if cycles else 0.0,
            "useful_utilization": useful / (cycles * cfg.pes) if cycles else 0.0,
        })
    return stats


def _plot(path: Path, variants: list[dict]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    per_layer = all(v.get("layers") for v in variants)
    fig, (ax_c, ax_u) = plt.subplots(1, 2, figsize=(10, 4))
    names = [v["name"] for v in variants]
    width = 0.8 / max(1, len(variants))
    if per_layer:
        n_layers = max(len(v["layers"]) for v in variants)
        x = np.arange(n_layers)
        for j, v in enumerate(variants):
            pos = x - 0.4 + width * (j + 0.5)
            ax_c.bar(pos, [ly["cycles_alone"] for ly in v["layers"]], width, label=v["name"])
            ax_u.bar(pos, [100 * ly["pe_utilization"] for ly in v["layers"]], width,
                     label=v["name"])
        labels = [f"layer {i}\n{'x'.join(map(str, ly['shape'][1:]))}"
                  for i, ly in enumerate(variants[0]["layers"])]
        for ax in (ax_c, ax_u):
            ax.set_xticks(x, labels)
        ax_c.set_title("cycles per layer (compiled alone)")
        ax_u.set_title("PE utilization per layer")
    else:
        x = np.arange(len(variants))
        ax_c.bar(x, [v["cycles"] for v in variants])
        ax_u.bar(x, [100 * v["pe_utilization"] for v in variants])
        for ax in (ax_c, ax_u):
            ax.set_xticks(x, names)
        ax_c.set_title("cycles per variant")
        ax_u.set_title("PE utilization per variant")
    ax_c.set_ylabel("cycles")
    ax_u.set_ylabel("% of R x C x cycles")
    ax_u.set_ylim(0, 100)
    if per_layer:
        ax_c.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _cnn_table(cfg: AccelConfig, backends: list[str], *, quick: bool, seed: int,
               mem_latency: int, out: Path, log) -> tuple[dict, list[str], dict]:
    """The digits CNN: train, quantize every variant of
    :data:`lowbit.compiler.cnn.CNN_VARIANTS`, compile each for ``cfg`` with the variant's
    widest weight width and run the test images (batch 1) on ``reference`` and ``sim``
    (``rtl``: the first :data:`CNN_RTL_IMAGES` images)."""
    from .compiler import compile_network
    from .compiler.cnn import CNN_VARIANTS, accelerator_logits, quantize_cnn, train_digits_cnn

    timing: dict = {"variants": {}}
    t0 = time.perf_counter()
    epochs = CNN_QUICK_EPOCHS if quick else CNN_EPOCHS
    data = train_digits_cnn(CNN_CHANNELS, seed, epochs=epochs)
    timing["train_seconds"] = time.perf_counter() - t0
    x_test, y_test = data.x_test, data.y_test
    if quick:
        x_test, y_test = x_test[:CNN_QUICK_TEST_IMAGES], y_test[:CNN_QUICK_TEST_IMAGES]
    float_acc = _accuracy(data.model.forward(x_test), y_test)
    log(f"  trained CNN conv3x3-{CNN_CHANNELS[0]}/pool-conv3x3-{CNN_CHANNELS[1]}/pool-fc10 "
        f"({epochs} epochs); float accuracy {float_acc:.4f} on {len(x_test)} test images")
    calib = data.x_train[:CNN_QUICK_CALIB_IMAGES if quick else CNN_CALIB_IMAGES]
    rows, files = [], []
    for v in CNN_VARIANTS:
        wb = max(v.weight_bits)
        vcfg = cfg if cfg.weight_bits == wb else cfg.replace(weight_bits=wb)
        t0 = time.perf_counter()
        naive = quantize_cnn(data.model, calib, weight_bits=v.weight_bits,
                             act_bits=v.act_bits, method="minmax", bias_correction=False)
        q = quantize_cnn(data.model, calib, weight_bits=v.weight_bits,
                         act_bits=v.act_bits)
        xq = q.quantize_input(x_test)
        want = q.forward_int(xq)
        program = compile_network(q.graph, vcfg)
        compile_seconds = time.perf_counter() - t0
        slug = v.name.lower().replace(" ", "")
        prog_name = f"cnn_{slug}.lbp"
        program.save(out / prog_name)
        files.append(prog_name)
        seconds, cycles = {}, None
        for b in backends:
            n = CNN_RTL_IMAGES if b == "rtl" else len(xq)
            t0 = time.perf_counter()
            got, results = accelerator_logits(program, xq[:n], backend=b,
                                              mem_latency=mem_latency)
            seconds[f"{b}_seconds"] = time.perf_counter() - t0
            if not np.array_equal(got, want[:n]):
                raise DemoMismatch(f"CNN {v.name}: {b} logits differ from the graph's numpy "
                                   f"model ({int(np.count_nonzero(got != want[:n]))} values)")
            if b == "sim":
                cycles, sim_logits = int(results[0].cycles), got
            if b == "rtl" and any(r.cycles != cycles for r in results):
                raise DemoMismatch(f"CNN {v.name}: rtl took {results[0].cycles} cycles, the "
                                   f"cycle simulator {cycles}")
        quant_acc = _accuracy(want, y_test)
        rows.append({
            "name": v.name, "weight_bits": list(v.weight_bits), "act_bits": v.act_bits,
            "config": vcfg.name, "program": prog_name,
            "program_sha256": _sha256(program.to_bytes()),
            "instructions": len(program.instrs),
            "minmax_accuracy": _accuracy(naive.forward_int(naive.quantize_input(x_test)),
                                         y_test),
            "quant_accuracy": quant_acc, "accel_accuracy": _accuracy(sim_logits, y_test),
            "bit_exact": {b: True for b in backends},
            "cycles_per_image": cycles, "latency_us": cycles / vcfg.clock_mhz,
        })
        timing["variants"][v.name] = {"compile_seconds": compile_seconds, **seconds}
        log(f"  CNN {v.name}: {len(program.instrs)} instructions, {cycles} cycles per image, "
            f"logits bit-exact on {', '.join(backends)}")
    report = {"layers": ["conv3x3", CNN_CHANNELS[0], "maxpool2", "conv3x3", CNN_CHANNELS[1],
                         "maxpool2", "fc", 10],
              "epochs": epochs, "calibration_images": len(calib),
              "test_images": len(x_test), "float_accuracy": float_acc,
              "ptq": "per-channel weights (MSE clip), activations MSE clip, bias correction",
              "variants": rows}
    return report, files, timing


def _log_cnn_table(cnn: dict, cfg: AccelConfig, log) -> None:
    headers = ["CNN variant", "W conv1/conv2/fc", "float acc", "min/max acc", "PTQ acc",
               "accel acc", "cycles/image", f"latency us @{cfg.clock_mhz:g}MHz"]
    rows = [[v["name"], "/".join(map(str, v["weight_bits"])), f"{cnn['float_accuracy']:.4f}",
             f"{v['minmax_accuracy']:.4f}", f"{v['quant_accuracy']:.4f}",
             f"{v['accel_accuracy']:.4f}", str(v["cycles_per_image"]),
             f"{v['latency_us']:.2f}"] for v in cnn["variants"]]
    log(format_table(headers, rows, align="<" + ">" * (len(headers) - 1)))
    log("")
    log(f"CNN: PTQ = {cnn['ptq']}; min/max = plain min/max scales without bias correction; "
        f"accelerator logits bit-exact with the PTQ model on {cnn['test_images']} test images.")


def run_demo(*, out: str | Path = "lowbit-out/demo", config: str | AccelConfig = "default",
             rtl: bool = False, quick: bool = False, seed: int = 0,
             mem_latency: int = DEFAULT_MEM_LATENCY,
             log: Callable[[str], None] = lambda s: print(s, flush=True)) -> dict:
    """Run the demo; returns the report (also written to ``out/report.json``)."""
    from .compiler import train_digits_mlp
    from .compiler.quantize import quantize_mlp

    cfg = load_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backends = ["reference", "sim"] + (["rtl"] if rtl else [])
    log(f"lowbit demo: config {cfg.name}, backends {', '.join(backends)}, "
        f"output folder {out.resolve()}")
    t_start = time.perf_counter()
    timing: dict = {"variants": {}}

    t0 = time.perf_counter()
    data = train_digits_mlp(HIDDEN, seed, max_iter=QUICK_ITERS if quick else TRAIN_ITERS)
    timing["train_seconds"] = time.perf_counter() - t0
    x_test, y_test = data.x_test, data.y_test
    if quick:
        x_test, y_test = x_test[:QUICK_TEST_IMAGES], y_test[:QUICK_TEST_IMAGES]
    float_acc = _accuracy(data.model.forward(x_test), y_test)
    log(f"  trained MLP {data.model.in_features}-{'-'.join(map(str, HIDDEN))}-"
        f"{data.model.out_features} on {len(data.x_train)} images; float accuracy "
        f"{float_acc:.4f} on {len(x_test)} test images")

    variants, files = [], []
    for name, wb, ab in VARIANTS:
        vcfg = cfg if cfg.weight_bits == wb else cfg.replace(weight_bits=wb)
        t0 = time.perf_counter()
        qm = quantize_mlp(data.model, data.x_train, weight_bits=wb, act_bits=ab)
        xq = qm.quantize_input(x_test)
        want = qm.forward_int(xq)
        program, batch = _compile(qm, vcfg, len(xq), log)
        compile_seconds = time.perf_counter() - t0
        prog_name = f"mlp_{name.lower()}.lbp"
        program.save(out / prog_name)
        files.append(prog_name)

        results = {b: _run_chunks(program, xq, batch, b, mem_latency) for b in backends}
        ref = results["reference"].outputs
        if not np.array_equal(ref, want):
            bad = int(np.count_nonzero(ref != want)) if ref.shape == want.shape else "shape"
            raise DemoMismatch(f"{name}: reference executor differs from the numpy integer "
                               f"model ({bad} values)")
        for b in backends[1:]:
            if not np.array_equal(results[b].outputs, ref):
                raise DemoMismatch(f"{name}: {b} outputs differ from the reference executor")
        sim = results["sim"]
        if rtl and results["rtl"].cycles != sim.cycles:
            raise DemoMismatch(f"{name}: rtl took {results['rtl'].cycles} cycles, the cycle "
                               f"simulator {sim.cycles}")
        cycles = int(sim.cycles)
        chunks = -(-len(xq) // batch)
        macs = int(sim.counters.get("macs", 0))
        useful = len(xq) * sum(ly.in_features * ly.out_features for ly in qm.layers)
        quant_acc = _accuracy(want, y_test)
        accel_acc = _accuracy(sim.outputs, y_test)
        assert accel_acc == _accuracy(ref, y_test) == quant_acc
        layers = _layer_stats(qm, vcfg, batch, mem_latency) \
            if program.meta.get("layers") else []
        variants.append({
            "name": name, "weight_bits": wb, "act_bits": ab, "config": vcfg.name,
            "program": prog_name, "program_sha256": _sha256(program.to_bytes()),
            "instructions": len(program.instrs), "batch": batch, "chunks": chunks,
            "quant_accuracy": quant_acc, "accel_accuracy": accel_acc,
            "bit_exact": {b: True for b in backends},
            "cycles": cycles, "latency_us": cycles / vcfg.clock_mhz,
            "cycles_per_image": cycles / len(xq),
            "pe_utilization": macs / (cycles * vcfg.pes) if cycles else 0.0,
            "useful_utilization": useful / (cycles * vcfg.pes) if cycles else 0.0,
            "macs": macs, "useful_macs": useful,
            "counters": {k: v for k, v in sorted(sim.counters.items())},
            "layers": layers,
        })
        timing["variants"][name] = {"compile_seconds": compile_seconds,
                                    **{f"{b}_seconds": results[b].seconds for b in backends}}
        if rtl:
            timing["variants"][name]["rtl_cycles"] = results["rtl"].cycles
        log(f"  {name}: {len(program.instrs)} instructions, batch {batch} x {chunks}, "
            f"{cycles} cycles, outputs bit-exact on {', '.join(backends)}")

    cnn, cnn_files, timing["cnn"] = _cnn_table(cfg, backends, quick=quick, seed=seed,
                                               mem_latency=mem_latency, out=out, log=log)
    files += cnn_files

    from .hw.top import generate_verilog

    t0 = time.perf_counter()
    atomic_write(out / "accel.v", generate_verilog(cfg))
    timing["verilog_seconds"] = time.perf_counter() - t0
    files.append("accel.v")
    _plot(out / "cycles.png", variants)
    files.append("cycles.png")

    report = {
        "lowbit_version": __version__, "isa_version": isa.ISA_VERSION,
        "config": {"name": cfg.name, **cfg.to_dict()},
        "model": {"dataset": "sklearn digits", "layers": [data.model.in_features, *HIDDEN,
                                                          data.model.out_features],
                  "seed": seed, "train_iterations": QUICK_ITERS if quick else TRAIN_ITERS,
                  "train_images": len(data.x_train), "test_images": len(x_test),
                  "float_accuracy": float_acc},
        "quick": quick, "backends": backends, "mem_latency": mem_latency,
        "variants": variants,
        "cnn": cnn,
        "files": sorted(files + ["report.json", "timing.json"]),
    }
    atomic_write(out / "report.json", dumps_json(report))
    timing["total_seconds"] = time.perf_counter() - t_start
    atomic_write(out / "timing.json", dumps_json(timing, digits=3))

    headers = ["variant", "float acc", "quant acc", "accel acc", "cycles",
               f"latency us @{cfg.clock_mhz:g}MHz", "PE util", "sim s"] + (["rtl s"] if rtl else [])
    rows = []
    for v in variants:
        t = timing["variants"][v["name"]]
        rows.append([v["name"], f"{float_acc:.4f}", f"{v['quant_accuracy']:.4f}",
                     f"{v['accel_accuracy']:.4f}", str(v["cycles"]), f"{v['latency_us']:.2f}",
                     f"{100 * v['pe_utilization']:.1f}%", f"{t['sim_seconds']:.3f}"]
                    + ([f"{t['rtl_seconds']:.1f}"] if rtl else []))
    log("")
    log(format_table(headers, rows, align="<" + ">" * (len(headers) - 1)))
    log("")
    log(f"accelerator accuracy equals the quantized model's exactly (outputs bit-exact on "
        f"{', '.join(backends)}); latency is for all {len(x_test)} test images.")
    log("")
    _log_cnn_table(cnn, cfg, log)
    log(f"wrote {', '.join(sorted(files + ['report.json', 'timing.json']))}")
    log(f"output folder: {out.resolve()}")
    return report
