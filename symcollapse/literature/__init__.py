"""Published closed forms re-derived with the engine: each module writes a loss, derives
its flow, and compares what it derives with the published result (symbolically where it
can, and with integrated trajectories)."""
