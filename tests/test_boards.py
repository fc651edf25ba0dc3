"""Board targets and builds: descriptions, real (tiny) place and route on iCE40 and ECP5, the
Xilinx export, fit errors before any tool runs, caching, and the CLI.

The place-and-route tests build the PE array alone (``top="array"``) of a 2x2 W2 config:
a few seconds each after the YoWASP warm-up. The whole accelerator is too slow to route in a
unit test (about 100 s on ECP5) and does not fit the iCE40UP5K at any size (5.5k of 5280
LCs at 2x2); ``benchmarks/resources.py`` measures it, and ``docs/boards.md`` has the table.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from lowbit.boards import (
    BOARDS,
    Board,
    BuildError,
    BuildReport,
    UnknownBoardError,
    build,
    build_dir_for,
    get_board,
    list_boards,
    render_table,
)
from lowbit.boards.build import (
    SOFTMUL,
    _critical_path,
    _critical_sources,
    _drop_pe_rows,
    _dsp_choice,
    _log_utilisation,
    _mul_cells,
    _nextpnr_stage,
    _nextpnr_timeout,
    _plan_dsps,
    _platform,
    tool_path,
)
from lowbit.boards.estimate import (
    array_ff_lower_bound,
    bram_blocks,
    precheck_usage,
    usage_from_nextpnr,
    usage_from_stat,
)
from lowbit.boards.pynq_z2 import PynqZ2Platform
from lowbit.cli import main
from lowbit.config import PRESETS, AccelConfig
from lowbit.hw.mul import DspChoice

#: The smallest config: 2x2 PEs, 2-bit weights, 16-bit accumulators, tiny memories.
TINY = AccelConfig(rows=2, cols=2, weight_bits=2, act_bits=8, acc_bits=16, act_depth=16,
                   weight_tiles=2, acc_depth=16, param_depth=4, bus_bits=32, queue_depth=2,
                   max_burst=4, fetch_burst=1, mem_bytes=1 << 16)


# -- board descriptions ---------------------------------------------------------------------

def test_board_names_and_order():
    assert [b.name for b in list_boards()] == ["icebreaker", "ulx3s-85f", "arty-a7-35",
                                              "pynq-z2"]
    assert all(isinstance(b, Board) for b in list_boards())
    assert get_board("pynq-z2") is BOARDS["pynq-z2"]
    assert get_board(BOARDS["icebreaker"]) is BOARDS["icebreaker"]


def test_unknown_board_is_one_line_value_error():
    with pytest.raises(UnknownBoardError, match=r"^unknown board 'de10'; boards are icebreaker, "
                                         r"ulx3s-85f, arty-a7-35, pynq-z2$"):
        get_board("de10")
    assert issubclass(UnknownBoardError, ValueError)


@pytest.mark.parametrize("name, family, part, logic, ffs, dsps, brams, kbits, spram, mhz", [
    ("icebreaker", "ice40", "iCE40UP5K-SG48", 5280, 5280, 8, 30, 120, 1024, 12),
    ("ulx3s-85f", "ecp5", "LFE5U-85F-6BG381C", 83640, 83640, 156, 208, 3744, 0, 25),
    ("arty-a7-35", "xc7", "xc7a35ticsg324-1L", 20800, 41600, 90, 50, 1800, 0, 100),
    ("pynq-z2", "xc7", "xc7z020clg400-1", 53200, 106400, 220, 140, 5040, 0, 125),
])
def test_board_resources(name, family, part, logic, ffs, dsps, brams, kbits, spram, mhz):
    b = get_board(name)
    r = b.resources
    assert (b.family, b.part, b.clock_mhz) == (family, part, mhz)
    assert (r.logic, r.ffs, r.dsps, r.bram_blocks, r.bram_kbits, r.spram_kbits) == \
        (logic, ffs, dsps, brams, kbits, spram)
    platform = b.platform()
    assert platform.device == b.device and platform.package == b.package
    assert platform.default_clk_frequency == mhz * 1e6


def test_table_lists_every_board():
    lines = render_table().splitlines()
    assert lines[0].split()[:3] == ["board", "part", "family"]
    assert len(lines) == 2 + len(BOARDS)
    for b, line in zip(list_boards(), lines[2:], strict=True):
        assert line.startswith(b.name) and b.part in line and b.resources.dsp_unit in line
    assert "1024 kbit" in lines[2]      # the iCE40UP5K's SPRAM


def test_pynq_z2_platform_elaborates(tmp_path):
    from amaranth import Elaboratable, Module, Signal
    from amaranth.lib import io

    class Blinky(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            count = Signal(24)
            m.d.sync += count.eq(count + 1)
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            m.submodules.btn = btn = io.Buffer("i", platform.request("button", 3, dir="-"))
            uart = platform.request("uart", 0, dir={"tx": "-", "rx": "-"})
            m.submodules.tx = tx = io.Buffer("o", uart.tx)
            m.d.comb += [led.o.eq(count[-1] ^ btn.i), tx.o.eq(count[-2])]
            return m

    PynqZ2Platform().build(Blinky(), name="blinky", do_build=False).extract(tmp_path)
    xdc = (tmp_path / "blinky.xdc").read_text()
    assert "set_property LOC H16 [get_ports \"clk125_0__io\"]" in xdc
    assert "-period 8.0" in xdc                       # 125 MHz
    assert "set_property LOC R14 [get_ports \"led_0__io\"]" in xdc
    assert "set_property LOC L19 [get_ports \"button_3__io\"]" in xdc
    assert "set_property LOC Y19 [get_ports \"uart_0__tx__io\"]" in xdc   # Pmod JA pin 2
    assert "-part xc7z020clg400-1" in (tmp_path / "blinky.tcl").read_text()


def test_build_platform_is_constrained_at_the_config_clock():
    p = _platform(get_board("icebreaker"), 50.0)
    assert p.default_clk_frequency == 50e6
    assert get_board("icebreaker").platform().default_clk_frequency == 12e6   # untouched


# -- estimates and parsing (no tools) -------------------------------------------------------

def test_bram_blocks_pick_the_best_aspect():
    assert bram_blocks("ice40", 256, 16) == 1
    assert bram_blocks("ice40", 1024, 20) == 5          # 5 x (1024 x 4)
    assert bram_blocks("ecp5", 512, 36) == 1
    assert bram_blocks("ecp5", 4096, 128) == 30          # 15 x 2 x (2048 x 9)
    assert bram_blocks("xc7", 512, 72) == 1              # two RAMB18 = one RAMB36
    assert bram_blocks("xc7", 512, 36) == 0.5


def test_array_lower_bound_grows_with_the_array():
    small, big = array_ff_lower_bound(TINY), array_ff_lower_bound(PRESETS["16x16"])
    assert 0 < small < 200 and big > 5280 and big > 64 * small


NEXTPNR_LOG = ("Info: Device utilisation:\n"
               "Info: \t         ICESTORM_LC:    5472/   5280   103%\n"
               "Info: \t        ICESTORM_RAM:       6/     30    20%\n"
               "Info: \t        ICESTORM_DSP:       8/      8   100%\n")


def test_stat_and_nextpnr_parsing():
    board = get_board("icebreaker")
    stat = {"design": {"num_cells_by_type": {
        "SB_LUT4": 3618, "SB_DFFE": 1000, "SB_DFF": 400, "SB_CARRY": 1089, "SB_MAC16": 9,
        "SB_RAM40_4K": 6, "$scopeinfo": 3}}}
    synth = usage_from_stat(stat, board)
    assert (synth.logic, synth.ffs, synth.dsps, synth.bram) == (3618, 1400, 9, 6)
    assert synth.overflows(board) == [("dsps", 9, 8)]
    util = {"ICESTORM_LC": {"used": 5472, "available": 5280},
            "ICESTORM_RAM": {"used": 6, "available": 30},
            "ICESTORM_DSP": {"used": 8, "available": 8}}
    placed = usage_from_nextpnr(util, board, synth)
    assert (placed.logic, placed.ffs, placed.dsps, placed.bram) == (5472, 1400, 8, 6)
    assert placed.overflows(board) == [("logic", 5472, 5280)]


def test_log_utilisation(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text(NEXTPNR_LOG)
    assert _log_utilisation(log)["ICESTORM_LC"] == {"used": 5472, "available": 5280}


#: nextpnr-ecp5 log lines (utilisation after packing, both routers' progress), as 0.7 prints.
ECP5_LOG_HEAD = """Info: Device utilisation:
Info: \t          TRELLIS_COMB:   47201/  83640    56%
Info: \t            TRELLIS_FF:   30755/  83640    36%
Info: \t            MULT18X18D:     140/    156    89%
Info: \t                DP16KD:     122/    208    58%
Info: Placing
Info: Running simulated annealing placer for refinement.
"""
ROUTER2_LOG = """Info: Routing..
Info: Running router2...
Info:     iter=1 wires=880262 overused=58021 overuse=61337 archfail=NA
Info:     iter=9 wires=964926 overused=12550 overuse=12730 archfail=NA
"""
ROUTER1_LOG = """Info: Routing..
Info: Routing 38010 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:       1000 |      498        501 |  498   501 |     37645|       1.92       1.92|
Info:      46000 |     7850      36293 |  151   849 |      3261|       1.69      53.75|
"""


def test_nextpnr_timeout_says_where_it_stood(tmp_path):
    """A nextpnr run stopped at its time bound: one line with the stage it reached, how full
    the placed design is, and the config field to lower."""
    board, log = get_board("ulx3s-85f"), tmp_path / "nextpnr.log"
    synth = usage_from_stat({"design": {"num_cells_by_type": {"LUT4": 40000}}}, board)
    big = AccelConfig(rows=16, cols=16)
    for text, stage in (
            ("", "it had not started placing"),
            (ECP5_LOG_HEAD, "placement had not finished"),
            (ECP5_LOG_HEAD + ROUTER2_LOG,
             "routing had not converged (router2 iteration 9: 12,550 wires still overused)"),
            (ECP5_LOG_HEAD + ROUTER1_LOG,
             "routing had not converged (router1: 3,261 arcs left to route)")):
        log.write_text(text)
        assert _nextpnr_stage(log) == stage
        err = _nextpnr_timeout(big, board, synth, log, 3600)
        assert isinstance(err, BuildError) and err.param == "dw_taps"
        full = "; the placed design uses 47,201 of 83,640 LUT4 (56%)" if text else ""
        assert str(err) == (f"nextpnr-ecp5 did not finish in 3600 s: {stage}{full}; lower "
                            f"dw_taps (16; 3 keeps a 3x3 window), or allow more time "
                            f"(timeout); log: {log}")
    err = _nextpnr_timeout(AccelConfig(rows=16, cols=16, dw_taps=3), board, synth, log, 60)
    assert err.param == "rows" and "lower rows (16), or allow more time" in str(err)


def test_critical_path_summary():
    seg = lambda kind, delay, cell: {"type": kind, "delay": delay,  # noqa: E731
                                     "from": {"cell": cell}, "to": {"cell": cell}}
    report = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk", "path": [seg("logic", 9.0, "x")]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            seg("clk-to-q", 0.5, "accel.store.shift0_TRELLIS_FF_Q_1"),
            seg("routing", 1.0, "n"), seg("logic", 2.0, "n"), seg("routing", 0.5, "n"),
            seg("setup", 0.25, "accel.store.y_TRELLIS_FF_Q_15_DI$CCU2_COMB1")]}]}
    cp = _critical_path(report)
    assert (cp["from"], cp["to"], cp["unit"]) == ("accel.store.shift0", "accel.store.y",
                                                  "store")
    assert (cp["delay_ns"], cp["routing_ns"], cp["logic_ns"], cp["logic_levels"]) == \
        (4.25, 1.5, 2.75, 1)


def test_critical_path_sources(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text(
        "Info: Critical path report for clock 'clk' (posedge -> posedge):\n"
        "Info:                               /work/x/hw/store.py:150\n"           # placement
        "Info: Critical path report for cross-domain path '<async>' -> 'clk':\n"
        "Info: Critical path report for clock 'clk' (posedge -> posedge):\n"     # after routing
        "Info:                               /share/lattice/arith_map_ccu2c.v:74.7-80.4\n"
        "Info:                               /work/x/hw/store.py:163\n"
        "Info:                               /work/x/hw/store.py:163\n"
        "Info:                               /work/x/hw/linemem.py:60\n"
        "Info: Critical path report for cross-domain path 'clk' -> '<async>':\n"
        "Info:                               /work/x/hw/top.py:1\n")
    assert _critical_sources(log) == ["hw/store.py:163", "hw/linemem.py:60"]


def _rtlil_mul(a, b, const_b=False):
    b_sig = f"{b}'{'0' * (b - 1)}1" if const_b else "$3"
    return (f"  cell $mul $1\n    parameter \\A_SIGNED 1\n    parameter \\A_WIDTH {a}\n"
            f"    parameter \\B_WIDTH {b}\n    parameter \\Y_WIDTH {a + b}\n"
            f"    connect \\A $2\n    connect \\B {b_sig}\n    connect \\Y $4\n  end\n")


#: RTLIL shaped like Amaranth's: a store unit with a 33x17 multiplier per column, a compute
#: unit with a 32x10 one per column, a 4x4 array of 9x4 PE multipliers, and constant
#: multiplications (address arithmetic) that never take a DSP.
RTLIL = ("attribute \\top 1\nmodule \\t\nend\n"
         + "module \\t.accel.frontend\n" + _rtlil_mul(3, 8, const_b=True) * 9 + "end\n"
         + "module \\t.accel.store\n" + _rtlil_mul(33, 17) * 4 + "end\n"
         + "module \\t.accel.compute\n" + _rtlil_mul(32, 10) * 4 + "end\n"
         + "".join(f"module \\t.accel.compute.array.pe_{i}_{j}\n" + _rtlil_mul(9, 4) + "end\n"
                   for i in range(4) for j in range(4)))


def test_dsp_plan():
    assert _mul_cells(RTLIL)[:2] == [("t.accel.store", 33, 17)] * 2
    assert len(_mul_cells(RTLIL)) == 24
    ecp5, ice40 = get_board("ulx3s-85f"), get_board("icebreaker")
    # 4 x 2 (store) + 4 x 2 (compute) + 16 PEs = 32 MULT18X18D.
    assert _plan_dsps(ecp5, RTLIL, "auto").mode == "all"
    assert _plan_dsps(ecp5, RTLIL, "auto", 32).estimate == 32
    plan = _plan_dsps(ecp5, RTLIL, "auto", 24)
    assert (plan.mode, plan.pe_rows, plan.rows, plan.estimate) == ("partial", 2, 4, 24)
    assert plan.modules[:2] == ["t.accel.store", "t.accel.compute"]
    assert plan.modules[2:] == [f"t.accel.compute.array.pe_{i}_{j}" for i in (0, 1)
                                for j in range(4)]
    assert plan.describe() == "partial: units and 2 of 4 PE rows"
    assert plan.soft == [f"t.accel.compute.array.pe_{i}_{j}" for i in (2, 3) for j in range(4)]
    # DSPs left after the whole rows go to single PEs of the next row.
    plan = _plan_dsps(ecp5, RTLIL, "auto", 26)
    assert (plan.pe_rows, plan.pe_extra, plan.estimate) == (2, 2, 26)
    assert plan.modules[-2:] == ["t.accel.compute.array.pe_2_0", "t.accel.compute.array.pe_2_1"]
    assert plan.describe() == "partial: units and 2 of 4 PE rows + 2 PEs"
    assert len(plan.soft) == 6 and "t.accel.compute.array.pe_2_2" in plan.soft
    fewer = _drop_pe_rows(plan, 5, cols=4)       # the 2 single PEs, then one row
    assert (fewer.pe_rows, fewer.pe_extra, fewer.estimate, len(fewer.modules)) == (1, 0, 20, 6)
    assert len(fewer.soft) == 12 and "t.accel.compute.array.pe_1_0" in fewer.soft
    assert "t.accel.compute.array.pe_2_0" in fewer.soft
    # The compute unit's 8 do not fit next to the store's 8; the first PE row does, and
    # three PEs of the second.
    assert _plan_dsps(ecp5, RTLIL, "auto", 15).modules == \
        ["t.accel.store"] + [f"t.accel.compute.array.pe_0_{j}" for j in range(4)] \
        + [f"t.accel.compute.array.pe_1_{j}" for j in range(3)]
    assert _plan_dsps(ecp5, RTLIL, "off").mode == "none"
    assert _plan_dsps(ecp5, RTLIL, "on", 0).mode == "all"
    assert _plan_dsps(ice40, RTLIL, "auto").mode == "none"     # no partial mapping on iCE40


def test_dsp_choice_follows_the_plan():
    """What an ECP5 elaboration builds as MULT18X18D instances is what the plan gives DSPs."""
    ecp5, ice40 = get_board("ulx3s-85f"), get_board("icebreaker")
    cfg = AccelConfig(rows=4, cols=4)
    plan = _plan_dsps(ecp5, RTLIL, "auto", 26)
    assert _dsp_choice(ecp5, cfg, plan) == DspChoice(
        units=frozenset({"store", "compute"}),
        pes=frozenset({(i, j) for i in (0, 1) for j in range(4)} | {(2, 0), (2, 1)}))
    assert _dsp_choice(ecp5, cfg, _plan_dsps(ecp5, RTLIL, "auto", 15)).units == {"store"}
    every = _dsp_choice(ecp5, cfg, _plan_dsps(ecp5, RTLIL, "auto"))
    assert every.units == {"store", "compute"} and len(every.pes) == 16 and every.pe(3, 3)
    assert _dsp_choice(ecp5, cfg, _plan_dsps(ecp5, RTLIL, "off")) == DspChoice()
    assert _dsp_choice(ice40, cfg, _plan_dsps(ice40, RTLIL, "on")) == DspChoice()


# -- fit errors before any tool runs --------------------------------------------------------

def test_16x16_on_ice40_fails_before_synthesis(tmp_path):
    t = time.monotonic()
    with pytest.raises(BuildError) as info:
        build("icebreaker", "16x16", out_dir=tmp_path)
    assert time.monotonic() - t < 5
    err = info.value
    assert isinstance(err, ValueError) and "\n" not in str(err)
    assert str(err).startswith(f"config {PRESETS['16x16'].name} does not fit icebreaker "
                               f"(iCE40UP5K-SG48) before synthesis (analytic lower bound): ")
    assert err.param == "acc_depth"
    assert "lower acc_depth (1024): the accumulator memory (1024 x 512 bits, twice for its " \
           "two read ports) alone needs 256 EBR of 30" in str(err)
    report = err.report
    assert report.status == "does-not-fit" and report.resource_source == "estimate"
    assert report.resources["bram"]["used"] > 30
    assert "bram" in report.resource_table()
    saved = BuildReport.load(build_dir_for("icebreaker", PRESETS["16x16"], out_dir=tmp_path)
                             / "report.json")
    assert saved.message == str(err)
    # Cached: the same error again, from the report.
    with pytest.raises(BuildError) as again:
        build("icebreaker", "16x16", out_dir=tmp_path)
    assert str(again.value) == str(err) and again.value.report.cached


def test_16x16_array_on_ice40_names_rows(tmp_path):
    cfg = TINY.replace(rows=16, cols=16, weight_bits=4)
    t = time.monotonic()
    with pytest.raises(BuildError, match=r"logic needs at least \d+ of 5280 LC \(\d+%\); "
                                         r"lower rows \(16\): the 16x16 PE array alone needs "
                                         r"at least \d+ FFs$") as info:
        build("icebreaker", cfg, out_dir=tmp_path, top="array")
    assert time.monotonic() - t < 5
    assert info.value.param == "rows"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="^top must be one of accel, array, board, not 'x'$"):
        build("icebreaker", TINY, out_dir=tmp_path, top="x")
    with pytest.raises(ValueError, match="^dsp must be one of auto, on, off, not 'yes'$"):
        build("icebreaker", TINY, out_dir=tmp_path, dsp="yes")
    with pytest.raises(ValueError, match="^seed must be a non-negative integer, not -1$"):
        build("icebreaker", TINY, out_dir=tmp_path, seed=-1)
    with pytest.raises(ValueError, match="^router must be one of auto, router1, router2, "
                                         "not 'router3'$"):
        build("icebreaker", TINY, out_dir=tmp_path, router="router3")
    with pytest.raises(UnknownBoardError):
        build("nope", TINY, out_dir=tmp_path)


# -- real builds ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def yowasp():
    """Compile YoWASP's WebAssembly once (about a minute on a cold cache, then cached)."""
    t = time.monotonic()
    for tool, arg in (("yosys", "-V"), ("nextpnr-ice40", "--version"),
                      ("nextpnr-ecp5", "--version")):
        subprocess.run([tool_path(tool), arg], capture_output=True, check=True, timeout=600)
    return time.monotonic() - t


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("builds")


