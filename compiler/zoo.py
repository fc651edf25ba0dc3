"""The MLPerf Tiny reference networks with seeded random quantized weights.

Exact shapes of the MLPerf Tiny v1.0 reference models (batch normalisation folded into the
convolutions, dropout dropped, the final softmax left to the host):

``resnet8`` (image classification, CIFAR-10 ``32x32x3``)
    3x3 conv 16, three residual stacks of two 3x3 convs with 16/32/64 channels and strides
    1/2/2 (a 1x1 projection shortcut in the strided stacks), global average pool, FC 10.
``ds_cnn`` (keyword spotting, ``49x10x1`` MFCC)
    10x4 stride-2 conv 64, four blocks of depthwise 3x3 + pointwise 64, global average pool,
    FC 12.
``mobilenet_v1`` (visual wake words, ``96x96x3``)
    MobileNetV1 with width multiplier 0.25: 3x3 stride-2 conv 8, 13 depthwise/pointwise
    blocks up to 256 channels (ReLU6), global average pool, FC 2.
``fc_autoencoder`` (anomaly detection, 640 log-mel features)
    FC 640 -> 128 x 4 -> 8 -> 128 x 4 -> 640 (ReLU after every layer but the last).

Every convolution uses TensorFlow's ``padding="same"``. Weights are ``weight_bits`` integers
drawn from a seeded normal distribution, with per-channel real scales of a He
initialisation; biases are small; every output scale is calibrated on a seeded random
input (:class:`~lowbit.compiler.graph.Graph` calibration), so activations use their range.
The networks compute nothing meaningful: they have the reference networks' shapes, MACs and
arithmetic, which is what the accelerator's timing depends on.

:func:`list_models` gives the parameter and MAC counts; ``lowbit zoo`` prints them and
``lowbit zoo run MODEL --config CFG`` compiles a model and runs it on the cycle simulator.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .graph import Graph

__all__ = [
    "MODELS",
    "ZooModel",
    "build",
    "ds_cnn",
    "fc_autoencoder",
    "list_models",
    "mobilenet_v1",
    "register_cli",
    "resnet8",
    "sample_inputs",
]


class _Init:
    """Seeded random quantized weights and biases."""

    def __init__(self, g: Graph, seed: int):
        self.g = g
        self.rng = np.random.default_rng(seed)

    def weights(self, shape, fan_in: int, cout: int):
        wb = self.g.weight_bits
        lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
        q = np.clip(np.round(self.rng.normal(0.0, (1 << (wb - 1)) / 2.5, shape)), lo, hi)
        spread = np.std(q) if np.std(q) > 0 else 1.0
        w_scale = np.sqrt(2.0 / fan_in) / spread * self.rng.uniform(0.8, 1.25, cout)
        return q.astype(np.int64), w_scale

    def bias(self, x: str, w_scale: np.ndarray) -> np.ndarray:
        real = self.rng.normal(0.0, 0.05, w_scale.shape)
        return np.round(real / (self.g.tensor(x).scale * w_scale)).astype(np.int64)

    def conv(self, x: str, kernel, cout: int, *, stride=1, act="relu", name=None,
             depthwise: bool = False) -> str:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        cin = self.g.tensor(x).channels
        if depthwise:
            w, s = self.weights((kh, kw, 1, cin), kh * kw, cin)
            return self.g.depthwise_conv2d(x, w, w_scale=s, bias=self.bias(x, s),
                                           stride=stride, padding="same", act=act, name=name)
        w, s = self.weights((kh, kw, cin, cout), kh * kw * cin, cout)
        return self.g.conv2d(x, w, w_scale=s, bias=self.bias(x, s), stride=stride,
                             padding="same", act=act, name=name)

    def linear(self, x: str, n: int, *, act=None, name=None) -> str:
        k = self.g.tensor(x).channels
        w, s = self.weights((k, n), k, n)
        return self.g.linear(x, w, w_scale=s, bias=self.bias(x, s), act=act, name=name)


def _image_calib(rng, shape, bits=8):
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def resnet8(*, weight_bits: int = 8, act_bits: int = 8, acc_bits: int = 32,
            seed: int = 0, stacks: int = 3) -> Graph:
    """MLPerf Tiny image classification ResNet-8 (CIFAR-10, 12.50 M MACs).

    ``stacks < 3`` keeps only the first residual stacks; the output is then the last
    stack's feature map (no pooling and classifier)."""
    g = Graph("resnet8", weight_bits=weight_bits, acc_bits=acc_bits)
    init = _Init(g, seed)
    x = g.input("image", (32, 32, 3), bits=act_bits, scale=1 / 128,
                calib=_image_calib(init.rng, (32, 32, 3), act_bits))
    h = init.conv(x, 3, 16, name="conv1")
    for stack, (c, s) in enumerate(((16, 1), (32, 2), (64, 2))[:stacks], start=1):
        y = init.conv(h, 3, c, stride=s, name=f"s{stack}_conv1")
        y = init.conv(y, 3, c, act=None, name=f"s{stack}_conv2")
        sc = h if s == 1 else init.conv(h, 1, c, stride=s, act=None, name=f"s{stack}_proj")
        h = g.add(sc, y, act="relu", name=f"s{stack}_add", out_bits=act_bits)
    if stacks < 3:
        g.output(h)
        return g
    p = g.global_avg_pool(h, name="pool")
    y = init.linear(g.flatten(p, name="flat"), 10, name="logits")
    g.output(y)
    return g


