"""Registered multipliers, and where they become ECP5 DSP blocks with their own registers.

yosys' ECP5 flow maps a ``$mul`` to a MULT18X18D but leaves the block's input and output
registers unused: the fabric flip-flops around it make one FF -> DSP -> FF path, and a
MULT18X18D alone then closes at 116 MHz where its registers give 189 (output) to 280 MHz
(input and output) (``benchmarks/dsp_regs.py``). :func:`product_register` describes a
registered product once; on an ECP5 build that gives its unit a DSP (:class:`DspChoice`, set
by :func:`lowbit.boards.build`) it is that MULT18X18D with its registers on, elsewhere plain
logic the tools map as they like (amaranth.sim, Verilator, iCE40, Xilinx, LUT-built
multipliers).
"""

from dataclasses import dataclass, field

from amaranth import ClockSignal, Const, Instance, Signal, Value

from lowbit.boards.targets import DSP_MIN_BITS, DSP_SIZE

__all__ = ["DSP_UNITS", "DSP_WIDTH", "DspChoice", "dsp_choice", "fits_dsp", "mult18x18d_ports",
           "product_register"]

#: MULT18X18D operands: 18-bit signed (an unsigned operand fits in 17 bits).
DSP_WIDTH = DSP_SIZE["ecp5"][0]
#: The units whose registered products can be MULT18X18D instances.
DSP_UNITS = frozenset({"compute", "store"})


@dataclass(frozen=True)
class DspChoice:
    """Which registered products are built as MULT18X18D instances: those of the units named
    in ``units`` (of :data:`DSP_UNITS`: ``"compute"``, the scaling; ``"store"``, the partial
    products) and of the PEs at the ``(row, col)`` positions in ``pes``. An elaboration
    finds it as ``platform.lowbit_dsp``."""

    units: frozenset = field(default_factory=frozenset)
    pes: frozenset = field(default_factory=frozenset)

    def pe(self, row: int, col: int) -> bool:
        return (row, col) in self.pes


def dsp_choice(platform) -> DspChoice:
    """The platform's :class:`DspChoice` (none for simulation and other families)."""
    return getattr(platform, "lowbit_dsp", None) or DspChoice()


def fits_dsp(a: Value, b: Value) -> bool:
    """Whether one MULT18X18D computes ``a * b`` exactly."""
    def bits(v):
        return len(v) + (0 if v.shape().signed else 1)
    return bits(a) <= DSP_WIDTH and bits(b) <= DSP_WIDTH


def mult18x18d_ports(*, a: Value, b: Value, p: Signal, en: Value, input_regs: bool,
                     output_reg: bool = True) -> dict:
    """The parameters and connections (``Instance`` keywords) of one MULT18X18D computing
    ``p = a * b`` (operands extended to 18 bits by their own signedness, both multiplied
    as signed; ``p`` takes the low bits of the 36-bit product) on the ``sync`` clock, with
    clock enable ``en``, its input registers on if ``input_regs`` and its output register
    on if ``output_reg``; no reset, GSR off (the registers start at zero)."""
    assert fits_dsp(a, b), (len(a), len(b))
    clk = {True: "CLK0", False: "NONE"}
    kw = {"p_REG_INPUTA_CLK": clk[input_regs], "p_REG_INPUTB_CLK": clk[input_regs],
          "p_REG_INPUTC_CLK": "NONE", "p_REG_PIPELINE_CLK": "NONE",
          "p_REG_OUTPUT_CLK": clk[output_reg], "p_GSR": "DISABLED", "p_RESETMODE": "SYNC",
          "i_CLK0": ClockSignal("sync"), "i_CE0": en, "i_RST0": Const(0, 1),
          "i_SIGNEDA": Const(1, 1), "i_SIGNEDB": Const(1, 1),
          "i_SOURCEA": Const(0, 1), "i_SOURCEB": Const(0, 1)}
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        kw[f"p_REG_{reg}_CE"], kw[f"p_REG_{reg}_RST"] = "CE0", "RST0"
    for name, v in (("A", a), ("B", b)):
        signed = v.shape().signed
        for k in range(DSP_WIDTH):
            # sign or zero extension to 18 bits
            kw[f"i_{name}{k}"] = v[k] if k < len(v) else v[-1] if signed else Const(0, 1)
    for k in range(DSP_WIDTH):
        kw[f"i_C{k}"] = Const(0, 1)
    for k in range(min(len(p), 2 * DSP_WIDTH)):
        kw[f"o_P{k}"] = p[k]
    return kw


def product_register(m, *, a: Value, b: Value, p: Signal, en: Value | None = None,
                     input_regs: bool, dsp: bool, name: str, dsp_output_reg: bool = True):
    """Add to module ``m``: ``p <= a * b`` on the edges where ``en`` is high, after ``a`` and
    ``b`` are themselves registered (on the same edges) if ``input_regs``: latency 1, or 2
    with ``input_regs``, from the operands to ``p``. ``p`` must be a ``reset_less`` signal at
    most 36 bits wide; it keeps the low bits of the product.

    With ``dsp`` (and operands :func:`fits_dsp`) this is one MULT18X18D instance named
    ``name`` whose input registers are the operand registers, and whose output register is
    ``p`` if ``dsp_output_reg``; without it ``p`` is a fabric register after the block (for
    a product whose consumers are far from the DSP column: the placer puts ``p`` next to
    them). Otherwise the same registers and a ``*`` in logic."""
    assert p.reset_less, p.name
    en = Const(1, 1) if en is None else en
    # yosys gives no DSP to a narrower operand (boards.build counts the same)
    if dsp and fits_dsp(a, b) and min(len(a), len(b)) >= DSP_MIN_BITS \
            and len(p) <= 2 * DSP_WIDTH:
        out = p
        if not dsp_output_reg:
            out = Signal(len(p), name=f"{name}_p")
            with m.If(en):
                m.d.sync += p.eq(out)
        m.submodules[name] = Instance("MULT18X18D", **mult18x18d_ports(
            a=a, b=b, p=out, en=en, input_regs=input_regs, output_reg=dsp_output_reg))
        return
    if input_regs:
        a_q = Signal(a.shape(), name=f"{name}_a", reset_less=True)
        b_q = Signal(b.shape(), name=f"{name}_b", reset_less=True)
        with m.If(en):
            m.d.sync += [a_q.eq(a), b_q.eq(b)]
        a, b = a_q, b_q
    with m.If(en):
        m.d.sync += p.eq(a * b)