def _check_routed(report: BuildReport, board: str, bitstream: str, min_bytes: int):
    b = get_board(board)
    assert report.status == "routed" and report.resource_source == "nextpnr"
    assert report.board == board and report.part == b.part and report.config == TINY.name
    for name in ("logic", "ffs", "dsps", "bram"):
        r = report.resources[name]
        assert 0 <= r["used"] <= r["available"]
    assert report.resources["logic"]["used"] > 40 and report.resources["ffs"]["used"] > 90
    assert report.resources["dsps"]["used"] == TINY.pes      # one multiplier per PE
    assert report.target_mhz == TINY.clock_mhz and 20 < report.fmax_mhz < 500
    assert report.meets_timing == (report.fmax_mhz >= report.target_mhz)
    cp = report.critical_path
    assert cp["delay_ns"] == pytest.approx(1000 / report.fmax_mhz, rel=0.02)
    assert cp["logic_ns"] + cp["routing_ns"] == pytest.approx(cp["delay_ns"])
    path = build_dir_for(board, TINY, out_dir=report.build_dir.rsplit(f"/{board}/", 1)[0],
                         top="array")
    assert (path / bitstream).stat().st_size >= min_bytes
    assert BuildReport.load(path / "report.json").to_dict() == report.to_dict()


def test_ice40_place_and_route(yowasp, out):
    report = build("icebreaker", TINY, out_dir=out, top="array")
    _check_routed(report, "icebreaker", "lowbit_build.bin", 100_000)
    assert report.dsp_mapping == "all" and report.resources["logic"]["unit"] == "LC"
    assert not report.cached and report.seconds["total"] < 60


