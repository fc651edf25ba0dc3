"""Processing element and the weight-stationary systolic array."""

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit.timing import DW_TREE_FANIN, array_latency, dw_tree_stages

from .mul import dsp_choice, product_register

__all__ = ["ACT_WIDTH", "PE", "SystolicArray", "psum_width"]

#: Activations enter the array as 9-bit signed values: int8 sign-extended or uint8
#: zero-extended, so one multiplier serves signed and unsigned (post-ReLU) tensors.
ACT_WIDTH = 9


def psum_width(*, rows: int, weight_bits: int, acc_bits: int) -> int:
    """In-array partial sum width: a sum of ``rows`` products of an ``ACT_WIDTH``-bit
    activation and a ``weight_bits`` weight, at most ``acc_bits``."""
    return min(acc_bits, ACT_WIDTH + weight_bits + (rows - 1).bit_length())


class PE(wiring.Component):
    """One multiply-accumulate cell with two weight banks.

    Each cycle: ``prod <= a_in * w[sel_in]``, ``p_out <= p_in + prod`` (wrapping at
    ``psum_bits``), ``a_out <= a_in``, ``sel_out <= sel_in``: latency 1 from ``p_in``,
    ``a_in`` and ``sel_in`` to their outputs, 2 from ``a_in`` to ``p_out`` (the product is
    registered, so no adder follows the multiplier in one cycle; with ``dsp`` it is a
    MULT18X18D's output register: :func:`~lowbit.hw.mul.product_register`).
    ``w_load`` writes ``w_data`` into bank ``w_bank`` at the clock edge; the other bank
    keeps serving.
    """

    def __init__(self, *, weight_bits: int, psum_bits: int, dsp: bool = False):
        self.weight_bits, self.psum_bits, self.dsp = weight_bits, psum_bits, dsp
        super().__init__({
            "a_in": In(signed(ACT_WIDTH)), "sel_in": In(1), "p_in": In(signed(psum_bits)),
            "a_out": Out(signed(ACT_WIDTH)), "sel_out": Out(1), "p_out": Out(signed(psum_bits)),
            "prod": Out(signed(ACT_WIDTH + weight_bits)),
            "w_load": In(1), "w_bank": In(1), "w_data": In(signed(weight_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        # Datapath registers only: none needs the reset (every consumer is qualified by
        # valid bits reset elsewhere), and leaving it out keeps the reset net's fanout to
        # the control logic.
        banks = Array(Signal(signed(self.weight_bits), name=f"w{b}", reset_less=True)
                      for b in range(2))
        prod = Signal.like(self.prod, name="prod_q", reset_less=True)
        a_q = Signal.like(self.a_out, name="a_q", reset_less=True)
        sel_q = Signal.like(self.sel_out, name="sel_q", reset_less=True)
        p_q = Signal.like(self.p_out, name="p_q", reset_less=True)
        with m.If(self.w_load):
            m.d.sync += banks[self.w_bank].eq(self.w_data)
        w = Signal(signed(self.weight_bits), name="w_sel")
        m.d.comb += w.eq(banks[self.sel_in])
        # On an ECP5 DSP (``dsp``) the product register is the MULT18X18D's output register.
        product_register(m, a=self.a_in, b=w, p=prod, input_regs=False, dsp=self.dsp,
                         name="mul")
        m.d.sync += [a_q.eq(self.a_in), sel_q.eq(self.sel_in), p_q.eq(self.p_in + prod)]
        m.d.comb += [self.prod.eq(prod), self.a_out.eq(a_q), self.sel_out.eq(sel_q),
                     self.p_out.eq(p_q)]
        return m


class SystolicArray(wiring.Component):
    """``rows x cols`` weight-stationary array with input skew and output de-skew.

    Vector ``a`` (``rows`` lanes, element ``i`` multiplies weight row ``i``), its bank
    select and its mode ``dw`` enter together; :attr:`latency` cycles later ``p`` holds
    its result, one vector per cycle, no back-pressure:

    * ``dw = 0`` (matrix): ``p[j] = sum_i a[i] * w[sel][i][j]``;
    * ``dw = 1`` (depthwise FIR mode, square arrays, ``dw_taps > 0``): ``p[i] = sum_{o <
      dw_taps} [sel_{+o} = sel] * a_{+o}[i] * w[sel][i][cols - 1 - o]`` where ``a_{+o}``,
      ``sel_{+o}`` entered ``o`` cycles later. Row ``i``'s activations pass its PEs one per
      cycle, so its last ``dw_taps`` PEs hold lane ``i`` of ``dw_taps`` consecutive vectors
      (vector ``+o`` in column ``cols - 1 - o``); their registered products, those of
      vectors with another bank select masked (the next instruction's, which uses the other
      bank), are summed per row by a pipelined adder tree (``DW_TREE_FANIN`` inputs per
      register stage) and replace the column sums at the de-skew input. Contract: a tile
      used in this mode has zeros in the columns its program does not use, and the vectors
      after the last one of a depthwise run that meet a nonzero column are streamed with
      the same bank (the compute unit streams ``dw_reach`` of them). With ``dw_taps = 0``
      there is no FIR mode and ``dw`` is ignored.

    :attr:`latency` is ``rows + cols`` plus the adder tree's stages after the first, in both
    modes (the column sums wait for the row sums). Partial sums are ``psum_bits`` wide
    (enough for ``rows`` products, or ``acc_bits`` if narrower: they wrap exactly like
    ``acc_bits`` accumulators then) and sign-extend to ``acc_bits`` at ``p``.

    ``w_load`` writes the whole tile ``w_tile`` (element ``(i, j)`` at bits
    ``[(i*cols+j)*wb, +wb)``) into bank ``w_bank`` of every PE at once, one edge later:
    ``w_load`` and ``w_bank`` are registered once per PE row (so the enable's fanout is one
    row, not the array), and ``w_tile`` must hold its value for the cycle after ``w_load``.
    A vector that uses the new tile may enter from the second cycle after ``w_load`` on.
    ``w_load`` for a bank may be asserted on the cycle after the last vector that uses the
    bank's old tile entered plus ``rows + cols - 2`` cycles (:attr:`drain`).
    """

    def __init__(self, *, rows: int, cols: int, weight_bits: int, acc_bits: int,
                 dw_taps: int | None = None):
        dw_taps = cols if dw_taps is None else dw_taps
        if dw_taps and rows != cols:
            raise ValueError(f"the depthwise FIR mode needs a square array, not {rows}x{cols}")
        if not (dw_taps == 0 or 2 <= dw_taps <= cols):
            raise ValueError(f"dw_taps must be 0 or from 2 to cols ({cols}), not {dw_taps}")
        self.rows, self.cols, self.dw_taps = rows, cols, dw_taps
        self.weight_bits, self.acc_bits = weight_bits, acc_bits
        super().__init__({
            "a": In(signed(ACT_WIDTH)).array(rows), "sel": In(1), "dw": In(1),
            "p": Out(signed(acc_bits)).array(cols),
            "w_load": In(1), "w_bank": In(1), "w_tile": In(rows * cols * weight_bits),
        })

    @property
    def latency(self) -> int:
        """Cycles from a vector at the input to its result at ``p`` (both modes)."""
        return array_latency(self.rows, self.cols, self.dw_taps)

    @property
    def drain(self) -> int:
        return self.rows + self.cols - 2

    @property
    def psum_bits(self) -> int:
        """In-array partial sum width (:func:`psum_width`)."""
        return psum_width(rows=self.rows, weight_bits=self.weight_bits, acc_bits=self.acc_bits)

    def elaborate(self, platform):
        m = Module()
        R, C, wb = self.rows, self.cols, self.weight_bits
        pw = self.psum_bits
        T = self.dw_taps
        L = dw_tree_stages(T)
        dsp = dsp_choice(platform)
        pes = [[PE(weight_bits=wb, psum_bits=pw, dsp=dsp.pe(i, j)) for j in range(C)]
               for i in range(R)]
        for i in range(R):
            load_q = Signal(name=f"w_load_q{i}")
            bank_q = Signal(name=f"w_bank_q{i}", reset_less=True)
            m.d.sync += [load_q.eq(self.w_load), bank_q.eq(self.w_bank)]
            for j in range(C):
                pe = pes[i][j]
                m.submodules[f"pe_{i}_{j}"] = pe
                k = (i * C + j) * wb
                m.d.comb += [pe.w_load.eq(load_q), pe.w_bank.eq(bank_q),
                             pe.w_data.eq(self.w_tile[k:k + wb])]
                if j > 0:
                    m.d.comb += [pe.a_in.eq(pes[i][j - 1].a_out),
                                 pe.sel_in.eq(pes[i][j - 1].sel_out)]
                m.d.comb += pe.p_in.eq(pes[i - 1][j].p_out if i > 0 else 0)
            # Row i enters i cycles late.
            a, sel = self.a[i], self.sel
            for d in range(i):
                a_d = Signal(signed(9), name=f"skew_a{i}_{d}", reset_less=True)
                s_d = Signal(name=f"skew_s{i}_{d}", reset_less=True)
                m.d.sync += [a_d.eq(a), s_d.eq(sel)]
                a, sel = a_d, s_d
            m.d.comb += [pes[i][0].a_in.eq(a), pes[i][0].sel_in.eq(sel)]
        if T:
            # Depthwise row sums: row i's last T PEs hold lane i of T consecutive vectors. A
            # mask bit, registered with the products, keeps those with the bank select of the
            # vector in the last column; L tree stages of at most DW_TREE_FANIN inputs sum
            # them, so the sum for vector t is ready at t + rows + i + L, when column i's sum
            # delayed by L - 1 registers is, and enters column i's de-skew chain in its place.
            row_sum = [self._row_tree(m, i, pes[i][C - T:], pw, L) for i in range(R)]
            # The mode bit of vector t, delayed to t + rows + j + L for lane j.
            dw_d = [self.dw]
            for d in range(R + C + L - 1):
                s_d = Signal(name=f"dw_d{d + 1}", reset_less=True)
                m.d.sync += s_d.eq(dw_d[-1])
                dw_d.append(s_d)
        for j in range(C):
            p = pes[R - 1][j].p_out
            if T:
                for d in range(L - 1):
                    c_d = Signal(signed(pw), name=f"col{j}_d{d + 1}", reset_less=True)
                    m.d.sync += c_d.eq(p)
                    p = c_d
                lane = Signal(signed(pw), name=f"lane{j}")
                m.d.comb += lane.eq(Mux(dw_d[R + j + L], row_sum[j], p))
                p = lane
            for d in range(C - 1 - j):
                p_d = Signal(signed(pw), name=f"deskew{j}_{d}", reset_less=True)
                m.d.sync += p_d.eq(p)
                p = p_d
            m.d.comb += self.p[j].eq(p)
        return m

    @staticmethod
    def _row_tree(m, i, row, pw, stages):
        """Row ``i``'s masked sum of the products of the PEs ``row`` (its last ``dw_taps``),
        ``stages`` register stages after the products."""
        T = len(row)
        level = []
        for j in range(T):
            if j == T - 1:
                level.append(row[j].prod)
                continue
            keep = Signal(name=f"dw_keep{i}_{j}", reset_less=True)
            m.d.sync += keep.eq(row[j].sel_in == row[T - 1].sel_in)
            level.append(Mux(keep, row[j].prod, 0))
        for s in range(stages):
            nxt = []
            for g in range(0, len(level), DW_TREE_FANIN):
                r = Signal(signed(pw), name=f"row_sum{i}_s{s}_{g // DW_TREE_FANIN}",
                           reset_less=True)
                m.d.sync += r.eq(_balanced_sum(level[g:g + DW_TREE_FANIN]))
                nxt.append(r)
            level = nxt
        assert len(level) == 1
        return level[0]


def _balanced_sum(terms):
    """``terms`` added pairwise (two adder levels for four terms, not a chain of three)."""
    if len(terms) == 1:
        return terms[0]
    half = (len(terms) + 1) // 2
    return _balanced_sum(terms[:half]) + _balanced_sum(terms[half:])
