"""How tensors, weight tiles and parameters sit in external memory.

These functions are the one definition of the memory layouts shared by the compiler (which
writes them), the executors (which read inputs and outputs through them) and the hardware
(whose DMA moves whole bus beats of them).

Activations (layout ``blocked``)
    A tensor of shape ``(M, K)`` is stored as ``ceil(K / rows)`` blocks. Block ``b`` holds
    ``Mp`` lines of ``rows`` bytes; line ``m`` byte ``i`` is element ``[m, b * rows + i]``
    (int8, or uint8 when unsigned), zero beyond ``K``. ``Mp`` is ``M`` rounded up to whole
    bus beats (:func:`padded_rows`), so every block starts beat aligned. Outputs of a layer
    use the same layout with ``cols`` (= ``rows``) bytes per line.

Weight tiles
    A ``rows x cols`` tile is a bit stream: element ``(i, j)`` occupies bits
    ``[(i * cols + j) * wb, +wb)`` in two's complement, bit ``n`` of the stream being bit
    ``n % 8`` of byte ``n // 8``. The stream is zero padded to whole bus beats.

Parameters
    Per output channel 8 bytes, little-endian: int32 bias, uint16 multiplier, uint8 shift,
    and the output offset (zero point) ``z_out`` as one byte, read as int8 by a STORE with
    ``out_unsigned = 0`` and as uint8 by one with ``out_unsigned = 1``. ``cols`` channels
    form one parameter line.
"""

from __future__ import annotations

import numpy as np

from .config import AccelConfig

__all__ = [
    "act_bytes",
    "blocks",
    "pack_act",
    "pack_params",
    "pack_weight_tile",
    "padded_rows",
    "param_zero",
    "requantize",
    "unpack_act",
    "unpack_weight_tile",
    "PARAM_BYTES",
    "MULT_BITS",
    "SHIFT_MAX",
]

PARAM_BYTES = 8
MULT_BITS = 16
SHIFT_MAX = 63


