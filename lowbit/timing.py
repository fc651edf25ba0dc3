"""Fixed latencies of the compute pipeline and the store unit, the load and store units' in-flight
bounds, shared by the hardware and the cycle simulator.

Kept free of Amaranth imports so the simulator starts fast.
"""

__all__ = ["LOAD_BURSTS_OUTSTANDING", "LOAD_OUTSTANDING", "STORE_INFLIGHT", "STORE_STAGES",
           "compute_timing"]

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


def compute_timing(cfg) -> dict:
    """``feed``: activation read -> array input. ``result``: activation read -> its
    accumulator write (the instruction's completion). ``bank_wait``: last read of a tile ->
    the edge after which its weight bank may be rewritten."""
    latency = cfg.rows + cfg.cols              # SystolicArray.latency
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
