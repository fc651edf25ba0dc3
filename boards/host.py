"""Host driver for a board running ``lowbit_board``: the ``board`` executor backend.

:class:`BoardClient` speaks the UART bridge protocol (:mod:`lowbit.hw.uart`) over a
:class:`~lowbit.boards.transport.Transport`. :func:`run_board` is the executor: it checks
the board was built for the program's config, loads the code into the instruction RAM and
the constants and inputs into the data RAM, starts the accelerator, polls STATUS until done
and reads CYCLES and the outputs back, returning a :class:`~lowbit.executors.RunResult`::

    run(program, x, backend="board", port="/dev/ttyUSB1", baud=115200)
    run(program, x, backend="board", port="sim://127.0.0.1:5555")   # a SimBoard

On the board, memory latency is a property of the bitstream (``latency`` of
:class:`~lowbit.hw.board_top.BoardTop`, reported in ``counters["mem_latency"]``): compare
with ``backend="sim"`` at that ``mem_latency``.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from ..checks import store_groups
from ..hw.board_top import config_hash
from ..hw.uart import (
    ACK,
    INFO_FORMAT,
    NAK,
    PROTOCOL_VERSION,
    BoardInfo,
    Command,
    Space,
    StatusBit,
)
from ..isa import ID_VALUE, Opcode, csr_offset
from ..layout import act_bytes
from ..program import Program, ProgramError
from .transport import Transport, TransportError, open_transport

__all__ = ["BoardClient", "BoardError", "run_board", "program_extents"]

#: Bytes per WRITE_MEM / READ_MEM command (the length field is 16 bits).
CHUNK = 4096
#: Ranges of the image closer than this are uploaded as one (a command costs 8 bytes).
MERGE_GAP = 16
_STICKY = StatusBit.RAM_OVERFLOW | StatusBit.UART_ERROR | StatusBit.PROTOCOL_ERROR


class BoardError(RuntimeError):
    """The board answered wrongly, reported an error, or does not fit the program."""


class BoardClient:
    """The bridge protocol over ``transport``; every call waits for its reply.

    ``timeout_s`` bounds each reply (per command, plus the time its bytes take on the line
    at ``baud``). ``resync_s`` is how long :meth:`resync` stays silent so that the bridge
    abandons a half-received command (its timeout is 256 byte times).
    """

    def __init__(self, transport: Transport, *, baud: int = 115200, timeout_s: float = 5.0,
                 resync_s: float | None = None):
        self.t = transport
        self.byte_s = 10 / baud
        self.timeout_s = timeout_s
        self.resync_s = resync_s if resync_s is not None else max(0.05, 300 * self.byte_s)

    def _reply(self, n: int, what: str, line_bytes: int = 0) -> bytes:
        try:
            return self.t.read(n, timeout_s=self.timeout_s + (n + line_bytes) * self.byte_s)
        except TransportError as exc:
            raise BoardError(f"{what}: no reply from the board ({exc})") from None

    def _ack(self, what: str, line_bytes: int = 0) -> None:
        reply = self._reply(1, what, line_bytes)[0]
        if reply == NAK:
            raise BoardError(f"{what}: the board refused the command (NAK)")
        if reply != ACK:
            raise BoardError(f"{what}: expected ACK ({ACK:#04x}), got {reply:#04x} "
                             f"(protocol out of step; call resync())")

    def resync(self, *, attempts: int = 5) -> BoardInfo:
        """Stay silent until the bridge has abandoned any partial command, drop its output
        and check with INFO; the silence doubles on each failed attempt (a simulated board
        may run slower than its nominal clock). Returns the board's INFO."""
        wait = self.resync_s
        size = struct.calcsize(INFO_FORMAT)
        for _ in range(attempts):
            time.sleep(wait)
            self.t.drain(wait)
            self.t.write(bytes([Command.INFO]))
            try:
                return BoardInfo.unpack(self.t.read(size, timeout_s=wait + 2 * size *
                                                    self.byte_s))
            except (TransportError, ValueError):
                wait *= 2
        raise BoardError(f"cannot resynchronise with the board on {self.t.name} after "
                         f"{attempts} attempts (is it a lowbit board bitstream at this baud "
                         f"rate?)")

    def info(self, *, timeout_s: float | None = None) -> BoardInfo:
        """The board's INFO (``timeout_s``: this reply's timeout instead of the client's)."""
        self.t.write(bytes([Command.INFO]))
        size = struct.calcsize(INFO_FORMAT)
        if timeout_s is not None:
            try:
                data = self.t.read(size, timeout_s=timeout_s + size * self.byte_s)
            except TransportError as exc:
                raise BoardError(f"INFO: no reply from the board ({exc})") from None
        else:
            data = self._reply(size, "INFO")
        try:
            return BoardInfo.unpack(data)
        except ValueError as exc:
            raise BoardError(f"INFO: {exc} (is this a lowbit board bitstream?)") from None

    def write_mem(self, space: Space, addr: int, data: bytes) -> None:
        for off in range(0, len(data), CHUNK):
            part = data[off:off + CHUNK]
            self.t.write(struct.pack("<BBIH", Command.WRITE_MEM, space, addr + off, len(part))
                         + part)
            self._ack(f"WRITE_MEM {Space(space).name} {addr + off:#x}+{len(part)}", len(part))

    def read_mem(self, space: Space, addr: int, n: int) -> bytes:
        out = bytearray()
        for off in range(0, n, CHUNK):
            k = min(CHUNK, n - off)
            self.t.write(struct.pack("<BBIH", Command.READ_MEM, space, addr + off, k))
            out += self._reply(k, f"READ_MEM {Space(space).name} {addr + off:#x}+{k}")
        return bytes(out)

    @staticmethod
    def _offset(reg: str | int) -> int:
        return csr_offset(reg) if isinstance(reg, str) else int(reg)

    def write_csr(self, reg: str | int, value: int) -> None:
        off = self._offset(reg)
        self.t.write(struct.pack("<BBI", Command.WRITE_CSR, off, value & 0xFFFFFFFF))
        self._ack(f"WRITE_CSR {reg}")

    def read_csr(self, reg: str | int) -> int:
        self.t.write(struct.pack("<BB", Command.READ_CSR, self._offset(reg)))
        return int.from_bytes(self._reply(4, f"READ_CSR {reg}"), "little")

    def status(self) -> StatusBit:
        """The status byte; the board clears its sticky flags once they are reported."""
        self.t.write(bytes([Command.STATUS]))
        return StatusBit(self._reply(1, "STATUS")[0])


