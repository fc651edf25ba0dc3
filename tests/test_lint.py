"""Generated Verilog lints clean under ``verilator --lint-only -Wall`` (waivers in
``lowbit.hw.lint.LINT_WAIVERS``, each documented), and generation is deterministic."""

import pytest

from lowbit.config import PRESETS, AccelConfig
from lowbit.hw.lint import LINT_WAIVERS, lint_config
from lowbit.hw.top import generate_verilog


@pytest.mark.parametrize("cfg", [
    PRESETS["tiny"],
    AccelConfig(rows=8, cols=8, weight_bits=3, bus_bits=256, fetch_burst=2, act_depth=256,
                weight_tiles=4, acc_depth=64, param_depth=8, mem_bytes=1 << 20, dw_taps=5),
    AccelConfig(rows=2, cols=2, weight_bits=2, act_bits=4, acc_bits=16, bus_bits=64,
                act_depth=64, weight_tiles=2, acc_depth=16, param_depth=4, mem_bytes=1 << 16,
                dw_taps=0),
], ids=["tiny", "8x8-w3-b256-5taps", "2x2-w2-b64-notaps"])
def test_verilog_lints_clean(cfg):
    lint_config(cfg)


def test_every_waiver_is_documented():
    assert all(len(reason) > 30 for reason in LINT_WAIVERS.values())


def test_verilog_is_deterministic():
    cfg = PRESETS["tiny"]
    assert generate_verilog(cfg) == generate_verilog(cfg)
