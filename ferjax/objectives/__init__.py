"""Training objectives: NNX modules holding a loss and its per-run state."""
