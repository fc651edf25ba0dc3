"""The accelerator configuration: the single source of every hardware parameter.

An :class:`AccelConfig` is frozen, keyword-only and validated at construction. It holds only
primary parameters; every derived width or size is a read-only property, so the hardware
generator, the compiler, the simulators and the documentation all compute it the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = [
    "AccelConfig",
    "ConfigError",
    "PRESETS",
    "SUPPORTED_WEIGHT_BITS",
    "load_config",
    "preset",
]

#: Weight widths the processing element supports. The PE multiplies a signed ``weight_bits``
#: two's-complement weight; 1-bit (binary) and ternary encodings slot in here later.
SUPPORTED_WEIGHT_BITS = (2, 3, 4, 8)


class ConfigError(ValueError):
    """An invalid configuration value. The message names the field, the value and the rule."""


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _pow2_in(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not _is_pow2(value) \
            or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a power of two from {lo} to {hi}, not {value!r}")


def _int_in(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class AccelConfig:
    """A weight-stationary systolic accelerator.

    Primary parameters
    ------------------
    rows, cols:
        Processing-element array size. Powers of two from 2 to 64; ``cols`` must equal
        ``rows`` (the memory layout shares one block size between layers).
    weight_bits:
        Signed weight width, one of :data:`SUPPORTED_WEIGHT_BITS`.
    act_bits:
        Activation width, 2 to 8 (signed, or unsigned after a ReLU). Activations are stored
        one per byte; weights are packed at ``weight_bits``.
    acc_bits:
        Accumulator width, 16 to 32; sums wrap in two's complement at this width.
    act_depth:
        Activation scratchpad depth in lines of ``rows`` activations.
    weight_tiles:
        Weight scratchpad capacity in ``rows x cols`` weight tiles (at least 2: double
        buffering).
    acc_depth:
        Accumulator memory depth in lines of ``cols`` accumulators.
    param_depth:
        Post-processing parameter memory depth in lines of ``cols`` channels.
    bus_bits:
        AXI4 data width of the memory port, 32 to 256.
    dw_taps:
        Taps of each PE row's depthwise FIR filter: the last ``dw_taps`` columns' products
        are summed per row by a pipelined adder tree (``rows x (dw_taps - 1)`` adders).
        ``None`` (the default) means ``cols``; ``0`` builds no FIR mode (depthwise layers run
        as diagonal tiles, 1/``cols`` of the array); otherwise 2 to ``cols``. A 3x3
        depthwise window fits one COMPUTE from 15 taps (4-wide output tiles), one kernel
        row per COMPUTE from 3: fewer taps trade depthwise speed for area.
    queue_depth:
        Depth of each unit's instruction queue.
    max_burst:
        Longest AXI4 burst the DMA issues, in beats.
    fetch_burst:
        Instructions fetched per instruction-fetch burst.
    mem_bytes:
        Size of the external memory map the program may use.
    clock_mhz:
        Target clock frequency.
    """

    rows: int = 16
    cols: int = 16
    weight_bits: int = 4
    act_bits: int = 8
    acc_bits: int = 32
    act_depth: int = 4096
    weight_tiles: int = 32
    acc_depth: int = 1024
    param_depth: int = 64
    bus_bits: int = 128
    queue_depth: int = 8
    max_burst: int = 16
    fetch_burst: int = 8
    mem_bytes: int = 16 << 20
    clock_mhz: float = 100.0
    dw_taps: int | None = None

    def __post_init__(self):
        _pow2_in("rows", self.rows, 2, 64)
        _pow2_in("cols", self.cols, 2, 64)
        if self.cols != self.rows:
            raise ConfigError(
                f"cols must equal rows ({self.rows}): non-square arrays are not supported "
                f"yet, not {self.cols}")
        if self.weight_bits not in SUPPORTED_WEIGHT_BITS or isinstance(self.weight_bits, bool):
            allowed = ", ".join(str(b) for b in SUPPORTED_WEIGHT_BITS)
            raise ConfigError(f"weight_bits must be one of {allowed}, not {self.weight_bits!r}")
        _int_in("act_bits", self.act_bits, 2, 8)
        _int_in("acc_bits", self.acc_bits, 16, 32)
        _pow2_in("act_depth", self.act_depth, 16, 65536)
        _pow2_in("weight_tiles", self.weight_tiles, 2, 4096)
        _pow2_in("acc_depth", self.acc_depth, 16, 65536)
        _pow2_in("param_depth", self.param_depth, 4, 65536)
        _pow2_in("bus_bits", self.bus_bits, 32, 256)
        _pow2_in("queue_depth", self.queue_depth, 2, 64)
        _int_in("max_burst", self.max_burst, 1, 256)
        _pow2_in("fetch_burst", self.fetch_burst, 1, 64)
        _pow2_in("mem_bytes", self.mem_bytes, 1 << 16, 1 << 31)
        if isinstance(self.clock_mhz, bool) or not isinstance(self.clock_mhz, (int, float)) \
                or not 1.0 <= self.clock_mhz <= 1000.0:
            raise ConfigError(f"clock_mhz must be a number from 1 to 1000, not {self.clock_mhz!r}")
        object.__setattr__(self, "clock_mhz", float(self.clock_mhz))
        if self.dw_taps is not None and (
                not isinstance(self.dw_taps, int) or isinstance(self.dw_taps, bool)
                or not (self.dw_taps == 0 or 2 <= self.dw_taps <= self.cols)):
            raise ConfigError(f"dw_taps must be 0 (no depthwise FIR mode) or an integer from 2 "
                              f"to cols ({self.cols}), not {self.dw_taps!r}")
        if self.dw_taps == self.cols:
            object.__setattr__(self, "dw_taps", None)     # the default: one name per design
        if self.act_line_bits < self.bus_bits and self.act_depth * self.act_line_bits \
                < self.bus_bits:
            raise ConfigError(f"act_depth must hold at least one bus beat, not {self.act_depth}")

    # -- derived values -------------------------------------------------------------------

    @property
    def beat_bytes(self) -> int:
        """Bytes per AXI beat."""
        return self.bus_bits // 8

    @property
    def fir_taps(self) -> int:
        """Taps of the depthwise FIR mode (:attr:`dw_taps`, ``cols`` when unset; 0: none)."""
        return self.cols if self.dw_taps is None else self.dw_taps

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def act_line_bits(self) -> int:
        """One activation scratchpad line: ``rows`` activations of 8 bits."""
        return self.rows * 8

    @property
    def out_line_bits(self) -> int:
        """One stored output line: ``cols`` activations of 8 bits."""
        return self.cols * 8

    @property
    def param_line_bits(self) -> int:
        """One parameter line: ``cols`` channels of 64 bits (bias, multiplier, shift)."""
        return self.cols * 64

    @property
    def weight_tile_bits(self) -> int:
        """A packed ``rows x cols`` weight tile, before padding to whole beats."""
        return self.rows * self.cols * self.weight_bits

    @property
    def weight_tile_beats(self) -> int:
        """Bus beats (= weight scratchpad words) one packed weight tile occupies."""
        return -(-self.weight_tile_bits // self.bus_bits)

    @property
    def weight_words(self) -> int:
        """Weight scratchpad depth in bus-wide words."""
        return self.weight_tiles * self.weight_tile_beats

    @property
    def lines_per_beat(self) -> int:
        """Activation lines per bus beat (1 when a line is a beat or wider)."""
        return max(1, self.bus_bits // self.act_line_bits)

    @property
    def acc_value_bits(self) -> int:
        return self.acc_bits

    @property
    def addr_bits(self) -> int:
        """Byte-address width of the memory port."""
        return int(math.log2(self.mem_bytes))

    @property
    def period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def name(self) -> str:
        """Short canonical name: readable prefix plus a hash of every field."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:6]
        return (f"{self.rows}x{self.cols}-w{self.weight_bits}a{self.act_bits}"
                f"-b{self.bus_bits}-{digest}")

    # -- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every field, except optional ones left unset (``None``: TOML has no null, and a
        config that does not set them keeps its name)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_toml(self) -> str:
        lines = ["[accelerator]"]
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {value!r}" if isinstance(value, float) else f"{key} = {value}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> AccelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a table of fields, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r}; known fields are "
                              f"{', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> AccelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_toml(cls, text: str) -> AccelConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config is not valid TOML: {exc}") from None
        return cls.from_dict(data.get("accelerator", data))

    def replace(self, **changes) -> AccelConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, AccelConfig] = {
    # Fast tests: a 4x4 array on a 32-bit bus with small memories.
    "tiny": AccelConfig(rows=4, cols=4, weight_bits=4, act_bits=8, act_depth=512,
                        weight_tiles=8, acc_depth=256, param_depth=16, bus_bits=32,
                        queue_depth=4, max_burst=16, fetch_burst=4, mem_bytes=1 << 20),
    "8x8": AccelConfig(rows=8, cols=8, weight_bits=8, act_bits=8, act_depth=4096,
                       weight_tiles=32, acc_depth=1024, param_depth=64, bus_bits=64),
    "16x16": AccelConfig(rows=16, cols=16, weight_bits=8, act_bits=8, act_depth=4096,
                         weight_tiles=32, acc_depth=1024, param_depth=64, bus_bits=128),
    "default": AccelConfig(),
}


def preset(name: str) -> AccelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets are "
                          f"{', '.join(sorted(PRESETS))}") from None


def load_config(spec: str | Path | AccelConfig | None) -> AccelConfig:
    """A config from a preset name, a ``.json``/``.toml`` file, or a config (returned as is)."""
    if spec is None:
        return PRESETS["default"]
    if isinstance(spec, AccelConfig):
        return spec
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if path.suffix in (".json", ".toml"):
        if not path.is_file():
            raise ConfigError(f"config file {text!r} does not exist")
        body = path.read_text()
        return AccelConfig.from_json(body) if path.suffix == ".json" \
            else AccelConfig.from_toml(body)
    raise ConfigError(f"config must be a preset ({', '.join(sorted(PRESETS))}) or a .json/.toml "
                      f"file, not {text!r}")