def ds_cnn(*, weight_bits: int = 8, act_bits: int = 8, acc_bits: int = 32,
           seed: int = 0) -> Graph:
    """MLPerf Tiny keyword spotting DS-CNN (49x10 MFCC, 2.66 M MACs)."""
    g = Graph("ds_cnn", weight_bits=weight_bits, acc_bits=acc_bits)
    init = _Init(g, seed)
    x = g.input("mfcc", (49, 10, 1), bits=act_bits, scale=1 / 8,
                calib=_image_calib(init.rng, (49, 10, 1), act_bits))
    h = init.conv(x, (10, 4), 64, stride=2, name="conv1")
    for i in range(1, 5):
        h = init.conv(h, 3, 64, depthwise=True, name=f"dw{i}")
        h = init.conv(h, 1, 64, name=f"pw{i}")
    p = g.global_avg_pool(h, name="pool")
    y = init.linear(g.flatten(p, name="flat"), 12, name="logits")
    g.output(y)
    return g


#: MobileNetV1 blocks: (pointwise output channels at width 1.0, depthwise stride).
_MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                     (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1(*, weight_bits: int = 8, act_bits: int = 8, acc_bits: int = 32,
                 seed: int = 0, alpha: float = 0.25, size: int = 96,
                 classes: int = 2) -> Graph:
    """MLPerf Tiny visual wake words MobileNetV1 (alpha 0.25, 96x96x3, 7.49 M MACs)."""
    g = Graph("mobilenet_v1", weight_bits=weight_bits, acc_bits=acc_bits)
    init = _Init(g, seed)
    x = g.input("image", (size, size, 3), bits=act_bits, scale=1 / 128,
                calib=_image_calib(init.rng, (size, size, 3), act_bits))
    h = init.conv(x, 3, int(32 * alpha), stride=2, act="relu6", name="conv1")
    for i, (c, s) in enumerate(_MOBILENET_BLOCKS, start=1):
        h = init.conv(h, 3, 0, stride=s, act="relu6", depthwise=True, name=f"dw{i}")
        h = init.conv(h, 1, int(c * alpha), act="relu6", name=f"pw{i}")
    p = g.global_avg_pool(h, name="pool")
    y = init.linear(g.flatten(p, name="flat"), classes, name="logits")
    g.output(y)
    return g


def fc_autoencoder(*, weight_bits: int = 8, act_bits: int = 8, acc_bits: int = 32,
                   seed: int = 0) -> Graph:
    """MLPerf Tiny anomaly detection FC autoencoder (640 features, 0.264 M MACs)."""
    g = Graph("fc_autoencoder", weight_bits=weight_bits, acc_bits=acc_bits)
    init = _Init(g, seed)
    h = g.input("features", (640,), bits=act_bits, scale=1 / 32,
                calib=_image_calib(init.rng, (16, 640), act_bits))
    for i, n in enumerate((128, 128, 128, 128, 8, 128, 128, 128, 128), start=1):
        h = init.linear(h, n, act="relu", name=f"fc{i}")
    y = init.linear(h, 640, name="fc10")
    g.output(y)
    return g


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    build: Callable[..., Graph]
    reference_macs: str          # as published (MLPerf Tiny), for the listing


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("resnet8", "image classification (CIFAR-10)", resnet8, "12.50 M"),
    ZooModel("ds_cnn", "keyword spotting (Speech Commands)", ds_cnn, "2.66 M"),
    ZooModel("mobilenet_v1", "visual wake words (MobileNetV1 0.25, 96x96)", mobilenet_v1,
             "7.49 M"),
    ZooModel("fc_autoencoder", "anomaly detection (ToyADMOS)", fc_autoencoder, "0.264 M"),
)}


