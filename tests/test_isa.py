"""The ISA: encode/decode round trips, refusal of bad words, and docs/isa.md kept in sync."""

import random
from pathlib import Path

import pytest

from lowbit import isa
from lowbit.isa import (
    FORMATS,
    HEADER,
    INSTR_BITS,
    INSTR_BYTES,
    Instr,
    IsaError,
    Opcode,
    decode,
    encode,
    field_offsets,
    render_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
ALL_OPS = list(Opcode)


def _used_bits(op: Opcode) -> int:
    mask = 0
    for lsb, width in field_offsets(op).values():
        mask |= ((1 << width) - 1) << lsb
    return mask


def _random_fields(rng: random.Random, op: Opcode, mode: str) -> dict[str, int]:
    out = {}
    for name, (_, width) in field_offsets(op).items():
        if name == "opcode":
            continue
        top = (1 << width) - 1
        out[name] = {"random": rng.randint(0, top), "max": top, "zero": 0}[mode]
    return out


def test_layout_is_contiguous_and_fits():
    for op in ALL_OPS:
        pos = 0
        for name, (lsb, width) in field_offsets(op).items():
            assert lsb == pos, (op, name)
            assert width >= 1
            pos += width
        assert pos <= INSTR_BITS
        assert list(field_offsets(op))[: len(HEADER)] == [n for n, _ in HEADER]
    assert INSTR_BYTES * 8 == INSTR_BITS
    assert set(FORMATS) == set(Opcode)


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda o: o.name)
def test_round_trip_random_fields(op):
    rng = random.Random(1000 + op.value)
    for trial in range(300):
        mode = "max" if trial == 0 else "zero" if trial == 1 else "random"
        values = _random_fields(rng, op, mode)
        ins = isa.make(op, **values)
        word = encode(ins)
        assert isinstance(word, bytes) and len(word) == INSTR_BYTES
        back = decode(word)
        assert back.opcode == op
        for name, value in values.items():
            assert back.get(name) == value
            if not (op == Opcode.SYNC and name == "unit"):  # ``unit`` is a Unit property
                assert getattr(back, name) == value
        assert encode(back) == word
        # The word is exactly the fields at their documented offsets.
        expect = op.value
        for name, (lsb, _) in field_offsets(op).items():
            if name != "opcode":
                expect |= values[name] << lsb
        assert int.from_bytes(word, "little") == expect


def test_make_orders_fields_and_omitted_fields_are_zero():
    a = isa.make(Opcode.LOAD, stride=64, target=1, rows=2)
    b = isa.make(Opcode.LOAD, rows=2, target=1, stride=64)
    assert a == b and encode(a) == encode(b)
    assert a.sp_addr == 0 and a.pop_prev == 0
    assert decode(encode(a)).stride == 64
    with pytest.raises(AttributeError):
        a.no_such_field  # noqa: B018


def test_sync_unit_and_units_of_opcodes():
    for unit in isa.Unit:
        assert isa.make(Opcode.SYNC, unit=unit).unit == unit
    assert isa.make(Opcode.LOAD).unit == isa.Unit.LOAD
    assert isa.make(Opcode.COMPUTE).unit == isa.Unit.COMPUTE
    assert isa.make(Opcode.STORE).unit == isa.Unit.STORE
    assert isa.make(Opcode.END).unit is None


def test_make_refuses_out_of_range_and_unknown_fields():
    with pytest.raises(IsaError) as info:
        isa.make(Opcode.COMPUTE, rows=1 << 16)
    assert str(info.value) == "COMPUTE.rows must be from 0 to 65535, not 65536"
    with pytest.raises(IsaError) as info:
        isa.make(Opcode.LOAD, sp_addr=-1)
    assert str(info.value) == "LOAD.sp_addr must be from 0 to 1048575, not -1"
    with pytest.raises(IsaError) as info:
        isa.make(Opcode.END, relu=1)
    assert str(info.value) == ("END has no field 'relu'; its fields are "
                               "pop_prev, pop_next, push_prev, push_next")


@pytest.mark.parametrize("code", [op for op in range(16) if op not in set(Opcode)])
def test_unknown_opcode_is_refused(code):
    with pytest.raises(IsaError) as info:
        decode(code.to_bytes(INSTR_BYTES, "little"), index=7)
    assert str(info.value) == (f"instruction 7 has unknown opcode {code}; opcodes are "
                               f"END=0, LOAD=1, COMPUTE=2, STORE=3, SYNC=4")


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda o: o.name)
def test_every_reserved_bit_is_refused(op):
    used = _used_bits(op)
    reserved = [b for b in range(INSTR_BITS) if not used >> b & 1]
    assert reserved, "every format leaves reserved bits"
    base = int.from_bytes(encode(isa.make(op)), "little")
    for bit in reserved:
        word = (base | 1 << bit).to_bytes(INSTR_BYTES, "little")
        with pytest.raises(IsaError, match=rf"\({op.name}\) has reserved bits set: "
                                           rf"{(1 << bit):#x}$"):
            decode(word)


def test_reserved_bits_message_pinned():
    word = (int(Opcode.END) | 1 << 127).to_bytes(INSTR_BYTES, "little")
    with pytest.raises(IsaError) as info:
        decode(word, index=3)
    assert str(info.value) == ("instruction 3 (END) has reserved bits set: "
                               "0x80000000000000000000000000000000")


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_wrong_length_is_refused(length):
    with pytest.raises(IsaError, match=f"instruction must be 16 bytes, not {length}"):
        decode(bytes(length))


def test_isa_error_is_a_value_error():
    assert issubclass(IsaError, ValueError)


def test_instr_repr_and_dict():
    ins = isa.make(Opcode.STORE, rows=4, relu=1, out_bits=8)
    assert repr(ins) == "STORE(rows=4 relu=1 out_bits=8)"
    assert ins.as_dict()["op"] == "STORE" and ins.as_dict()["rows"] == 4
    assert isinstance(ins, Instr)


def test_csr_offsets():
    offsets = [off for _, off, _, _ in isa.CSRS]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert all(off % 4 == 0 for off in offsets)
    assert isa.csr_offset("ID") == 0x1C
    with pytest.raises(KeyError):
        isa.csr_offset("NOPE")


def test_docs_isa_md_is_generated_from_isa_py():
    # docs/isa.md cannot drift from lowbit.isa: regenerate with `lowbit isa-doc -o docs/isa.md`.
    path = ROOT / "docs" / "isa.md"
    assert path.read_text() == render_markdown()


def test_rendered_reference_lists_everything():
    text = render_markdown()
    assert text.startswith("<!-- Generated by `lowbit isa-doc`")
    assert f"version {isa.ISA_VERSION}" in text
    for op in ALL_OPS:
        assert f"### {op.name}" in text
        for name in field_offsets(op):
            assert f"`{name}`" in text
    for name, _, _, _ in isa.CSRS:
        assert f"| {name} |" in text
