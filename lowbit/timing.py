"""Fixed latencies of the compute pipeline and the store unit, the load and store units' in-flight
bounds, shared by the hardware and the cycle simulator.

Kept free of Amaranth imports so the simulator starts fast.
"""

__all__ = ["DW_TREE_FANIN", "LOAD_BURSTS_OUTSTANDING", "LOAD_OUTSTANDING", "STORE_INFLIGHT",
           "STORE_STAGES", "array_latency", "compute_timing", "dw_tree_stages"]

#: Cycles from an activation scratchpad read to the vector entering the array (read port
#: latency, then a register after the sign/zero extension).
FEED = 2
#: Cycles from the array output to the accumulator write: the array output and the factor
#: are registered (the accumulator line is read alongside), then the product (and the line
#: read); the write follows.
SCALE = 2
#: Register stages of the store unit from an accumulator read to the requantized line (read,
#: memory output, ``+ bias``, partial products, ``* mult``, rounding add, shift, clamp). A
#: STORE started at edge ``S`` offers its last W beat at edge
#: ``S + STORE_STAGES + 1 + max(beats, lines)``, where ``lines = reps * rows`` counts every
#: group of a 2-D STORE and ``beats`` their bus beats: the groups follow each other without
#: a gap, so a STORE fills the pipeline once. The next STORE may start on that edge.
STORE_STAGES = 8
#: STOREs that may be started and not yet completed (waiting for their B responses).
STORE_INFLIGHT = 4


#: Inputs the depthwise row-sum adder tree adds per register stage (each PE row sums its
#: ``taps`` registered products in ``dw_tree_stages(taps)`` pipelined stages).
DW_TREE_FANIN = 4


def dw_tree_stages(taps: int) -> int:
    """Register stages of a PE row's depthwise adder tree over ``taps`` products (at least
    one: the row sum is registered; none without taps), ``DW_TREE_FANIN`` inputs per
    stage."""
    if taps == 0:
        return 0
    stages, width = 1, DW_TREE_FANIN
    while width < taps:
        stages, width = stages + 1, width * DW_TREE_FANIN
    return stages


def array_latency(rows: int, cols: int, taps: int) -> int:
    """Cycles from a vector entering the systolic array to its result at the output, in
    every mode: the skewed pass (``rows + cols``) plus the stages after the first of the
    depthwise adder tree over ``taps`` products (the column sums wait for the row sums)."""
    return rows + cols + max(dw_tree_stages(taps) - 1, 0)


def compute_timing(cfg) -> dict:
    """``feed``: activation read -> array input. ``result``: activation read -> its
    accumulator write (the instruction's completion). ``bank_wait``: last read of a tile ->
    the edge after which its weight bank may be rewritten."""
    latency = array_latency(cfg.rows, cfg.cols, cfg.fir_taps)    # SystolicArray.latency
    return {"feed": FEED, "result": FEED + latency + SCALE,
            "bank_wait": FEED + cfg.rows + cfg.cols - 2}


#: LOADs the load unit keeps in flight: it starts the next LOAD's address phase while the
#: data of up to this many LOADs (the current one included) is still outstanding. Each
#: in-flight LOAD holds one entry of the load unit's descriptor FIFO (target, scratchpad
#: address, shape, token) from its start edge to the edge of its last R beat.
LOAD_OUTSTANDING = 8
#: Read bursts the load unit keeps in flight (AR issued, last R beat not yet received); an AR
#: waits until the oldest of them completes. Bounds what the memory must queue (``AxiRam``
#: holds ``queue_depth`` = 64 bursts by default).
LOAD_BURSTS_OUTSTANDING = 32
