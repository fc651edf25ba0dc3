"""Byte transports to a board's UART bridge, and a simulated board to talk to.

``open_transport(port, baud=...)`` returns a :class:`Transport`:

* a serial device path (``/dev/ttyUSB1``): :class:`SerialTransport`, 8N1 raw mode, through
  ``pyserial`` when it is importable and ``termios`` otherwise (POSIX);
* ``sim://HOST:PORT``: :class:`TcpTransport`, a TCP connection to a simulated board.

:class:`SimBoard` is such a simulated board: ``lowbit_board`` (:mod:`lowbit.hw.board_top`)
built with Verilator, its UART pins bit-banged by the cocotb test
:mod:`lowbit.sim.cocotb.uart_tb`, served on a local TCP port. The host driver
(:mod:`lowbit.boards.host`) runs unchanged against it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import select
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "SimBoard",
    "SerialTransport",
    "TcpTransport",
    "Transport",
    "TransportError",
    "open_transport",
]

SIM_SCHEME = "sim://"


class TransportError(OSError):
    """The link to the board failed: cannot open, timed out, or closed."""


class Transport:
    """A bidirectional byte stream. Subclasses implement :meth:`_send`, :meth:`_recv` and
    :meth:`close`; :attr:`sent` and :attr:`received` count bytes."""

    name = "transport"

    def __init__(self):
        self.sent = 0
        self.received = 0

    def write(self, data: bytes) -> None:
        self._send(bytes(data))
        self.sent += len(data)

    def read(self, n: int, *, timeout_s: float) -> bytes:
        """Exactly ``n`` bytes, or :class:`TransportError` after ``timeout_s`` seconds."""
        out = bytearray()
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError(f"{self.name}: timed out after {timeout_s:g} s waiting "
                                     f"for {n} bytes ({len(out)} received)")
            out += self._recv(n - len(out), left)
        self.received += n
        return bytes(out)

    def drain(self, quiet_s: float) -> int:
        """Discard input until none arrives for ``quiet_s`` seconds; the bytes dropped."""
        dropped = 0
        while True:
            chunk = self._recv(4096, quiet_s)
            if not chunk:
                return dropped
            dropped += len(chunk)

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _recv(self, n: int, timeout_s: float) -> bytes:
        """Up to ``n`` bytes, waiting at most ``timeout_s``; ``b""`` on timeout."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TcpTransport(Transport):
    """A TCP connection (``sim://HOST:PORT``) to a simulated board."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 10.0):
        super().__init__()
        self.name = f"{SIM_SCHEME}{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        except OSError as exc:
            raise TransportError(f"cannot connect to simulated board {self.name}: "
                                 f"{exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)

    def _send(self, data):
        try:
            self._sock.setblocking(True)
            self._sock.sendall(data)
        except OSError as exc:
            raise TransportError(f"{self.name}: send failed: {exc}") from None
        finally:
            self._sock.setblocking(False)

    def _recv(self, n, timeout_s):
        ready, _, _ = select.select([self._sock], [], [], max(timeout_s, 0))
        if not ready:
            return b""
        try:
            data = self._sock.recv(n)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise TransportError(f"{self.name}: receive failed: {exc}") from None
        if not data:
            raise TransportError(f"{self.name}: the simulated board closed the connection")
        return data

    def close(self):
        self._sock.close()


class SerialTransport(Transport):
    """A serial device in raw 8N1 mode at ``baud``, via pyserial or termios."""

    def __init__(self, path: str, *, baud: int = 115200):
        super().__init__()
        self.name = path
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        self._serial = None
        self._fd = None
        try:
            import serial  # type: ignore[import-not-found]
        except ImportError:
            serial = None
        if serial is not None:
            try:
                self._serial = serial.Serial(path, baudrate=baud, bytesize=8, parity="N",
                                             stopbits=1, timeout=0, write_timeout=None)
            except (OSError, ValueError, serial.SerialException) as exc:
                raise TransportError(f"cannot open serial port {path!r}: {exc}") from None
            return
        self._fd = self._open_termios(path, baud)

    @staticmethod
    def _open_termios(path, baud):
        import termios

        speed = getattr(termios, f"B{baud}", None)
        if speed is None:
            raise ValueError(f"baud {baud} is not a standard termios rate on this system")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise TransportError(f"cannot open serial port {path!r}: {exc.strerror}") from None
        try:
            attrs = termios.tcgetattr(fd)
            cc = attrs[6]
            cc[termios.VMIN], cc[termios.VTIME] = 0, 0
            cflag = termios.CS8 | termios.CREAD | termios.CLOCAL
            termios.tcsetattr(fd, termios.TCSANOW, [0, 0, cflag, 0, speed, speed, cc])
            termios.tcflush(fd, termios.TCIOFLUSH)
        except termios.error as exc:
            os.close(fd)
            raise TransportError(f"{path!r} is not a usable serial port: {exc}") from None
        return fd

    def _send(self, data):
        if self._serial is not None:
            self._serial.write(data)
            self._serial.flush()
            return
        view = memoryview(data)
        while view:
            select.select([], [self._fd], [], 1.0)
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportError(f"{self.name}: write failed: {exc.strerror}") from None
            view = view[n:]

    def _recv(self, n, timeout_s):
        if self._serial is not None:
            self._serial.timeout = max(timeout_s, 0)
            return self._serial.read(n)
        ready, _, _ = select.select([self._fd], [], [], max(timeout_s, 0))
        if not ready:
            return b""
        try:
            return os.read(self._fd, n)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise TransportError(f"{self.name}: read failed: {exc.strerror}") from None

    def close(self):
        if self._serial is not None:
            self._serial.close()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_transport(port: str, *, baud: int = 115200) -> Transport:
    """``sim://HOST:PORT`` -> :class:`TcpTransport`, anything else -> :class:`SerialTransport`."""
    if not isinstance(port, str) or not port:
        raise ValueError(f"port must be a serial device path or 'sim://HOST:PORT', "
                         f"not {port!r}")
    if port.startswith(SIM_SCHEME):
        host, sep, num = port[len(SIM_SCHEME):].rpartition(":")
        if not sep or not host or not num.isdigit() or not 0 < int(num) < 65536:
            raise ValueError(f"port must look like 'sim://HOST:PORT', not {port!r}")
        return TcpTransport(host, int(num))
    return SerialTransport(port, baud=baud)


