"""Dependency tokens: which memory each instruction touches, assignment and verification.

Execution model (``docs/isa.md``): load, compute and store each run their own queue in
order and concurrently; an instruction takes its ``pop`` tokens when it starts and gives its
``push`` tokens when it completes; the ``j``-th pop of a counter is satisfied by the
``j``-th push. Each unit also **completes** its instructions in order (a SYNC included: it
passes through the same pipeline), so the completion of instruction ``p`` of unit ``U``
implies the completion of every earlier instruction of ``U``.

The meaning of a program is sequential program order (the reference executor). A program
is *race free* when every pair of instructions of different units that touch the same
memory (read after write, write after read, write after write; scratchpads, accumulators
and DRAM) is ordered by the tokens: the later one (in program order) cannot start before
the earlier one completed. :func:`verify_tokens` checks this by symbolic execution: it
replays the token counters in program order and keeps, for every instruction, a vector
clock of the latest instruction of each unit known to have completed when it starts.

:func:`assign_tokens` produces such a program from a token-free sequence: it computes the
same vector clocks while choosing, for every instruction, the fewest pops that make each
of its dependencies known. Load <-> store dependencies (RAW through DRAM at layer
boundaries, parameter-memory reuse) are carried through the compute unit: by a compute
instruction that already knows the dependency, or by a SYNC on the compute unit inserted
just before the dependent instruction.

Memories are tracked in bus beats (activation scratchpad, parameter memory, DRAM), words
(weight scratchpad) or lines (accumulators).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lowbit import isa
from lowbit.checks import store_groups
from lowbit.isa import LoadTarget, Opcode, Unit
from lowbit.layout import PARAM_BYTES

from .ir import TOKEN_FIELDS, Op

__all__ = ["Access", "MAX_OUTSTANDING", "TokenError", "accesses", "assign_tokens",
           "verify_tokens"]

_MEMS = ("act", "weight", "param", "acc", "dram")
_TARGET_MEM = {LoadTarget.ACT: "act", LoadTarget.WEIGHT: "weight", LoadTarget.PARAM: "param"}
# channel (from unit, to unit) -> (push flag on the producer, pop flag on the consumer)
_CHANNEL = {
    (Unit.LOAD, Unit.COMPUTE): ("push_next", "pop_prev"),
    (Unit.COMPUTE, Unit.LOAD): ("push_prev", "pop_next"),
    (Unit.COMPUTE, Unit.STORE): ("push_next", "pop_prev"),
    (Unit.STORE, Unit.COMPUTE): ("push_prev", "pop_next"),
}
_NAME = {Unit.LOAD: "load", Unit.COMPUTE: "compute", Unit.STORE: "store"}


#: Tokens a hardware counter holds (8-bit counters, ``lowbit.hw.top.TOKEN_BITS``).
MAX_OUTSTANDING = (1 << isa.TOKEN_COUNTER_BITS) - 1


class TokenError(ValueError):
    """A program whose tokens do not balance or do not order a memory dependency."""


class Access(NamedTuple):
    mem: str
    ranges: tuple[tuple[int, int], ...]   # half-open ranges of beats/words/lines
    write: bool


def _span(a: int, b: int, unit: int) -> tuple[int, int]:
    """Byte range ``[a, b)`` as a range of ``unit``-byte cells."""
    return a // unit, -(-b // unit)


def accesses(cfg, opcode: Opcode, f: dict[str, int]) -> list[Access]:
    """The memory cells an instruction reads and writes (``dram_addr`` absolute)."""
    B, R, C = cfg.beat_bytes, cfg.rows, cfg.cols
    out: list[Access] = []
    if opcode == Opcode.LOAD:
        rows, rb = f.get("rows", 0), f.get("row_beats", 0)
        base, stride = f.get("dram_addr", 0), f.get("stride", 0)
        if stride == rb * B:
            src = ((base // B, base // B + rows * rb),)
        else:
            src = tuple((base // B + r * stride // B, base // B + r * stride // B + rb)
                        for r in range(rows))
        out.append(Access("dram", src, False))
        sp = f.get("sp_addr", 0)
        out.append(Access(_TARGET_MEM[LoadTarget(f.get("target", 0))],
                          ((sp, sp + rows * rb),), True))
    elif opcode == Opcode.COMPUTE:
        rows = f.get("rows", 0)
        a = f.get("act_addr", 0)
        lines = rows + f.get("dw_reach", 0) * f.get("depthwise", 0)
        out.append(Access("act", (_span(a * R, (a + lines) * R, B),), False))
        w = f.get("weight_addr", 0)
        out.append(Access("weight", ((w, w + cfg.weight_tile_beats),), False))
        c = f.get("acc_addr", 0)
        if f.get("reduce", 0):
            rows = 1
        if f.get("accumulate", 0):
            out.append(Access("acc", ((c, c + rows),), False))
        out.append(Access("acc", ((c, c + rows),), True))
    elif opcode == Opcode.STORE:
        # 2-D: every group reads its accumulator lines and writes its DRAM bytes
        rows, groups = store_groups(cfg, f)
        out.append(Access("acc", tuple((a, a + rows) for a, _ in groups), False))
        p = f.get("param_addr", 0)
        line = C * PARAM_BYTES
        out.append(Access("param", (_span(p * line, (p + 1) * line, B),), False))
        out.append(Access("dram", tuple(_span(d, d + rows * C, B) for _, d in groups), True))
    return out


def _mem_sizes(cfg, dram_beats: int) -> dict[str, int]:
    R, C, B = cfg.rows, cfg.cols, cfg.beat_bytes
    return {"act": -(-cfg.act_depth * R // B), "weight": cfg.weight_words,
            "param": -(-cfg.param_depth * C * PARAM_BYTES // B), "acc": cfg.acc_depth,
            "dram": dram_beats}


class _Tracker:
    """Per memory cell: the last writer and the readers since it, per unit.

    One ``(cells, 6)`` array per memory: columns 0-2 hold the index of the last writer in
    the column of its unit (-1 elsewhere), columns 3-5 the index of the last reader of each
    unit since that write (-1: none), so one reduction over a range gives every conflict.
    """

    def __init__(self, sizes: dict[str, int]):
        self.cells = {m: np.full((n, 6), -1, np.int64) for m, n in sizes.items()}

    def need(self, unit: int, accs: Sequence[Access]) -> np.ndarray:
        """Per unit, the index of its latest instruction this access conflicts with."""
        need = np.full(3, -1, np.int64)
        for acc in accs:
            cells = self.cells[acc.mem]
            for a, b in acc.ranges:
                if b <= a:
                    continue
                if acc.write:
                    top = cells[a:b].max(axis=0)
                    np.maximum(need, np.maximum(top[:3], top[3:]), out=need)
                else:
                    np.maximum(need, cells[a:b, :3].max(axis=0), out=need)
        need[unit] = -1
        return need

    def explain(self, unit: int, other: int, index: int, accs: Sequence[Access]):
        """``(kind, mem, cell)`` of a conflict found by :meth:`need` (for messages)."""
        for acc in accs:
            cells = self.cells[acc.mem]
            for a, b in acc.ranges:
                for c in range(a, b):
                    if cells[c, other] == index:
                        return ("WAW" if acc.write else "RAW"), acc.mem, c
                    if acc.write and cells[c, 3 + other] == index:
                        return "WAR", acc.mem, c
        return "?", "?", -1

    def update(self, unit: int, index: int, accs: Sequence[Access]) -> None:
        for acc in accs:
            if not acc.write:
                for a, b in acc.ranges:
                    self.cells[acc.mem][a:b, 3 + unit] = index
        for acc in accs:
            if acc.write:
                for a, b in acc.ranges:
                    cells = self.cells[acc.mem]
                    cells[a:b] = -1
                    cells[a:b, unit] = index


def _dram_extent(cfg, items) -> int:
    top = 0
    for _, _, accs in items:
        for acc in accs:
            if acc.mem == "dram":
                top = max(top, max(b for _, b in acc.ranges))
    return top


# -- verification ---------------------------------------------------------------------------


def verify_tokens(cfg, instrs: Sequence, *, describe=None,
                  max_outstanding: int = MAX_OUTSTANDING) -> int:
    """Check token balance and race freedom of an instruction sequence.

    ``instrs`` are :class:`lowbit.isa.Instr` or :class:`~lowbit.compiler.ir.Op` with absolute
    ``dram_addr``. Raises :class:`TokenError` naming the instructions involved.

    Also bounds the tokens a counter can hold: an instruction is dispatched only once the
    ``queue_depth``-th instruction before it on the same unit has started, so while pop
    ``j`` waits, only pushes before the ``queue_depth``-th later instruction of its unit can
    have happened. Returns the largest such bound; more than ``max_outstanding`` is an
    error (the hardware counters would wrap).
    """
    items = []
    for ins in instrs:
        f = dict(ins.args) if isinstance(ins, Op) else dict(ins.fields)
        items.append((ins.opcode, f, accesses(cfg, ins.opcode, f)))
    describe = describe or (lambda i: f"instruction {i} ({instrs[i]!r})")
    tracker = _Tracker(_mem_sizes(cfg, _dram_extent(cfg, items)))
    global_of: dict[Unit, list[int]] = {u: [] for u in Unit}
    vc_start: dict[Unit, list[np.ndarray]] = {u: [] for u in Unit}
    pushes: dict[tuple[Unit, Unit], list[int]] = {ch: [] for ch in _CHANNEL}
    pops = dict.fromkeys(_CHANNEL, 0)
    push_pos: dict[tuple[Unit, Unit], list[int]] = {ch: [] for ch in _CHANNEL}
    pop_pos: dict[tuple[Unit, Unit], list[int]] = {ch: [] for ch in _CHANNEL}

    for i, (opcode, f, accs) in enumerate(items):
        if opcode == Opcode.END:
            if any(f.get(k, 0) for k in TOKEN_FIELDS):
                raise TokenError(f"{describe(i)}: END carries no tokens")
            break
        unit = Unit(f.get("unit", 0)) if opcode == Opcode.SYNC else \
            {Opcode.LOAD: Unit.LOAD, Opcode.COMPUTE: Unit.COMPUTE, Opcode.STORE: Unit.STORE}[
                opcode]
        vc = vc_start[unit][-1].copy() if vc_start[unit] else np.full(3, -1, np.int64)
        for (src, dst), (_, pop_flag) in _CHANNEL.items():
            if dst != unit or not f.get(pop_flag, 0):
                continue
            k = pops[(src, dst)]
            if k >= len(pushes[(src, dst)]):
                raise TokenError(f"{describe(i)} pops a {_NAME[src]}->{_NAME[dst]} token "
                                 f"that no earlier instruction pushes (pop #{k + 1}; "
                                 f"{len(pushes[(src, dst)])} pushed so far)")
            p = pushes[(src, dst)][k]
            pops[(src, dst)] += 1
            np.maximum(vc, vc_start[src][p], out=vc)
            vc[src] = max(vc[src], p)
        need = tracker.need(unit, accs)
        late = np.nonzero(need > vc)[0]
        if late.size:
            u = int(late[0])
            idx = int(need[u])
            kind, mem, cell = tracker.explain(unit, u, idx, accs)
            j = global_of[u][idx]
            what = {"RAW": "reads what", "WAR": "overwrites what"}.get(kind, "overwrites what")
            after = {"RAW": "writes", "WAR": "still reads"}.get(kind, "writes")
            raise TokenError(
                f"race ({kind}) on {mem} cell {cell}: {describe(i)} {what} {describe(j)} "
                f"{after}, but no token orders them")
        index = len(global_of[unit])
        global_of[unit].append(i)
        vc_start[unit].append(vc)
        for (src, dst), (push_flag, _) in _CHANNEL.items():
            if src == unit and f.get(push_flag, 0):
                pushes[(src, dst)].append(index)
        tracker.update(unit, index, accs)
        for (src, dst), (push_flag, pop_flag) in _CHANNEL.items():
            if src == unit and f.get(push_flag, 0):
                push_pos[(src, dst)].append(i)
            if dst == unit and f.get(pop_flag, 0):
                pop_pos[(src, dst)].append(i)
    for (src, dst), lst in pushes.items():
        if len(lst) != pops[(src, dst)]:
            raise TokenError(f"tokens do not balance: {len(lst)} {_NAME[src]}->{_NAME[dst]} "
                             f"tokens pushed but {pops[(src, dst)]} popped")
    worst = 0
    q = cfg.queue_depth
    for (src, dst), positions in pop_pos.items():
        mine = global_of[dst]
        for j, i in enumerate(positions):
            k = bisect.bisect_left(mine, i) + q
            limit = mine[k] if k < len(mine) else len(items)
            bound = bisect.bisect_left(push_pos[(src, dst)], limit) - j
            if bound > worst:
                worst = bound
            if bound > max_outstanding:
                raise TokenError(f"up to {bound} {_NAME[src]}->{_NAME[dst]} tokens may be "
                                 f"outstanding when {describe(i)} pops; the hardware counter "
                                 f"holds {max_outstanding}")
    return worst


# -- assignment -----------------------------------------------------------------------------


def assign_tokens(cfg, ops: Sequence[Op], dram_base: dict[str, int]) -> list[Op]:
    """``ops`` (no token flags) with the token flags and SYNCs that make them race free.

    ``dram_base`` maps each DRAM region to a (provisional) base address.
    """
    out: list[list] = []          # [op, flags dict]
    pos_of: dict[Unit, list[int]] = {u: [] for u in Unit}     # unit index -> position in out
    vc_start: dict[Unit, list[np.ndarray]] = {u: [] for u in Unit}
    known_c = {Unit.LOAD: [], Unit.STORE: []}   # compute ops' start knowledge of L / S
    last_pair: dict[tuple[Unit, Unit], tuple[int, int]] = {}   # channel -> (producer, pos)
    resolved = []
    for op in ops:
        f = op.fields()
        if op.region is not None:
            f["dram_addr"] = dram_base[op.region] + f.get("dram_addr", 0)
        resolved.append((op, f, accesses(cfg, op.opcode, f)))
    tracker = _Tracker(_mem_sizes(cfg, _dram_extent(cfg, resolved)))

    def teach_last_compute(p: int) -> bool:
        """Make the latest compute op wait for load ``p`` too (``p`` must precede it):
        cheaper than a SYNC. Sound: the knowledge recorded so far for it and for the ops
        that learned from it only grows."""
        cs = pos_of[Unit.COMPUTE]
        if not cs or pos_of[Unit.LOAD][p] > cs[-1]:
            return False
        cop = out[cs[-1]]
        if cop[0].opcode != Opcode.COMPUTE:
            return False
        if cop[1].get("pop_prev"):
            # it pops an earlier load q (the last load->compute pair): pop p instead,
            # whose completion implies q's
            q, consumer = last_pair[(Unit.LOAD, Unit.COMPUTE)]
            assert consumer == cs[-1] and q < p
            out[pos_of[Unit.LOAD][q]][1]["push_next"] = 0
        prod = out[pos_of[Unit.LOAD][p]]
        assert not prod[1].get("push_next")
        prod[1]["push_next"] = 1
        last_pair[(Unit.LOAD, Unit.COMPUTE)] = (p, cs[-1])
        cop[1]["pop_prev"] = 1
        vc = vc_start[Unit.COMPUTE][-1]
        np.maximum(vc, vc_start[Unit.LOAD][p], out=vc)
        vc[Unit.LOAD] = max(vc[Unit.LOAD], p)
        known_c[Unit.LOAD][-1] = int(vc[Unit.LOAD])
        known_c[Unit.STORE][-1] = int(vc[Unit.STORE])
        return True

    def place(op: Op, accs, need: np.ndarray) -> None:
        unit = op.unit
        flags: dict[str, int] = {}
        vc = vc_start[unit][-1].copy() if vc_start[unit] else np.full(3, -1, np.int64)
        if unit != Unit.COMPUTE:
            far = Unit.STORE if unit == Unit.LOAD else Unit.LOAD
            if need[far] > vc[far]:
                ks = known_c[far]
                y = bisect.bisect_left(ks, need[far])
                # the latest compute can wait for the load instead, if this op is still to
                # pop from it (and so learns of its new dependency)
                if y == len(ks) and far == Unit.LOAD and vc[Unit.COMPUTE] < len(ks) - 1 \
                        and teach_last_compute(int(need[far])):
                    y = len(ks) - 1
                if y == len(ks):                       # no compute op knows it: add a SYNC
                    sync_need = np.full(3, -1, np.int64)
                    sync_need[far] = need[far]
                    place(Op.make(Opcode.SYNC, unit=Unit.COMPUTE,
                                  note=f"forward {_NAME[far]} -> {_NAME[unit]}"), (), sync_need)
                    y = len(pos_of[Unit.COMPUTE]) - 1
                need[Unit.COMPUTE] = max(need[Unit.COMPUTE], y)
            need[far] = -1
        for src in Unit:
            if src == unit or (src, unit) not in _CHANNEL or need[src] <= vc[src]:
                continue
            p = int(need[src])
            push_flag, pop_flag = _CHANNEL[(src, unit)]
            prod = out[pos_of[src][p]]
            assert not prod[1].get(push_flag), "producer already pushes on this channel"
            prod[1][push_flag] = 1
            flags[pop_flag] = 1
            last_pair[(src, unit)] = (p, len(out))
            np.maximum(vc, vc_start[src][p], out=vc)
            vc[src] = p
        index = len(pos_of[unit])
        pos_of[unit].append(len(out))
        vc_start[unit].append(vc)
        if unit == Unit.COMPUTE:
            known_c[Unit.LOAD].append(int(vc[Unit.LOAD]))
            known_c[Unit.STORE].append(int(vc[Unit.STORE]))
        out.append([op, flags])
        tracker.update(unit, index, accs)

    for op, _, accs in resolved:
        if any(op.get(k) for k in TOKEN_FIELDS):
            raise TokenError(f"assign_tokens expects ops without token flags, got {op.render()}")
        place(op, accs, tracker.need(op.unit, accs))
    return [op.with_args(**flags) if flags else op for op, flags in out]
