"""AXI4 memory model with the exact timing of ``docs/contracts.md``, and cocotb adapters.

Two layers:

* :class:`AxiPortModel` / :class:`AxiMemModel` are pure Python and know nothing of cocotb.
  Rising clock edges are numbered; for every edge ``e`` in order the caller asks what the
  model drives before ``e`` (:meth:`AxiPortModel.outputs`) and then tells it what the master
  drove before ``e`` (:meth:`AxiPortModel.edge`). Unit tests drive it directly.
* :class:`AxiMemAdapter` binds a model to a DUT's ``imem__*`` / ``dmem__*`` signals and runs
  one coroutine per clock, at the falling edge; :class:`AxiLiteMaster` drives ``csr__*``.

Timing (``L`` = latency, both ports, independent queues over one shared byte array):

* ``arready``, ``awready`` and ``wready`` are always 1.
* An AR accepted at edge ``t`` for ``n`` beats makes beat ``k`` available at edge
  ``t + L + k``; beats of one port are delivered in order, one per edge, each at the later of
  its availability and the edge after the previous beat's handshake. ``rvalid`` is high
  before edge ``e`` iff the head beat is available at ``e``.
* W beats are accepted whenever offered, in order, and may precede their AW. The B response of
  a burst is available at ``max(aw_edge, last_w_edge) + L``; responses in order, one per edge.

Data visibility (not fixed by the contract; the cycle simulator should do the same): a write
beat lands in memory at the edge where both it and its AW have been accepted; a read burst
returns the memory as it is just after its AR edge, including writes that landed at that edge
(``dmem`` writes are applied before either port's AR at the same edge).

Protocol rules checked on every AR/AW/W (violations raise :class:`AxiProtocolError` naming
the port, the edge and the value): burst length 1..256 (``len + 1``), INCR bursts only, size
equal to the bus width, a beat-aligned start address, no 4 KiB boundary crossing, the whole
burst inside the memory, and ``wlast`` exactly on each burst's last beat.
"""

from __future__ import annotations

import os
from collections import deque
from typing import NamedTuple

__all__ = [
    "AxiLiteError",
    "AxiLiteMaster",
    "AxiMemAdapter",
    "AxiMemModel",
    "AxiPortModel",
    "AxiProtocolError",
    "PortOutputs",
]

_BURST_NAMES = {0: "FIXED", 1: "INCR", 2: "WRAP", 3: "reserved"}


class AxiProtocolError(AssertionError):
    """The DUT broke an AXI4 rule the memory model checks."""


class AxiLiteError(AssertionError):
    """An AXI4-Lite transaction on the CSR bus failed or timed out."""


class PortOutputs(NamedTuple):
    """What the model drives on one port just before an edge."""

    rvalid: bool
    rdata: int
    rlast: bool
    bvalid: bool


