"""The ``lowbit`` command line.

Subcommands::

    lowbit demo [--out DIR] [--rtl] [--config CFG] [--quick]
    lowbit config --list | lowbit config show CFG [--toml|--json]
    lowbit verilog [--config CFG] -o accel.v
    lowbit isa-doc [-o docs/isa.md] [--check]
    lowbit compile-gemm [--config CFG] --shape M K N [--seed S] -o prog.lbp
    lowbit run PROG [--backend reference|sim|rtl] [--input x.npy] [--output y.npy] [--waves]
    lowbit cosim PROG [--input x.npy]
    lowbit sweep SPEC [--out DIR] [--scheduler ADDR] [--workers N]   (see lowbit.sweep.cli)
    lowbit boards [--json] | lowbit build --board NAME [--config CFG] ...  (lowbit.boards.cli)
    lowbit zoo [--json] | lowbit zoo run MODEL [--config CFG]    (lowbit.compiler.zoo)

``CFG`` is a preset name (``lowbit config --list``) or a ``.json``/``.toml`` file. Errors in
what the user gave (a bad config, program, instruction, value or path) print one line
``lowbit: error: ...`` and exit with status 2; set ``LOWBIT_TRACEBACK=1`` to see the
traceback instead. Every file is written atomically (:func:`lowbit.report.atomic_write`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .config import PRESETS, ConfigError, load_config
from .isa import IsaError
from .program import ProgramError
from .report import atomic_write, npy_bytes, output_digest

__all__ = ["main", "build_parser", "EXIT_USAGE", "EXIT_FAILURE"]

#: Exit status for errors in what the user gave (also argparse's usage errors).
EXIT_USAGE = 2
#: Exit status for a run that failed or whose back ends disagree.
EXIT_FAILURE = 1

USER_ERRORS = (ConfigError, ProgramError, IsaError, ValueError, OSError)


class CliFailure(Exception):
    """A command that ran but failed (for example a co-simulation mismatch): exit 1."""


# -- helpers --------------------------------------------------------------------------------

def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.strerror}: {exc.filename!r}"
    else:
        text = str(exc) or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(exc).__name__


def _check_output(path: str | None) -> None:
    """Refuse an output path that cannot be a file before doing any work."""
    if path is not None and path != "-" and Path(path).is_dir():
        raise IsADirectoryError(21, "output path is a directory", path)


def _load_program(path: str):
    from .program import Program

    try:
        return Program.load(path)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # A header that parses as JSON but lacks or mistypes a field.
        raise ProgramError(f"program {path!r} has a corrupt header "
                           f"({type(exc).__name__}: {exc})") from None


def _random_inputs(program, seed: int) -> dict[str, np.ndarray]:
    """Seeded random integers over each input's full range."""
    rng = np.random.default_rng(seed)
    out = {}
    for ref in program.inputs:
        lo = -(1 << (ref.bits - 1)) if ref.signed else 0
        hi = (1 << (ref.bits - 1)) - 1 if ref.signed else (1 << ref.bits) - 1
        out[ref.name] = rng.integers(lo, hi + 1, size=(ref.rows, ref.cols), dtype=np.int64)
    return out


def _load_inputs(program, path: str | None, seed: int) -> tuple[dict[str, np.ndarray], str]:
    if path is None:
        return _random_inputs(program, seed), f"random (seed {seed})"
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "input file does not exist", path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            inputs = {k: np.asarray(data[k]) for k in data.files}
    else:
        value = np.load(p, allow_pickle=False)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"input file {path!r} must hold one array (.npy) or named "
                             f"arrays (.npz)")
        if len(program.inputs) != 1:
            raise ProgramError(f"program has {len(program.inputs)} inputs "
                               f"({', '.join(r.name for r in program.inputs)}); pass an .npz "
                               f"file with one array per input name")
        inputs = {program.inputs[0].name: value}
    for name, value in inputs.items():
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"input {name!r} must hold integers, not {value.dtype}")
    return inputs, str(path)


def _describe_program(program, path: str) -> str:
    return (f"{path}: {len(program.instrs)} instructions, config {program.config.name}, "
            f"inputs {', '.join(f'{r.name}{(r.rows, r.cols)}' for r in program.inputs)}, "
            f"outputs {', '.join(f'{r.name}{(r.rows, r.cols)}' for r in program.outputs)}")


def _print_result(result, program) -> None:
    clock = program.config.clock_mhz
    if result.cycles is None:
        timing = "- (the reference backend has no timing)"
    else:
        timing = f"{result.cycles} ({result.cycles / clock:.2f} us at {clock:g} MHz)"
    _say(f"  backend  {result.backend}", f"  cycles   {timing}")
    for name, value in result.outputs.items():
        _say(f"  output   {name}: shape {tuple(value.shape)}, "
             f"sha256 {output_digest({name: value})}")
    if result.counters:
        body = ", ".join(f"{k}={v}" for k, v in sorted(result.counters.items()))
        _say(f"  counters {body}")
    for key, value in sorted(result.artifacts.items()):
        _say(f"  {key:<8} {value}")
    _say(f"  seconds  {result.seconds:.3f}")