def test_ice40_cache_and_determinism(yowasp, out):
    first = build("icebreaker", TINY, out_dir=out, top="array")   # cached by the test above
    t = time.monotonic()
    again = build("icebreaker", TINY, out_dir=out, top="array")
    assert again.cached and time.monotonic() - t < 1.0
    assert again.to_dict() == first.to_dict()
    fresh = build("icebreaker", TINY, out_dir=out, top="array", force=True)
    assert not fresh.cached
    assert (fresh.resources, fresh.fmax_mhz, fresh.critical_path) == \
        (first.resources, first.fmax_mhz, first.critical_path)
    # Another seed is another build (not the cached one).
    other = build("icebreaker", TINY, out_dir=out, top="array", seed=2)
    assert not other.cached and other.seed == 2


def test_ecp5_place_and_route(yowasp, out):
    report = build("ulx3s-85f", TINY, out_dir=out, top="array")
    _check_routed(report, "ulx3s-85f", "lowbit_build.bit", 500_000)
    assert report.resources["dsps"]["unit"] == "MULT18X18D"
    assert report.seconds["total"] < 60
    assert report.router == "router1"   # auto: a small design
    # Each PE's product register is its MULT18X18D's output register (no input registers).
    cells = json.loads((Path(report.build_dir) / "lowbit_build.json").read_text())
    dsps = [c for mod in cells["modules"].values() for c in mod["cells"].values()
            if c["type"] == "MULT18X18D"]
    assert len(dsps) == TINY.pes
    for c in dsps:
        params = {k: _param_text(v) for k, v in c["parameters"].items()}
        assert (params["REG_OUTPUT_CLK"], params["REG_INPUTA_CLK"]) == ("CLK0", "NONE")
    # The wrapper's reset is on a global network: two DCCAs (clock and reset).
    log = (Path(report.build_dir) / "nextpnr.log").read_text()
    assert re.search(r"DCCA:\s+2/", log), "reset not on a global network"


