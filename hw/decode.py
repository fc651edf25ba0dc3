"""Instruction field views for the hardware, derived from :mod:`lowbit.isa`."""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit import isa

__all__ = ["TokenPort", "field", "opcode_of"]


def field(instr, opcode: isa.Opcode, name: str):
    """The slice of a raw instruction value holding ``name`` of ``opcode``."""
    lsb, width = isa.field_offsets(opcode)[name]
    return instr[lsb:lsb + width]


def opcode_of(instr):
    return field(instr, isa.Opcode.END, "opcode")


class TokenPort(wiring.Signature):
    """One unit's side of a token counter: ``avail`` (counter non-zero), ``take``, ``give``."""

    def __init__(self):
        super().__init__({"avail": In(1), "take": Out(1), "give": Out(1)})