def _write_outputs(path: str, outputs: dict[str, np.ndarray]) -> None:
    if len(outputs) == 1 and not path.endswith(".npz"):
        atomic_write(path, npy_bytes(next(iter(outputs.values()))))
    else:
        import io

        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in outputs.items()})
        atomic_write(path, buf.getvalue())
    _say(f"wrote {path}")


# -- subcommands ----------------------------------------------------------------------------

def cmd_config(args) -> int:
    if args.list or args.action is None:
        width = max(len(n) for n in PRESETS)
        for name, cfg in PRESETS.items():
            _say(f"{name:<{width}}  {cfg.name}  {cfg.rows}x{cfg.cols} PEs, "
                 f"W{cfg.weight_bits}A{cfg.act_bits}, {cfg.bus_bits}-bit bus, "
                 f"{cfg.clock_mhz:g} MHz")
        return 0
    cfg = load_config(args.cfg)
    if args.json:
        import json

        sys.stdout.write(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(f"# lowbit config {cfg.name}\n" + cfg.to_toml())
    return 0


def cmd_verilog(args) -> int:
    from .hw.top import generate_verilog

    cfg = load_config(args.config)
    _check_output(args.output)
    text = generate_verilog(cfg)
    atomic_write(args.output, text)
    _say(f"wrote {args.output} ({text.count(chr(10))} lines, config {cfg.name})")
    return 0


def cmd_isa_doc(args) -> int:
    from .isa import render_markdown

    text = render_markdown()
    if args.check:
        path = Path(args.output or "docs/isa.md")
        if not path.is_file():
            raise FileNotFoundError(2, "ISA reference does not exist", str(path))
        if path.read_text() != text:
            raise CliFailure(f"{path} is out of date; regenerate it with "
                             f"'lowbit isa-doc -o {path}'")
        _say(f"{path} is up to date")
        return 0
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
        return 0
    atomic_write(args.output, text)
    _say(f"wrote {args.output}")
    return 0


def cmd_compile_gemm(args) -> int:
    cfg = load_config(args.config)
    _check_output(args.output)
    m, k, n = args.shape
    for name, value in (("M", m), ("K", k), ("N", n)):
        if value < 1:
            raise ValueError(f"--shape {name} must be at least 1, not {value}")
    from .compiler import compile_gemm

    rng = np.random.default_rng(args.seed)
    lo, hi = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    weights = rng.integers(lo, hi + 1, size=(k, n), dtype=np.int64)
    program = compile_gemm(cfg, a_shape=(m, k), weights=weights, relu=args.relu,
                           act_unsigned=args.act_unsigned)
    program.save(args.output)
    _say(f"wrote {_describe_program(program, args.output)}")
    return 0


def cmd_run(args) -> int:
    from .executors import run

    if args.waves and args.backend != "rtl":
        raise ValueError("--waves needs --backend rtl")
    if args.backend == "board" and not args.port:
        raise ValueError("--backend board needs --port (a serial device, or sim://HOST:PORT)")
    _check_output(args.output)
    program = _load_program(args.program)
    inputs, source = _load_inputs(program, args.input, args.seed)
    _say(_describe_program(program, args.program), f"  inputs   {source}")
    opts = {}
    if args.backend == "rtl":
        opts["waves"] = args.waves
        if args.run_dir:
            opts["out_dir"] = args.run_dir
    if args.backend == "board":
        opts.update(port=args.port, baud=args.baud)
    result = run(program, inputs, backend=args.backend, mem_latency=args.mem_latency, **opts)
    _print_result(result, program)
    if args.output:
        _write_outputs(args.output, result.outputs)
    return 0


def cmd_cosim(args) -> int:
    from .executors import run

    program = _load_program(args.program)
    inputs, source = _load_inputs(program, args.input, args.seed)
    _say(_describe_program(program, args.program), f"  inputs   {source}")
    results = {}
    for backend in ("sim", "rtl"):
        results[backend] = run(program, inputs, backend=backend, mem_latency=args.mem_latency)
        _print_result(results[backend], program)
    sim, rtl = results["sim"], results["rtl"]
    problems = []
    for name in sorted(set(sim.outputs) | set(rtl.outputs)):
        a, b = sim.outputs.get(name), rtl.outputs.get(name)
        if a is None or b is None:
            problems.append(f"output {name!r} missing from {'sim' if a is None else 'rtl'}")
        elif a.shape != b.shape or not np.array_equal(a, b):
            diff = int(np.count_nonzero(a != b)) if a.shape == b.shape else "shape"
            problems.append(f"output {name!r} differs ({diff} elements)")
    if sim.cycles != rtl.cycles:
        problems.append(f"cycles differ: sim {sim.cycles}, rtl {rtl.cycles}")
    if problems:
        raise CliFailure("co-simulation mismatch: " + "; ".join(problems))
    _say(f"cosim: outputs bit-exact, cycles equal ({sim.cycles}); "
         f"sim {sim.seconds:.3f} s, rtl {rtl.seconds:.3f} s")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, config=args.config, rtl=args.rtl, quick=args.quick)
    return 0


