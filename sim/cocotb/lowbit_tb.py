"""The cocotb test that runs one job on ``lowbit_top`` (or a stand-in with the same ports).

:func:`lowbit.sim.rtl.run_top` writes a JSON job file and passes its path in the environment
variable ``LOWBIT_RTL_JOB``. The test resets the DUT, loads the memory image into an
:class:`~lowbit.sim.axi_mem.AxiMemModel`, performs the job's CSR writes over AXI4-Lite (the
last one starts the DUT), waits for ``irq``, reads the readable CSRs and writes the memory and
a JSON result (registers, counters, error) to the paths the job names.

Job fields: ``image``, ``mem_out``, ``result`` (paths); ``beat_bytes``, ``mem_latency``,
``timeout_cycles``, ``period_ns``, ``reset_cycles``, ``trace`` (record every bus event and
return it as ``trace`` in the result); ``csr_writes`` (list of ``[offset,
value]``); ``csr_reads`` (``{name: offset}``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from lowbit.sim.axi_mem import AxiLiteMaster, AxiMemAdapter, AxiMemModel

JOB_ENV = "LOWBIT_RTL_JOB"


class RtlRunError(AssertionError):
    pass


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ[JOB_ENV]).read_text())
    result: dict = {"ok": False, "error": None, "registers": {}, "counters": {}}
    mem = bytearray(Path(job["image"]).read_bytes())
    try:
        await _run(dut, job, mem, result)
        result["ok"] = True
    except BaseException as exc:
        result["error"] = str(exc) or type(exc).__name__
        raise
    finally:
        Path(job["mem_out"]).write_bytes(mem)
        tmp = Path(job["result"] + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, job["result"])


async def _run(dut, job, mem, result):
    period = job["period_ns"]
    model = AxiMemModel(mem, beat_bytes=job["beat_bytes"], latency=job["mem_latency"])
    Clock(dut.clk, period, unit="ns").start()
    dut.rst.value = 1
    csr = AxiLiteMaster(dut, "csr")
    mem_bus = AxiMemAdapter(dut, model, trace=job.get("trace", False))
    mem_bus.start()
    await ClockCycles(dut.clk, job["reset_cycles"])
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    def check_bus():
        if mem_bus.error:
            raise RtlRunError(mem_bus.error)

    writes = job["csr_writes"]
    for offset, value in writes[:-1]:
        await csr.write(offset, value)
    check_bus()
    edge0, t0 = mem_bus.edge, time.perf_counter()
    await csr.write(*writes[-1])
    timeout = job["timeout_cycles"]
    if not int(dut.irq.value):
        irq, expire, fail = RisingEdge(dut.irq), Timer(timeout * period, unit="ns"), \
            mem_bus.failed.wait()
        fired = await First(irq, expire, fail)
        check_bus()
        if fired is expire:
            raise RtlRunError(
                f"RTL did not finish within {timeout} cycles (irq still low; "
                f"{model.imem.describe()}; {model.dmem.describe()})")
    run_edges, seconds = mem_bus.edge - edge0, time.perf_counter() - t0
    for name, offset in job["csr_reads"].items():
        result["registers"][name] = await csr.read(offset)
    check_bus()
    result["counters"] = {**model.counters(), "wall_cycles": run_edges}
    result["total_cycles"] = mem_bus.edge
    result["run_seconds"] = seconds
    result["cycles_per_second"] = run_edges / seconds if seconds > 0 else None
    result["in_flight"] = None if model.idle else \
        f"{model.imem.describe()}; {model.dmem.describe()}"
    if mem_bus.trace is not None:
        result["trace"] = mem_bus.trace
    mem_bus.stop()
