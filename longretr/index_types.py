"""Search-index types beyond exact search, as faiss factory strings, built from the flat vectors.

The flat IDMap2 index in vectors-NNNNNN.faiss stays the source of truth. A non-flat type is an
extra file (ann-NNNNNN.faiss) rebuilt from those vectors at every commit, so it never needs
remove_ids (HNSW has none) and an incremental index equals a fresh one. Every type is wrapped in
IndexIDMap2, so its ids are the docs table's vids, as for the flat index.

    flat    exact inner product (default)
    ivf     IVF{nlist},Flat      nlist = 4 sqrt(n) capped at n / 39 (faiss' training points per list),
                                 nprobe = max(8, nlist / 16)
    hnsw    HNSW32               efConstruction 80, efSearch 128
    ivfpq   IVF{nlist},PQ{m}np   m sub-quantizers of >= 8 dims (8 bits each), no polysemous training
    other   any faiss factory string, e.g. "IVF256,SQ8" or "HNSW16,Flat"

Types that must be trained (IVF, PQ, ...) fall back to flat below MIN_TRAIN_VECTORS vectors (one per
document, more with a model's lead or span vectors), with a note saying so: clustering needs many
points per list, and a flat scan of a few thousand vectors takes about a millisecond anyway.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field

import faiss
import numpy as np

NAMED = ("flat", "ivf", "hnsw", "ivfpq")
MIN_TRAIN_VECTORS = 4096


@dataclass
class Plan:
    requested: str  # what the user asked for: a name above or a factory string
    factory: str | None  # None: plain flat search
    params: dict = field(default_factory=dict)  # search-time parameters (nprobe, efSearch)
    note: str | None = None  # why the plan differs from the request, if it does

    @property
    def description(self) -> str:
        return "IDMap2,Flat" if self.factory is None else f"IDMap2,{self.factory}"


def normalize_request(spec: str) -> str:
    spec = spec.strip()
    if not spec:
        raise ValueError("--index-type is empty; use flat, ivf, hnsw, ivfpq or a faiss factory string")
    return spec.lower() if spec.lower() in NAMED else spec.removeprefix("IDMap2,").removeprefix("IDMap,")


def check(spec: str, dim: int) -> str:
    """Validate a request before any encoding starts; returns it normalised."""
    spec = normalize_request(spec)
    if spec not in NAMED:
        try:
            faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        except Exception as e:  # faiss raises RuntimeError with its C++ message
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise ValueError(f"--index-type {spec!r}: not one of {', '.join(NAMED)} and not a faiss "
                             f"factory string for dimension {dim} ({first})") from e
    return spec


def plan(spec: str, dim: int, n: int) -> Plan:
    """The factory string and search parameters for n vectors of dimension dim."""
    spec = check(spec, dim)
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39 or 1))  # faiss wants ~39 training points per list
    params: dict = {}
    if spec == "flat":
        return Plan(spec, None)
    if spec == "hnsw":
        return Plan(spec, "HNSW32", {"efSearch": 128, "efConstruction": 80})
    if spec == "ivf":
        factory = f"IVF{nlist},Flat"
    elif spec == "ivfpq":
        m = next((m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0 and dim // m >= 8), 1)
        factory = f"IVF{nlist},PQ{m}np"  # np: no polysemous training (slow, and IVF search ignores it)
    else:
        factory = spec
    lists = re.match(r"IVF(\d+)", factory)
    if lists:  # probe 1/16 of the lists: recall near exact on clustered data, ~16x fewer comparisons
        params["nprobe"] = max(8, int(lists.group(1)) // 16)
    if _needs_training(factory, dim) and n < MIN_TRAIN_VECTORS:
        return Plan(spec, None, {}, f"index type {spec!r} ({factory}) needs training on at least "
                                    f"{MIN_TRAIN_VECTORS} vectors; {n} in the index, so it uses exact (flat) search")
    return Plan(spec, factory, params)


def _needs_training(factory: str, dim: int) -> bool:
    return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained


def flat_contents(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """All (vectors, ids) of a flat IndexIDMap2, in storage order."""
    inner = faiss.downcast_index(index.index)
    vectors = inner.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), "float32")
    return vectors, faiss.vector_to_array(index.id_map).astype("int64")


def build(p: Plan, flat: faiss.Index) -> faiss.Index | None:
    """The search index for a plan, trained and filled from the flat index; None for flat search."""
    if p.factory is None:
        return None
    vectors, ids = flat_contents(flat)
    index = faiss.index_factory(flat.d, f"IDMap2,{p.factory}", faiss.METRIC_INNER_PRODUCT)
    if "efConstruction" in p.params:
        faiss.downcast_index(index.index).hnsw.efConstruction = p.params["efConstruction"]
    try:
        if not index.is_trained:
            index.train(vectors)
        index.add_with_ids(vectors, ids)
    except Exception as e:
        raise ValueError(f"index type {p.requested!r} ({p.factory}): cannot be built from {len(ids)} vectors "
                         f"of dimension {flat.d} ({str(e).strip().splitlines()[-1] if str(e).strip() else e})") from e
    set_search_params(index, p.params)
    return index


def set_search_params(index: faiss.Index, params: dict) -> None:
    space = faiss.ParameterSpace()
    for name in ("nprobe", "efSearch"):
        if name in params:
            space.set_index_parameter(index, name, params[name])


def to_gpu(index: faiss.Index) -> tuple[faiss.Index, str]:
    """Move a search index to the GPUs when faiss-gpu is installed and sees one; else keep it."""
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
        return index, "cpu"
    try:
        return faiss.index_cpu_to_all_gpus(index), f"{faiss.get_num_gpus()} gpu"
    except Exception as e:  # e.g. HNSW has no GPU version: searching on the CPU is still correct
        print(f"longretr: faiss-gpu cannot take this index, searching on the CPU ({str(e).strip()[:200]})",
              file=sys.stderr)
        return index, "cpu"
