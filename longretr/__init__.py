"""longretr: long-document search with bidirectional (diffusion-style) LM embeddings."""

import os

# OpenMP threads that spin-wait for busy cores made a 2k-token forward 3x slower on a loaded 2-core machine
# (scripts/bench_speed.py); passive waiting costs little when idle. Set before torch is imported; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
