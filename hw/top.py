"""The accelerator top level and Verilog generation."""

from amaranth import Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import fifo, memory, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from lowbit import isa
from lowbit.config import AccelConfig

from .axi import AXI4LiteSignature, AXI4ReadSignature, AXI4Signature, AXI4WriteSignature
from .compute import ComputeUnit
from .csr import ControlRegisters
from .frontend import Frontend
from .linemem import LineMemory
from .load import LoadUnit
from .store import StoreUnit

__all__ = ["Top", "generate_verilog", "TOP_NAME"]

TOP_NAME = "lowbit_top"


class Top(wiring.Component):
    """The accelerator: CSRs, fetch/dispatch, load/compute/store units and their memories.

    Ports: ``csr`` (AXI4-Lite slave), ``imem`` (AXI4 read master, instructions), ``dmem``
    (AXI4 master, data) and ``irq``. See ``docs/contracts.md`` and ``docs/architecture.md``.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        aw, dw = cfg.addr_bits, cfg.bus_bits
        super().__init__({
            "csr": In(AXI4LiteSignature(addr_width=8)),
            "imem": Out(AXI4ReadSignature(addr_width=aw, data_width=dw)),
            "dmem": Out(AXI4Signature(addr_width=aw, data_width=dw)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.csr = csr = ControlRegisters()
        m.submodules.frontend = fe = Frontend(cfg)
        m.submodules.load = ld = LoadUnit(cfg)
        m.submodules.compute = cu = ComputeUnit(cfg)
        m.submodules.store = st = StoreUnit(cfg)
        connect(m, flipped(self.csr), csr.bus)
        connect(m, fe.imem, flipped(self.imem))
        m.d.comb += [self.irq.eq(csr.irq), fe.start.eq(csr.start),
                     fe.prog_addr.eq(csr.prog_addr), fe.prog_len.eq(csr.prog_len),
                     csr.done.eq(fe.done), csr.error.eq(fe.error),
                     csr.dispatched.eq(fe.dispatched)]

        # dmem: reads belong to the load unit, writes to the store unit.
        rd = AXI4ReadSignature(addr_width=cfg.addr_bits, data_width=cfg.bus_bits)
        wr = AXI4WriteSignature(addr_width=cfg.addr_bits, data_width=cfg.bus_bits)
        for sig, unit in ((rd, ld.axi), (wr, st.axi)):
            for name, member in sig.members.items():
                ours, theirs = getattr(self.dmem, name), getattr(unit, name)
                if member.flow == Out:
                    m.d.comb += ours.eq(theirs)
                else:
                    m.d.comb += theirs.eq(ours)

        # Instruction queues.
        queues = []
        for name, src, dst in (("q_load", fe.q_load, ld.instr),
                               ("q_compute", fe.q_compute, cu.instr),
                               ("q_store", fe.q_store, st.instr)):
            q = fifo.SyncFIFO(width=isa.INSTR_BITS, depth=cfg.queue_depth)
            m.submodules[name] = q
            connect(m, src, q.w_stream)
            connect(m, q.r_stream, dst)
            queues.append(q)

        # Dependency tokens.
        def counter(name, giver, taker):
            cnt = Signal(isa.TOKEN_COUNTER_BITS, name=name)
            m.d.sync += cnt.eq(cnt + giver.give - taker.take)
            m.d.comb += taker.avail.eq(cnt != 0)

        counter("tok_l2c", ld.tok_next, cu.tok_prev)
        counter("tok_c2l", cu.tok_prev, ld.tok_next)
        counter("tok_c2s", cu.tok_next, st.tok_prev)
        counter("tok_s2c", st.tok_prev, cu.tok_next)

        # Memories.
        m.submodules.act = act = LineMemory(line_bits=cfg.act_line_bits,
                                            beat_bits=cfg.bus_bits, lines=cfg.act_depth)
        m.submodules.wgt = wgt = LineMemory(line_bits=cfg.bus_bits, beat_bits=cfg.bus_bits,
                                            lines=cfg.weight_words)
        m.submodules.prm = prm = LineMemory(line_bits=cfg.param_line_bits,
                                            beat_bits=cfg.bus_bits, lines=cfg.param_depth)
        for k, mem in enumerate((act, wgt, prm)):
            m.d.comb += [mem.w_en.eq(ld.wr_en[k]), mem.w_addr.eq(ld.wr_addr),
                         mem.w_data.eq(ld.wr_data)]
        m.d.comb += [act.r_en.eq(cu.act_en), act.r_addr.eq(cu.act_addr),
                     cu.act_data.eq(act.r_data),
                     wgt.r_en.eq(cu.wgt_en), wgt.r_addr.eq(cu.wgt_addr),
                     cu.wgt_data.eq(wgt.r_data),
                     prm.r_en.eq(st.prm_en), prm.r_addr.eq(st.prm_addr),
                     st.prm_data.eq(prm.r_data)]
        m.submodules.acc = acc = memory.Memory(
            shape=unsigned(cfg.cols * cfg.acc_bits), depth=cfg.acc_depth, init=[])
        acc_w = acc.write_port()
        acc_rmw = acc.read_port(transparent_for=(acc_w,))
        acc_st = acc.read_port()
        m.d.comb += [acc_w.en.eq(cu.acc_wr_en), acc_w.addr.eq(cu.acc_wr_addr),
                     acc_w.data.eq(cu.acc_wr_data),
                     acc_rmw.en.eq(cu.acc_rd_en), acc_rmw.addr.eq(cu.acc_rd_addr),
                     cu.acc_rd_data.eq(acc_rmw.data),
                     acc_st.en.eq(st.acc_en), acc_st.addr.eq(st.acc_addr),
                     st.acc_data.eq(acc_st.data)]

        idle = Signal()
        m.d.comb += idle.eq(~ld.busy & ~cu.busy & ~st.busy
                            & ~queues[0].r_rdy & ~queues[1].r_rdy & ~queues[2].r_rdy)
        m.d.comb += fe.units_idle.eq(idle)
        return m


def generate_verilog(cfg: AccelConfig) -> str:
    """Verilog for ``cfg``, top module ``lowbit_top``, with a banner; deterministic."""
    top = Top(cfg)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    banner = (f"// Generated by lowbit from config {cfg.name} (ISA v{isa.ISA_VERSION}).\n"
              f"// Config: {cfg.to_json()}\n// Do not edit by hand.\n")
    return banner + text