def build(name: str, *, weight_bits: int = 8, act_bits: int = 8, acc_bits: int = 32,
          seed: int = 0) -> Graph:
    """The zoo model ``name`` with seeded random ``weight_bits`` weights."""
    try:
        model = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; models are {', '.join(MODELS)}") from None
    return model.build(weight_bits=weight_bits, act_bits=act_bits, acc_bits=acc_bits,
                       seed=seed)


def sample_inputs(graph: Graph, *, seed: int = 1, batch: int = 1) -> dict[str, np.ndarray]:
    """Seeded random integer inputs over each input's full range (``batch`` rows for flat
    inputs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in graph.inputs:
        t = graph.tensor(name)
        lo, hi = t.range
        shape = t.shape if t.is_map else (batch, t.channels)
        out[name] = rng.integers(lo, hi + 1, shape)
    return out


def list_models(*, weight_bits: int = 8) -> list[dict]:
    """One row per model: name, task, input and output shapes, parameters, MACs."""
    rows = []
    for m in MODELS.values():
        g = m.build(weight_bits=weight_bits)
        rows.append(dict(
            name=m.name, task=m.task,
            inputs={n: list(g.tensor(n).shape) for n in g.inputs},
            outputs={n: list(g.tensor(n).shape) for n in g.outputs},
            layers=sum(op.macs(g) > 0 for op in g.ops), params=g.params(), macs=g.macs(),
            reference_macs=m.reference_macs))
    return rows


# -- command line ---------------------------------------------------------------------------


def _cmd_list(args) -> int:
    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<16} {'input':<14} {'layers':>6} {'params':>9} {'MACs':>12}  task")
    for r in rows:
        shape = "x".join(str(v) for v in next(iter(r["inputs"].values())))
        print(f"{r['name']:<16} {shape:<14} {r['layers']:>6} {r['params']:>9,} "
              f"{r['macs']:>12,}  {r['task']}")
    return 0


def _cmd_run(args) -> int:
    from lowbit.cli import CliFailure
    from lowbit.config import load_config
    from lowbit.executors import run

    from .api import compile_network
    from .conv import pack_inputs, unpack_outputs

    cfg = load_config(args.config)
    g = build(args.model, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits,
              acc_bits=cfg.acc_bits, seed=args.seed)
    prog = compile_network(g, cfg, host_im2col=not args.no_im2col)
    inputs = sample_inputs(g, seed=args.seed + 1)
    res = run(prog, pack_inputs(prog, inputs), backend=args.backend)
    got = unpack_outputs(prog, res.outputs)
    want = g.forward(inputs)
    match = all(np.array_equal(got[k], want[k]) for k in want)
    ideal = -(-g.macs() // cfg.pes)
    row = dict(model=args.model, config=cfg.name, backend=args.backend,
               instructions=len(prog.instrs), cycles=res.cycles, ideal_cycles=ideal,
               utilization=None if not res.cycles else round(ideal / res.cycles, 4),
               latency_us=None if not res.cycles else round(res.cycles / cfg.clock_mhz, 1),
               outputs_match_graph=match)
    print(json.dumps(row))
    if not match:
        raise CliFailure(f"{args.model}: {args.backend} outputs differ from the graph model")
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``zoo`` to the ``lowbit`` command's subparsers."""
    p = subparsers.add_parser(
        "zoo", help="MLPerf Tiny model zoo: list the models, or compile and run one",
        description="Without an action, list the MLPerf Tiny reference models (parameters, "
                    "MACs). 'zoo run MODEL' compiles one with seeded random weights for a "
                    "config and runs it, checking the outputs against the graph model.")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=_cmd_list)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    r = sub.add_parser("run", help="compile a model and run it (default: cycle simulator)")
    r.add_argument("model", choices=list(MODELS), metavar="MODEL",
                   help=f"one of {', '.join(MODELS)}")
    r.add_argument("--config", default="default", metavar="CFG",
                   help="accelerator config (default: %(default)s)")
    r.add_argument("--backend", choices=("reference", "sim", "rtl"), default="sim",
                   help="executor (default: %(default)s)")
    r.add_argument("--seed", type=int, default=0, help="weight seed (default: %(default)s)")
    r.add_argument("--no-im2col", action="store_true",
                   help="run the first convolution on the padded image instead of an "
                        "input unfolded by the host")
    r.set_defaults(func=_cmd_run)
    return p
