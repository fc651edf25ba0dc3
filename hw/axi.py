"""AXI4 and AXI4-Lite interface signatures (master's view: ``Out`` is driven by the master)."""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4LiteSignature", "AXI4ReadSignature", "AXI4Signature", "AXI4WriteSignature",
           "BURST_INCR", "RESP_OKAY"]

BURST_INCR = 1
RESP_OKAY = 0


def _read_members(addr_width, data_width):
    return {
        "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    }


def _write_members(addr_width, data_width):
    return {
        "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class AXI4ReadSignature(wiring.Signature):
    """AR and R channels of an AXI4 master (INCR bursts, single ID)."""

    def __init__(self, *, addr_width: int, data_width: int):
        super().__init__(_read_members(addr_width, data_width))


class AXI4WriteSignature(wiring.Signature):
    """AW, W and B channels of an AXI4 master (INCR bursts, single ID)."""

    def __init__(self, *, addr_width: int, data_width: int):
        super().__init__(_write_members(addr_width, data_width))


class AXI4Signature(wiring.Signature):
    """A full AXI4 master: read and write channels."""

    def __init__(self, *, addr_width: int, data_width: int):
        members = _write_members(addr_width, data_width)
        members.update(_read_members(addr_width, data_width))
        super().__init__(members)


class AXI4LiteSignature(wiring.Signature):
    """An AXI4-Lite master (use ``In(...)`` for a slave)."""

    def __init__(self, *, addr_width: int, data_width: int = 32):
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })
