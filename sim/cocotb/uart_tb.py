"""The cocotb test that serves ``lowbit_board``'s UART on a TCP socket (``sim://`` boards).

:class:`lowbit.boards.transport.SimBoard` builds the board top with Verilator and runs this
test with a JSON job file named by ``LOWBIT_UART_JOB``. The test resets the DUT, listens on
``host:port`` (port 0: any free port; the port is written to ``port_file``) and relays, for
one client at a time, every byte received from the socket to ``uart_rx`` (8N1,
``clocks_per_bit`` clocks per bit, bit-banged) and every byte decoded from ``uart_tx`` to the
socket. It ends when ``stop_file`` exists (a connected client is dropped once its link has
been idle for a while), when the process that started the simulator exits, or after
``max_seconds`` of wall time, and writes statistics to ``result``.

While no byte is waiting, simulated time advances in steps of ``poll_cycles``; after a while
without traffic in either direction, in steps of 1024 cycles that also wait up to a
millisecond of wall time for the socket, so an idle board costs little CPU. Simulated time
between commands does not change CYCLES (the accelerator counts from its start to its done).
"""

import json
import os
import select
import socket
import time
from pathlib import Path

import cocotb
import cocotb.utils
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer

JOB_ENV = "LOWBIT_UART_JOB"
#: After this many empty polls, each poll advances _IDLE_POLL_CYCLES and waits up to
#: _IDLE_WAIT_S of wall time for the socket (about 1M idle cycles per second).
_IDLE_POLLS_BEFORE_WAIT = 64
_IDLE_POLL_CYCLES = 1024
_IDLE_WAIT_S = 0.001


class _Stats:
    def __init__(self):
        self.to_dut = 0
        self.from_dut = 0
        self.framing_errors = 0
        self.clients = 0
        self.busy_seconds = 0.0


def _abandoned(stop_file: Path, parent: int) -> bool:
    """Asked to stop, or the process that started the simulator is gone."""
    return stop_file.exists() or os.getppid() != parent


async def _drive_rx(dut, conn, cpb, period, poll_cycles, stats, quit_check):
    """Socket -> ``uart_rx``. Returns when the client closes the connection, or when
    ``quit_check()`` is true while the link is idle."""
    bit = Timer(cpb * period, unit="ns")
    poll = Timer(poll_cycles * period, unit="ns")
    idle_poll = Timer(_IDLE_POLL_CYCLES * period, unit="ns")
    idle, seen = 0, stats.from_dut
    while True:
        if stats.from_dut != seen:          # the DUT is talking: no wall-time waits
            idle, seen = 0, stats.from_dut
        slow = idle >= _IDLE_POLLS_BEFORE_WAIT
        ready, _, _ = select.select([conn], [], [], _IDLE_WAIT_S if slow else 0.0)
        if not ready:
            idle += 1
            if slow and idle % 256 == 0 and quit_check():
                return
            await (idle_poll if slow else poll)
            continue
        try:
            data = conn.recv(65536)
        except (ConnectionResetError, BlockingIOError):
            data = b""
        if not data:
            return
        idle = 0
        t0 = time.perf_counter()
        await FallingEdge(dut.clk)
        for byte in data:
            dut.uart_rx.value = 0
            await bit
            for k in range(8):
                dut.uart_rx.value = (byte >> k) & 1
                await bit
            dut.uart_rx.value = 1
            await bit
        stats.to_dut += len(data)
        stats.busy_seconds += time.perf_counter() - t0


async def _watch_tx(dut, conn, cpb, period, stats):
    """``uart_tx`` -> socket, forever (cancelled when the client goes)."""
    half, bit = Timer(cpb * period / 2, unit="ns"), Timer(cpb * period, unit="ns")
    line = dut.uart_tx
    while True:
        await FallingEdge(line)
        await half
        if int(line.value):
            continue                       # a glitch, not a start bit
        value = 0
        for k in range(8):
            await bit
            value |= int(line.value) << k
        await bit
        if not int(line.value):
            stats.framing_errors += 1
            continue
        try:
            conn.sendall(bytes([value]))
        except OSError:
            return
        stats.from_dut += 1


@cocotb.test()
async def serve(dut):
    job = json.loads(Path(os.environ[JOB_ENV]).read_text())
    period, cpb = job["period_ns"], job["clocks_per_bit"]
    poll_cycles = job.get("poll_cycles", 64)
    deadline = time.monotonic() + job.get("max_seconds", 3600)
    stats = _Stats()
    Clock(dut.clk, period, unit="ns").start()
    dut.rst.value = 1
    dut.uart_rx.value = 1
    await ClockCycles(dut.clk, job.get("reset_cycles", 4))
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((job.get("host", "127.0.0.1"), job.get("port", 0)))
    server.listen(1)
    port_file = Path(job["port_file"])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.getsockname()[1]))
    os.replace(tmp, port_file)
    stop_file = Path(job["stop_file"])
    parent = os.getppid()

    def quit_check():
        return _abandoned(stop_file, parent) or time.monotonic() > deadline

    start_wall = time.perf_counter()
    try:
        while not quit_check():
            ready, _, _ = select.select([server], [], [], 0.005)
            if not ready:
                await Timer(1000 * period, unit="ns")
                continue
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stats.clients += 1
            watcher = cocotb.start_soon(_watch_tx(dut, conn, cpb, period, stats))
            try:
                await _drive_rx(dut, conn, cpb, period, poll_cycles, stats, quit_check)
                await Timer(20 * cpb * period, unit="ns")   # let a last reply byte finish
            finally:
                watcher.cancel()
                conn.close()
    finally:
        server.close()
        sim_ns = cocotb.utils.get_sim_time(unit="ns")
        result = {"bytes_to_dut": stats.to_dut, "bytes_from_dut": stats.from_dut,
                  "framing_errors": stats.framing_errors, "clients": stats.clients,
                  "sim_cycles": int(sim_ns // period),
                  "wall_seconds": time.perf_counter() - start_wall,
                  "rx_busy_seconds": stats.busy_seconds}
        out = Path(job["result"])
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
