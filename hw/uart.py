"""UART (8N1) receiver and transmitter, and the board's UART host bridge and its protocol.

The protocol is defined here once; the host driver (:mod:`lowbit.boards.host`) imports these
constants, and ``docs/board_top.md`` describes it. All multi-byte fields are little-endian.

======================  ==============================================  ====================
command (1 byte)        arguments                                       reply
======================  ==============================================  ====================
``WRITE_MEM`` 0x01      space u8, addr u32, len u16, then ``len`` bytes ``ACK`` (``NAK``: bad
                                                                        space, data dropped)
``READ_MEM`` 0x02       space u8, addr u32, len u16                     ``len`` bytes
``WRITE_CSR`` 0x03      offset u8, value u32                            ``ACK`` (``NAK``: BRESP)
``READ_CSR`` 0x04       offset u8                                       value u32
``STATUS`` 0x05         (none)                                          status u8
``INFO`` 0x06           (none)                                          :data:`INFO_FORMAT`
======================  ==============================================  ====================

``space`` is :class:`Space` (0: data RAM, 1: instruction RAM). The host sends one command and
waits for its whole reply before the next (the bridge buffers one received byte; bytes sent
while it is replying are lost and flagged). Anything else starting a command gets ``NAK``.
If a command's argument or data bytes stop arriving for :data:`IDLE_TIMEOUT_BYTES` byte
times, the bridge abandons it: a host resynchronises by staying silent that long.
The status byte is :class:`StatusBit`; its three sticky bridge flags clear once reported.
"""


import enum
import struct
from dataclasses import dataclass

from amaranth import C, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit import isa

from .axi import AXI4LiteSignature
from .axi_ram import HostMemSignature

__all__ = [
    "ACK",
    "ARG_BYTES",
    "IDLE_TIMEOUT_BYTES",
    "INFO_FORMAT",
    "INFO_MAGIC",
    "MIN_CLOCKS_PER_BIT",
    "NAK",
    "PROTOCOL_VERSION",
    "BoardInfo",
    "Command",
    "Space",
    "StatusBit",
    "UartBridge",
    "UartRx",
    "UartTx",
]

PROTOCOL_VERSION = 1
ACK = 0x06
NAK = 0x15
#: A command whose bytes stop arriving for this many byte times (10 bits each) is abandoned.
IDLE_TIMEOUT_BYTES = 256
MIN_CLOCKS_PER_BIT = 4
INFO_MAGIC = b"LB"
#: INFO reply: magic, protocol version, beat bytes, latency, log2 data RAM bytes,
#: log2 instruction RAM bytes, hardware hash of the accelerator config.
INFO_FORMAT = "<2sBBHBBI"


class Command(enum.IntEnum):
    WRITE_MEM = 0x01
    READ_MEM = 0x02
    WRITE_CSR = 0x03
    READ_CSR = 0x04
    STATUS = 0x05
    INFO = 0x06


#: Argument bytes after each command byte.
ARG_BYTES = {Command.WRITE_MEM: 7, Command.READ_MEM: 7, Command.WRITE_CSR: 5,
             Command.READ_CSR: 1, Command.STATUS: 0, Command.INFO: 0}


class Space(enum.IntEnum):
    DATA = 0
    CODE = 1


class StatusBit(enum.IntFlag):
    BUSY = 0x01            #: CSR STATUS bit 0
    DONE = 0x02            #: CSR STATUS bit 1
    ERROR = 0x04           #: CSR STATUS bit 2 (illegal instruction)
    IRQ = 0x08             #: the accelerator's irq line
    RAM_OVERFLOW = 0x10    #: sticky: an on-chip RAM burst queue overflowed (timing lost)
    UART_ERROR = 0x20      #: sticky: a framing error or a received byte lost (overrun)
    PROTOCOL_ERROR = 0x40  #: sticky: unknown command, bad space, or an abandoned command