def blocks(cfg: AccelConfig, k: int) -> int:
    return -(-k // cfg.rows)


def padded_rows(cfg: AccelConfig, m: int) -> int:
    """``m`` rounded up so that ``m`` lines fill whole bus beats."""
    lpb = cfg.lines_per_beat
    return -(-m // lpb) * lpb


def act_bytes(cfg: AccelConfig, m: int, k: int) -> int:
    return blocks(cfg, k) * padded_rows(cfg, m) * cfg.rows


def pack_act(cfg: AccelConfig, x: np.ndarray) -> bytes:
    """Blocked layout of an ``(M, K)`` integer tensor (values must fit a byte)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"activation tensor must be 2-D (M, K), not shape {x.shape}")
    m, k = x.shape
    mp, nb, r = padded_rows(cfg, m), blocks(cfg, k), cfg.rows
    buf = np.zeros((nb, mp, r), dtype=np.int64)
    padded = np.zeros((m, nb * r), dtype=np.int64)
    padded[:, :k] = x
    buf[:, :m, :] = padded.reshape(m, nb, r).transpose(1, 0, 2)
    return (buf & 0xFF).astype(np.uint8).tobytes()


def unpack_act(cfg: AccelConfig, data: bytes, m: int, k: int, *, signed: bool) -> np.ndarray:
    mp, nb, r = padded_rows(cfg, m), blocks(cfg, k), cfg.rows
    raw = np.frombuffer(bytes(data[: nb * mp * r]), dtype=np.int8 if signed else np.uint8)
    buf = raw.reshape(nb, mp, r)[:, :m, :].transpose(1, 0, 2).reshape(m, nb * r)
    return buf[:, :k].astype(np.int64)


def pack_weight_tile(cfg: AccelConfig, tile: np.ndarray) -> bytes:
    """The bit stream of one ``rows x cols`` tile, padded to whole beats."""
    tile = np.asarray(tile, dtype=np.int64)
    wb = cfg.weight_bits
    assert tile.shape == (cfg.rows, cfg.cols)
    lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
    if tile.min() < lo or tile.max() > hi:
        raise ValueError(f"weights must be from {lo} to {hi} for weight_bits={wb}")
    bits = ((tile.reshape(-1, 1) >> np.arange(wb)) & 1).astype(np.uint8).reshape(-1)
    nbits = cfg.weight_tile_beats * cfg.bus_bits
    stream = np.zeros(nbits, dtype=np.uint8)
    stream[: bits.size] = bits
    return np.packbits(stream, bitorder="little").tobytes()


def unpack_weight_tile(cfg: AccelConfig, data: bytes) -> np.ndarray:
    wb = cfg.weight_bits
    n = cfg.rows * cfg.cols
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), bitorder="little")
    vals = (bits[: n * wb].reshape(n, wb).astype(np.int64) << np.arange(wb)).sum(axis=1)
    vals = np.where(vals >= (1 << (wb - 1)), vals - (1 << wb), vals)
    return vals.reshape(cfg.rows, cfg.cols)


def pack_params(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, zero=0) -> bytes:
    """Parameter records for consecutive channels (8 bytes each); ``zero``: the output
    offsets (scalar or one per channel), each from -128 to 255 (the byte is read as int8 or
    uint8 by the STORE's ``out_unsigned``)."""
    bias = np.asarray(bias, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    zero = np.broadcast_to(np.asarray(zero, dtype=np.int64), bias.shape)
    if bias.min(initial=0) < -(1 << 31) or bias.max(initial=0) >= (1 << 31):
        raise ValueError("bias must fit int32")
    if mult.min(initial=0) < 0 or mult.max(initial=0) >= (1 << MULT_BITS):
        raise ValueError(f"multiplier must be from 0 to {(1 << MULT_BITS) - 1}")
    if shift.min(initial=0) < 0 or shift.max(initial=0) > SHIFT_MAX:
        raise ValueError(f"shift must be from 0 to {SHIFT_MAX}")
    if zero.min(initial=0) < -128 or zero.max(initial=0) > 255:
        bad = int(zero.min()) if zero.min() < -128 else int(zero.max())
        raise ValueError(f"output zero point must be from -128 to 255, not {bad}")
    rec = np.zeros((bias.size, PARAM_BYTES), dtype=np.uint8)
    rec[:, 0:4] = (bias.astype("<i4")).view(np.uint8).reshape(-1, 4)
    rec[:, 4:6] = (mult.astype("<u2")).view(np.uint8).reshape(-1, 2)
    rec[:, 6] = shift.astype(np.uint8)
    rec[:, 7] = (zero & 0xFF).astype(np.uint8)
    return rec.tobytes()


def param_zero(byte, *, out_unsigned: bool) -> np.ndarray:
    """The output offset of parameter byte 7 as a STORE reads it: int8, or uint8 when
    ``out_unsigned``."""
    b = np.asarray(byte, dtype=np.int64) & 0xFF
    return b if out_unsigned else np.where(b >= 128, b - 256, b)


def requantize(acc: np.ndarray, bias, mult, shift, *, relu: bool, out_bits: int,
               out_unsigned: bool, zero=0) -> np.ndarray:
    """The STORE post-processing, exactly as the hardware does it (see ``docs/isa.md``):
    the stored integers ``q = clamp(max(y, 0 if relu) + zero, range of out_bits)``."""
    x = (np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64)) \
        * np.asarray(mult, dtype=np.int64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), x.shape)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    neg = np.where((shift > 0) & (x < 0), 1, 0)
    y = np.right_shift(x + half - neg, shift)
    if relu:
        y = np.maximum(y, 0)
    if out_unsigned:
        lo, hi = 0, (1 << out_bits) - 1
    else:
        lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return np.clip(y + np.asarray(zero, dtype=np.int64), lo, hi)


def wrap(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap to ``bits``."""
    v = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
