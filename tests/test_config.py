"""AccelConfig: validation messages, serialisation round trips, canonical names, presets."""

import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from lowbit.config import (
    PRESETS,
    SUPPORTED_WEIGHT_BITS,
    AccelConfig,
    ConfigError,
    load_config,
    preset,
)

FIELD_NAMES = [f.name for f in fields(AccelConfig)]

# (field, invalid value, the allowed range as the message states it)
POW2 = "must be a power of two from {} to {}"
INT = "must be an integer from {} to {}"
INVALID = [
    ("rows", 3, POW2.format(2, 64)),
    ("rows", 1, POW2.format(2, 64)),
    ("rows", 128, POW2.format(2, 64)),
    ("rows", "4", POW2.format(2, 64)),
    ("rows", True, POW2.format(2, 64)),
    ("cols", 6, POW2.format(2, 64)),
    ("weight_bits", 5, "must be one of 2, 3, 4, 8"),
    ("weight_bits", 1, "must be one of 2, 3, 4, 8"),
    ("weight_bits", 16, "must be one of 2, 3, 4, 8"),
    ("act_bits", 1, INT.format(2, 8)),
    ("act_bits", 9, INT.format(2, 8)),
    ("act_bits", 4.0, INT.format(2, 8)),
    ("acc_bits", 15, INT.format(16, 32)),
    ("acc_bits", 33, INT.format(16, 32)),
    ("act_depth", 8, POW2.format(16, 65536)),
    ("act_depth", 100, POW2.format(16, 65536)),
    ("act_depth", 1 << 17, POW2.format(16, 65536)),
    ("weight_tiles", 1, POW2.format(2, 4096)),
    ("weight_tiles", 3, POW2.format(2, 4096)),
    ("acc_depth", 8, POW2.format(16, 65536)),
    ("acc_depth", 1000, POW2.format(16, 65536)),
    ("param_depth", 2, POW2.format(4, 65536)),
    ("bus_bits", 16, POW2.format(32, 256)),
    ("bus_bits", 48, POW2.format(32, 256)),
    ("bus_bits", 512, POW2.format(32, 256)),
    ("queue_depth", 1, POW2.format(2, 64)),
    ("queue_depth", 128, POW2.format(2, 64)),
    ("max_burst", 0, INT.format(1, 256)),
    ("max_burst", 257, INT.format(1, 256)),
    ("fetch_burst", 0, POW2.format(1, 64)),
    ("fetch_burst", 3, POW2.format(1, 64)),
    ("mem_bytes", 1000, POW2.format(1 << 16, 1 << 31)),
    ("mem_bytes", 1 << 32, POW2.format(1 << 16, 1 << 31)),
    ("clock_mhz", 0.5, "must be a number from 1 to 1000"),
    ("clock_mhz", 2000, "must be a number from 1 to 1000"),
    ("clock_mhz", "fast", "must be a number from 1 to 1000"),
    ("clock_mhz", True, "must be a number from 1 to 1000"),
    ("dw_taps", 1, "must be 0 (no depthwise FIR mode) or an integer from 2 to cols (16)"),
    ("dw_taps", 17, "must be 0 (no depthwise FIR mode) or an integer from 2 to cols (16)"),
    ("dw_taps", -1, "must be 0 (no depthwise FIR mode) or an integer from 2 to cols (16)"),
    ("dw_taps", 3.0, "must be 0 (no depthwise FIR mode) or an integer from 2 to cols (16)"),
]


def test_dw_taps_defaults_to_cols_and_keeps_names():
    """dw_taps unset means cols; setting it to cols is the same config (same name); any
    other value gets its own name and survives TOML and JSON."""
    assert AccelConfig().fir_taps == 16 and AccelConfig(dw_taps=16) == AccelConfig()
    assert AccelConfig(dw_taps=16).name == AccelConfig().name
    assert "dw_taps" not in AccelConfig().to_dict()
    for taps in (0, 3, 9):
        cfg = AccelConfig(dw_taps=taps)
        assert cfg.fir_taps == taps and cfg.name != AccelConfig().name
        assert AccelConfig.from_toml(cfg.to_toml()) == cfg
        assert AccelConfig.from_json(cfg.to_json()) == cfg


