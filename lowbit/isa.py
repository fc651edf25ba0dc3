"""The lowbit instruction set, defined once.

Every instruction is :data:`INSTR_BITS` wide. Formats are tables of ``(field, width)`` in
order from bit 0 upwards; the compiler's encoder, the hardware decoder (``lowbit.hw``), both
simulators and ``docs/isa.md`` are all derived from :data:`FORMATS`, :class:`Opcode` and
:data:`CSRS` below. Nothing else in the code base restates an opcode, a field position or a
register offset.

Semantics in brief (``docs/isa.md`` has the full text):

* Three units execute concurrently, each from its own in-order queue: **load** (LOAD),
  **compute** (COMPUTE) and **store** (STORE). SYNC is a no-op on a chosen unit that only
  moves dependency tokens; END finishes the program once every unit is idle.
* Dependency tokens flow between neighbours of the chain load <-> compute <-> store, in four
  counting semaphores: L->C, C->L, C->S and S->C. An instruction with ``pop_prev`` /
  ``pop_next`` waits until the token from its previous / next unit is available and takes it
  when it starts; ``push_prev`` / ``push_next`` give a token when it completes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CSRS",
    "FORMATS",
    "HISTORY",
    "HEADER",
    "INSTR_BITS",
    "INSTR_BYTES",
    "ISA_VERSION",
    "STORE_MAX_LINES",
    "TOKEN_COUNTER_BITS",
    "Instr",
    "IsaError",
    "LoadTarget",
    "Opcode",
    "Unit",
    "csr_offset",
    "decode",
    "encode",
    "field_offsets",
    "render_markdown",
]

ISA_VERSION = 3
#: What each version changed (rendered into ``docs/isa.md``).
HISTORY: tuple[tuple[int, str], ...] = (
    (1, "LOAD (2-D), COMPUTE, STORE, SYNC, END; four dependency-token counters"),
    (2, "COMPUTE `mul_m1` and `acc_max` (residual adds, max pooling); later within v2, "
        "COMPUTE `depthwise` (3-tap row mode) and `reduce`"),
    (3, "COMPUTE `dw_reach` (depthwise row mode over up to `cols` taps); STORE `reps_m1`, "
        "`acc_pitch`, `dram_pitch` (2-D STORE); parameter byte 7 is the output zero point; "
        "later within v3 (same encoding), `dw_reach` is bounded by the config's `dw_taps`"),
)
#: Width of each dependency-token counter; at most 2**bits - 1 tokens may be outstanding.
TOKEN_COUNTER_BITS = 8
INSTR_BITS = 128
#: Lines one STORE may write in all (``reps * rows``): bounds the store unit's counters.
STORE_MAX_LINES = (1 << 16) - 1
INSTR_BYTES = INSTR_BITS // 8


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""


class Opcode(enum.IntEnum):
    END = 0
    LOAD = 1
    COMPUTE = 2
    STORE = 3
    SYNC = 4


class Unit(enum.IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class LoadTarget(enum.IntEnum):
    ACT = 0      #: activation scratchpad
    WEIGHT = 1   #: weight scratchpad
    PARAM = 2    #: post-processing parameter memory


#: Fields every instruction starts with.
HEADER: tuple[tuple[str, int], ...] = (
    ("opcode", 4),
    ("pop_prev", 1),
    ("pop_next", 1),
    ("push_prev", 1),
    ("push_next", 1),
)

#: Per-opcode fields after the header, from low bits to high bits.
FORMATS: dict[Opcode, tuple[tuple[str, int], ...]] = {
    Opcode.END: (),
    Opcode.LOAD: (
        ("target", 2),       # LoadTarget
        ("sp_addr", 20),     # destination, in bus beats of the target memory
        ("rows", 16),        # 2-D transfer: number of rows (>= 1)
        ("row_beats", 16),   # beats per row (>= 1)
        ("dram_addr", 32),   # byte address of row 0, beat aligned
        ("stride", 32),      # bytes from one row to the next, beat aligned
    ),
    Opcode.COMPUTE: (
        ("act_addr", 16),      # first activation line
        ("weight_addr", 16),   # first weight scratchpad word of the tile
        ("acc_addr", 16),      # first accumulator line
        ("rows", 16),          # activation vectors streamed (>= 1)
        ("accumulate", 1),     # 1: add to the accumulators, 0: overwrite them
        ("act_unsigned", 1),   # activations are unsigned (0..255) rather than signed
        ("mul_m1", 8),         # results are multiplied by mul_m1 + 1 (1..256) before use
        ("acc_max", 1),        # with accumulate: keep the maximum instead of the sum
        ("depthwise", 1),      # FIR mode: lane i sums its own channel over dw_reach + 1 lines
        ("reduce", 1),         # every row into acc_addr; rows after the first accumulate
        ("dw_reach", 6),       # depthwise: last line offset (0..dw_taps-1); 0 otherwise
    ),
    Opcode.STORE: (
        ("acc_addr", 16),      # first accumulator line of group 0
        ("rows", 16),          # lines per group (>= 1)
        ("param_addr", 16),    # parameter line holding the cols channels' parameters
        ("relu", 1),           # clamp below at zero
        ("out_bits", 4),       # output width, 2..8
        ("out_unsigned", 1),   # output range 0..2^bits-1 instead of signed
        ("dram_addr", 32),     # byte address of group 0, beat aligned
        ("reps_m1", 10),       # 2-D: reps_m1 + 1 groups of rows lines (1..1024)
        ("acc_pitch", 10),     # accumulator lines from one group to the next
        ("dram_pitch", 13),    # output lines (cols bytes) from one group to the next
    ),
    Opcode.SYNC: (
        ("unit", 2),           # Unit that executes the no-op
    ),
}

UNIT_OF: dict[Opcode, Unit] = {
    Opcode.LOAD: Unit.LOAD,
    Opcode.COMPUTE: Unit.COMPUTE,
    Opcode.STORE: Unit.STORE,
}

#: Control/status registers of the AXI4-Lite slave: (name, byte offset, access, meaning).
CSRS: tuple[tuple[str, int, str, str], ...] = (
    ("CTRL", 0x00, "w", "bit 0: start the program (ignored while busy)"),
    ("STATUS", 0x04, "r", "bit 0: busy, bit 1: done since the last start, "
                              "bit 2: stopped at an illegal instruction"),
    ("PROG_ADDR", 0x08, "rw", "byte address of the first instruction"),
    ("PROG_LEN", 0x0C, "rw", "number of instructions, END included"),
    ("CYCLES_LO", 0x10, "r", "cycles from start to done, low word"),
    ("CYCLES_HI", 0x14, "r", "cycles from start to done, high word"),
    ("INSTRS", 0x18, "r", "instructions dispatched since start"),
    ("ID", 0x1C, "r", "0x4C42 << 16 | ISA_VERSION"),
)
ID_VALUE = (0x4C42 << 16) | ISA_VERSION


def csr_offset(name: str) -> int:
    for reg, offset, _, _ in CSRS:
        if reg == name:
            return offset
    raise KeyError(name)


def field_offsets(opcode: Opcode) -> dict[str, tuple[int, int]]:
    """``{field: (lsb, width)}`` for one opcode, header included."""
    out, pos = {}, 0
    for name, width in HEADER + FORMATS[Opcode(opcode)]:
        out[name] = (pos, width)
        pos += width
    assert pos <= INSTR_BITS
    return out


_OFFSETS = {op: field_offsets(op) for op in Opcode}
_UNIT_VALUES = frozenset(int(u) for u in Unit)
#: Field names that are also Instr members: read them with ``Instr.get``.
_RESERVED_NAMES = frozenset({"opcode", "fields", "unit", "get", "as_dict"})


@dataclass(frozen=True)
class Instr:
    """One decoded instruction: an opcode and its fields (absent fields are zero)."""

    opcode: Opcode
    fields: tuple[tuple[str, int], ...]

    def __post_init__(self):
        # Fields become plain attributes (fast to read in the simulators); absent ones are 0.
        attrs = self.__dict__
        for name in _OFFSETS[self.opcode]:
            if name not in _RESERVED_NAMES:
                attrs[name] = 0
        for name, value in self.fields:
            if name not in _RESERVED_NAMES:
                attrs[name] = value

    @property
    def unit(self) -> Unit | None:
        if self.opcode == Opcode.SYNC:
            value = self.get("unit")
            return Unit(value) if value in _UNIT_VALUES else None
        return UNIT_OF.get(self.opcode)

    def get(self, name: str) -> int:
        for key, value in self.fields:
            if key == name:
                return value
        return 0

    def as_dict(self) -> dict:
        return {"op": self.opcode.name, **dict(self.fields)}

    def __repr__(self):
        body = " ".join(f"{k}={v}" for k, v in self.fields if v)
        return f"{self.opcode.name}({body})"


_RANK = {op: {name: i for i, name in enumerate(offs)} for op, offs in _OFFSETS.items()}


def make(opcode: Opcode, **fields) -> Instr:
    """An instruction with checked field values (each must fit its width)."""
    if type(opcode) is not Opcode:
        opcode = Opcode(opcode)
    offsets = _OFFSETS[opcode]
    items = []
    for name, value in fields.items():
        if name == "opcode":
            continue
        where = offsets.get(name)
        if where is None:
            raise IsaError(f"{opcode.name} has no field {name!r}; its fields are "
                           f"{', '.join(n for n in offsets if n != 'opcode')}")
        value = int(value)
        if not 0 <= value < (1 << where[1]):
            raise IsaError(f"{opcode.name}.{name} must be from 0 to {(1 << where[1]) - 1}, "
                           f"not {value}")
        items.append((name, value))
    rank = _RANK[opcode]
    items.sort(key=lambda kv: rank[kv[0]])
    return Instr(opcode, tuple(items))


def encode(instr: Instr) -> bytes:
    word = 0
    offsets = _OFFSETS[instr.opcode]
    word |= int(instr.opcode)
    for name, value in instr.fields:
        lsb, width = offsets[name]
        word |= (value & ((1 << width) - 1)) << lsb
    return word.to_bytes(INSTR_BYTES, "little")


def decode(data: bytes, *, index: int | None = None) -> Instr:
    """Decode one instruction; unknown opcodes and set reserved bits are errors."""
    where = f"instruction {index}" if index is not None else "instruction"
    if len(data) != INSTR_BYTES:
        raise IsaError(f"{where} must be {INSTR_BYTES} bytes, not {len(data)}")
    word = int.from_bytes(data, "little")
    code = word & 0xF
    try:
        opcode = Opcode(code)
    except ValueError:
        raise IsaError(f"{where} has unknown opcode {code}; opcodes are "
                       f"{', '.join(f'{o.name}={o.value}' for o in Opcode)}") from None
    offsets = _OFFSETS[opcode]
    used = 0
    items = []
    for name, (lsb, width) in offsets.items():
        used |= ((1 << width) - 1) << lsb
        if name != "opcode":
            items.append((name, (word >> lsb) & ((1 << width) - 1)))
    if word & ~used:
        raise IsaError(f"{where} ({opcode.name}) has reserved bits set: {word & ~used:#x}")
    return Instr(opcode, tuple(items))


def render_markdown() -> str:
    """The ISA reference page, ``docs/isa.md``."""
    out = [
        "<!-- Generated by `lowbit isa-doc` from lowbit/isa.py. Do not edit by hand. -->",
        f"# lowbit ISA, version {ISA_VERSION}",
        "",
        f"Instructions are {INSTR_BITS} bits, stored little-endian, {INSTR_BYTES} bytes each.",
        "Fields are listed from bit 0 upwards; bits not listed are reserved and must be 0.",
        "",
        "## Opcodes",
        "",
        "| opcode | value | unit |",
        "|---|---|---|",
    ]
    for op in Opcode:
        unit = UNIT_OF.get(op)
        where = unit.name.lower() if unit else ("given by `unit`" if op == Opcode.SYNC
                                                else "dispatcher")
        out.append(f"| {op.name} | {op.value} | {where} |")
    out += ["", "## Versions", ""]
    out += [f"- v{v}: {text}" for v, text in HISTORY]
    out += ["", "## Formats", ""]
    for op in Opcode:
        out += [f"### {op.name}", "", "| bits | field | width |", "|---|---|---|"]
        for name, (lsb, width) in _OFFSETS[op].items():
            bits = f"{lsb}" if width == 1 else f"{lsb + width - 1}:{lsb}"
            out.append(f"| {bits} | `{name}` | {width} |")
        out.append("")
    out += ["## Enumerations", ""]
    for enum_cls in (Unit, LoadTarget):
        values = ", ".join(f"{m.name}={m.value}" for m in enum_cls)
        out.append(f"- `{enum_cls.__name__}`: {values}")
    out += ["", "## Control and status registers (AXI4-Lite, 32-bit)", "",
            "| offset | name | access | meaning |", "|---|---|---|---|"]
    for name, offset, access, meaning in CSRS:
        out.append(f"| {offset:#04x} | {name} | {access} | {meaning} |")
    out += ["", f"`ID` reads `{ID_VALUE:#010x}`.", ""]
    out += [_SEMANTICS.replace("{bits}", str(TOKEN_COUNTER_BITS))
            .replace("{most}", str((1 << TOKEN_COUNTER_BITS) - 1))
            .replace("{store_lines}", str(STORE_MAX_LINES))]
    return "\n".join(out)


_SEMANTICS = """## Semantics

