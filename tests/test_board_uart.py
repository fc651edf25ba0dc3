# amaranth: UnusedElaboratable=no
"""The UART board top: on-chip AXI RAM timing, UART, bridge protocol, host driver, end to end.

* :class:`~lowbit.hw.axi_ram.AxiRam` under ``amaranth.sim`` against the pure-Python memory
  model of ``docs/contracts.md`` (:class:`lowbit.sim.axi_mem.AxiPortModel`), edge by edge,
  with random bursts, back-pressure and host traffic.
* UART TX -> RX loopback, bit timing and framing errors under ``amaranth.sim``.
* Transports: ``termios`` on a pseudo-terminal, address parsing.
* ``lowbit_board`` (tiny preset) under Verilator via :class:`lowbit.boards.transport.SimBoard`:
  the real host driver (``run(..., backend="board", port="sim://...")``) must give outputs
  bit-exact with ``reference`` and CYCLES equal to ``sim`` at the board's latency; protocol
  corner cases through :class:`lowbit.boards.host.BoardClient`.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module
from amaranth.sim import Simulator

from lowbit.boards.host import BoardClient, BoardError, program_extents, run_board
from lowbit.boards.transport import (
    SerialTransport,
    SimBoard,
    TransportError,
    open_transport,
)
from lowbit.compiler import compile_gemm
from lowbit.config import PRESETS
from lowbit.executors import run
from lowbit.hw.axi_ram import MIN_LATENCY, AxiRam
from lowbit.hw.board_top import (
    BOARD_TOP_NAME,
    ZYNQ_TOP_NAME,
    BoardTop,
    ZynqTop,
    config_hash,
    generate_board_verilog,
    generate_zynq_verilog,
)
from lowbit.hw.lint import LINT_WAIVERS
from lowbit.hw.uart import (
    NAK,
    BoardInfo,
    Command,
    Space,
    StatusBit,
    UartRx,
    UartTx,
)
from lowbit.isa import ID_VALUE
from lowbit.layout import requantize
from lowbit.sim.axi_mem import AxiPortModel
from lowbit.sim.toolchain import lint_verilog

TINY = PRESETS["tiny"]


def _sim(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


# -- AxiRam against the contract's memory model ---------------------------------------------

def _ram_vs_model(*, latency, seed, edges=500, ar_p=0.07, max_len=16, rready_p=0.8,
                  bready_p=0.8, read_only=False, host_p=0.3):
    """Drive an AxiRam and an AxiPortModel with the same random master; compare R/B outputs
    at every edge. Reads come from a preloaded region, writes go to another (no races);
    random host reads run alongside; the written region is read back at the end."""
    rng = random.Random(seed)
    size, bb, region = 4096, 4, 512
    dut = AxiRam(size_bytes=size, data_width=32, addr_width=20, latency=latency,
                 read_only=read_only, queue_depth=48)
    mem = bytearray(size)
    init = bytes(rng.randrange(256) for _ in range(region))
    mem[:region] = init
    model = AxiPortModel(mem, name="dmem", beat_bytes=bb, latency=latency,
                         writable=not read_only)
    bursts = []
    if not read_only:
        for _ in range(40):
            n = rng.randint(1, 8)
            addr = region + rng.randrange(0, region // bb - n) * bb
            bursts.append((addr, n, [rng.getrandbits(32) for _ in range(n)], rng.randrange(16)))
    seen = {"r": 0, "b": 0, "host": 0}

    async def tb(ctx):
        a, h = dut.axi, dut.host
        for i, b in enumerate(init):                   # preload through the host port
            for sig, v in ((h.req, 1), (h.we, 1), (h.addr, i), (h.wdata, b)):
                ctx.set(sig, v)
            assert ctx.get(h.ack)
            await ctx.tick()
        ctx.set(h.req, 0)
        await ctx.tick().repeat(3)
        awi = wi = wk = 0
        host_reads = []
        for e in range(1, edges + 1):
            ar = aw = w = None
            if rng.random() < ar_p:
                n = rng.randint(1, max_len)
                ar = (rng.randrange(0, region // bb - n) * bb, n - 1, 2, 1)
            if awi < len(bursts) and rng.random() < 0.2:
                addr, n, _, _ = bursts[awi]
                aw = (addr, n - 1, 2, 1)
                awi += 1
            if wi < len(bursts) and wi < awi + 2 and rng.random() < 0.5:
                _, n, data, strb = bursts[wi]         # W may run up to 2 bursts ahead of AW
                w = (data[wk], 0xF if wk else strb | 1, wk == n - 1)
                wk += 1
                if wk == n:
                    wi, wk = wi + 1, 0
            rr, br = rng.random() < rready_p, rng.random() < bready_p
            ctx.set(a.arvalid, ar is not None)
            ctx.set(a.rready, rr)
            if ar:
                for sig, v in zip((a.araddr, a.arlen, a.arsize, a.arburst), ar, strict=True):
                    ctx.set(sig, v)
            if not read_only:
                ctx.set(a.awvalid, aw is not None)
                ctx.set(a.wvalid, w is not None)
                ctx.set(a.bready, br)
                if aw:
                    for sig, v in zip((a.awaddr, a.awlen, a.awsize, a.awburst), aw,
                                      strict=True):
                        ctx.set(sig, v)
                if w:
                    ctx.set(a.wdata, w[0])
                    ctx.set(a.wstrb, w[1])
                    ctx.set(a.wlast, w[2])
            host_rd = rng.random() < host_p
            haddr = rng.randrange(region)
            ctx.set(h.req, host_rd)
            ctx.set(h.we, 0)
            ctx.set(h.addr, haddr)
            want = model.outputs(e)
            got_rvalid = ctx.get(a.rvalid)
            assert got_rvalid == want.rvalid, f"rvalid at edge {e}"
            if want.rvalid:
                assert (ctx.get(a.rdata), ctx.get(a.rlast)) == (want.rdata, want.rlast), \
                    f"R beat at edge {e}"
                seen["r"] += rr
            if not read_only:
                assert ctx.get(a.bvalid) == want.bvalid, f"bvalid at edge {e}"
                seen["b"] += want.bvalid and br
            if ctx.get(h.ack):
                assert ctx.get(h.rdata) == mem[host_reads[-1]], f"host read at edge {e}"
                seen["host"] += 1
            assert not ctx.get(dut.overflow)
            if host_rd:
                host_reads.append(haddr)
            model.edge(e, ar=ar, rready=rr, aw=aw, w=w, bready=br)
            await ctx.tick()
        for sig in (h.req, a.arvalid) + (() if read_only else (a.awvalid, a.wvalid)):
            ctx.set(sig, 0)
        for sig in (a.rready,) + (() if read_only else (a.bready,)):
            ctx.set(sig, 1)       # a beat held by back-pressure would starve the host port
        await ctx.tick().repeat(latency + 40)
        for i in range(region, 2 * region if not read_only else region):
            ctx.set(h.req, 1)
            ctx.set(h.addr, i)
            await ctx.tick().until(h.ack)
            assert ctx.get(h.rdata) == mem[i], f"byte {i:#x} after the writes"

    _sim(dut, tb)
    assert seen["r"] > 100 and seen["host"] > 10
    if not read_only:
        assert seen["b"] == len(bursts)


@pytest.mark.parametrize("latency,seed", [(MIN_LATENCY, 0), (5, 1), (20, 2)])
def test_axi_ram_matches_contract_model_with_backpressure(latency, seed):
    _ram_vs_model(latency=latency, seed=seed)


def test_axi_ram_matches_model_with_dense_short_bursts():
    """An AR every cycle or two with rready always high: many bursts queued, no bubbles."""
    _ram_vs_model(latency=9, seed=3, ar_p=0.6, max_len=2, rready_p=1.0, bready_p=1.0,
                  host_p=0.5)


def test_axi_ram_read_only_port():
    _ram_vs_model(latency=6, seed=4, read_only=True, ar_p=0.1)


def test_axi_ram_overflow_is_flagged():
    dut = AxiRam(size_bytes=1024, data_width=32, addr_width=16, latency=4, queue_depth=2)

    async def tb(ctx):
        flagged = False
        ctx.set(dut.axi.arvalid, 1)
        ctx.set(dut.axi.arlen, 15)
        for _ in range(8):
            flagged |= bool(ctx.get(dut.overflow))
            await ctx.tick()
        assert flagged

    _sim(dut, tb)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(latency=3), ValueError, "latency must be an integer from 4 to 1024, not 3"),
    (dict(size_bytes=3000), ValueError,
     "size_bytes must be a power of two from 8 to 1048576, not 3000"),
    (dict(data_width=48), ValueError, "data_width must be a power of two from 32 to 1024, "
                                      "not 48"),
    (dict(latency=4.0), TypeError, "latency must be an integer, not float"),
])
def test_axi_ram_parameter_errors(kwargs, exc, msg):
    args = dict(size_bytes=4096, data_width=32, addr_width=20, latency=20) | kwargs
    with pytest.raises(exc, match=f"^{msg}$"):
        AxiRam(**args)


# -- UART ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpb,n", [(4, 24), (7, 24), (104, 2)])   # 104: 12 MHz, 115200 baud
def test_uart_loopback_back_to_back(cpb, n):
    m = Module()
    m.submodules.tx = tx = UartTx(cpb)
    m.submodules.rx = rx = UartRx(cpb)
    m.d.comb += rx.rx.eq(tx.tx)
    data = [random.Random(cpb).randrange(256) for _ in range(n)] + [0x00, 0xFF, 0x55]
    got, takes = [], []

    async def tb(ctx):
        ctx.set(rx.data.ready, 1)
        cycle, k = 0, 0
        while len(got) < len(data) and cycle < 20 * cpb * len(data):
            if k < len(data):
                ctx.set(tx.data.valid, 1)
                ctx.set(tx.data.payload, data[k])
                if ctx.get(tx.data.ready):
                    takes.append(cycle)
                    k += 1
            else:
                ctx.set(tx.data.valid, 0)
            if ctx.get(rx.data.valid):
                got.append(ctx.get(rx.data.payload))
            assert not ctx.get(rx.error)
            await ctx.tick()
            cycle += 1

    _sim(m, tb)
    assert got == data
    assert {b - a for a, b in zip(takes, takes[1:], strict=False)} == {10 * cpb}


def test_uart_rx_framing_error_and_recovery():
    cpb = 4
    dut = UartRx(cpb)
    frames = [(0xA5, 0), (0x3C, 1)]      # the first has a 0 stop bit

    async def tb(ctx):
        errors, got = 0, []
        ctx.set(dut.data.ready, 1)
        bits = []
        for byte, stop in frames:
            bits += [1] * 3 * cpb + [0] * cpb + \
                [b for k in range(8) for b in [(byte >> k) & 1] * cpb] + [stop] * cpb
        bits += [1] * 6 * cpb
        for b in bits:
            ctx.set(dut.rx, b)
            errors += ctx.get(dut.error)
            if ctx.get(dut.data.valid):
                got.append(ctx.get(dut.data.payload))
            await ctx.tick()
        assert errors == 1 and got == [0x3C]

    _sim(dut, tb)


def test_uart_parameter_errors():
    with pytest.raises(ValueError, match="^clocks_per_bit must be an integer from 4 to "
                                         "1048576, not 2$"):
        UartTx(2)
    with pytest.raises(TypeError, match="^clocks_per_bit must be an integer, not float$"):
        UartRx(4.5)


def test_board_info_round_trip_and_refusal():
    info = BoardInfo(beat_bytes=4, latency=20, mem_bytes=1 << 14, imem_bytes=1 << 12,
                     config_hash=0xDEADBEEF)
    assert BoardInfo.unpack(info.pack()) == info
    with pytest.raises(ValueError, match="^INFO reply starts with b'XY', not b'LB'$"):
        BoardInfo.unpack(b"XY" + info.pack()[2:])


# -- generated Verilog -------------------------------------------------------------------------

def test_board_and_zynq_verilog_lint_clean():
    with tempfile.TemporaryDirectory() as tmp:
        board = Path(tmp) / "board.v"
        board.write_text(generate_board_verilog(TINY, mem_bytes=1 << 14, latency=20,
                                                clocks_per_bit=104))
        lint_verilog(board, BOARD_TOP_NAME, waivers=list(LINT_WAIVERS))
        zynq = Path(tmp) / "zynq.v"
        text = generate_zynq_verilog(TINY, dram_base=0x1000_0000)
        zynq.write_text(text)
        lint_verilog(zynq, ZYNQ_TOP_NAME, waivers=list(LINT_WAIVERS))
        for port in ("imem__araddr", "dmem__awaddr", "csr__awaddr", "irq"):
            assert port in text


def test_board_top_parameter_errors():
    with pytest.raises(ValueError, match="^mem_bytes must be a power of two from 256 to "
                                         "1048576, not 3000$"):
        BoardTop(TINY, mem_bytes=3000, latency=20, clocks_per_bit=4)
    with pytest.raises(ValueError, match="^latency must be an integer from 4 to 1024, not 2$"):
        BoardTop(TINY, mem_bytes=4096, latency=2, clocks_per_bit=4)
    with pytest.raises(ValueError, match="^dram_base must be a 32-bit multiple of mem_bytes "
                                         r"\(0x100000\), not 0x1234$"):
        ZynqTop(TINY, dram_base=0x1234)
    assert config_hash(TINY) == config_hash(TINY.replace(clock_mhz=12.0))
    assert config_hash(TINY) != config_hash(TINY.replace(weight_bits=2))


# -- transports ----------------------------------------------------------------------------------

def test_serial_transport_on_a_pty_is_raw_8_bit():
    master, slave = os.openpty()
    try:
        with SerialTransport(os.ttyname(slave), baud=115200) as link:
            data = bytes(range(256))
            link.write(data)
            got = b""
            while len(got) < 256:
                got += os.read(master, 256)
            assert got == data
            os.write(master, data[::-1])
            assert link.read(256, timeout_s=2) == data[::-1]
            with pytest.raises(TransportError, match="timed out after 0.05 s waiting for 1 "
                                                     "bytes"):
                link.read(1, timeout_s=0.05)
    finally:
        os.close(master)
        os.close(slave)


def test_open_transport_errors():
    with pytest.raises(ValueError, match="^port must look like 'sim://HOST:PORT', not "
                                         "'sim://nohost'$"):
        open_transport("sim://nohost")
    with pytest.raises(TransportError, match="^cannot open serial port '/nonexistent/tty'"):
        open_transport("/nonexistent/tty")
    with pytest.raises(ValueError, match="^baud 12345 is not a standard termios rate"):
        SerialTransport(os.devnull, baud=12345)


# -- end to end on a simulated board ---------------------------------------------------------------

LATENCY = 13          # not the default 20: the board's latency must be what counts
CPB = 4
MEM_BYTES = 1 << 14


@pytest.fixture(scope="module")
def board():
    with SimBoard(TINY, mem_bytes=MEM_BYTES, latency=LATENCY, clocks_per_bit=CPB) as sim:
        yield sim
    print(f"\nsimulated board: {sim.stats}")


def _gemm(m, k, n, relu, uns, seed, cfg=TINY):
    rng = np.random.default_rng(seed)
    wb = cfg.weight_bits
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (k, n))
    x = rng.integers(0, 256, (m, k)) if uns else rng.integers(-128, 128, (m, k))
    bias, mult = rng.integers(-2000, 2000, n), rng.integers(1 << 12, 1 << 16, n)
    shift = rng.integers(12, 22, n)
    prog = compile_gemm(cfg, a_shape=(m, k), weights=w, bias=bias, mult=mult, shift=shift,
                        relu=relu, act_unsigned=uns, out_bits=8)
    want = requantize(x @ w, bias, mult, shift, relu=relu, out_bits=8, out_unsigned=False)
    return prog, x, want


@pytest.mark.parametrize("case", [(13, 29, 11, True, False, 2), (32, 16, 9, False, True, 3),
                                  (5, 40, 4, False, False, 6)],
                         ids=["13x29x11", "32x16x9", "5x40x4"])
def test_board_gemm_bit_exact_and_cycle_exact(board, case):
    prog, x, want = _gemm(*case)
    t0 = time.perf_counter()
    res = run(prog, {"x": x}, backend="board", port=board.port)
    seconds = time.perf_counter() - t0
    ref = run(prog, {"x": x}, backend="reference")
    sim = run(prog, {"x": x}, backend="sim", mem_latency=LATENCY)
    assert np.array_equal(ref.outputs["y"], want)
    assert np.array_equal(res.outputs["y"], ref.outputs["y"])
    assert res.cycles == sim.cycles
    assert res.counters["mem_latency"] == LATENCY
    assert res.backend == "board" and res.counters["polls"] >= 1
    print(f"\n{case}: {res.cycles} cycles, {res.counters['uart_bytes_sent']} B sent, "
          f"{res.counters['uart_bytes_received']} B received in {seconds:.2f} s")


def test_board_protocol_memory_csr_status_and_resync(board):
    with open_transport(board.port) as link:
        c = BoardClient(link)
        info = c.info()
        assert info == BoardInfo(beat_bytes=4, latency=LATENCY, mem_bytes=MEM_BYTES,
                                 imem_bytes=MEM_BYTES // 4, config_hash=config_hash(TINY))
        assert c.read_csr("ID") == ID_VALUE
        c.status()                                   # clear any sticky flag
        rng = np.random.default_rng(0)
        blob = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
        c.write_mem(Space.DATA, 0x123, blob)
        c.write_mem(Space.CODE, 0x40, blob[:100])
        assert c.read_mem(Space.DATA, 0x123, 600) == blob
        assert c.read_mem(Space.CODE, 0x40, 100) == blob[:100]
        assert c.read_mem(Space.DATA, 0x123 + MEM_BYTES, 8) == blob[:8]   # addresses wrap
        c.write_csr("PROG_LEN", 0x12345678)
        assert c.read_csr("PROG_LEN") == 0x12345678

        link.write(bytes([0x7E]))                    # unknown command -> NAK + flag
        assert link.read(1, timeout_s=5) == bytes([NAK])
        link.write(struct.pack("<BBIH", Command.WRITE_MEM, 9, 0, 2) + b"ab")   # bad space
        assert link.read(1, timeout_s=5) == bytes([NAK])
        assert c.status() & StatusBit.PROTOCOL_ERROR
        assert not c.status() & StatusBit.PROTOCOL_ERROR     # cleared once reported

        link.write(struct.pack("<BBIH", Command.WRITE_MEM, 0, 0x10, 100) + b"x" * 10)
        assert c.resync() == info                    # the bridge abandons the command
        assert c.info() == info
        assert c.status() & StatusBit.PROTOCOL_ERROR
        assert c.read_mem(Space.DATA, 0x10, 10) == b"x" * 10

        # UART throughput on the simulated line (cycles are exact; wall time is the host's).
        big = bytes(range(256)) * 16
        t0 = time.perf_counter()
        c.write_mem(Space.DATA, 0, big)
        t1 = time.perf_counter()
        assert c.read_mem(Space.DATA, 0, len(big)) == big
        t2 = time.perf_counter()
        print(f"\nUART sim: write {len(big) / (t1 - t0):.0f} B/s, read "
              f"{len(big) / (t2 - t1):.0f} B/s wall ({CPB} clocks per bit)")
    assert link.sent and link.received >= len(big)


def test_board_run_recovers_from_an_interrupted_command(board):
    with open_transport(board.port) as link:   # a host that died halfway through a command
        link.write(struct.pack("<BBIH", Command.WRITE_MEM, 0, 0, 500) + b"z" * 7)
    prog, x, want = _gemm(6, 9, 5, True, False, 7)
    t0 = time.perf_counter()
    res = run(prog, {"x": x}, backend="board", port=board.port)
    assert np.array_equal(res.outputs["y"], want)
    assert time.perf_counter() - t0 < 10


def test_board_refuses_other_configs_and_oversized_programs(board):
    other = TINY.replace(weight_bits=2)
    prog, x, _ = _gemm(5, 7, 6, False, False, 0, cfg=other)
    with pytest.raises(BoardError, match="^the board was built for another accelerator "
                                         "config"):
        run(prog, {"x": x}, backend="board", port=board.port)
    prog, x, _ = _gemm(200, 100, 8, False, False, 1)
    hi = program_extents(prog)["data"][0][1]
    assert hi > MEM_BYTES
    with pytest.raises(BoardError, match=f"^the program uses data memory 0x[0-9a-f]+..{hi:#x}, "
                                         f"beyond the board's {MEM_BYTES}-byte data RAM$"):
        run_board(prog, {"x": x}, port=board.port)
    with pytest.raises(ValueError, match="^the board backend needs port="):
        run(prog, {"x": x}, backend="board")