def test_every_field_has_invalid_cases():
    assert {f for f, _, _ in INVALID} == set(FIELD_NAMES)


@pytest.mark.parametrize(("name", "value", "allowed"), INVALID,
                         ids=[f"{n}={v!r}" for n, v, _ in INVALID])
def test_invalid_value_names_field_value_and_range(name, value, allowed):
    with pytest.raises(ConfigError) as info:
        AccelConfig(**{name: value})
    msg = str(info.value)
    assert msg.startswith(f"{name} ")
    assert allowed in msg
    assert msg.endswith(f"not {value!r}")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(rows=3, cols=3), "rows must be a power of two from 2 to 64, not 3"),
    (dict(weight_bits=5), "weight_bits must be one of 2, 3, 4, 8, not 5"),
    (dict(act_bits=9), "act_bits must be an integer from 2 to 8, not 9"),
    (dict(bus_bits=512), "bus_bits must be a power of two from 32 to 256, not 512"),
    (dict(clock_mhz=0), "clock_mhz must be a number from 1 to 1000, not 0"),
    (dict(rows=16, cols=8),
     "cols must equal rows (16): non-square arrays are not supported yet, not 8"),
])
def test_pinned_messages(kwargs, message):
    with pytest.raises(ConfigError) as info:
        AccelConfig(**kwargs)
    assert str(info.value) == message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        AccelConfig(16, 16)  # positional arguments are refused
    cfg = AccelConfig()
    with pytest.raises(AttributeError):
        cfg.rows = 8


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError) as info:
        AccelConfig.from_dict({"rows": 4, "cols": 4, "colums": 4})
    assert str(info.value).startswith("unknown config field 'colums'; known fields are ")
    with pytest.raises(ConfigError, match="must be a table of fields, not list"):
        AccelConfig.from_dict([1, 2])


def test_bad_json_and_toml_text():
    with pytest.raises(ConfigError, match="config is not valid JSON"):
        AccelConfig.from_json("{rows: 4")
    with pytest.raises(ConfigError, match="config is not valid TOML"):
        AccelConfig.from_toml("[accelerator\nrows = 4")
    with pytest.raises(ConfigError, match="rows must be a power of two"):
        AccelConfig.from_toml("[accelerator]\nrows = 5\ncols = 5\n")


# -- round trips ----------------------------------------------------------------------------

# A valid value different from the default for every field (rows/cols change together).
OTHER = {
    "rows": dict(rows=8, cols=8), "cols": dict(rows=4, cols=4),
    "weight_bits": dict(weight_bits=2), "act_bits": dict(act_bits=4),
    "acc_bits": dict(acc_bits=24), "act_depth": dict(act_depth=2048),
    "weight_tiles": dict(weight_tiles=16), "acc_depth": dict(acc_depth=512),
    "param_depth": dict(param_depth=32), "bus_bits": dict(bus_bits=64),
    "queue_depth": dict(queue_depth=4), "max_burst": dict(max_burst=8),
    "fetch_burst": dict(fetch_burst=4), "mem_bytes": dict(mem_bytes=1 << 20),
    "clock_mhz": dict(clock_mhz=125.5), "dw_taps": dict(dw_taps=5),
}

SAMPLES = list(PRESETS.values()) + [AccelConfig(**kw) for kw in OTHER.values()] + [
    AccelConfig(rows=2, cols=2, weight_bits=3, act_bits=2, acc_bits=16, act_depth=16,
                weight_tiles=2, acc_depth=16, param_depth=4, bus_bits=32, queue_depth=2,
                max_burst=1, fetch_burst=1, mem_bytes=1 << 16, clock_mhz=1),
    AccelConfig(rows=64, cols=64, weight_bits=8, bus_bits=256, clock_mhz=1000.0,
                mem_bytes=1 << 31, max_burst=256),
]


def test_other_covers_every_field():
    assert set(OTHER) == set(FIELD_NAMES)


