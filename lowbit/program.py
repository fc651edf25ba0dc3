"""A compiled program: instruction stream, memory image and tensor map.

A :class:`Program` is what every executor runs (see :mod:`lowbit.executors`). It is written
to disk as one file::

    b"LOWBITPG" | u32 header length | JSON header | instruction bytes | image bytes

The header carries the config, the tensor map, segment addresses and a SHA-256 of the body,
so a truncated or altered file is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import isa
from .config import AccelConfig, ConfigError
from .layout import pack_act, unpack_act

__all__ = ["Program", "ProgramError", "TensorRef"]

MAGIC = b"LOWBITPG"
FORMAT_VERSION = 1


class ProgramError(ValueError):
    """A program that cannot be loaded or run."""


@dataclass(frozen=True)
class TensorRef:
    """An ``(rows, cols)`` activation tensor in the blocked layout at ``addr``.

    Real value = ``scale * q``; ``signed`` says whether the bytes are int8 or uint8.
    """

    name: str
    addr: int
    rows: int
    cols: int
    signed: bool = True
    scale: float = 1.0
    bits: int = 8

    def to_dict(self):
        return dict(name=self.name, addr=self.addr, rows=self.rows, cols=self.cols,
                    signed=self.signed, scale=self.scale, bits=self.bits)


@dataclass
class Program:
    config: AccelConfig
    instrs: list[isa.Instr]
    segments: list[tuple[int, bytes]]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    prog_addr: int = 0
    meta: dict = field(default_factory=dict)

    # -- memory image ---------------------------------------------------------------------

    @property
    def code(self) -> bytes:
        """The encoded instruction stream (cached; rebuilt if ``instrs`` is replaced)."""
        cached = getattr(self, "_code_of", None)
        if cached is None or len(cached) != len(self.instrs) \
                or not all(a is b for a, b in zip(cached, self.instrs, strict=True)):
            self._code = b"".join(isa.encode(i) for i in self.instrs)
            self._code_of = tuple(self.instrs)
        return self._code

    def memory_image(self, inputs: dict[str, np.ndarray] | None = None) -> bytearray:
        """The external memory at start: code, constants and the given input tensors."""
        return bytearray(self.memory_array(inputs).tobytes())

    def memory_array(self, inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """:meth:`memory_image` as a writable ``uint8`` array (cheap: zero pages are lazy)."""
        mem = np.zeros(self.config.mem_bytes, dtype=np.uint8)
        code = np.frombuffer(self.code, dtype=np.uint8)
        mem[self.prog_addr:self.prog_addr + code.size] = code
        for addr, data in self.segments:
            mem[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)
        for ref, value in self._match_inputs(inputs or {}):
            data = np.frombuffer(pack_act(self.config, value), dtype=np.uint8)
            mem[ref.addr:ref.addr + data.size] = data
        return mem

    def _match_inputs(self, inputs):
        out = []
        for ref in self.inputs:
            if ref.name not in inputs:
                raise ProgramError(f"input {ref.name!r} is missing; inputs are "
                                   f"{', '.join(r.name for r in self.inputs)}")
            value = np.asarray(inputs[ref.name])
            if value.shape != (ref.rows, ref.cols):
                raise ProgramError(f"input {ref.name!r} must have shape "
                                   f"{(ref.rows, ref.cols)}, not {value.shape}")
            lo = -(1 << (ref.bits - 1)) if ref.signed else 0
            hi = (1 << (ref.bits - 1)) - 1 if ref.signed else (1 << ref.bits) - 1
            if value.size and (value.min() < lo or value.max() > hi):
                raise ProgramError(f"input {ref.name!r} values must be from {lo} to {hi}, "
                                   f"not {value.min()}..{value.max()}")
            out.append((ref, value))
        return out

    def read_outputs(self, mem) -> dict[str, np.ndarray]:
        from .layout import act_bytes
        out = {}
        for ref in self.outputs:
            n = act_bytes(self.config, ref.rows, ref.cols)
            out[ref.name] = unpack_act(self.config, bytes(mem[ref.addr:ref.addr + n]),
                                       ref.rows, ref.cols, signed=ref.signed)
        return out

    # -- files ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        code = self.code
        image = b"".join(data for _, data in self.segments)
        body = code + image
        header = {
            "format": FORMAT_VERSION,
            "isa_version": isa.ISA_VERSION,
            "config": self.config.to_dict(),
            "prog_addr": self.prog_addr,
            "n_instrs": len(self.instrs),
            "segments": [[addr, len(data)] for addr, data in self.segments],
            "inputs": [r.to_dict() for r in self.inputs],
            "outputs": [r.to_dict() for r in self.outputs],
            "meta": self.meta,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        blob = json.dumps(header, sort_keys=True).encode()
        return MAGIC + struct.pack("<I", len(blob)) + blob + body

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "program") -> Program:
        if len(data) < 12 or data[:8] != MAGIC:
            raise ProgramError(f"{source} is not a lowbit program (bad magic)")
        (hlen,) = struct.unpack("<I", data[8:12])
        try:
            header = json.loads(data[12:12 + hlen])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProgramError(f"{source} has a corrupt header") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise ProgramError(f"{source} has unsupported format "
                               f"{header.get('format') if isinstance(header, dict) else '?'}; "
                               f"this lowbit reads format {FORMAT_VERSION}")
        if header.get("isa_version") != isa.ISA_VERSION:
            raise ProgramError(f"{source} targets ISA version {header.get('isa_version')}, "
                               f"this lowbit implements version {isa.ISA_VERSION}")
        body = data[12 + hlen:]
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise ProgramError(f"{source} is corrupt: checksum mismatch "
                               f"(truncated or modified)")
        try:
            return cls._from_header(header, body, source)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProgramError):
                raise
            raise ProgramError(f"{source} has a corrupt header ({type(exc).__name__}: "
                               f"{exc})") from None

    @classmethod
    def _from_header(cls, header: dict, body: bytes, source: str) -> Program:
        try:
            config = AccelConfig.from_dict(header["config"])
        except ConfigError as exc:
            raise ProgramError(f"{source} has an invalid config: {exc}") from None
        n = header["n_instrs"]
        code, pos = body[: n * isa.INSTR_BYTES], n * isa.INSTR_BYTES
        instrs = []
        for i in range(n):
            try:
                instrs.append(isa.decode(code[i * 16:(i + 1) * 16], index=i))
            except isa.IsaError as exc:
                raise ProgramError(f"{source}: {exc}") from None
        segments = []
        for addr, length in header["segments"]:
            segments.append((addr, bytes(body[pos:pos + length])))
            pos += length
        prog = cls(config=config, instrs=instrs, segments=segments,
                   inputs=[TensorRef(**r) for r in header["inputs"]],
                   outputs=[TensorRef(**r) for r in header["outputs"]],
                   prog_addr=header["prog_addr"], meta=header.get("meta", {}))
        prog.validate()
        return prog

    @classmethod
    def load(cls, path: str | Path) -> Program:
        path = Path(path)
        if not path.is_file():
            raise ProgramError(f"program file {str(path)!r} does not exist")
        return cls.from_bytes(path.read_bytes(), source=f"program {str(path)!r}")

    # -- checks ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every instruction against the config's memories; raise ProgramError."""
        from .checks import check_program

        code = self.code
        if getattr(self, "_validated", None) is not code:
            check_program(self)
            self._validated = code