class AxiPortModel:
    """One AXI4 slave port (``imem`` or ``dmem``) over a shared ``bytearray``.

    Call :meth:`outputs` then :meth:`edge` once for every rising edge, in increasing edge
    order (edges where nothing happens may be skipped only while :attr:`idle`).
    """

    def __init__(self, mem: bytearray, *, name: str, beat_bytes: int, latency: int,
                 writable: bool):
        if beat_bytes not in (4, 8, 16, 32, 64, 128):
            raise ValueError(f"beat_bytes must be a power of two from 4 to 128, "
                             f"not {beat_bytes!r}")
        if not isinstance(latency, int) or latency < 1:
            raise ValueError(f"latency must be an integer of at least 1, not {latency!r}")
        self.mem = mem
        self.name = name
        self.beat_bytes = beat_bytes
        self.size = beat_bytes.bit_length() - 1
        self.latency = latency
        self.writable = writable
        #: read beats not yet delivered: (available edge, data, last, burst address)
        self.rq: deque[tuple[int, int, bool, int]] = deque()
        #: write bursts whose AW was accepted but whose W beats are not all in:
        #: [address, beats, beats received, aw edge]
        self.aws: deque[list[int]] = deque()
        #: W beats accepted before their AW: (data bytes, strobe, last, edge)
        self.wbuf: deque[tuple[bytes, int, bool, int]] = deque()
        #: B responses not yet delivered: available edges
        self.bq: deque[int] = deque()
        self.read_bytes = 0
        self.write_bytes = 0
        self.read_bursts = 0
        self.write_bursts = 0
        self._full_strobe = (1 << beat_bytes) - 1

    # -- state ------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No transaction in flight on this port."""
        return not (self.rq or self.aws or self.wbuf or self.bq)

    def counters(self) -> dict[str, int]:
        return {"read_bytes": self.read_bytes, "write_bytes": self.write_bytes,
                "read_bursts": self.read_bursts, "write_bursts": self.write_bursts}

    def describe(self) -> str:
        """One line on what is in flight (for timeout messages)."""
        return (f"{self.name}: {len(self.rq)} read beats pending, {len(self.aws)} write "
                f"bursts awaiting data, {len(self.wbuf)} W beats awaiting AW, {len(self.bq)} "
                f"B responses pending")

    # -- one edge ---------------------------------------------------------------------------

    def outputs(self, e: int) -> PortOutputs:
        """What the model drives before edge ``e``."""
        rq, bq = self.rq, self.bq
        if rq and rq[0][0] <= e:
            head = rq[0]
            r = (True, head[1], head[2])
        else:
            r = (False, 0, False)
        return PortOutputs(*r, bool(bq) and bq[0] <= e)

    def edge(self, e: int, *, ar=None, rready: bool = False, aw=None, w=None,
             bready: bool = False) -> None:
        """Apply edge ``e``: the master drove ``ar`` / ``aw`` = ``(addr, len, size, burst)``
        or None, ``w`` = ``(data int, strb, last)`` or None, and ``rready`` / ``bready``."""
        if self.rq and self.rq[0][0] <= e and rready:
            self.pop_r()
        if self.bq and self.bq[0] <= e and bready:
            self.bq.popleft()
        if aw is not None:
            self.accept_aw(e, *aw)
        if w is not None:
            data, strb, last = w
            self.accept_w(e, data.to_bytes(self.beat_bytes, "little"), strb, last)
        if ar is not None:
            self.accept_ar(e, *ar)

    def pop_r(self):
        return self.rq.popleft()

    def _check_burst(self, kind: str, e: int, addr: int, length: int, size: int,
                     burst: int) -> int:
        where = f"{self.name} {kind} at edge {e} (address {addr:#x}, len {length})"
        n = length + 1
        if not 1 <= n <= 256:
            raise AxiProtocolError(f"{where}: burst of {n} beats; AXI4 allows 1 to 256")
        if burst != 1:
            raise AxiProtocolError(f"{where}: burst type {burst} "
                                   f"({_BURST_NAMES.get(burst, '?')}); only INCR (1) is "
                                   f"supported")
        if size != self.size:
            raise AxiProtocolError(f"{where}: size {size} ({1 << size} bytes per beat); the "
                                   f"bus needs size {self.size} ({self.beat_bytes} bytes)")
        if addr % self.beat_bytes:
            raise AxiProtocolError(f"{where}: address is not aligned to the "
                                   f"{self.beat_bytes}-byte beat")
        end = addr + n * self.beat_bytes
        if (addr >> 12) != ((end - 1) >> 12):
            raise AxiProtocolError(f"{where}: burst of {n} beats {addr:#x}..{end - 1:#x} "
                                   f"crosses a 4 KiB boundary at {(end - 1) >> 12 << 12:#x}")
        if end > len(self.mem):
            raise AxiProtocolError(f"{where}: burst {addr:#x}..{end - 1:#x} is outside the "
                                   f"{len(self.mem):#x}-byte memory")
        return n

    def accept_ar(self, e: int, addr: int, length: int, size: int, burst: int) -> None:
        """An AR handshake at edge ``e``; the data is read now."""
        n = self._check_burst("AR", e, addr, length, size, burst)
        bb = self.beat_bytes
        data = self.mem[addr:addr + n * bb]
        first = e + self.latency
        last = n - 1
        self.rq.extend((first + k, int.from_bytes(data[k * bb:(k + 1) * bb], "little"),
                        k == last, addr) for k in range(n))
        self.read_bytes += n * bb
        self.read_bursts += 1

    def accept_aw(self, e: int, addr: int, length: int, size: int, burst: int) -> None:
        if not self.writable:
            raise AxiProtocolError(f"{self.name} AW at edge {e}: the port is read-only")
        n = self._check_burst("AW", e, addr, length, size, burst)
        self.aws.append([addr, n, 0, e])
        self.write_bursts += 1
        wbuf = self.wbuf
        while wbuf and self.aws:
            data, strb, last, we = wbuf.popleft()
            self._store(we, data, strb, last, e)

    def accept_w(self, e: int, data: bytes, strb: int, last: bool) -> None:
        """A W handshake at edge ``e`` (``data`` is ``beat_bytes`` little-endian bytes)."""
        if not self.writable:
            raise AxiProtocolError(f"{self.name} W at edge {e}: the port is read-only")
        self.write_bytes += self.beat_bytes
        if self.aws:
            self._store(e, data, strb, last, e)
        else:
            self.wbuf.append((data, strb, last, e))

    def _store(self, w_edge: int, data: bytes, strb: int, last: bool, now: int) -> None:
        burst = self.aws[0]
        addr, n, got, aw_edge = burst
        bb = self.beat_bytes
        at = addr + got * bb
        got += 1
        if bool(last) != (got == n):
            what = "has wlast=1 but is not the last" if last else \
                "is the last but has wlast=0"
            raise AxiProtocolError(
                f"{self.name} W at edge {w_edge}: beat {got - 1} of the {n}-beat burst at "
                f"{addr:#x} (AW at edge {aw_edge}) {what}")
        if strb == self._full_strobe:
            self.mem[at:at + bb] = data
        else:
            mem = self.mem
            for i in range(bb):
                if strb >> i & 1:
                    mem[at + i] = data[i]
        if got == n:
            self.aws.popleft()
            self.bq.append(max(aw_edge, w_edge) + self.latency)
        else:
            burst[2] = got