@dataclass(frozen=True)
class BoardInfo:
    """What the INFO command reports about a board build."""

    beat_bytes: int
    latency: int
    mem_bytes: int
    imem_bytes: int
    config_hash: int
    version: int = PROTOCOL_VERSION

    def pack(self) -> bytes:
        return struct.pack(INFO_FORMAT, INFO_MAGIC, self.version, self.beat_bytes,
                           self.latency, self.mem_bytes.bit_length() - 1,
                           self.imem_bytes.bit_length() - 1, self.config_hash)

    @classmethod
    def unpack(cls, data: bytes) -> "BoardInfo":
        """Parse an INFO reply; ``ValueError`` if it is not one."""
        if len(data) != struct.calcsize(INFO_FORMAT):
            raise ValueError(f"INFO reply must be {struct.calcsize(INFO_FORMAT)} bytes, "
                             f"not {len(data)}")
        magic, version, beat, latency, mem_log2, imem_log2, chash = \
            struct.unpack(INFO_FORMAT, data)
        if magic != INFO_MAGIC:
            raise ValueError(f"INFO reply starts with {magic!r}, not {INFO_MAGIC!r}")
        return cls(beat_bytes=beat, latency=latency, mem_bytes=1 << mem_log2,
                   imem_bytes=1 << imem_log2, config_hash=chash, version=version)


def _check_cpb(clocks_per_bit):
    if isinstance(clocks_per_bit, bool) or not isinstance(clocks_per_bit, int):
        raise TypeError(f"clocks_per_bit must be an integer, not "
                        f"{type(clocks_per_bit).__name__}")
    if not MIN_CLOCKS_PER_BIT <= clocks_per_bit <= 1 << 20:
        raise ValueError(f"clocks_per_bit must be an integer from {MIN_CLOCKS_PER_BIT} to "
                         f"{1 << 20}, not {clocks_per_bit}")


