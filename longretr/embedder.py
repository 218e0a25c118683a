"""The embedder: backbone -> final-layer token states -> pooling -> L2 normalisation.

`encode_queries` and `encode_documents` are the one entry point the rest of longretr uses.
Documents are tokenised once, sorted by length and packed into batches up to a token budget, so
padding stays small and a 32k-token document is one unpadded forward pass. A document longer than
the config's max_tokens is not cut: the rest goes through in windows (ModelConfig.windows).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import load_backbone, notice_file
from .config import DTYPE_NAMES, ModelConfig, load_config
from .fusion import fusion_scores
from .queries import check_texts


@dataclass
class EncodedDocuments:
    vectors: np.ndarray  # [N, dim] float32, each whole document's
    n_tokens: list[int]  # the document's tokens (all encoded: past max_tokens, in windows)
    truncated: list[bool]  # cut at max_tokens (only with encode_documents' max_tokens)
    padding_waste: float  # padded positions / all positions in the forward passes
    seconds: float
    # row -> [m, dim]: a long document's other vectors, its lead's first (ModelConfig.lead_tokens), then its spans'
    # (ModelConfig.span_tokens), then its windows' past max_tokens (ModelConfig.other_ranges has their tokens)
    extra: dict[int, np.ndarray] = field(default_factory=dict)
    leads: frozenset[int] = frozenset()  # rows whose first other vector is a lead

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[Q, N] dense-mode scores: each document's best cosine over all its vectors."""
        return self.dense_and_fusion_scores(queries)[0]

    def fusion_scores(self, queries: np.ndarray) -> np.ndarray:
        """[Q, N] the dense scores that hybrid search fuses with BM25's (fusion_scores, below)."""
        return self.dense_and_fusion_scores(queries)[1]

    def dense_and_fusion_scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both, from one pass over the vectors (a caller that needs both calls this)."""
        whole = queries @ self.vectors.T
        if not self.extra:
            return whole, whole
        rows = sorted(self.leads)
        doc = best_scores(whole, queries, np.array(rows, dtype="int64"),
                          np.stack([self.extra[r][0] for r in rows])) if rows else whole
        owners = np.concatenate([np.full(len(v), row) for row, v in self.extra.items()])
        best = best_scores(doc, queries, owners, np.concatenate(list(self.extra.values())))
        return best, fusion_scores(best, doc)


def best_scores(scores: np.ndarray, queries: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """[Q, N] scores raised to each owner document's best cosine with `vectors` (owners[i] owns vectors[i])."""
    out = scores.copy()
    np.maximum.at(out.T, owners, (queries @ vectors.T).T)
    return out


DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES if name != "auto"}
CPUINFO = Path("/proc/cpuinfo")
# Rows (tokens, or head vectors) per chunk of a token-wise module (see chunk_token_wise); 0 turns chunking off.
TOKEN_WISE_CHUNK = 4096
# A text longer than this (characters) is tokenized in pieces of about PIECE_CHARS (Embedder._long_tokens): one call
# over a 60 MB text held 10 GB (Python lists of its 21.7M ids and offset tuples, and the tokenizer's own per-token
# structures), though the model only ever sees max_tokens at a time. Texts up to it are tokenized in one call, as ever.
LONG_TEXT_CHARS = 1_000_000
PIECE_CHARS = 1_000_000
PROBE_TEXT = "a"  # tokenized with special tokens to learn which go before and after a text's own

TokenIds = list[int] | np.ndarray  # a list from one tokenizer call; int32 for a text tokenized in pieces


def pick_device_dtype(requested: str = "auto", device: str | None = None) -> tuple[str, torch.dtype]:
    """`auto`: bf16 on CUDA and on CPUs with native bf16 units, else fp32; any of DTYPES overrides it.

    On this project's 2-core AMX-BF16 CPU a bf16 matmul measured 4-12x the fp32 rate, depending on load
    (scripts/bench_speed.py prints both); without native units bf16 is emulated and slower than fp32."""
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but this torch build sees no CUDA device")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "auto":
        if device.startswith("cuda"):
            return device, torch.bfloat16
        return device, torch.bfloat16 if _cpu_has_native_bf16() else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"unknown dtype {requested!r}; expected auto or one of {', '.join(DTYPES)}")
    return device, DTYPES[requested]


