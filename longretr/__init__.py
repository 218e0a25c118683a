"""longretr: long-document search with bidirectional (diffusion-style) LM embeddings."""

import os

# OpenMP threads that spin-wait for busy cores made a 2k-token forward 3x slower on a loaded 2-core machine
# (scripts/bench_speed.py); passive waiting costs little when idle. Set before torch is imported; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Transparent huge pages for torch's large CPU tensors: a training step frees and re-allocates ~12 GB of activations,
# and faulting that back in 4 KB pages was most of a step's time on a 2-core VM (scripts/bench_alloc.py).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