class AxiMemModel:
    """The two ports ``imem`` (read-only) and ``dmem`` (read/write) over one memory."""

    def __init__(self, mem: bytearray, *, beat_bytes: int, latency: int):
        self.mem = mem
        self.imem = AxiPortModel(mem, name="imem", beat_bytes=beat_bytes, latency=latency,
                                 writable=False)
        self.dmem = AxiPortModel(mem, name="dmem", beat_bytes=beat_bytes, latency=latency,
                                 writable=True)

    @property
    def idle(self) -> bool:
        return self.imem.idle and self.dmem.idle

    def counters(self) -> dict[str, int]:
        return {
            "imem_read_bytes": self.imem.read_bytes,
            "imem_read_bursts": self.imem.read_bursts,
            "dram_read_bytes": self.dmem.read_bytes,
            "dram_read_bursts": self.dmem.read_bursts,
            "dram_write_bytes": self.dmem.write_bytes,
            "dram_write_bursts": self.dmem.write_bursts,
        }


# -- cocotb adapters ----------------------------------------------------------------------

class _Sig:
    """Fast access to one DUT signal.

    Under Verilator cocotb writes straight through (``COCOTB_TRUST_INERTIAL_WRITES``), so the
    adapter calls the GPI handle directly and skips cocotb's value objects: this loop runs
    every clock and bounds the RTL simulation speed. Elsewhere it falls back to ``.value``.
    """

    __slots__ = ("handle", "width", "get", "set")

    def __init__(self, handle, *, fast: bool):
        self.handle = handle
        self.width = len(handle)
        raw = getattr(handle, "_handle", None) if fast else None
        if raw is not None:
            if self.width < 32:
                self.get = raw.get_signal_val_long
                setter = raw.set_signal_val_int
                self.set = lambda v, _s=setter: _s(0, v)
            elif self.width == 32:  # get_signal_val_long is signed
                self.get = lambda _g=raw.get_signal_val_long: _g() & 0xFFFFFFFF
                setter = raw.set_signal_val_int
                self.set = lambda v, _s=setter: _s(0, v)
            else:
                getter = raw.get_signal_val_binstr
                self.get = lambda _g=getter: int(_g(), 2)
                setter = raw.set_signal_val_binstr
                fmt = f"0{self.width}b"
                self.set = lambda v, _s=setter, _f=fmt: _s(0, format(v, _f))
        else:
            def get(_h=handle):
                return int(_h.value)

            def set_(v, _h=handle):
                _h.value = v

            self.get, self.set = get, set_