def _param_text(value: str) -> str:
    """A yosys JSON string parameter (plain, or bits of 8-bit characters)."""
    if set(value) <= {"0", "1"} and len(value) % 8 == 0 and len(value) > 8:
        return bytes(int(value[k:k + 8], 2) for k in range(0, len(value), 8)).decode()
    return value.rstrip()


def test_ecp5_router2(yowasp, out):
    """router2 on request: its own cached build, routed, and the log names the router."""
    report = build("ulx3s-85f", TINY, out_dir=out / "router2", top="array", router="router2")
    _check_routed(report, "ulx3s-85f", "lowbit_build.bit", 500_000)
    assert report.router == "router2" and not report.cached
    log = (Path(report.build_dir) / "nextpnr.log").read_text()
    assert "router2" in log.lower()


def test_ecp5_partial_dsp_mapping(yowasp, out):
    """Two of the device's DSPs for a 2x2 array: the first PE row gets them, the second is
    built from LUTs."""
    report = build("ulx3s-85f", TINY, out_dir=out / "partial", top="array", dsp_budget=2)
    assert report.dsp_mapping == "partial: units and 1 of 2 PE rows"
    assert report.resources["dsps"]["used"] == 2 and report.status == "routed"
    full = build("ulx3s-85f", TINY, out_dir=out, top="array")
    assert report.resources["logic"]["used"] > full.resources["logic"]["used"]
    with pytest.raises(ValueError, match=r"^dsp_budget must be an integer from 0 to 156 "
                                         r"\(the ulx3s-85f's MULT18X18Ds\), not 157$"):
        build("ulx3s-85f", TINY, out_dir=out, dsp_budget=157)