def _cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pack_batches(lengths: list[int], token_budget: int, max_waste: float = 0.10) -> list[list[int]]:
    """Indices grouped longest first so that (batch size x longest member) <= token_budget and each batch pads
    at most `max_waste` of its positions (a document longer than the budget is a batch of its own).

    The budget alone would put e.g. 256- and 2048-token documents in one batch (53% padding); the waste
    bound starts a new batch instead, so total padding stays under `max_waste` on any length mix."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current:
            longest, size = lengths[current[0]], len(current) + 1
            if size * longest > token_budget or real + lengths[i] < (1 - max_waste) * size * longest:
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


class Embedder:
    """A model config's backbone as an encoder: one unit vector per text (with `normalize = true`), float32.

    Vectors do not depend on which other texts share the call, up to rounding (each sequence is right-padded and
    masked), and each call returns new arrays."""

    def __init__(
        self,
        config: ModelConfig | str | Path = "default",
        device: str | None = None,
        dtype: str | None = None,
        token_budget: int = 16384,
    ) -> None:
        """`config`: a ModelConfig, a config name from configs/ or a .toml path; `dtype` (auto, float32, bfloat16,
        float16) overrides the config's; `token_budget` caps padded tokens per forward pass."""
        if not isinstance(config, (ModelConfig, str, Path)):
            raise TypeError(f"config must be a ModelConfig, a config name or a path, got {type(config).__name__}")
        self.config = config if isinstance(config, ModelConfig) else load_config(config)
        self.device, self.dtype = pick_device_dtype(dtype or self.config.dtype, device)
        self.model, self.tokenizer = load_backbone(self.config, self.dtype, self.device)
        chunk_token_wise(self.model, TOKEN_WISE_CHUNK)
        self._ticks = threading.local()  # .batch: the running batch's _LayerTicks, per thread
        layers = decoder_layers(self.model)
        for layer in layers:  # the hook holds the thread-local, not self: no model <-> embedder cycle to outlive us
            layer.register_forward_hook(functools.partial(_layer_done, self._ticks))
        self._n_layers = len(layers)
        self.token_budget = token_budget
        self.dim = int(self.model.config.hidden_size)

    @property
    def notice(self) -> Path | None:
        return notice_file(self.config)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Each text's token ids (special tokens included) cut to the config's max_tokens, and whether it was cut."""
        limit = self.config.max_tokens
        ids = self._token_ids(texts)
        return [_as_list(x[:limit]) for x in ids], [len(x) > limit for x in ids]

    def _token_ids(self, texts: list[str]) -> list[TokenIds]:
        texts = check_texts(texts)
        if not texts:  # the tokenizer raises IndexError on an empty batch
            return []
        ids, _ = self._tokens(texts)
        empty = next((i for i, x in enumerate(ids) if len(x) == 0), None)
        if empty is not None:  # an empty text, with a tokenizer that adds no BOS token: nothing to pool
            raise ValueError(f"texts[{empty}] gives no tokens (an empty text, and this tokenizer adds no special "
                             "token): nothing to encode")
        return ids

    def _tokens(self, texts: list[str], offsets: bool = False) -> tuple[list[TokenIds], list | None]:
        """Each (non-empty list of) text's ids with special tokens, and with `offsets` its tokens' [start, end)
        characters: the one tokenization every path uses, so token counts, vectors and passages agree. Texts up to
        LONG_TEXT_CHARS go through one tokenizer call together (lists, as ever); a longer one in pieces
        (_long_tokens: int32 ids, [n, 2] int64 offsets)."""
        ids: list[TokenIds | None] = [None] * len(texts)
        offs: list = [None] * len(texts)
        short = [i for i, t in enumerate(texts) if len(t) <= LONG_TEXT_CHARS]
        if short:  # ids only unless asked: a mask as long again is not used
            enc = self.tokenizer([texts[i] for i in short], add_special_tokens=True, truncation=False,
                                 return_offsets_mapping=offsets, return_attention_mask=False,
                                 return_token_type_ids=False)
            for n, i in enumerate(short):
                ids[i] = enc["input_ids"][n]
                offs[i] = enc["offset_mapping"][n] if offsets else None
            del enc  # with it the tokenizer's per-token structures (its Encodings)
        for i, text in enumerate(texts):
            if len(text) > LONG_TEXT_CHARS:
                ids[i], offs[i] = self._long_tokens(text, offsets)
        return ids, offs if offsets else None

    def _long_tokens(self, text: str, offsets: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """A long text's ids (int32) and, with `offsets`, [n, 2] int64 characters, tokenized piece by piece
        (text_pieces) so that only one piece's Python lists and tokenizer structures are alive at a time. The
        special tokens go around the whole text once, where one call would put them; offsets are shifted by each
        piece's start, so they index the whole text."""
        (head_ids, head_offs), (tail_ids, tail_offs) = self._special_tokens()
        ids, offs = [head_ids], [head_offs]
        for start, end in text_pieces(text, PIECE_CHARS):
            enc = self.tokenizer(text[start:end], add_special_tokens=False, truncation=False,
                                 return_offsets_mapping=offsets, return_attention_mask=False,
                                 return_token_type_ids=False)
            ids.append(np.asarray(enc["input_ids"], dtype=np.int32))
            if offsets:
                offs.append(np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2) + start)
            del enc
        ids.append(tail_ids)
        offs.append(tail_offs)
        return np.concatenate(ids), np.concatenate(offs) if offsets else None

    def _special_tokens(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(ids, offsets) of the special tokens the tokenizer puts before a text's own tokens (e.g. a BOS) and after
        them (e.g. an EOS), read off a probe text's special-tokens mask; asked each time, as the tokenizer's
        post-processor can be changed. Their offsets are (0, 0), as a fast tokenizer gives special tokens."""
        enc = self.tokenizer(PROBE_TEXT, add_special_tokens=True, return_special_tokens_mask=True,
                             return_attention_mask=False, return_token_type_ids=False)
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        own = np.flatnonzero(np.asarray(enc["special_tokens_mask"]) == 0)
        first, last = (int(own[0]), int(own[-1]) + 1) if len(own) else (len(ids), len(ids))
        return ((ids[:first], np.zeros((first, 2), dtype=np.int64)),
                (ids[last:], np.zeros((len(ids) - last, 2), dtype=np.int64)))

    def _head(self, ids: TokenIds) -> int:
        """How many of a document's first tokens start each of its windows: its BOS, if it has one."""
        bos = self.tokenizer.bos_token_id
        return 1 if bos is not None and len(ids) and ids[0] == bos else 0

    def document_tokens(self, texts: list[str]) -> list[int]:
        """Per text, the tokens encode_documents runs through the model for it (what its progress bar counts): the
        text's, its lead's, and each window's head."""
        cfg = self.config
        out = []
        for x in self._token_ids(texts):
            first = min(len(x), cfg.max_tokens)
            out.append(first + cfg.lead_for(first) + sum(len(seq) for seq, _ in self._window_passes(x)))
        return out

    def _window_passes(self, ids: TokenIds) -> list[tuple[TokenIds, list[tuple[int, int]]]]:
        """A document's passes past its first max_tokens (ModelConfig.windows): each window's tokens after the
        document's head, and the ranges in that pass to pool its vectors from ([] where spans are off: the pass's
        own pooled vector is the window's)."""
        cfg, head = self.config, self._head(ids)
        return [(_joined(ids[:head], ids[s:e]),
                 [(head + a - s, head + b - s) for a, b in cfg.window_ranges(s, e)] if cfg.span_tokens else [])
                for s, e in cfg.windows(len(ids), head)]

    def passages(self, texts: list[str]) -> list[np.ndarray] | None:
        """Per text, [m, 2] int64: the [start, end) characters behind each of its other vectors (lead, spans,
        windows; as encode_documents orders them); None for a tokenizer without character offsets (a slow one).

        Only the tokenizer runs, so an index can add these without encoding anything."""
        if not self.tokenizer.is_fast:
            return None
        texts = check_texts(texts)
        if not texts:
            return []
        ids, offsets = self._tokens(texts, offsets=True)
        return [char_ranges(off, self.config.other_ranges(len(x), self._head(x))) for x, off in zip(ids, offsets)]

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """[len(queries), dim] float32: each query as `"{query_instruction}; {query}"` (as given without an
        instruction), cut to max_tokens."""
        queries = check_texts(queries, "queries")  # before formatting, which would turn None into "None"
        ids, _ = self.tokenize([self.config.format_query(q) for q in queries])
        return self._encode_ids(ids, progress=False)[0]

    def encode_texts(self, texts: list[str], max_tokens: int | None = None, progress: bool = True) -> np.ndarray:
        """One whole-text vector per text as given (no instruction, no lead or span vectors), each cut to
        `max_tokens` if set: what training sees, for mining negatives with the model itself."""
        if max_tokens is not None and max_tokens < 1:  # 0 left no tokens to pool; -n cut n from the end
            raise ValueError(f"max_tokens must be None or at least 1, got {max_tokens}")
        ids = [x[:max_tokens] for x in self.tokenize(texts)[0]]
        return self._encode_ids(ids, progress=progress)[0]

    def encode_documents(self, texts: list[str], progress: bool | tqdm = True, max_tokens: int | None = None
                         ) -> EncodedDocuments:
        """Each text's whole-document vector (no instruction), of its first max_tokens (the config's), and the
        other vectors (EncodedDocuments.extra) the config asks for: a long one's lead and spans, and past
        max_tokens its windows' (ModelConfig.windows), so every part of a document is in some vector.

        `progress`: a bar of its own (True), none (False), or a tqdm bar to advance by the tokens encoded (leads
        included), e.g. one that spans several calls. `max_tokens`: cut each text to this many tokens instead
        (no windows; truncated says which were cut), to score cheaply what the model sees of a document's start."""
        start = time.perf_counter()
        cfg = self.config
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be None or at least 1, got {max_tokens}")
        full = self._token_ids(texts)
        cut = min(max_tokens or cfg.max_tokens, cfg.max_tokens)
        ids = [x[:cut] for x in full]
        longer = [i for i, x in enumerate(ids) if cfg.lead_for(len(x))]
        # Leads and windows go through the same packed batches as the documents (and the progress bar counts them).
        seqs = ids + [ids[i][: cfg.lead_tokens] for i in longer]
        spans = [cfg.spans_for(len(x)) for x in ids] + [[] for _ in longer]
        owners = []  # per window, its document
        for i, x in enumerate([] if max_tokens is not None else full):  # cut documents have no windows
            for seq, ranges in self._window_passes(x):
                seqs.append(seq)
                spans.append(ranges)
                owners.append(i)
        vectors, waste, pooled = self._encode_ids(seqs, progress=progress, spans=spans)
        extra = {i: [v] for i, v in zip(longer, vectors[len(ids):])}  # in ModelConfig.other_ranges' order
        for i in range(len(ids)):
            if i in pooled:
                extra.setdefault(i, []).extend(pooled[i])
        for row, i in enumerate(owners, start=len(ids) + len(longer)):
            extra.setdefault(i, []).extend(pooled[row] if cfg.span_tokens else vectors[row: row + 1])
        n_tokens = [len(x) for x in (full if max_tokens is None else ids)]
        truncated = [max_tokens is not None and len(a) > len(b) for a, b in zip(full, ids)]
        return EncodedDocuments(vectors[: len(ids)], n_tokens, truncated, waste,
                                time.perf_counter() - start, {i: np.stack(extra[i]) for i in sorted(extra)},
                                frozenset(longer))

    def _encode_ids(self, ids: list[list[int]], progress: bool | tqdm, spans: list[list[tuple[int, int]]] | None = None
                    ) -> tuple[np.ndarray, float, dict[int, np.ndarray]]:
        """Each sequence's pooled vector, the padding waste, and row -> [m, dim] of the spans asked for."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        pooled: dict[int, np.ndarray] = {}
        if not ids:
            return out, 0.0, pooled
        spans = spans or [[] for _ in ids]
        lengths = [len(x) for x in ids]
        batches = pack_batches(lengths, self.token_budget)
        real = sum(lengths)
        waste = 1.0 - real / sum(len(b) * lengths[b[0]] for b in batches)
        # The bar counts tokens (so its rate is tokens/s and its ETA is right for long documents), advanced as each
        # layer finishes (_LayerTicks); the postfix counts documents and shows the padding waste of the packing.
        own = isinstance(progress, bool)
        bar = tqdm(total=real, unit="tok", unit_scale=True, disable=not progress, desc="encoding",
                   postfix={"docs": f"0/{len(ids)}", "pad": f"{waste:.1%}"}, mininterval=1.0) if own else progress
        done = 0
        for batch in batches:
            ticks = self._ticks.batch = _LayerTicks(bar, sum(lengths[i] for i in batch), self._n_layers)
            try:
                rows = self._forward_with_split([ids[i] for i in batch], [spans[i] for i in batch])
            finally:
                self._ticks.batch = None
            for i, v in zip(batch, rows):
                out[i] = v[0]
                if len(v) > 1:
                    pooled[i] = v[1:]
            done += len(batch)
            if own:
                bar.set_postfix(docs=f"{done}/{len(ids)}", pad=f"{waste:.1%}", refresh=False)
            ticks.finish()
        if own:
            bar.close()
        return out, waste, pooled

    def _forward_with_split(self, batch: list[list[int]], spans: list[list[tuple[int, int]]]) -> list[np.ndarray]:
        """Forward a batch; on out-of-memory, split it in halves and retry each (order kept)."""
        try:
            return self._forward(batch, spans)
        except torch.OutOfMemoryError as e:
            if len(batch) == 1:
                raise torch.OutOfMemoryError(
                    f"out of memory encoding one document of {len(batch[0])} tokens on {self.device}; "
                    f"lower max_tokens in the model config ({self.config.name})"
                ) from e
        # Retried outside the except block: the traceback would keep the failed attempt's tensors alive.
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        half = len(batch) // 2
        return (self._forward_with_split(batch[:half], spans[:half])
                + self._forward_with_split(batch[half:], spans[half:]))

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]], spans: list[list[tuple[int, int]]]) -> list[np.ndarray]:
        """Per sequence, [1 + len(its spans), dim]: its pooled vector, then each span's mean state, normalised
        like the whole (the span means come from the same pass: each span's states saw the whole sequence)."""
        longest = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, x in enumerate(batch):  # right padding: positions of real tokens never move
            input_ids[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        # No KV cache: by default transformers keeps every layer's keys and values (~600 MB at 32k tokens).
        hidden = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        whole = pool(hidden, mask, self.config.pooling, self.config.normalize).float().cpu().numpy()
        out = []
        for row, ranges in enumerate(spans):
            vecs = [whole[row]]
            if ranges:
                vecs += list(span_means(hidden[row], ranges, self.config.normalize).cpu().numpy())
            out.append(np.stack(vecs))
        return out


@dataclass
class _LayerTicks:
    """Moves a progress bar through one batch's tokens as the forward pass leaves each decoder layer: one 32k-token
    document is a minute or more on a 2-core CPU (several in fp32), and the bar should not sit still that long.
    Never reports more than the batch (a batch split after an out-of-memory error runs the layers again)."""

    bar: tqdm
    tokens: int
    layers: int
    done: int = 0
    reported: int = 0

    def layer_done(self) -> None:
        if self.done < self.layers:
            self.done += 1
            self._report(self.tokens * self.done // self.layers)

    def finish(self) -> None:
        self._report(self.tokens)

    def _report(self, upto: int) -> None:
        self.bar.update(upto - self.reported)
        self.reported = upto


def _layer_done(ticks: threading.local, *_) -> None:
    if getattr(ticks, "batch", None) is not None:
        ticks.batch.layer_done()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's stack of transformer layers (the module list as long as config.num_hidden_layers), or [] if
    there is none to find."""
    config = getattr(model, "config", None)
    n = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and n and len(module) == n:
            return list(module)
    return []


def text_pieces(text: str, size: int) -> list[tuple[int, int]]:
    """[start, end) pieces of at most `size` characters that tile `text` (one piece if it fits), each cut where a
    tokenizer breaks anyway where it can (_cut). The pieces' tokens are then the whole text's for most tokenizers
    (Gemma 3's: checked on 3M characters of the demo corpus); one that prepends "▁" to every text (Mistral's) gives
    each later piece one extra, about one token per million characters."""
    out, start = [], 0
    while len(text) - start > size:
        end = _cut(text, start, start + size)
        out.append((start, end))
        start = end
    out.append((start, len(text)))
    return out


def _cut(text: str, lo: int, hi: int) -> int:
    """The end, in (lo, hi], of a piece that starts at lo (hi < len(text)): just after its last line end, one not
    inside a run of line ends (which vocabularies often hold as one token) if there is one; else just before its
    last space or tab (which starts the next word's token: "▁word", " word"); else hard at hi."""
    line = text.rfind("\n", lo, hi) + 1  # 0 where there is none
    end = line
    while end > lo and text[end] in "\r\n":
        end = text.rfind("\n", lo, end - 1) + 1
    if line > lo:
        return end if end > lo else line
    space = max(text.rfind(" ", lo + 1, hi), text.rfind("\t", lo + 1, hi))
    return space if space > lo else hi


def _as_list(ids: TokenIds) -> list[int]:
    return ids.tolist() if isinstance(ids, np.ndarray) else ids


def _joined(head: TokenIds, rest: TokenIds) -> TokenIds:
    """head then rest, as a list or an array like them (+ on arrays would add them)."""
    return np.concatenate((head, rest)) if isinstance(rest, np.ndarray) else head + rest


def char_ranges(offsets: list[tuple[int, int]] | np.ndarray, tokens: list[tuple[int, int]]) -> np.ndarray:
    """[m, 2] [start, end) characters of each [start, end) token range: from its first to its last token that
    covers text (special tokens such as BOS cover none)."""
    off = np.asarray(offsets, dtype="int64").reshape(-1, 2)
    real = off[:, 1] > off[:, 0]
    out = np.zeros((len(tokens), 2), dtype="int64")
    for n, (a, b) in enumerate(tokens):
        inside = off[a:b][real[a:b]]
        if len(inside):
            out[n] = inside[:, 0].min(), inside[:, 1].max()
    return out


def chunk_token_wise(model: torch.nn.Module, chunk_rows: int) -> int:
    """Run the modules that act on each token (or head vector) alone in chunks of at most `chunk_rows` rows:
    every feed-forward block (the module named `mlp`, as in Gemma, LLaMA, Qwen2) and every RMSNorm. Returns how
    many modules were wrapped.

    Chunking rows changes no result, but these modules make the largest temporaries of a long forward pass: the
    feed-forward's gate, up and product (L x intermediate_size each) and the norms' float32 copies (Gemma 3
    normalises q and k in float32: 4 copies of L x heads x head_dim). At 32k tokens of Gemma 3 270M they set the
    peak RSS of the pass. Modules that return anything but one tensor (e.g. MoE routers) are run whole."""
    if chunk_rows <= 0:
        return 0
    wrapped = 0
    for name, module in model.named_modules():
        token_wise = name.rsplit(".", 1)[-1] == "mlp" or type(module).__name__.endswith("RMSNorm")
        if token_wise and not getattr(module, "_longretr_chunked", False):
            module.forward = _chunked(module.forward, chunk_rows)
            module._longretr_chunked = True
            wrapped += 1
    return wrapped


def _chunked(forward, chunk_rows: int):
    def run(x, *args, **kwargs):
        if args or kwargs or x.dim() < 2 or x.numel() // x.shape[-1] <= chunk_rows:
            return forward(x, *args, **kwargs)
        flat = x.reshape(-1, x.shape[-1])
        first = forward(flat[:chunk_rows])
        if not isinstance(first, torch.Tensor) or first.dim() != 2 or first.shape[0] != chunk_rows:
            return forward(x)
        out = first.new_empty(flat.shape[0], first.shape[1])
        out[:chunk_rows] = first
        del first
        for start in range(chunk_rows, flat.shape[0], chunk_rows):
            out[start:start + chunk_rows] = forward(flat[start:start + chunk_rows])
        return out.view(*x.shape[:-1], out.shape[1])

    return run


def span_means(states: torch.Tensor, ranges: list[tuple[int, int]], normalize: bool) -> torch.Tensor:
    """[len(ranges), dim] the mean of one sequence's states (its real tokens, from position 0) over each [start, end)
    range: span vectors, as `longretr index` stores them and `doc_scoring = "best"` trains them."""
    parts = torch.stack([states[start:end].float().mean(0) for start, end in ranges])
    return torch.nn.functional.normalize(parts, dim=-1) if normalize else parts


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, normalize: bool) -> torch.Tensor:
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1)
    elif how == "last":
        last = mask.sum(1) - 1
        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    else:
        raise ValueError(f"unknown pooling {how!r}")
    return torch.nn.functional.normalize(vec, dim=-1) if normalize else vec
