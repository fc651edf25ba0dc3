"""Processing element and the weight-stationary systolic array."""

from amaranth import Array, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ACT_WIDTH", "PE", "SystolicArray"]

#: Activations enter the array as 9-bit signed values: int8 sign-extended or uint8
#: zero-extended, so one multiplier serves signed and unsigned (post-ReLU) tensors.
ACT_WIDTH = 9


class PE(wiring.Component):
    """One multiply-accumulate cell with two weight banks.

    Each cycle: ``p_out <= p_in + a_in * w[sel_in]`` (wrapping at ``acc_bits``),
    ``a_out <= a_in``, ``sel_out <= sel_in``. Latency 1 on every path. ``w_load`` writes
    ``w_data`` into bank ``w_bank`` at the clock edge; the other bank keeps serving.
    """

    def __init__(self, *, weight_bits: int, acc_bits: int):
        self.weight_bits, self.acc_bits = weight_bits, acc_bits
        super().__init__({
            "a_in": In(signed(ACT_WIDTH)), "sel_in": In(1), "p_in": In(signed(acc_bits)),
            "a_out": Out(signed(ACT_WIDTH)), "sel_out": Out(1), "p_out": Out(signed(acc_bits)),
            "w_load": In(1), "w_bank": In(1), "w_data": In(signed(weight_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        banks = Array(Signal(signed(self.weight_bits), name=f"w{b}") for b in range(2))
        with m.If(self.w_load):
            m.d.sync += banks[self.w_bank].eq(self.w_data)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.p_out.eq(self.p_in + self.a_in * banks[self.sel_in]),
        ]
        return m


class SystolicArray(wiring.Component):
    """``rows x cols`` weight-stationary array with input skew and output de-skew.

    Vector ``a`` (``rows`` lanes, element ``i`` multiplies weight row ``i``) and its bank
    select enter together; ``rows + cols - 1`` cycles later ``p`` holds
    ``p[j] = sum_i a[i] * w[sel][i][j]`` for it, one vector per cycle, no back-pressure.

    ``w_load`` writes the whole tile ``w_tile`` (element ``(i, j)`` at bits
    ``[(i*cols+j)*wb, +wb)``) into bank ``w_bank`` of every PE at once. A bank may be
    rewritten on the cycle after the last vector that uses it entered plus
    ``rows + cols - 2`` cycles (:attr:`drain`).
    """

    def __init__(self, *, rows: int, cols: int, weight_bits: int, acc_bits: int):
        self.rows, self.cols = rows, cols
        self.weight_bits, self.acc_bits = weight_bits, acc_bits
        super().__init__({
            "a": In(signed(ACT_WIDTH)).array(rows), "sel": In(1),
            "p": Out(signed(acc_bits)).array(cols),
            "w_load": In(1), "w_bank": In(1), "w_tile": In(rows * cols * weight_bits),
        })

    @property
    def latency(self) -> int:
        return self.rows + self.cols - 1

    @property
    def drain(self) -> int:
        return self.rows + self.cols - 2

    def elaborate(self, platform):
        m = Module()
        R, C, wb = self.rows, self.cols, self.weight_bits
        pes = [[PE(weight_bits=wb, acc_bits=self.acc_bits) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = pes[i][j]
                m.submodules[f"pe_{i}_{j}"] = pe
                k = (i * C + j) * wb
                m.d.comb += [pe.w_load.eq(self.w_load), pe.w_bank.eq(self.w_bank),
                             pe.w_data.eq(self.w_tile[k:k + wb])]
                if j > 0:
                    m.d.comb += [pe.a_in.eq(pes[i][j - 1].a_out),
                                 pe.sel_in.eq(pes[i][j - 1].sel_out)]
                m.d.comb += pe.p_in.eq(pes[i - 1][j].p_out if i > 0 else 0)
            # Row i enters i cycles late.
            a, sel = self.a[i], self.sel
            for d in range(i):
                a_d = Signal(signed(9), name=f"skew_a{i}_{d}")
                s_d = Signal(name=f"skew_s{i}_{d}")
                m.d.sync += [a_d.eq(a), s_d.eq(sel)]
                a, sel = a_d, s_d
            m.d.comb += [pes[i][0].a_in.eq(a), pes[i][0].sel_in.eq(sel)]
        for j in range(C):
            p = pes[R - 1][j].p_out
            for d in range(C - 1 - j):
                p_d = Signal(signed(self.acc_bits), name=f"deskew{j}_{d}")
                m.d.sync += p_d.eq(p)
                p = p_d
            m.d.comb += self.p[j].eq(p)
        return m
