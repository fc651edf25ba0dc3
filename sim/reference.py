"""The functional reference executor: a numpy interpreter of the lowbit ISA.

:func:`run_reference` executes a :class:`~lowbit.program.Program` instruction by instruction
in program order. That is the meaning of a program: the compiler's dependency tokens make
the concurrent hardware produce exactly the same memory contents, so the tokens themselves
are ignored here (``lowbit.compiler.verify_tokens`` checks them statically).

State
    * external memory: ``program.memory_image(inputs)`` (a ``bytearray``);
    * activation scratchpad: ``act_depth * rows`` bytes, line ``l`` = bytes
      ``[l * rows, (l + 1) * rows)``;
    * weight scratchpad: ``weight_words * beat_bytes`` bytes, the tile at word ``w`` starting
      at byte ``w * beat_bytes`` (decoded with :func:`lowbit.layout.unpack_weight_tile`);
    * parameter memory: ``param_depth * cols * 8`` bytes of 8-byte records
      (:func:`lowbit.layout.pack_params`);
    * accumulators: ``(acc_depth, cols)`` int64 values wrapped to ``acc_bits``.

A LOAD, the only writer of the scratchpads, copies whole bus beats: beat ``b`` of a memory is
bytes ``[b * beat_bytes, (b + 1) * beat_bytes)`` of its flat view.

Counters (the keys the cycle simulator reports too): ``instrs`` (every instruction, END
included), ``load_instrs`` / ``compute_instrs`` / ``store_instrs`` (instructions each unit
executed, SYNCs on that unit included), ``sync_instrs``, ``macs`` (``rows * R * C`` per
COMPUTE), ``dram_read_bytes`` (LOAD bytes) and ``dram_write_bytes`` (STORE bytes).
"""

from __future__ import annotations

import numpy as np

from lowbit import layout
from lowbit.checks import store_groups
from lowbit.executors import RunResult
from lowbit.isa import LoadTarget, Opcode, Unit
from lowbit.program import Program, ProgramError

__all__ = ["run_reference"]


def _inputs_dict(program: Program, inputs) -> dict:
    if isinstance(inputs, dict):
        return inputs
    if len(program.inputs) != 1:
        raise ProgramError(f"program has {len(program.inputs)} inputs; pass a dict")
    return {program.inputs[0].name: inputs}