# -- parser ---------------------------------------------------------------------------------

def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .executors import BACKENDS, DEFAULT_MEM_LATENCY

    parser = argparse.ArgumentParser(
        prog="lowbit",
        description="Generator, compiler and cycle-accurate simulator for low-bit DNN "
                    "accelerators.",
        epilog="CFG is a preset (see 'lowbit config --list') or a .json/.toml config file.")
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="train, quantize, compile and run the digits MLP")
    p.add_argument("--out", default="lowbit-out/demo", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="accelerator config (default: %(default)s)")
    p.add_argument("--rtl", action="store_true",
                   help="also run the generated Verilog under Verilator")
    p.add_argument("--quick", action="store_true",
                   help="a small, fast run (fewer training epochs and test images)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("config", help="list presets or show a config")
    p.add_argument("--list", action="store_true", help="list the presets")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    show = csub.add_parser("show", help="print a config as TOML (default) or JSON")
    show.add_argument("cfg", metavar="CFG")
    fmt = show.add_mutually_exclusive_group()
    fmt.add_argument("--toml", action="store_true", help="TOML (the default)")
    fmt.add_argument("--json", action="store_true", help="JSON")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("verilog", help="generate the accelerator's Verilog")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="accelerator config (default: %(default)s)")
    p.add_argument("-o", "--output", default="accel.v", metavar="FILE",
                   help="output file (default: %(default)s)")
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("isa-doc", help="write the ISA reference (docs/isa.md)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file (default: standard output)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the file (default docs/isa.md) is not up to date")
    p.set_defaults(func=cmd_isa_doc)

    p = sub.add_parser("compile-gemm", help="compile a GEMM with seeded random int weights")
    p.add_argument("--config", default="default", metavar="CFG",
                   help="accelerator config (default: %(default)s)")
    p.add_argument("--shape", nargs=3, type=_int_arg, required=True, metavar=("M", "K", "N"),
                   help="activations M x K times weights K x N")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default: %(default)s)")
    p.add_argument("--relu", action="store_true", help="clamp outputs below at zero")
    p.add_argument("--act-unsigned", action="store_true",
                   help="unsigned activations (0..2^act_bits-1) instead of signed")
    p.add_argument("-o", "--output", default="prog.lbp", metavar="FILE",
                   help="program file (default: %(default)s)")
    p.set_defaults(func=cmd_compile_gemm)

    for name, helptext in (("run", "run a program on one backend"),
                           ("cosim", "run a program on sim and rtl and compare them")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("program", metavar="PROG", help="program file (.lbp)")
        if name == "run":
            p.add_argument("--backend", choices=BACKENDS, default="sim",
                           help="executor (default: %(default)s)")
        p.add_argument("--input", metavar="FILE",
                       help="input tensor (.npy, or .npz by input name); default: seeded "
                            "random values")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the random input (default: %(default)s)")
        p.add_argument("--mem-latency", type=_int_arg, default=DEFAULT_MEM_LATENCY,
                       metavar="CYCLES", help="memory latency (default: %(default)s)")
        if name == "run":
            p.add_argument("--output", metavar="FILE", help="save the outputs (.npy/.npz)")
            p.add_argument("--waves", action="store_true",
                           help="rtl backend: write an FST waveform")
            p.add_argument("--run-dir", metavar="DIR",
                           help="rtl backend: keep the simulation files in DIR")
            p.add_argument("--port", metavar="DEV",
                           help="board backend: serial device or sim://HOST:PORT")
            p.add_argument("--baud", type=_int_arg, default=115200,
                           help="board backend: UART baud rate (default: %(default)s)")
            p.set_defaults(func=cmd_run)
        else:
            p.set_defaults(func=cmd_cosim)

    # Subcommands that live with their packages: ``sweep`` (lowbit.sweep.cli),
    # ``boards``/``build`` (lowbit.boards.cli), ``zoo`` (lowbit.compiler.zoo) and
    # ``import-onnx`` (lowbit.compiler.onnx_import), ``profile`` (lowbit.profile). Each
    # module's ``register_cli(subparsers)`` adds its own; a package that cannot be imported
    # just leaves its commands out.
    import importlib

    for module in ("lowbit.sweep.cli", "lowbit.boards.cli", "lowbit.compiler.zoo",
                   "lowbit.compiler.onnx_import", "lowbit.profile"):
        try:
            register = importlib.import_module(module).register_cli
        except ImportError:  # pragma: no cover - package or optional dependency missing
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 0
    debug = os.environ.get("LOWBIT_TRACEBACK", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except CliFailure as exc:
        print(f"lowbit: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"lowbit: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr, flush=True)
        return 130
    except RuntimeError as exc:
        # Tool failures (Verilator build, RTL timeout): the message may carry a log tail.
        if debug:
            raise
        print(f"lowbit: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