def _fast_signals_ok() -> bool:
    return os.environ.get("COCOTB_TRUST_INERTIAL_WRITES") == "1"


class AxiMemAdapter:
    """Runs an :class:`AxiMemModel` against a DUT's ``imem__*`` and ``dmem__*`` ports.

    Every DUT output it samples is a register, so one coroutine at each falling edge: it
    drives the model's outputs for the next rising edge, reads the DUT's valid/ready and
    payload, and applies the handshakes that edge will see to the model. :attr:`edge` counts
    rising edges. A protocol violation stops the adapter, stores the message in
    :attr:`error` and sets :attr:`failed` (an :class:`cocotb.triggers.Event`).
    """

    def __init__(self, dut, model: AxiMemModel, *, clk=None, trace: bool = False):
        import cocotb.triggers

        #: with ``trace=True``, every handshake, stall and request as ``(edge, port, kind,
        #: *payload)``; kinds ``ar``/``aw`` (addr, len, size, burst), ``w`` (data, strb,
        #: last), ``r`` (data, last), ``b``, ``r_stall``/``b_stall`` (valid without ready)
        self.trace: list[tuple] | None = [] if trace else None
        self.dut = dut
        self.model = model
        self.clk = dut.clk if clk is None else clk
        self.edge = 0
        self.error: str | None = None
        self.failed = cocotb.triggers.Event()
        self._task = None
        fast = _fast_signals_ok()

        def sig(name):
            return _Sig(getattr(dut, name), fast=fast)

        self._ports = []
        for pname, port in (("imem", model.imem), ("dmem", model.dmem)):
            names = ["araddr", "arlen", "arsize", "arburst", "arvalid", "rdata", "rlast",
                     "rvalid", "rready"]
            const = {"arready": 1, "rresp": 0}
            if port.writable:
                names += ["awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata", "wstrb",
                          "wlast", "wvalid", "bvalid", "bready"]
                const.update(awready=1, wready=1, bresp=0, bvalid=0)
            missing = [n for n in [*names, *const] if not hasattr(dut, f"{pname}__{n}")]
            if missing:
                raise AttributeError(f"the DUT has no {pname} signal(s) "
                                     f"{', '.join(f'{pname}__{n}' for n in missing)}")
            p = {n: sig(f"{pname}__{n}") for n in names}
            for n, value in {**const, "rvalid": 0, "rlast": 0, "rdata": 0}.items():
                getattr(dut, f"{pname}__{n}").value = value
            if p["rdata"].width != port.beat_bytes * 8:
                raise ValueError(f"{pname}__rdata is {p['rdata'].width} bits wide but the "
                                 f"model has {port.beat_bytes}-byte beats")
            self._ports.append((port, p))

    def start(self):
        """Start the adapter (``cocotb.start_soon``); returns the task."""
        import cocotb

        self._task = cocotb.start_soon(self._run())
        return self._task

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _run(self):
        try:
            await self._loop()
        except AxiProtocolError as exc:
            self.error = str(exc)
            self.failed.set()
        except Exception as exc:  # the test raises it with the message when it sees failed
            import traceback

            self.error = (f"memory model crashed: {type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc()}")
            self.failed.set()

    async def _loop(self):
        from cocotb.triggers import FallingEdge

        fall = FallingEdge(self.clk)
        (ip, i), (dp, d) = self._ports
        # Bound methods and queues as locals: this loop runs once per clock cycle.
        iq, dq, dbq = ip.rq, dp.rq, dp.bq
        i_rvalid, i_rdata, i_rlast, i_rready = (i["rvalid"].set, i["rdata"].set,
                                                i["rlast"].set, i["rready"].get)
        d_rvalid, d_rdata, d_rlast, d_rready = (d["rvalid"].set, d["rdata"].set,
                                                d["rlast"].set, d["rready"].get)
        d_bvalid, d_bready = d["bvalid"].set, d["bready"].get
        i_arvalid, d_arvalid = i["arvalid"].get, d["arvalid"].get
        d_awvalid, d_wvalid = d["awvalid"].get, d["wvalid"].get
        i_ar = (i["araddr"].get, i["arlen"].get, i["arsize"].get, i["arburst"].get)
        d_ar = (d["araddr"].get, d["arlen"].get, d["arsize"].get, d["arburst"].get)
        d_aw = (d["awaddr"].get, d["awlen"].get, d["awsize"].get, d["awburst"].get)
        d_wdata, d_wstrb, d_wlast = d["wdata"].get, d["wstrb"].get, d["wlast"].get
        bb = dp.beat_bytes
        i_drv = d_drv = None        # the beat driven on R (None: rvalid low)
        i_last = d_last = False     # rlast as driven
        d_bv = False                # bvalid as driven
        tr = self.trace
        e = self.edge
        while True:
            await fall
            e += 1                  # the rising edge that comes next
            self.edge = e
            # imem R: offer the head beat if it is available at edge e
            if iq and iq[0][0] <= e:
                head = iq[0]
                if head is not i_drv:
                    if i_drv is None:
                        i_rvalid(1)
                    i_rdata(head[1])
                    if head[2] != i_last:
                        i_last = head[2]
                        i_rlast(i_last)
                    i_drv = head
                if i_rready():
                    iq.popleft()
                    if tr is not None:
                        tr.append((e, "imem", "r", head[1], head[2]))
                elif tr is not None:
                    tr.append((e, "imem", "r_stall"))
            elif i_drv is not None:
                i_rvalid(0)
                i_drv = None
            # dmem R
            if dq and dq[0][0] <= e:
                head = dq[0]
                if head is not d_drv:
                    if d_drv is None:
                        d_rvalid(1)
                    d_rdata(head[1])
                    if head[2] != d_last:
                        d_last = head[2]
                        d_rlast(d_last)
                    d_drv = head
                if d_rready():
                    dq.popleft()
                    if tr is not None:
                        tr.append((e, "dmem", "r", head[1], head[2]))
                elif tr is not None:
                    tr.append((e, "dmem", "r_stall"))
            elif d_drv is not None:
                d_rvalid(0)
                d_drv = None
            # dmem B
            if dbq and dbq[0] <= e:
                if not d_bv:
                    d_bvalid(1)
                    d_bv = True
                if d_bready():
                    dbq.popleft()
                    if tr is not None:
                        tr.append((e, "dmem", "b"))
                elif tr is not None:
                    tr.append((e, "dmem", "b_stall"))
            elif d_bv:
                d_bvalid(0)
                d_bv = False
            # requests seen by edge e: dmem writes first, then reads
            if d_awvalid():
                req = (d_aw[0](), d_aw[1](), d_aw[2](), d_aw[3]())
                if tr is not None:
                    tr.append((e, "dmem", "aw", *req))
                dp.accept_aw(e, *req)
            if d_wvalid():
                data, strb, last = d_wdata(), d_wstrb(), d_wlast()
                if tr is not None:
                    tr.append((e, "dmem", "w", data, strb, last))
                dp.accept_w(e, data.to_bytes(bb, "little"), strb, last)
            if d_arvalid():
                req = (d_ar[0](), d_ar[1](), d_ar[2](), d_ar[3]())
                if tr is not None:
                    tr.append((e, "dmem", "ar", *req))
                dp.accept_ar(e, *req)
            if i_arvalid():
                req = (i_ar[0](), i_ar[1](), i_ar[2](), i_ar[3]())
                if tr is not None:
                    tr.append((e, "imem", "ar", *req))
                ip.accept_ar(e, *req)