def run_reference(program: Program, inputs: dict[str, np.ndarray] | np.ndarray) -> RunResult:
    """Execute ``program`` on ``inputs`` (by input name) and return its outputs and counters.

    ``cycles`` is ``None``: this executor has no notion of time.
    """
    cfg = program.config
    program.validate()
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    mem = program.memory_array(_inputs_dict(program, inputs))

    act = np.zeros(cfg.act_depth * R, dtype=np.uint8)
    wgt = np.zeros(cfg.weight_words * B, dtype=np.uint8)
    prm = np.zeros(cfg.param_depth * C * layout.PARAM_BYTES, dtype=np.uint8)
    # With 32-bit accumulators numpy's int32 assignment is exactly the two's-complement wrap.
    wide = cfg.acc_bits == 32
    acc = np.zeros((cfg.acc_depth, C), dtype=np.int32 if wide else np.int64)
    targets = {LoadTarget.ACT: act, LoadTarget.WEIGHT: wgt, LoadTarget.PARAM: prm}
    tile_bytes = cfg.weight_tile_beats * B
    tiles: dict[bytes, np.ndarray] = {}   # decoded weight tiles by their packed bytes
    line_bytes = C * layout.PARAM_BYTES

    counters = dict(instrs=0, load_instrs=0, compute_instrs=0, store_instrs=0, sync_instrs=0,
                    macs=0, dram_read_bytes=0, dram_write_bytes=0)
    unit_key = {Unit.LOAD: "load_instrs", Unit.COMPUTE: "compute_instrs",
                Unit.STORE: "store_instrs"}

    for ins in program.instrs:
        op = ins.opcode
        counters["instrs"] += 1
        if op == Opcode.END:
            break
        counters[unit_key[ins.unit]] += 1
        if op == Opcode.LOAD:
            dst = targets[LoadTarget(ins.target)]
            rows, row_bytes = ins.rows, ins.row_beats * B
            base, stride, sp = ins.dram_addr, ins.stride, ins.sp_addr * B
            if rows == 1 or stride == row_bytes:
                dst[sp:sp + rows * row_bytes] = mem[base:base + rows * row_bytes]
            else:
                src = (base + stride * np.arange(rows))[:, None] + np.arange(row_bytes)[None, :]
                dst[sp:sp + rows * row_bytes] = mem[src].reshape(-1)
            counters["dram_read_bytes"] += rows * row_bytes
        elif op == Opcode.COMPUTE:
            rows, a0, c0, w0 = ins.rows, ins.act_addr, ins.acc_addr, ins.weight_addr
            extra = ins.dw_reach * ins.depthwise
            lines = act[a0 * R:(a0 + rows + extra) * R].reshape(rows + extra, R)
            # float64 products are exact here (|a| < 2^8, |w| < 2^7, K <= 64) and use BLAS.
            a = lines.astype(np.float64) if ins.act_unsigned \
                else lines.view(np.int8).astype(np.float64)
            key = wgt[w0 * B:w0 * B + tile_bytes].tobytes()
            w = tiles.get(key)
            if w is None:
                w = tiles[key] = layout.unpack_weight_tile(cfg, key).astype(np.float64)
            if ins.depthwise:
                # FIR mode: lane i of result m sums lane i of lines m .. m + dw_reach
                # against row i's weights (column cols - 1 - o for line m + o)
                r = sum(a[o:o + rows] * w[:, C - 1 - o][None, :]
                        for o in range(ins.dw_reach + 1)).astype(np.int64)
            else:
                r = (a @ w).astype(np.int64)
            if ins.mul_m1:
                r = layout.wrap(r * (ins.mul_m1 + 1), cfg.acc_bits)
            if ins.reduce:
                # every row into line c0; the rows after the first accumulate (sum or max)
                r = layout.wrap(r, cfg.acc_bits)
                v = r.max(axis=0) if ins.acc_max else r.sum(axis=0)
                if ins.accumulate:
                    old = acc[c0].astype(np.int64)
                    v = np.maximum(v, old) if ins.acc_max else v + old
                acc[c0] = layout.wrap(v, cfg.acc_bits)
            else:
                if ins.accumulate:
                    old = acc[c0:c0 + rows]
                    if ins.acc_max:
                        r = np.maximum(layout.wrap(r, cfg.acc_bits), old)
                    else:
                        r += old
                acc[c0:c0 + rows] = r if wide else layout.wrap(r, cfg.acc_bits)
            counters["macs"] += rows * R * C
        elif op == Opcode.STORE:
            rows, groups = store_groups(cfg, ins)
            p = ins.param_addr
            rec = prm[p * line_bytes:(p + 1) * line_bytes].reshape(C, layout.PARAM_BYTES)
            bias = rec[:, 0:4].copy().view("<i4").reshape(C).astype(np.int64)
            mult = rec[:, 4:6].copy().view("<u2").reshape(C).astype(np.int64)
            shift = rec[:, 6].astype(np.int64)
            if len(groups) == 1:
                lines = acc[ins.acc_addr:ins.acc_addr + rows]
            else:
                lines = acc[(np.array([a for a, _ in groups])[:, None]
                             + np.arange(rows)[None, :]).reshape(-1)]
            zero = layout.param_zero(rec[:, 7], out_unsigned=bool(ins.out_unsigned))
            y = layout.requantize(lines, bias[None, :], mult[None, :],
                                  shift[None, :], relu=bool(ins.relu), out_bits=ins.out_bits,
                                  out_unsigned=bool(ins.out_unsigned), zero=zero[None, :])
            out = (y & 0xFF).astype(np.uint8).reshape(len(groups), rows * C)
            for g, (_, addr) in enumerate(groups):     # in order: later groups win overlaps
                mem[addr:addr + rows * C] = out[g]
            counters["dram_write_bytes"] += len(groups) * rows * C
        elif op == Opcode.SYNC:
            counters["sync_instrs"] += 1
        else:  # pragma: no cover - decode() refuses unknown opcodes
            raise ProgramError(f"unknown opcode {op!r}")
    outputs = program.read_outputs(mem)
    return RunResult(outputs=outputs, cycles=None, counters=counters, backend="reference")