@pytest.mark.parametrize("board", ["pynq-z2", "arty-a7-35"])
def test_xilinx_export(board, out):
    b = get_board(board)
    report = build(board, TINY, out_dir=out, estimate=False)
    assert report.status == "exported" and report.resource_source == "estimate"
    path = build_dir_for(board, TINY, out_dir=out)
    for key in ("vivado_tcl", "xdc", "verilog", "build_script"):
        assert (path / report.files[key]).is_file()
    tcl = (path / "lowbit_build.tcl").read_text()
    assert f"-part {b.part}" in tcl and "add_files lowbit_build.v" in tcl
    xdc = (path / "lowbit_build.xdc").read_text()
    assert "-period 10.0" in xdc                      # constrained at cfg.clock_mhz (100 MHz)
    assert "module lowbit_build" in (path / "lowbit_build.v").read_text()
    assert report.seconds["total"] < 30


def test_xilinx_estimate(yowasp, out):
    report = build("arty-a7-35", TINY, out_dir=out, top="array")
    assert report.status == "exported" and report.resource_source == "yosys"
    assert report.resources["dsps"] == {"used": TINY.pes, "available": 90, "unit": "DSP48E1"}
    assert report.resources["ffs"]["used"] > 0 and report.cells.get("DSP48E1") == TINY.pes
    assert report.fmax_mhz is None


