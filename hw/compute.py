"""The compute unit: weight preload, activation streaming and accumulation."""

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit import isa
from lowbit.isa import Opcode
from lowbit.timing import compute_timing

from .decode import TokenPort, field, opcode_of
from .mul import dsp_choice, product_register
from .pe import SystolicArray

__all__ = ["ComputeUnit"]


class ComputeUnit(wiring.Component):
    """Executes COMPUTE (and SYNC on the compute unit) as a three-stage pipeline.

    * **P** (preload) takes an instruction from the queue (taking its tokens), reads the
      weight tile's ``weight_tile_beats`` words, one per cycle, into a shift chain.
    * **S** (stream) takes over from P when the chain is full, S is on its last row or idle,
      and the weight bank the tile goes to has drained; at that edge the chain is committed
      to the bank (the array writes it on the next edge: the enable crosses the array
      through one register per PE row). S reads one activation line per cycle (``rows`` of
      them, plus ``dw_reach`` more for a ``depthwise`` COMPUTE, whose last results need the
      lines after them; those extra lines produce no result); a SYNC occupies S for one
      cycle.
      With ``reduce`` every row's result goes to ``acc_addr`` and the rows after the first
      accumulate (sum or maximum): a row sees the value the row before it writes (the
      accumulator port is transparent, and the line read is bypassed by the write one edge
      after it).
    * Results are written to the accumulator memory ``result`` cycles after each read
      (read-modify-write, the line read registered before the add); an instruction
      completes, and pushes its tokens, on the edge its last result is written.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        C = cfg.cols
        super().__init__({
            "instr": In(stream.Signature(isa.INSTR_BITS)),
            "tok_prev": Out(TokenPort()),
            "tok_next": Out(TokenPort()),
            "act_en": Out(1), "act_addr": Out(16), "act_data": In(cfg.act_line_bits),
            "wgt_en": Out(1), "wgt_addr": Out(16), "wgt_data": In(cfg.bus_bits),
            "acc_rd_en": Out(1), "acc_rd_addr": Out(16), "acc_rd_data": In(C * cfg.acc_bits),
            "acc_wr_en": Out(1), "acc_wr_addr": Out(16), "acc_wr_data": Out(C * cfg.acc_bits),
            "busy": Out(1),
        })
        self.timing = compute_timing(cfg)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C, W = cfg.rows, cfg.cols, cfg.bus_bits
        nw = cfg.weight_tile_beats
        F = Opcode.COMPUTE
        ins = self.instr.payload
        tm = self.timing

        m.submodules.array = array = SystolicArray(
            rows=R, cols=C, weight_bits=cfg.weight_bits, acc_bits=cfg.acc_bits,
            dw_taps=cfg.fir_taps)
        reach_bits = isa.field_offsets(F)["dw_reach"][1]

        # -- P stage ------------------------------------------------------------------------
        p_valid = Signal()
        p_sync = Signal()
        p_act = Signal(16)
        p_acc = Signal(16)
        p_rows = Signal(16)
        p_accum = Signal()
        p_max = Signal()
        p_mul = Signal(8)
        p_uns = Signal()
        p_dw = Signal()
        p_reach = Signal(reach_bits)
        p_red = Signal()
        p_push_prev = Signal()
        p_push_next = Signal()
        p_rd_ptr = Signal(16)
        p_rd_left = Signal(range(nw + 1))
        p_fill_left = Signal(range(nw + 1))
        p_rd_v = Signal()
        chain = Signal(nw * W, reset_less=True)      # weight words (data, no reset)

        pop_prev = field(ins, F, "pop_prev")
        pop_next = field(ins, F, "pop_next")
        take = Signal()
        m.d.comb += take.eq(self.instr.valid & ~p_valid
                            & (~pop_prev | self.tok_prev.avail)
                            & (~pop_next | self.tok_next.avail))
        with m.If(take):
            is_sync = opcode_of(ins) != Opcode.COMPUTE
            m.d.comb += [self.instr.ready.eq(1),
                         self.tok_prev.take.eq(pop_prev), self.tok_next.take.eq(pop_next)]
            m.d.sync += [
                p_valid.eq(1), p_sync.eq(is_sync),
                p_act.eq(field(ins, F, "act_addr")), p_acc.eq(field(ins, F, "acc_addr")),
                p_rows.eq(field(ins, F, "rows")), p_accum.eq(field(ins, F, "accumulate")),
                p_max.eq(field(ins, F, "acc_max")), p_mul.eq(field(ins, F, "mul_m1")),
                p_uns.eq(field(ins, F, "act_unsigned")),
                p_dw.eq(field(ins, F, "depthwise")),
                p_reach.eq(field(ins, F, "dw_reach")),
                p_red.eq(field(ins, F, "reduce")),
                p_push_prev.eq(field(ins, F, "push_prev")),
                p_push_next.eq(field(ins, F, "push_next")),
                p_rd_ptr.eq(field(ins, F, "weight_addr")),
                p_rd_left.eq(Mux(is_sync, 0, nw)),
                p_fill_left.eq(Mux(is_sync, 0, nw)),
            ]
        # Weight words: read one per cycle, shift into the chain a cycle later.
        m.d.comb += [self.wgt_en.eq(p_rd_left != 0), self.wgt_addr.eq(p_rd_ptr)]
        m.d.sync += p_rd_v.eq(p_rd_left != 0)
        with m.If(p_rd_left != 0):
            m.d.sync += [p_rd_ptr.eq(p_rd_ptr + 1), p_rd_left.eq(p_rd_left - 1)]
        with m.If(p_rd_v):
            if nw > 1:
                m.d.sync += chain.eq((chain >> W) | (self.wgt_data << ((nw - 1) * W)))
            else:
                m.d.sync += chain.eq(self.wgt_data)
            m.d.sync += p_fill_left.eq(p_fill_left - 1)

        # -- S stage ------------------------------------------------------------------------
        s_left = Signal(17)
        s_act = Signal(16)
        s_acc = Signal(16)
        s_accum = Signal()
        s_max = Signal()
        s_mul = Signal(8)
        s_uns = Signal()
        s_dw = Signal()
        s_red = Signal()           # reduce: every row into s_acc, later rows accumulate
        s_first = Signal()         # the next row is the instruction's first
        s_tail = Signal(reach_bits)    # trailing lines of a depthwise COMPUTE
        s_sync = Signal()
        s_push_prev = Signal()
        s_push_next = Signal()
        bank = Signal()            # bank of the tile in S (or the last one)
        next_bank = Signal()
        bank_wait = Array(Signal(range(tm["bank_wait"] + 1), name=f"bank_wait{b}")
                          for b in range(2))

        # Registered copies of ``bank_wait[b] == 0`` and ``s_left <= 1``, kept from the next
        # values of those counters, so that the handoff, which drives the S registers and the
        # array's weight load, follows flip-flops through one gate.
        bank_free = [Signal(init=1, name=f"bank_free{b}") for b in range(2)]
        s_le1 = Signal(init=1)
        handoff = Signal()
        m.d.comb += handoff.eq(p_valid & (p_fill_left == 0) & s_le1
                               & (p_sync | Mux(next_bank, bank_free[1], bank_free[0])))
        for b in range(2):
            with m.If(bank_wait[b] != 0):
                m.d.sync += bank_wait[b].eq(bank_wait[b] - 1)

        issuing = Signal()
        m.d.comb += issuing.eq(s_left != 0)
        last = Signal()            # last line read
        m.d.comb += last.eq(s_left == 1)
        for b in range(2):
            # bank_wait[b] is set (to a nonzero value) on a tile's last read on bank b
            m.d.sync += bank_free[b].eq(~(issuing & last & ~s_sync & (bank == b))
                                        & (bank_wait[b] <= 1))
        s_new = Signal.like(s_left)     # s_left after a handoff
        m.d.comb += s_new.eq(Mux(p_sync, 1, p_rows + Mux(p_dw, p_reach, 0)))
        with m.If(handoff):
            m.d.sync += s_le1.eq(s_new <= 1)
        with m.Elif(issuing):
            m.d.sync += s_le1.eq(s_left <= 2)
        result = Signal()          # a line with a result (not a depthwise trailing line)
        m.d.comb += result.eq(issuing & ~s_sync & (s_left > s_tail))
        last_result = Signal()     # the line whose result completes the instruction
        m.d.comb += last_result.eq(issuing & (s_left == s_tail + 1))
        with m.If(issuing):
            m.d.sync += [s_left.eq(s_left - 1), s_act.eq(s_act + 1), s_first.eq(0)]
            with m.If(~s_red):
                m.d.sync += s_acc.eq(s_acc + 1)
            with m.If(last & ~s_sync):
                m.d.sync += bank_wait[bank].eq(tm["bank_wait"])
        with m.If(handoff):
            m.d.sync += [
                p_valid.eq(0),
                s_left.eq(s_new),
                s_tail.eq(Mux(p_sync | ~p_dw, 0, p_reach)), s_dw.eq(p_dw & ~p_sync),
                s_red.eq(p_red), s_first.eq(1),
                s_act.eq(p_act), s_acc.eq(p_acc), s_accum.eq(p_accum), s_uns.eq(p_uns),
                s_max.eq(p_max), s_mul.eq(p_mul),
                s_sync.eq(p_sync),
                s_push_prev.eq(p_push_prev), s_push_next.eq(p_push_next),
            ]
            with m.If(~p_sync):
                m.d.comb += [array.w_load.eq(1), array.w_bank.eq(next_bank)]
                m.d.sync += [bank.eq(next_bank), next_bank.eq(~next_bank)]
        # The array writes the tile on the edge after w_load; the chain holds it until P's
        # next tile shifts in (two edges after the handoff at the earliest).
        m.d.comb += array.w_tile.eq(chain)

        # Activation read and feed (``feed`` = 2 cycles to the array input).
        m.d.comb += [self.act_en.eq(issuing & ~s_sync), self.act_addr.eq(s_act)]
        uns_d = Signal()
        sel_d = Array(Signal(name=f"sel_d{k}") for k in range(2))
        dw_d = Array(Signal(name=f"dw_d{k}") for k in range(2))
        m.d.sync += [uns_d.eq(s_uns), sel_d[0].eq(bank), sel_d[1].eq(sel_d[0]),
                     dw_d[0].eq(s_dw), dw_d[1].eq(dw_d[0])]
        for i in range(R):
            byte = self.act_data[i * 8:(i + 1) * 8]
            a = Signal.like(array.a[i], name=f"a{i}", reset_less=True)
            m.d.sync += a.eq(byte.as_signed())
            with m.If(uns_d):
                m.d.sync += a.eq(byte.as_unsigned())
            m.d.comb += array.a[i].eq(a)
        m.d.comb += [array.sel.eq(sel_d[1]), array.dw.eq(dw_d[1])]

        # -- result pipeline ----------------------------------------------------------------
        D = tm["result"]
        meta_layout = [("valid", 1), ("addr", 16), ("accum", 1), ("max", 1), ("mul", 8),
                       ("pprev", 1), ("pnext", 1)]

        def meta_sig(name):
            # the valid and token bits are reset; the fields they qualify need not be
            return {k: Signal(w, name=f"{name}_{k}",
                              reset_less=k not in ("valid", "pprev", "pnext"))
                    for k, w in meta_layout}

        stages = [meta_sig(f"meta{k}") for k in range(D + 1)]
        m.d.comb += [
            stages[0]["valid"].eq(result),
            stages[0]["addr"].eq(s_acc),
            stages[0]["accum"].eq(s_accum | (s_red & ~s_first)),
            stages[0]["max"].eq(s_max),
            stages[0]["mul"].eq(s_mul),
            stages[0]["pprev"].eq(last_result & s_push_prev),
            stages[0]["pnext"].eq(last_result & s_push_next),
        ]
        for k in range(D):
            m.d.sync += [stages[k + 1][n].eq(stages[k][n]) for n, _ in meta_layout]
        # Stage D - 2: the array's result for the row read D - 2 cycles ago and its factor
        # ``mul_m1 + 1`` are registered while its accumulator line is read; stage D - 1: the
        # product is registered, and so is the line read (or, when the row in stage D writes
        # the same line on this edge, the value it writes: the read missed it); stage D
        # writes ``scaled``, ``old + scaled`` or ``max(old, scaled)``. No memory output or
        # multiplier drives the write data combinationally.
        scl, rd, cur, wr = stages[D - 2], stages[D - 2], stages[D - 1], stages[D]
        aw = cfg.acc_bits
        # Data registers without reset (qualified by the valid bits above).
        scaled = [Signal(signed(aw), name=f"scaled{j}", reset_less=True) for j in range(C)]
        old_q = [Signal(signed(aw), name=f"old_q{j}", reset_less=True) for j in range(C)]
        dsp = "compute" in dsp_choice(platform).units
        pw = array.psum_bits
        for j in range(C):
            # The array's result (a sign-extended psum_bits value) and the factor are
            # registered, then their product: on an ECP5 DSP, its input registers, and a
            # fabric register by the accumulating adder and the accumulator memory (with
            # the DSP's output register instead, its output net to them was the critical
            # path of 4x4 W4A8).
            product_register(m, a=array.p[j][:pw].as_signed(), b=scl["mul"] + 1, p=scaled[j],
                             input_regs=True, dsp=dsp, name=f"scale{j}",
                             dsp_output_reg=False)
        m.d.comb += [self.acc_rd_en.eq(rd["valid"]), self.acc_rd_addr.eq(rd["addr"])]
        m.d.comb += [self.acc_wr_en.eq(wr["valid"]), self.acc_wr_addr.eq(wr["addr"])]
        forward = Signal()
        m.d.comb += forward.eq(wr["valid"] & (wr["addr"] == cur["addr"]))
        for j in range(C):
            new = Signal(signed(aw), name=f"new{j}")
            with m.If(~wr["accum"]):
                m.d.comb += new.eq(scaled[j])
            with m.Elif(wr["max"]):
                m.d.comb += new.eq(Mux(old_q[j] > scaled[j], old_q[j], scaled[j]))
            with m.Else():
                m.d.comb += new.eq(old_q[j] + scaled[j])
            m.d.comb += self.acc_wr_data[j * aw:(j + 1) * aw].eq(new)
            m.d.sync += old_q[j].eq(Mux(forward, new,
                                        self.acc_rd_data[j * aw:(j + 1) * aw].as_signed()))
        m.d.comb += [self.tok_prev.give.eq(wr["pprev"]), self.tok_next.give.eq(wr["pnext"])]

        inflight = Signal()
        m.d.comb += inflight.eq(0)
        for st in stages[1:]:
            with m.If(st["valid"] | st["pprev"] | st["pnext"]):
                m.d.comb += inflight.eq(1)
        m.d.comb += self.busy.eq(p_valid | issuing | inflight)
        return m
