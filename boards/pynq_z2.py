"""A minimal Amaranth platform for the TUL PYNQ-Z2 (Zynq-7020, ``xc7z020clg400-1``).

amaranth-boards has no PYNQ-Z2. This describes the programmable-logic side only: the 125 MHz
PL clock (H16), the four LEDs, two RGB LEDs, four buttons, two switches, the two Pmod
headers, and a UART for an adapter plugged into Pmod JA. Pins follow the board's master XDC
(``PYNQ-Z2 v1.0.xdc``). The processing system (ARM cores, DDR, the USB UART on MIO) is not an
Amaranth resource: a PS-attached design needs a Vivado block design around the generated
Verilog (``lowbit.hw.board_top.ZynqTop``).
"""

from amaranth.build import Attrs, Clock, Connector, Pins, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import (
    ButtonResources,
    LEDResources,
    RGBLEDResource,
    SwitchResources,
    UARTResource,
)

__all__ = ["PynqZ2Platform"]

_IO = Attrs(IOSTANDARD="LVCMOS33")


class PynqZ2Platform(XilinxPlatform):
    device = "xc7z020"
    package = "clg400"
    speed = "1"
    default_clk = "clk125"
    resources = [
        Resource("clk125", 0, Pins("H16", dir="i"), Clock(125e6), _IO),
        *LEDResources(pins="R14 P14 N16 M14", attrs=_IO),
        RGBLEDResource(0, r="N15", g="G17", b="L15", attrs=_IO),  # LD4
        RGBLEDResource(1, r="M15", g="L14", b="G14", attrs=_IO),  # LD5
        *ButtonResources(pins="D19 D20 L20 L19", attrs=_IO),
        *SwitchResources(pins="M20 M19", attrs=_IO),
        # Not on the board: a 3.3 V USB-UART adapter (e.g. Digilent PmodUSBUART) on Pmod JA,
        # FPGA TX on pin 2, FPGA RX on pin 3. The board's own USB UART belongs to the PS.
        UARTResource(0, rx="3", tx="2", conn=("pmod", 0), attrs=_IO),
    ]
    connectors = [
        Connector("pmod", 0, "Y18 Y19 Y16 Y17 - - U18 U19 W18 W19 - -"),  # JA
        Connector("pmod", 1, "W14 Y14 T11 T10 - - V16 W16 V12 W13 - -"),  # JB
    ]