# -- a simulated board ----------------------------------------------------------------------

TB_MODULE = "lowbit.sim.cocotb.uart_tb"
JOB_ENV = "LOWBIT_UART_JOB"
#: Top-level ports of ``lowbit_board`` made visible to the testbench.
_BOARD_PORTS = ("clk", "rst", "uart_rx", "uart_tx", "irq", "leds")


@functools.lru_cache(maxsize=8)
def _board_verilog(cfg, mem_bytes, latency, clocks_per_bit, imem_bytes, queue_depth) -> str:
    from ..hw.board_top import generate_board_verilog

    return generate_board_verilog(cfg, mem_bytes=mem_bytes, latency=latency,
                                  clocks_per_bit=clocks_per_bit, imem_bytes=imem_bytes,
                                  queue_depth=queue_depth)


def _ports_vlt(top: str) -> Path:
    """A Verilator config making the board's ports public, at a content-addressed path (so
    the build cache key, which includes the path, changes with the content)."""
    from ..sim.rtl import cache_dir

    text = "`verilator_config\n" + "".join(
        f'public_flat_rw -module "{top}" -var "{p}"\n' for p in _BOARD_PORTS)
    path = cache_dir() / "vlt" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.vlt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


class SimBoard:
    """``lowbit_board`` under Verilator, serving its UART at :attr:`port` (``sim://...``).

    ``with SimBoard(cfg, mem_bytes=..., latency=..., clocks_per_bit=4) as board:
    run(program, x, backend="board", port=board.port)``. The build is cached like the
    ``rtl`` backend's (``lowbit.sim.rtl.build_top``). The simulation runs in a child process
    started from a background thread; :meth:`stop` ends it and fills :attr:`stats`
    (bytes relayed, simulated cycles, wall time). Run files (``sim.log``, ``job.json``) go
    to ``run_dir`` or a temporary directory removed on a clean stop.
    """

    def __init__(self, cfg, *, mem_bytes: int, latency: int, clocks_per_bit: int = 4,
                 imem_bytes: int | None = None, queue_depth: int = 64,
                 host: str = "127.0.0.1", period_ns: int = 10, max_seconds: float = 3600,
                 run_dir: str | os.PathLike | None = None, start_timeout_s: float = 600):
        self.cfg = cfg
        self.params = dict(mem_bytes=mem_bytes, latency=latency, clocks_per_bit=clocks_per_bit,
                           imem_bytes=imem_bytes, queue_depth=queue_depth)
        self.host, self.period_ns, self.max_seconds = host, period_ns, max_seconds
        self.start_timeout_s = start_timeout_s
        self._keep = run_dir is not None
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self.port: str | None = None
        self.stats: dict | None = None
        self.build_dir: Path | None = None
        self.built = False
        self.build_seconds = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def build(self) -> Path:
        """Generate and verilate the board top (or reuse a cached build)."""
        from ..hw.board_top import BOARD_TOP_NAME
        from ..sim.rtl import build_top

        t0 = time.perf_counter()
        p = self.params
        verilog = _board_verilog(self.cfg, p["mem_bytes"], p["latency"], p["clocks_per_bit"],
                                 p["imem_bytes"], p["queue_depth"])
        self.build_dir, self.built = build_top(
            verilog, top=BOARD_TOP_NAME, name=f"board-{self.cfg.name}",
            extra_args=(str(_ports_vlt(BOARD_TOP_NAME)),))
        self.build_seconds = time.perf_counter() - t0
        return self.build_dir

    def start(self) -> str:
        """Build if needed, start the simulation and return its ``sim://`` port."""
        from ..hw.board_top import BOARD_TOP_NAME

        if self._thread is not None:
            raise RuntimeError("this SimBoard is already started")
        build_dir = self.build()
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="lowbit-board-sim-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        files = {k: self.run_dir / f"{k}.txt" for k in ("port_file", "stop_file")}
        for f in files.values():
            f.unlink(missing_ok=True)
        self._result = self.run_dir / "result.json"
        self._result.unlink(missing_ok=True)
        self._stop_file = files["stop_file"]
        job = {"period_ns": self.period_ns, "clocks_per_bit": self.params["clocks_per_bit"],
               "host": self.host, "port": 0, "max_seconds": self.max_seconds,
               "result": str(self._result), **{k: str(v) for k, v in files.items()}}
        job_path = self.run_dir / "job.json"
        job_path.write_text(json.dumps(job, indent=1))
        self._log = self.run_dir / "sim.log"

        def target():
            import logging

            from cocotb_tools.runner import get_runner

            runner = get_runner("verilator")
            runner.log.setLevel(logging.WARNING)
            try:
                runner.test(test_module=TB_MODULE, hdl_toplevel=BOARD_TOP_NAME,
                            hdl_toplevel_lang="verilog", build_dir=build_dir,
                            test_dir=self.run_dir, extra_env={JOB_ENV: str(job_path)},
                            results_xml=str(self.run_dir / "results.xml"),
                            log_file=self._log)
            except BaseException as exc:   # reported by start()/stop()
                self._error = exc

        self._thread = threading.Thread(target=target, name="lowbit-board-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        port_file = files["port_file"]
        while not port_file.is_file():
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop_file.touch()
                raise TransportError(f"the simulated board did not start"
                                     f"{f': {self._error}' if self._error else ''}\n"
                                     f"--- {self._log} ---\n{self._tail()}")
            time.sleep(0.02)
        self.port = f"{SIM_SCHEME}{self.host}:{int(port_file.read_text())}"
        return self.port

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 60) -> dict:
        """End the simulation (after the current client disconnects); the statistics."""
        if self._thread is None:
            return self.stats or {}
        self._stop_file.touch()
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        self._thread = None
        if alive:
            raise TransportError(f"the simulated board did not stop within {timeout_s:g} s "
                                 f"(is a client still connected?)")
        self.stats = json.loads(self._result.read_text()) if self._result.is_file() else {}
        if self._error is not None or not self.stats:
            raise TransportError(f"the simulated board failed: {self._error}\n"
                                 f"--- {self._log} ---\n{self._tail()}")
        if not self._keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.stats

    def __enter__(self) -> SimBoard:
        self.start()
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        except TransportError:
            if exc[0] is None:
                raise