### Units, queues and tokens
The dispatcher fetches instructions in order and hands each to its unit's queue (one per
cycle; it waits while that queue is full). Load, compute and store each execute their own
queue in order and run concurrently. Four token counters connect neighbouring units:
L->C, C->L, C->S and S->C. An instruction with `pop_prev` (`pop_next`) waits until the
counter from the previous (next) unit in the chain load -> compute -> store is non-zero and
decrements it when it starts; `push_prev` (`push_next`) increments the counter towards the
previous (next) unit when it completes. Each unit completes its instructions in order, SYNC
included. The compiler pairs every pop with an earlier push; a counter is `{bits}` bits wide,
so at most `{most}` tokens may be outstanding on one counter.
`END` waits until every earlier instruction has completed, then raises `done`.

### LOAD
For `r` in `0 .. rows-1`, copies `row_beats` bus beats from byte address
`dram_addr + r * stride` to beats `sp_addr + r * row_beats ...` of the target memory.
Rows are split into AXI4 INCR bursts of at most `max_burst` beats that never cross a 4 KiB
boundary. Completes when its last beat is written.

### COMPUTE
Shifts the weight tile at weight words `weight_addr ...` into the array's shadow weights,
then streams activation lines `act_addr .. act_addr+rows-1` through the array. Line `m`
gives `r[j] = (mul_m1 + 1) * sum_i act[m][i] * w[i][j]` and `acc[acc_addr+m][j]` becomes
`r[j]` (accumulate = 0), `acc + r[j]` (accumulate = 1) or `max(acc, r[j])` (accumulate = 1,
acc_max = 1), all wrapping at `acc_bits`. The scale serves residual adds (identity tiles,
one integer weight per input), `acc_max` max pooling.
With `depthwise = 1` (FIR mode, for depthwise convolutions) it streams `rows + dw_reach`
lines and line `m < rows` gives
`r[i] = (mul_m1 + 1) * sum_{o=0..dw_reach} act[m+o][i] * w[i][cols-1-o]`: lane `i` is a
`dw_reach + 1`-tap filter over the line stream of channel `i`. `dw_reach` is at most
`dw_taps - 1` (the config's FIR taps, `cols` unless set; and 0 without `depthwise`); a
config with `dw_taps = 0` has no FIR mode and refuses `depthwise = 1`. The tile's entries
`w[i][cols-1-o]` with `o > dw_reach` must be zero, otherwise the results are undefined.
Completes when the last result is written to the accumulator memory.

### STORE
For each accumulator line, lane `j` with parameters `(bias, mult, shift, z_out)` of channel
`j` of parameter line `param_addr` (`z_out`, the output zero point, is the record's byte 7,
read as int8, or as uint8 if `out_unsigned`):
`x = (acc + bias) * mult`; `y = x` if `shift == 0`, else
`y = (x + 2^(shift-1) - (x < 0)) >> shift` (arithmetic shift): **round half away from zero**;
`y = max(y, 0)` if `relu`; then `q = y + z_out` clamped to `[-2^(out_bits-1),
2^(out_bits-1)-1]`, or `[0, 2^out_bits-1]` if `out_unsigned`. A line is written as `cols`
bytes (`line_bytes`).

A STORE is 2-D: it writes `reps = reps_m1 + 1` groups of `rows` lines. Group `g` (in
order) reads accumulator lines `acc_addr + g * acc_pitch + (0 .. rows-1)` and writes them
to consecutive bytes from `dram_addr + g * dram_pitch * line_bytes`; with `reps_m1 = 0`
the pitches are unused and the STORE writes `rows` lines from `dram_addr`. Each group's
`rows * line_bytes` bytes must be whole bus beats and its address beat aligned; all groups
together hold at most `{store_lines}` lines. Each group is split into AXI4 INCR bursts of at most
`max_burst` beats that never cross a 4 KiB boundary. Completes when every write response
has arrived.
"""
