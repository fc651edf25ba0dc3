"""cocotb test modules that run inside the simulator (started by :mod:`lowbit.sim.rtl`).

Not named ``test_*.py``: pytest must not import them.
"""