class UartRx(wiring.Component):
    """8N1 receiver, ``clocks_per_bit`` clock cycles per bit (at least 4).

    ``rx`` is synchronised by two flip-flops. Each bit is sampled once, in its middle. A
    received byte is held in ``data`` (``valid`` high) until taken with ``ready``; a byte
    completing while the previous one is still held replaces it and pulses ``error``, as
    does a stop bit that reads 0 (the receiver then waits for the line to go idle).
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    error: Out(1)

    def __init__(self, clocks_per_bit: int):
        _check_cpb(clocks_per_bit)
        self.clocks_per_bit = clocks_per_bit
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        s1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [s1.eq(self.rx), line.eq(s1)]
        cnt = Signal(range(cpb))
        bit = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += cnt.eq(cpb // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(cnt != 0):
                    m.d.sync += cnt.eq(cnt - 1)
                with m.Elif(line):
                    m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [cnt.eq(cpb - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(cnt != 0):
                    m.d.sync += cnt.eq(cnt - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), cnt.eq(cpb - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(cnt != 0):
                    m.d.sync += cnt.eq(cnt - 1)
                with m.Elif(line):
                    m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                    m.d.comb += self.error.eq(self.data.valid & ~self.data.ready)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter, ``clocks_per_bit`` cycles per bit; ``tx`` is a register, idle high.

    ``data`` is taken (``ready`` high) when the line is idle or in the last cycle of a stop
    bit, so back-to-back bytes take exactly ``10 * clocks_per_bit`` cycles each.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, clocks_per_bit: int):
        _check_cpb(clocks_per_bit)
        self.clocks_per_bit = clocks_per_bit
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        cnt = Signal(range(cpb))
        left = Signal(range(10))
        shreg = Signal(9)

        def take():
            m.d.comb += self.data.ready.eq(1)
            with m.If(self.data.valid):
                m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.data.payload, C(1, 1))),
                             left.eq(9), cnt.eq(cpb - 1)]
                m.next = "SEND"
            with m.Else():
                m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                take()
            with m.State("SEND"):
                with m.If(cnt != 0):
                    m.d.sync += cnt.eq(cnt - 1)
                with m.Elif(left != 0):
                    m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:]),
                                 left.eq(left - 1), cnt.eq(cpb - 1)]
                with m.Else():
                    take()
        return m


class UartBridge(wiring.Component):
    """The host bridge: UART in, AXI4-Lite master to the CSRs and two RAM host ports out.

    Executes the protocol in this module's docstring. ``dram`` and ``iram`` are
    :class:`~lowbit.hw.axi_ram.HostMemSignature` masters (space DATA and CODE); ``csr`` is
    an AXI4-Lite master with registered valid/address/data outputs; ``irq`` and
    ``ram_overflow`` feed the status byte. ``active`` is high while a command is being
    executed, ``error`` while a sticky flag is set.
    """

    def __init__(self, *, clocks_per_bit: int, info: BoardInfo):
        _check_cpb(clocks_per_bit)
        if not isinstance(info, BoardInfo):
            raise TypeError(f"info must be a BoardInfo, not {type(info).__name__}")
        self.clocks_per_bit = clocks_per_bit
        self.info = info
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "csr": Out(AXI4LiteSignature(addr_width=8)),
            "dram": Out(HostMemSignature()), "iram": Out(HostMemSignature()),
            "irq": In(1), "ram_overflow": In(1),
            "active": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        m.submodules.rx = urx = UartRx(cpb)
        m.submodules.tx = utx = UartTx(cpb)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        rxs, txs, csr = urx.data, utx.data, self.csr

        opcode = Signal(8)
        args = Signal(56)            # space u8 | addr u32 | len u16, or offset u8 | value u32
        space, addr, count = args[0:8], args[8:40], args[40:56]
        nargs = Signal(range(8))
        idx = Signal(range(8))
        byte = Signal(8)
        info = self.info.pack()
        reply = Signal(8 * len(info))
        reply_n = Signal(range(len(info) + 1))
        ovf, uerr, perr = Signal(), Signal(), Signal()
        timeout = IDLE_TIMEOUT_BYTES * 10 * cpb
        quiet = Signal(range(timeout + 1))
        waiting = Signal()       # in a state that waits for command bytes

        good_space = space < 2
        ports = (self.dram, self.iram)
        mem_req, mem_we = Signal(), Signal()
        mem_ack = Mux(space[0], self.iram.ack, self.dram.ack)
        mem_rdata = Mux(space[0], self.iram.rdata, self.dram.rdata)
        for k, port in enumerate(ports):
            m.d.comb += [port.req.eq(mem_req & good_space & (space[0] == k)),
                         port.we.eq(mem_we), port.addr.eq(addr), port.wdata.eq(byte)]
        m.d.comb += [csr.wstrb.eq(0xF), self.error.eq(ovf | uerr | perr)]

        status_off = isa.csr_offset("STATUS")

        def send(value, n):
            m.d.sync += [reply.eq(value), reply_n.eq(n)]
            m.next = "REPLY"

        m.d.sync += quiet.eq(Mux(waiting & ~rxs.valid, quiet + 1, 0))
        abandon = waiting & (quiet == timeout)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rxs.ready.eq(1)
                with m.If(rxs.valid):
                    m.d.sync += [opcode.eq(rxs.payload), idx.eq(0)]
                    with m.Switch(rxs.payload):
                        for cmd in (Command.WRITE_MEM, Command.READ_MEM, Command.WRITE_CSR,
                                    Command.READ_CSR):
                            with m.Case(cmd):
                                m.d.sync += nargs.eq(ARG_BYTES[cmd] - 1)
                                m.next = "ARGS"
                        with m.Case(Command.STATUS):
                            m.d.sync += [csr.araddr.eq(status_off), csr.arvalid.eq(1)]
                            m.next = "CSR_AR"
                        with m.Case(Command.INFO):
                            send(int.from_bytes(info, "little"), len(info))
                        with m.Default():
                            m.d.sync += perr.eq(1)
                            send(NAK, 1)
            with m.State("ARGS"):
                m.d.comb += [rxs.ready.eq(1), waiting.eq(1), self.active.eq(1)]
                with m.If(abandon):
                    m.d.sync += perr.eq(1)
                    m.next = "IDLE"
                with m.Elif(rxs.valid):
                    m.d.sync += [args.word_select(idx, 8).eq(rxs.payload), idx.eq(idx + 1)]
                    with m.If(idx == nargs):
                        with m.Switch(opcode):
                            with m.Case(Command.WRITE_MEM):
                                m.next = "WM_RX"
                            with m.Case(Command.READ_MEM):
                                m.next = "RM_REQ"
                            with m.Case(Command.WRITE_CSR):
                                m.d.sync += [csr.awvalid.eq(1), csr.wvalid.eq(1),
                                             csr.awaddr.eq(args[0:8]),
                                             csr.wdata.eq(Cat(args[8:32], rxs.payload))]
                                m.next = "CSR_W"
                            with m.Default():   # READ_CSR
                                m.d.sync += [csr.araddr.eq(rxs.payload), csr.arvalid.eq(1)]
                                m.next = "CSR_AR"
            with m.State("WM_RX"):
                m.d.comb += self.active.eq(1)
                with m.If(count == 0):
                    with m.If(~good_space):
                        m.d.sync += perr.eq(1)
                    send(Mux(good_space, ACK, NAK), 1)
                with m.Else():
                    m.d.comb += [rxs.ready.eq(1), waiting.eq(1)]
                    with m.If(abandon):
                        m.d.sync += perr.eq(1)
                        m.next = "IDLE"
                    with m.Elif(rxs.valid):
                        m.d.sync += byte.eq(rxs.payload)
                        m.next = "WM_WR"
            with m.State("WM_WR"):
                m.d.comb += [self.active.eq(1), mem_req.eq(1), mem_we.eq(1)]
                with m.If(mem_ack | ~good_space):
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                    m.next = "WM_RX"
            with m.State("RM_REQ"):
                m.d.comb += self.active.eq(1)
                with m.If(count == 0):
                    with m.If(~good_space):
                        m.d.sync += perr.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += mem_req.eq(1)
                    with m.If(mem_ack | ~good_space):
                        m.d.sync += byte.eq(Mux(good_space, mem_rdata, 0))
                        m.next = "RM_TX"
            with m.State("RM_TX"):
                m.d.comb += [self.active.eq(1), txs.valid.eq(1), txs.payload.eq(byte)]
                with m.If(txs.ready):
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                    m.next = "RM_REQ"
            with m.State("CSR_W"):
                m.d.comb += self.active.eq(1)
                with m.If(csr.awready):
                    m.d.sync += csr.awvalid.eq(0)
                with m.If(csr.wready):
                    m.d.sync += csr.wvalid.eq(0)
                with m.If((~csr.awvalid | csr.awready) & (~csr.wvalid | csr.wready)):
                    m.next = "CSR_B"
            with m.State("CSR_B"):
                m.d.comb += [self.active.eq(1), csr.bready.eq(1)]
                with m.If(csr.bvalid):
                    send(Mux(csr.bresp == 0, ACK, NAK), 1)
            with m.State("CSR_AR"):
                m.d.comb += self.active.eq(1)
                with m.If(csr.arready):
                    m.d.sync += csr.arvalid.eq(0)
                    m.next = "CSR_R"
            with m.State("CSR_R"):
                m.d.comb += [self.active.eq(1), csr.rready.eq(1)]
                with m.If(csr.rvalid):
                    with m.If(opcode == Command.STATUS):
                        m.d.sync += [ovf.eq(0), uerr.eq(0), perr.eq(0)]
                        send(Cat(csr.rdata[0:3], self.irq, ovf, uerr, perr), 1)
                    with m.Else():
                        send(csr.rdata, 4)
            with m.State("REPLY"):
                m.d.comb += [self.active.eq(1), txs.valid.eq(1), txs.payload.eq(reply[:8])]
                with m.If(txs.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_n.eq(reply_n - 1)]
                    with m.If(reply_n == 1):
                        m.next = "IDLE"

        # Sticky flags (after the FSM: a flag raised in the cycle STATUS clears them stays).
        with m.If(self.ram_overflow):
            m.d.sync += ovf.eq(1)
        with m.If(urx.error):
            m.d.sync += uerr.eq(1)
        return m