class AxiLiteMaster:
    """AXI4-Lite master on ``<prefix>__*`` (32-bit data). Drives at falling edges.

    The slave's ready/valid outputs must be registered (``docs/contracts.md``), so a value
    sampled at the falling edge is what the next rising edge sees.
    """

    def __init__(self, dut, prefix: str = "csr", *, clk=None, timeout_cycles: int = 1000):
        self.dut = dut
        self.clk = dut.clk if clk is None else clk
        self.timeout_cycles = timeout_cycles
        self._s = {n: getattr(dut, f"{prefix}__{n}") for n in (
            "awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
            "bvalid", "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid",
            "rready")}
        self.prefix = prefix
        for n in ("awvalid", "wvalid", "bready", "arvalid", "rready", "awaddr", "wdata",
                  "wstrb", "araddr"):
            self._s[n].value = 0

    async def _tick(self, what: str, count: list[int]):
        from cocotb.triggers import FallingEdge

        count[0] += 1
        if count[0] > self.timeout_cycles:
            raise AxiLiteError(f"{self.prefix} {what}: no handshake within "
                               f"{self.timeout_cycles} cycles")
        await FallingEdge(self.clk)

    async def write(self, addr: int, data: int, strb: int = 0xF) -> None:
        """Write one 32-bit register; raises :class:`AxiLiteError` on BRESP != OKAY."""
        from cocotb.triggers import FallingEdge

        s = self._s
        await FallingEdge(self.clk)
        s["awaddr"].value = addr
        s["wdata"].value = data & 0xFFFFFFFF
        s["wstrb"].value = strb
        s["awvalid"].value = 1
        s["wvalid"].value = 1
        aw_pending = w_pending = True
        count = [0]
        what = f"write {addr:#04x}"
        while aw_pending or w_pending:
            aw_hs = aw_pending and int(s["awready"].value)
            w_hs = w_pending and int(s["wready"].value)
            await self._tick(what, count)
            if aw_hs:
                s["awvalid"].value = 0
                aw_pending = False
            if w_hs:
                s["wvalid"].value = 0
                w_pending = False
        s["bready"].value = 1
        while not int(s["bvalid"].value):
            await self._tick(what, count)
        resp = int(s["bresp"].value)
        await FallingEdge(self.clk)
        s["bready"].value = 0
        if resp:
            raise AxiLiteError(f"{self.prefix} {what}: BRESP {resp}")

    async def read(self, addr: int) -> int:
        """Read one 32-bit register; raises :class:`AxiLiteError` on RRESP != OKAY."""
        from cocotb.triggers import FallingEdge

        s = self._s
        await FallingEdge(self.clk)
        s["araddr"].value = addr
        s["arvalid"].value = 1
        count = [0]
        what = f"read {addr:#04x}"
        while True:
            hs = int(s["arready"].value)
            await self._tick(what, count)
            if hs:
                s["arvalid"].value = 0
                break
        s["rready"].value = 1
        while not int(s["rvalid"].value):
            await self._tick(what, count)
        data, resp = int(s["rdata"].value), int(s["rresp"].value)
        await FallingEdge(self.clk)
        s["rready"].value = 0
        if resp:
            raise AxiLiteError(f"{self.prefix} {what}: RRESP {resp}")
        return data
