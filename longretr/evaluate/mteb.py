"""An mteb-compatible encoder for any longretr model config, so users with hub access can run the
official LongEmbed tasks (LEMBPasskeyRetrieval, ...) on it:

    import mteb
    from longretr.evaluate.mteb import LongretrEncoder, LONGEMBED_TASKS
    model = LongretrEncoder("default")
    mteb.evaluate(model, mteb.get_tasks(tasks=LONGEMBED_TASKS))          # mteb >= 2
    mteb.MTEB(tasks=LONGEMBED_TASKS).run(model, output_folder="results/mteb")  # mteb 1.x

mteb is not a dependency of longretr (`pip install mteb`). The encoder answers the calling
conventions of mteb 2 (`encode(DataLoader of {"text": [...]} batches, task_metadata=..., prompt_type=...)`),
mteb 1 (`encode(list[str], task_name=..., prompt_type=...)`) and the older retrieval hooks
(`encode_queries`, `encode_corpus`). Queries get the config's query instruction, documents none,
exactly as in `longretr index` / `longretr search`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .data import TASKS

LONGEMBED_TASKS = [t.mteb for t in TASKS.values()]


def _prompt_name(prompt_type: Any) -> str | None:
    value = getattr(prompt_type, "value", prompt_type)
    return str(value).lower() if value is not None else None


def _texts(inputs: Any) -> list[str]:
    """mteb 1 passes a list of strings; mteb 2 a DataLoader of {"text": [...]} batches; older retrieval
    code passes corpus rows {"title", "text"}. A text that is not a str is a TypeError: str() would encode None
    as the word "None". Empty texts are left to the embedder, which refuses them by position."""
    if isinstance(inputs, str | dict):  # one text, one batch or one row (iterating a dict would encode its keys)
        inputs = [inputs]
    out: list[str] = []
    for item in inputs if isinstance(inputs, Iterable) else [inputs]:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), list | tuple):
            out += [_text(t, "a batch's text") for t in item["text"]]  # one mteb 2 batch
        elif isinstance(item, dict):
            title = _text(item.get("title") or "", "a row's title").strip()
            text = _text(item.get("text"), "a row's text")
            out.append(f"{title} {text}".strip() if title else text)
        else:
            raise TypeError(f"cannot encode an input of type {type(item).__name__}")
    return out


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _unit_rows(x: Any) -> Any:
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x))
    return torch.nn.functional.normalize(t.reshape(-1, t.shape[-1]).float(), dim=-1)


class LongretrEncoder:
    """Wraps `longretr.embedder.Embedder` for mteb."""

    def __init__(self, model_name: str = "default", revision: str | None = None, *, embedder: Any = None,
                 dtype: str | None = None, **kwargs: Any) -> None:
        if embedder is None:
            from ..embedder import Embedder

            embedder = Embedder(model_name, dtype=dtype)
        self.embedder = embedder
        self.config = embedder.config
        self.model_name = self.config.name
        self.revision = revision or self.config.fingerprint()

    def encode(self, inputs: Any, *args: Any, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """[n, dim] float32: queries (prompt_type "query") with the config's instruction, anything else as documents
        (each one whole-document vector)."""
        texts = _texts(inputs)
        if _prompt_name(prompt_type) == "query":
            return self.encode_queries(texts)
        return self._documents(texts, progress=bool(kwargs.get("show_progress_bar", False)))

    def encode_queries(self, queries: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """[n, dim] float32, each query with the config's instruction."""
        texts = _texts(queries)
        return self.embedder.encode_queries(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)

    def encode_corpus(self, corpus: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """[n, dim] float32: rows {"title", "text"} (or columns of them) as documents, "title text"."""
        if isinstance(corpus, dict) and isinstance(corpus.get("text"), list | tuple):  # columnar {"title": [...], ...}
            titles = corpus.get("title") or [""] * len(corpus["text"])
            corpus = [{"title": t, "text": x} for t, x in zip(titles, corpus["text"])]
        return self._documents(_texts(corpus), progress=bool(kwargs.get("show_progress_bar", False)))

    def _documents(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        # MTEB takes one vector per document: the whole document's, of its first max_tokens (a config's lead, span
        # and window vectors are not used here, so no windows are encoded)
        return self.embedder.encode_documents(texts, progress=progress, max_tokens=self.embedder.config.max_tokens
                                              ).vectors

    def similarity(self, a: Any, b: Any) -> Any:
        """Cosine similarity matrix [len(a), len(b)]."""
        a, b = _unit_rows(a), _unit_rows(b)
        return a @ b.T

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        """Cosine similarity of each row of a with the same row of b."""
        return (_unit_rows(a) * _unit_rows(b)).sum(-1)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb 2 reads the model's name and revision from here; built only when mteb is installed."""
        from mteb.models.model_meta import ModelMeta

        cfg = self.config
        return ModelMeta(
            loader=None, name=f"longretr/{cfg.name}", revision=self.revision, release_date=None,
            languages=["eng-Latn"], n_parameters=sum(p.numel() for p in self.embedder.model.parameters()),
            memory_usage_mb=None, max_tokens=cfg.max_tokens, embed_dim=self.embedder.dim, license=None,
            open_weights=True, public_training_code=None, public_training_data=None, framework=["PyTorch"],
            similarity_fn_name="cosine", use_instructions=bool(cfg.query_instruction), training_datasets=None,
        )