def _merge(ranges, gap=MERGE_GAP):
    out = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [tuple(r) for r in out]


def program_extents(program: Program) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges ``[lo, hi)`` a program uses: ``code``, ``upload`` (what the program may
    read before writing it: constants, inputs and every LOAD source, merged), ``outputs``
    and ``data`` (the whole data RAM range it touches)."""
    cfg = program.config
    beat = cfg.beat_bytes
    code = (program.prog_addr, program.prog_addr + len(program.instrs) * 16)
    upload = [(a, a + len(d)) for a, d in program.segments]
    upload += [(r.addr, r.addr + act_bytes(cfg, r.rows, r.cols)) for r in program.inputs]
    stores = []
    for ins in program.instrs:
        if ins.opcode == Opcode.LOAD:
            upload += [(ins.dram_addr + r * ins.stride,
                        ins.dram_addr + r * ins.stride + ins.row_beats * beat)
                       for r in range(ins.rows)]
        elif ins.opcode == Opcode.STORE:
            rows, groups = store_groups(cfg, ins)
            stores += [(d, d + rows * cfg.out_line_bits // 8) for _, d in groups]
    outputs = [(r.addr, r.addr + act_bytes(cfg, r.rows, r.cols)) for r in program.outputs]
    merged = _merge(upload)
    everything = merged + stores + outputs
    data = [(min(lo for lo, _ in everything), max(hi for _, hi in everything))] \
        if everything else []
    return {"code": [code], "upload": merged, "outputs": outputs, "data": data}


def _check_fits(program: Program, info: BoardInfo, ext) -> None:
    lo, hi = ext["code"][0]
    if hi > info.imem_bytes:
        raise BoardError(f"the program's code ({lo:#x}..{hi:#x}) does not fit the board's "
                         f"{info.imem_bytes}-byte instruction RAM")
    if ext["data"] and ext["data"][0][1] > info.mem_bytes:
        lo, hi = ext["data"][0]
        raise BoardError(f"the program uses data memory {lo:#x}..{hi:#x}, beyond the "
                         f"board's {info.mem_bytes}-byte data RAM")


def run_board(program: Program, inputs: dict[str, np.ndarray], *, port: str | None = None,
              baud: int = 115200, timeout_s: float = 60.0, io_timeout_s: float = 5.0,
              poll_s: float = 0.0):
    """Run ``program`` on the board at ``port``; a :class:`~lowbit.executors.RunResult`.

    ``timeout_s`` bounds the accelerator run (from start to STATUS.done), ``io_timeout_s``
    each reply. ``poll_s`` is the pause between STATUS polls. ``counters`` has ``instrs``
    (the INSTRS register), ``mem_latency`` (the board's), ``upload_bytes`` (image bytes
    sent), ``uart_bytes_sent`` / ``uart_bytes_received`` and ``polls``.
    """
    from ..executors import RunResult

    if port is None:
        raise ValueError("the board backend needs port=: a serial device such as "
                         "'/dev/ttyUSB1', or 'sim://HOST:PORT' for a simulated board")
    image = program.memory_image(inputs)
    ext = program_extents(program)
    with open_transport(port, baud=baud) as link:
        client = BoardClient(link, baud=baud, timeout_s=io_timeout_s)
        try:
            info = client.info(timeout_s=0.5)   # answered at once unless out of step
        except BoardError:
            info = client.resync()   # a half-sent command from an earlier, interrupted run
        cfg = program.config
        if info.version != PROTOCOL_VERSION:
            raise BoardError(f"the board speaks bridge protocol version {info.version}, "
                             f"this host speaks {PROTOCOL_VERSION}")
        if info.config_hash != config_hash(cfg) or info.beat_bytes != cfg.beat_bytes:
            raise BoardError(f"the board was built for another accelerator config (hash "
                             f"{info.config_hash:#010x}, {info.beat_bytes}-byte beats); the "
                             f"program targets {cfg.name} (hash {config_hash(cfg):#010x})")
        ident = client.read_csr("ID")
        if ident != ID_VALUE:
            raise BoardError(f"the accelerator's ID register reads {ident:#010x}, expected "
                             f"{ID_VALUE:#010x} (ISA version mismatch?)")
        _check_fits(program, info, ext)
        status = client.status()
        if status & StatusBit.BUSY:
            raise BoardError("the accelerator is busy with an earlier program "
                             "(STATUS.busy); reset the board")

        lo, hi = ext["code"][0]
        client.write_mem(Space.CODE, lo, bytes(image[lo:hi]))
        upload = 0
        for lo, hi in ext["upload"]:
            client.write_mem(Space.DATA, lo, bytes(image[lo:hi]))
            upload += hi - lo
        client.write_csr("PROG_ADDR", program.prog_addr)
        client.write_csr("PROG_LEN", len(program.instrs))
        client.write_csr("CTRL", 1)
        deadline = time.monotonic() + timeout_s
        polls = 0
        while True:
            status = client.status()
            polls += 1
            if status & _STICKY:
                raise BoardError(f"the board reported {status!r} during the run"
                                 + (" (an on-chip RAM queue overflowed: the cycle count is "
                                    "not exact; rebuild with a larger queue_depth)"
                                    if status & StatusBit.RAM_OVERFLOW else ""))
            if status & StatusBit.DONE and not status & StatusBit.BUSY:
                break
            if time.monotonic() > deadline:
                raise BoardError(f"the accelerator did not finish within {timeout_s:g} s "
                                 f"(STATUS {status!r}, INSTRS {client.read_csr('INSTRS')})")
            if poll_s:
                time.sleep(poll_s)
        if status & StatusBit.ERROR:
            raise BoardError(f"the accelerator stopped at an illegal instruction "
                             f"(STATUS {status!r}, INSTRS {client.read_csr('INSTRS')})")
        cycles = client.read_csr("CYCLES_LO") | client.read_csr("CYCLES_HI") << 32
        instrs = client.read_csr("INSTRS")
        mem = bytearray(max((hi for _, hi in ext["outputs"]), default=0))
        for lo, hi in ext["outputs"]:
            mem[lo:hi] = client.read_mem(Space.DATA, lo, hi - lo)
        status = client.status()
        if status & _STICKY:
            raise BoardError(f"the board reported {status!r} after the run")
        counters = {"instrs": instrs, "mem_latency": info.latency, "upload_bytes": upload,
                    "uart_bytes_sent": link.sent, "uart_bytes_received": link.received,
                    "polls": polls}
        try:
            outputs = program.read_outputs(mem)
        except (ValueError, ProgramError) as exc:
            raise BoardError(f"cannot decode the outputs read from the board: {exc}") from None
    return RunResult(outputs=outputs, cycles=cycles, counters=counters,
                     artifacts={"port": port})