@pytest.mark.parametrize("cfg", SAMPLES, ids=lambda c: c.name)
def test_json_round_trip(cfg):
    text = cfg.to_json()
    assert json.loads(text) == cfg.to_dict()
    back = AccelConfig.from_json(text)
    assert back == cfg and back.name == cfg.name and back.to_json() == text


@pytest.mark.parametrize("cfg", SAMPLES, ids=lambda c: c.name)
def test_toml_round_trip(cfg):
    text = cfg.to_toml()
    assert text.startswith("[accelerator]\n")
    back = AccelConfig.from_toml(text)
    assert back == cfg and back.name == cfg.name and back.to_toml() == text


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_load_config_from_files(tmp_path, suffix):
    cfg = AccelConfig(rows=8, cols=8, weight_bits=2, bus_bits=64)
    path = tmp_path / f"cfg{suffix}"
    path.write_text(cfg.to_json() if suffix == ".json" else cfg.to_toml())
    assert load_config(path) == cfg
    assert load_config(str(path)) == cfg


def test_toml_without_table_header():
    assert AccelConfig.from_toml("rows = 4\ncols = 4\n") == AccelConfig(rows=4, cols=4)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*missing\.json' does not exist"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError) as info:
        load_config("huge")
    assert str(info.value) == ("config must be a preset (16x16, 8x8, default, tiny) or a "
                               ".json/.toml file, not 'huge'")
    assert load_config(None) == PRESETS["default"]
    cfg = AccelConfig(rows=4, cols=4)
    assert load_config(cfg) is cfg


# -- names ----------------------------------------------------------------------------------

def test_name_is_readable_and_file_safe():
    for cfg in SAMPLES:
        assert cfg.name.startswith(f"{cfg.rows}x{cfg.cols}-w{cfg.weight_bits}a{cfg.act_bits}-")
        assert all(c.isalnum() or c in "-x" for c in cfg.name)


def test_name_is_pinned():
    # Names key on-disk caches (RTL builds); a change must be deliberate.
    assert PRESETS["tiny"].name == "4x4-w4a8-b32-ad4b7d"
    assert AccelConfig().name == "16x16-w4a8-b128-125a95"


def test_name_is_stable_across_processes():
    code = ("from lowbit.config import PRESETS; "
            "print(' '.join(c.name for c in PRESETS.values()))")
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out == [c.name for c in PRESETS.values()]


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_name_differs_when_a_field_differs(field):
    base = AccelConfig()
    other = base.replace(**OTHER[field])
    assert other != base
    assert other.name != base.name


def test_names_of_samples_are_distinct():
    distinct = {c.to_json(): c.name for c in SAMPLES}
    assert len(set(distinct.values())) == len(distinct)


# -- presets --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    cfg = preset(name)
    assert cfg is PRESETS[name] and load_config(name) is cfg
    assert AccelConfig(**cfg.to_dict()) == cfg
    assert cfg.weight_bits in SUPPORTED_WEIGHT_BITS
    assert cfg.weight_tile_beats * cfg.bus_bits >= cfg.weight_tile_bits
    assert cfg.weight_words == cfg.weight_tiles * cfg.weight_tile_beats
    assert cfg.pes == cfg.rows * cfg.cols
    assert 2 ** cfg.addr_bits == cfg.mem_bytes


def test_required_presets_exist():
    assert {"tiny", "8x8", "16x16", "default"} <= set(PRESETS)
    assert (PRESETS["8x8"].rows, PRESETS["16x16"].rows) == (8, 16)


def test_unknown_preset():
    with pytest.raises(ConfigError) as info:
        preset("nope")
    assert str(info.value) == "unknown preset 'nope'; presets are 16x16, 8x8, default, tiny"


def test_derived_values():
    cfg = AccelConfig(rows=4, cols=4, weight_bits=3, bus_bits=32, clock_mhz=250)
    assert cfg.beat_bytes == 4
    assert cfg.weight_tile_bits == 48 and cfg.weight_tile_beats == 2
    assert cfg.lines_per_beat == 1 and cfg.act_line_bits == 32
    assert cfg.period_ns == 4.0 and isinstance(cfg.clock_mhz, float)
    wide = AccelConfig(rows=4, cols=4, bus_bits=128)
    assert wide.lines_per_beat == 4