def test_board_top_plan_uses_the_uart(tmp_path):
    """``top="board"``: lowbit_board (UART bridge + RAMs) on the board's UART pins."""
    pytest.importorskip("lowbit.hw.board_top")
    from lowbit.boards.wrapper import make_top

    b = get_board("icebreaker")
    elab, desc = make_top("board", PRESETS["tiny"], board_clock_hz=b.clock_mhz * 1e6)
    assert desc.startswith("lowbit_board: UART bridge at 115200 baud (104 clocks per bit)")
    b.platform().build(elab, name="board", do_build=False).extract(tmp_path)
    pcf = (tmp_path / "board.pcf").read_text()
    assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf
    assert "set_frequency clk12_0__io 12.0" in pcf     # the board top runs at 12 MHz


# -- CLI ------------------------------------------------------------------------------------

def test_cli_boards(capsys):
    assert main(["boards"]) == 0
    assert capsys.readouterr().out.strip() == render_table()
    assert main(["boards", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(BOARDS)
    assert rows[3]["platform"] == "lowbit.boards.pynq_z2.PynqZ2Platform"


def test_cli_build_errors_are_one_line(tmp_path, capsys):
    assert main(["build", "--board", "nope", "--config", "tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("lowbit: error: unknown board 'nope'; boards are icebreaker, ulx3s-85f, "
                   "arty-a7-35, pynq-z2\n")
    assert main(["build", "--board", "icebreaker", "--config", "16x16", "--out",
                 str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("lowbit: error: config 16x16-")
    assert "lower acc_depth (1024)" in captured.err
    assert "bram" in captured.out                      # the resource table, on stdout


def test_cli_build_reports_cached_build(yowasp, out, capsys):
    path = out / "tiny.json"
    path.write_text(TINY.to_json())
    build("icebreaker", TINY, out_dir=out, top="array", seed=2)    # the last build made
    assert main(["build", "--board", "icebreaker", "--config", str(path), "--out", str(out),
                 "--top", "array", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert f"{TINY.name} on icebreaker (iCE40UP5K-SG48), top array: routed (cached)" in text
    assert "Fmax" in text and "lowbit_build.bin" in text
    assert main(["build", "--board", "icebreaker", "--config", str(path), "--out", str(out),
                 "--top", "array", "--seed", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "routed"


def test_precheck_lets_small_configs_through():
    for board in list_boards():
        assert precheck_usage(TINY, board, "accel").overflows(board) == []


# -- the LUT multiplier map ----------------------------------------------------------------

@pytest.mark.parametrize("signed,a,b,y", [
    (1, 9, 4, 13),     # the W4 PE
    (1, 9, 8, 17),     # the W8 PE
    (1, 9, 2, 11),
    (1, 9, 3, 12),
    (0, 5, 3, 8),      # unsigned
    (1, 4, 9, 13),     # narrow operand on A
    (1, 9, 4, 32),     # sign-extended product
    (1, 9, 4, 8),      # truncated product
])
def test_softmul_is_exact(yowasp, tmp_path, signed, a, b, y):
    """boards/softmul.v computes what $mul computes: a SAT proof over all inputs."""
    sg = "signed " if signed else ""
    (tmp_path / "m.v").write_text(f"module m(input {sg}[{a - 1}:0] a, input {sg}[{b - 1}:0] b, "
                                  f"output [{y - 1}:0] y); assign y = a * b; endmodule\n")
    (tmp_path / SOFTMUL.name).write_bytes(SOFTMUL.read_bytes())
    (tmp_path / "eq.ys").write_text(
        "read_verilog m.v\nrename m gold\nread_verilog m.v\nrename m gate\nproc\n"
        f"techmap -map {SOFTMUL.name} gate/t:$mul\nselect -assert-none gate/t:$mul\n"
        "select -assert-min 1 gate/t:$alu\ntechmap\nopt -fast\n"
        "miter -equiv -flatten -make_assert gold gate miter\n"
        "sat -verify -prove-asserts -set-init-zero miter\n")
    proc = subprocess.run([tool_path("yosys"), "-q", "eq.ys"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
