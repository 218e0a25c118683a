"""`make bench-speed`: the long-context engine against plain transformers and sentence-transformers.

Same backbone for all three (the default config: Gemma 3 270M, bidirectional, mean pooling, the dtype the engine
picks), on real text (pydoc pages of the standard library, longretr/democorpus.py):
- single documents of 512, 2k, 8k, 16k and 32k tokens, and mixed corpora of real pages: 16 of 256-32k tokens and
  8 of 256-8k tokens (the second one so the baselines, which cannot hold 32k-token batches, have one to finish);
- each (method, case) runs in a fresh subprocess, so cases never pollute each other: its peak RSS is the child's own
  VmHWM (not ru_maxrss: Linux counts the parent's peak RSS into the child's at exec, so a parent that had converted the
  model showed 2.66 GiB for every case); the child also reports the peak of the encode alone (VmHWM reset after
  loading); a case killed at a cap shows the highest RSS polled;
- tokens/s include tokenisation and exclude model loading and one short warm-up call (same for every method);
- a case over the time or memory cap is killed and reported as capped, with no throughput invented for it;
- achieved FLOP/s against peaks measured in the same run (matmul, SDPA flash; in the dtype the case ran in), with the
  model's FLOPs per token computed from its config (see model_flops).
Writes results/bench-speed/<timestamp>/bench.json + bench.png and prints a table with the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("engine", "transformers", "sentence-transformers")
GIB = 1024**3
MIN_CASE_SECONDS, MAX_REPEATS = 20.0, 5
WARMUP_TEXT = "def main():\n    parser = argparse.ArgumentParser(description='warm-up')\n" * 8
# Targets of issue 3 (2-core CPU, default model).
TARGET_RSS_OVER_WEIGHTS = 1.5 * GIB
TARGET_TOKS_32K = 200.0
TARGET_LIMIT_FRACTION = 0.5
TARGET_MIXED_SPEEDUP = 2.0


# ---------------------------------------------------------------- the machine and its measured peaks


def machine() -> dict:
    import sentence_transformers
    import transformers

    from longretr.machine import describe

    return {**describe(), "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__}


def _meminfo() -> dict:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0]) * 1024
    return out


def _best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peaks(heads: int, kv_heads: int, head_dim: int, hidden: int, ffn: int, reps: int = 3) -> dict:
    """Best FLOP/s of a matmul (the model's MLP / projection shapes) and of a flash SDPA call (its head shape)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        best = 0.0
        for m, k, n in ((4096, hidden, ffn), (4096, ffn, hidden), (4096, hidden, heads * head_dim)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            best = max(best, 2 * m * k * n / _best_seconds(lambda a=a, b=b: a @ b, reps))
        out[f"matmul_{name}"] = best
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):  # the engine runs in one of them
        best = 0.0
        for length in (4096, 8192):
            q = torch.randn(1, heads, length, head_dim, dtype=dtype)
            k, v = (torch.randn(1, kv_heads, length, head_dim, dtype=dtype) for _ in range(2))

            def call(q=q, k=k, v=v):
                F.scaled_dot_product_attention(q, k, v, enable_gqa=heads != kv_heads)

            best = max(best, 4 * heads * length * length * head_dim / _best_seconds(call, max(1, reps - 1)))
        out[f"sdpa_{name}"] = best
    return out


def model_flops(cfg, lengths: list[int]) -> dict:
    """FLOPs to encode documents of these lengths, counted from the config (bidirectional attention).

    Counted: 2 x params of every linear layer (q, k, v, o, gate, up, down) per token; attention 4 x keys x
    (heads x head_dim) per token and layer (QK^T and PV, 2 FLOPs per multiply-add), where keys = L for a full
    layer and the keys inside the window for a sliding one (|i - j| < w: up to 2w - 1, fewer at the edges).
    Not counted: the embedding lookup (no FLOPs; there is no LM head), norms, rotary, activations, softmax."""
    d, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dense_per_token = 2 * layers * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * ffn)
    types = cfg.layer_types
    dense = attention = 0.0
    for length in lengths:
        i = np.arange(length)
        window = cfg.sliding_window
        sliding_keys = (np.minimum(i, window - 1) + np.minimum(length - 1 - i, window - 1) + 1).sum()
        per_layer_keys = [length * length if t == "full_attention" else sliding_keys for t in types]
        dense += dense_per_token * length
        attention += 4 * heads * hd * float(sum(per_layer_keys))
    return {"dense": dense, "attention": attention, "total": dense + attention,
            "dense_per_token": dense_per_token}


def measure_peaks_in_child(folder: Path, out: Path, env: dict) -> dict:
    """In a fresh process with the cases' environment (OMP_WAIT_POLICY), like the cases themselves."""
    peaks_file = out / "peaks.json"
    peaks_file.write_text(json.dumps({"folder": str(folder)}))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--peaks", str(peaks_file)], env=env, check=True)
    peaks = json.loads(peaks_file.read_text())
    peaks_file.unlink()
    return peaks


# ---------------------------------------------------------------- documents


def mixed_name(max_tokens: int) -> str:
    return f"mixed-{max_tokens // 1024}k"


def build_documents(tokenizer, lengths: list[int], mixed: list[tuple[int, int]], cache: Path) -> dict:
    """Single documents of exactly N tokens (with <bos>), cut from the concatenated pages, and for each
    (count, max) in `mixed` a corpus of whole pages whose lengths are spread log-evenly over 256..max (longer
    pages truncated to it), in a shuffled order."""
    from longretr import democorpus

    if not any(cache.glob("*.txt")):
        democorpus.build(cache, 160)
    pages = [p.read_text() for p in sorted(cache.glob("*.txt"))]
    page_ids = tokenizer(pages, add_special_tokens=False)["input_ids"]
    stream = [t for ids in page_ids for t in ids]
    if len(stream) < max(lengths):
        raise SystemExit(f"{cache}: only {len(stream)} tokens of text, need {max(lengths)}")
    singles = {}
    for n in lengths:
        text = tokenizer.decode(stream[: n - 1])
        while len(tokenizer(text)["input_ids"]) > n:  # decode/encode can merge a few tokens differently
            text = text[:-16]
        singles[str(n)] = [text]
    corpora = {}
    for count, longest in mixed:
        free = [i for i, ids in enumerate(page_ids) if len(ids) >= 255]
        texts = []
        for target in np.geomspace(256, longest, count):
            best = min(free, key=lambda i: abs(np.log(min(len(page_ids[i]), longest - 1) / target)))
            free.remove(best)
            texts.append(tokenizer.decode(page_ids[best][: longest - 1]))
        np.random.default_rng(0).shuffle(texts)  # corpora do not arrive sorted by length
        corpora[mixed_name(longest)] = texts
    return {**singles, **corpora}


# ---------------------------------------------------------------- one case, in a child process


def run_case(spec: dict) -> dict:
    import torch

    texts = json.loads(Path(spec["texts"]).read_text())
    start = time.perf_counter()
    encode, model, info = LOADERS[spec["method"]](spec)
    info["load_seconds"] = time.perf_counter() - start
    info["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    info["rss_after_load"] = _status_bytes("VmRSS")
    load_peak = _status_bytes("VmHWM")  # this process's alone: exec gave it a new address space
    with torch.inference_mode():
        encode([WARMUP_TEXT])
        info["encode_peak_reset"] = _reset_peak_rss()
        times = []
        while not times or (sum(times) < MIN_CASE_SECONDS and len(times) < MAX_REPEATS):
            start = time.perf_counter()
            vectors, tokens = encode(texts)
            times.append(time.perf_counter() - start)
        info["seconds"] = float(np.median(times))  # short cases repeat: one run of 0.5 s is mostly noise
        info["all_seconds"] = times
    info["tokens"] = int(tokens)
    info["encode_peak_rss"] = _status_bytes("VmHWM") if info["encode_peak_reset"] else None
    info["process_peak_rss"] = max(load_peak, _status_bytes("VmHWM"))
    np.save(spec["vectors"], np.asarray(vectors, dtype=np.float32))
    return info


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_engine(spec: dict):
    from dataclasses import replace

    from longretr.config import load_config
    from longretr.embedder import Embedder

    # the engine alone, on the same network as the other two: lead vectors would add their own forward passes, and
    # the default's adapters (which the baselines do not load) would make the cos column compare different models
    embedder = Embedder(replace(load_config("default"), lead_tokens=0, adapter="", adapter_weights=()))

    def encode(texts):
        enc = embedder.encode_documents(texts, progress=False)
        info["padding_waste"] = enc.padding_waste
        return enc.vectors, sum(enc.n_tokens)

    info = {"dtype": str(embedder.dtype).removeprefix("torch."), "attention": "longretr",
            "token_budget": embedder.token_budget}
    return encode, embedder.model, info


def load_transformers(spec: dict):
    """Plain transformers: AutoModel with its default attention (sdpa) and masks, fixed batches, right padding."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from longretr.embedder import pool

    dtype = getattr(torch, spec["dtype"])
    config = AutoConfig.from_pretrained(spec["folder"], use_bidirectional_attention=True)
    model = AutoModel.from_pretrained(spec["folder"], config=config, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec["folder"])
    tokenizer.padding_side = "right"  # the engine's convention, so both compute the same vectors
    batch_size = spec["batch_size"]

    def encode(texts):
        vectors, tokens = [], 0
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i: i + batch_size], padding=True, truncation=True, max_length=spec["max_tokens"],
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            vectors.append(pool(hidden, batch["attention_mask"], "mean", True).float().numpy())
            tokens += int(batch["attention_mask"].sum())
        return np.concatenate(vectors), tokens

    info = {"dtype": spec["dtype"], "attention": model.config._attn_implementation, "batch_size": batch_size}
    return encode, model, info


def load_sentence_transformers(spec: dict):
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers import models

    dtype = getattr(torch, spec["dtype"])
    transformer = models.Transformer(spec["folder"], model_kwargs={"dtype": dtype},
                                     config_kwargs={"use_bidirectional_attention": True},
                                     max_seq_length=spec["max_tokens"])
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    model.tokenizer.padding_side = "right"
    batch_size = spec["batch_size"]
    tokenizer = model.tokenizer

    def encode(texts):
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        # Count what it encoded: the same tokenizer and truncation as its own tokenisation.
        tokens = sum(min(len(ids), spec["max_tokens"]) for ids in tokenizer(texts)["input_ids"])
        return vectors, tokens

    auto_model = transformer.model if hasattr(transformer, "model") else transformer.auto_model
    info = {"dtype": spec["dtype"], "attention": auto_model.config._attn_implementation, "batch_size": batch_size}
    return encode, model, info


LOADERS = {"engine": load_engine, "transformers": load_transformers,
           "sentence-transformers": load_sentence_transformers}


# ---------------------------------------------------------------- the parent: run cases under caps


def run_child(spec: dict, workdir: Path, time_cap: float, mem_cap: int, env: dict) -> dict:
    """Run one case in a fresh interpreter; poll its RSS and time; kill it past a cap."""
    name = f"{spec['method']}-{spec['case']}"
    spec_path = workdir / f"{name}.spec.json"
    result_path = workdir / f"{name}.result.json"
    spec = {**spec, "vectors": str(workdir / f"{name}.npy"), "result": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    log = (workdir / f"{name}.log").open("w")
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--case", str(spec_path)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env)
    start, capped, max_polled = time.monotonic(), None, 0
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _proc_rss(proc.pid)
        max_polled = max(max_polled, rss)
        elapsed = time.monotonic() - start
        if capped is None and rss > mem_cap:
            capped = f"memory cap: RSS reached {rss / GIB:.1f} GiB > {mem_cap / GIB:.1f} GiB after {elapsed:.0f} s"
        elif capped is None and elapsed > time_cap:
            capped = f"time cap: not finished after {time_cap:.0f} s (incl. loading)"
        if capped:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    row = {"method": spec["method"], "case": spec["case"], "peak_rss": max_polled,
           "wall_seconds": round(time.monotonic() - start, 1), "load_average": [load_before, os.getloadavg()[0]]}
    if capped:
        return {**row, "status": "capped", "note": capped, "time_capped": capped.startswith("time")}
    if proc.returncode != 0 or not result_path.exists():
        tail = (workdir / f"{name}.log").read_text().strip().splitlines()[-3:]
        return {**row, "status": "failed", "note": f"exit {proc.returncode}: " + " | ".join(tail)[-400:]}
    result = json.loads(result_path.read_text())
    return {**row, "status": "ok", **result, "peak_rss": result["process_peak_rss"]}


def _proc_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def add_derived(rows: list[dict], docs: dict, tokenizer, cfg, max_tokens: int, peaks: dict, workdir: Path) -> None:
    """tokens/s, FLOP/s against the peaks, and agreement of each method's vectors with the engine's."""
    for row in rows:
        if row["status"] != "ok":
            continue
        lengths = [min(len(ids), max_tokens) for ids in tokenizer(docs[row["case"]])["input_ids"]]
        flops = model_flops(cfg, lengths)
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        row["flop_per_s"] = flops["total"] / row["seconds"]
        # against the peaks of the dtype the case ran in: fp32 on a CPU without fast bf16 (its bf16 is emulated)
        kind = "bf16" if row.get("dtype") == "bfloat16" else "fp32"
        matmul, sdpa = peaks[f"matmul_{kind}"], peaks.get(f"sdpa_{kind}", math.nan)  # older runs: bf16 SDPA only
        row["of_matmul_peak"] = row["flop_per_s"] / matmul
        limit = flops["dense"] / matmul + flops["attention"] / sdpa
        row["of_machine_limit"] = limit / row["seconds"]
        row["attention_share_of_flops"] = flops["attention"] / flops["total"]
        engine = workdir / f"engine-{row['case']}.npy"
        mine = workdir / f"{row['method']}-{row['case']}.npy"
        if row["method"] != "engine" and engine.exists() and mine.exists():
            a, b = np.load(engine), np.load(mine)
            row["min_cosine_vs_engine"] = float((a * b).sum(1).min())


# ---------------------------------------------------------------- targets, table, plot


def check_targets(rows: list[dict], longest: str) -> list[dict]:
    by = {(r["method"], r["case"]): r for r in rows}
    out = []
    eng = by.get(("engine", longest))

    def verdict(name, value, target, higher_is_better=True, unit=""):
        if value is None:
            out.append({"target": name, "status": "not measured", "detail": "the case did not finish"})
            return
        met = value >= target if higher_is_better else value <= target
        ratio = value / target
        by_how_much = (ratio - 1) if higher_is_better else (1 - ratio)
        out.append({"target": name, "value": value, "goal": target, "status": "met" if met else "MISSED",
                    "detail": f"{value:,.2f}{unit} vs {target:,.2f}{unit}: "
                              f"{'met' if met else 'missed'} by {abs(by_how_much):.1%}"})

    ok = eng is not None and eng["status"] == "ok"
    limit = eng["weight_bytes"] + TARGET_RSS_OVER_WEIGHTS if ok else None
    verdict(f"{longest}-token document: peak RSS of the process <= weights + 1.5 GiB",
            eng["peak_rss"] / GIB if ok else None, limit / GIB if ok else 0, higher_is_better=False, unit=" GiB")
    if ok and eng.get("encode_peak_rss"):
        verdict(f"{longest}-token document: peak RSS while encoding <= weights + 1.5 GiB",
                eng["encode_peak_rss"] / GIB, limit / GIB, higher_is_better=False, unit=" GiB")
    verdict(f"{longest}-token document: tokens/s >= {TARGET_TOKS_32K:.0f}",
            eng["tokens_per_s"] if ok else None, TARGET_TOKS_32K, unit=" tok/s")
    verdict(f"{longest}-token document: >= 50% of the machine's FLOP limit",
            eng["of_machine_limit"] if ok else None, TARGET_LIMIT_FRACTION)
    for case, base in [(c, b) for c in sorted({r["case"] for r in rows if r["case"].startswith("mixed")})
                       for b in METHODS[1:]]:
        mixed, other = by.get(("engine", case)), by.get((base, case))
        name = f"{case} corpus: engine tokens/s >= 2x {base}"
        if not (mixed and mixed["status"] == "ok"):
            out.append({"target": name, "status": "not measured", "detail": "the engine did not finish"})
        elif other and other["status"] == "ok":
            verdict(name, mixed["tokens_per_s"] / other["tokens_per_s"], TARGET_MIXED_SPEEDUP, unit="x")
        elif other and other["status"] == "capped" and other["time_capped"]:
            # It had not finished these tokens after wall_seconds, so its rate was below tokens / wall_seconds.
            bound = mixed["tokens_per_s"] / (mixed["tokens"] / other["wall_seconds"])
            met = bound >= TARGET_MIXED_SPEEDUP
            out.append({"target": name, "status": "met" if met else "unknown", "value": bound,
                        "detail": f"{base} was capped ({other['note']}), so the speed-up is at least {bound:.2f}x"})
        else:
            out.append({"target": name, "status": "not measured",
                        "detail": f"{base}: {other['status'] if other else 'not run'}"
                                  f"{' (' + other['note'] + ')' if other else ''}"})
    return out


def print_report(result: dict) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['memory_gib']} GiB, "
          f"native bf16: {', '.join(m['native_bf16']) or 'no'}; torch {m['torch']}, transformers "
          f"{m['transformers']}, sentence-transformers {m['sentence_transformers']}")
    print(f"load average (1 min): {result['load_average_start'][0]:.2f} at start, "
          f"{result['load_average_end'][0]:.2f} at end; OMP_WAIT_POLICY of every case: {result['omp_wait_policy']}")
    p = result["peaks"]
    print(f"measured peaks: matmul bf16 {p['matmul_bf16'] / 1e9:,.0f} GFLOP/s, fp32 {p['matmul_fp32'] / 1e9:,.0f} "
          f"GFLOP/s; SDPA flash bf16 {p['sdpa_bf16'] / 1e9:,.0f} GFLOP/s, fp32 "
          f"{p.get('sdpa_fp32', math.nan) / 1e9:,.0f} GFLOP/s (%mm pk and %limit use the case's dtype)")
    f = result["flops"]
    print(f"model FLOPs/token: dense {f['dense_per_token'] / 1e6:,.0f}M; with attention: "
          + ", ".join(f"{k} tokens {v / 1e6:,.0f}M" for k, v in f["per_token_by_length"].items()))
    head = (f"{'method':<22}{'case':>10}{'tokens':>8}{'sec':>8}{'tok/s':>8}{'peak RSS':>10}{'enc. RSS':>10}"
            f"{'GFLOP/s':>9}{'%mm pk':>7}{'%limit':>7}{'cos':>8}  note")
    print("\n" + head + "\n" + "-" * len(head))
    for r in result["rows"]:
        gib = f"{r['peak_rss'] / GIB:.2f}G"
        if r["status"] != "ok":
            print(f"{r['method']:<22}{r['case']:>10}{'':>8}{'':>8}{'-':>8}{gib:>10}{'':>10}{'':>9}{'':>7}{'':>7}"
                  f"{'':>8}  {r['status'].upper()}: {r['note']}")
            continue
        enc = f"{r['encode_peak_rss'] / GIB:.2f}G" if r.get("encode_peak_rss") else "-"
        cos = f"{r['min_cosine_vs_engine']:.4f}" if "min_cosine_vs_engine" in r else ""
        note = f"pad {r['padding_waste']:.1%}" if "padding_waste" in r else f"batch {r.get('batch_size')}"
        print(f"{r['method']:<22}{r['case']:>10}{r['tokens']:>8}{r['seconds']:>8.1f}{r['tokens_per_s']:>8.0f}{gib:>10}"
              f"{enc:>10}{r['flop_per_s'] / 1e9:>9.1f}{r['of_matmul_peak']:>7.0%}{r['of_machine_limit']:>7.0%}"
              f"{cos:>8}  {r['attention']}, {r['dtype']}, {note}")
    print("\npeak RSS: whole child process (its VmHWM, includes loading; capped: the highest polled); enc. RSS: peak "
          "while encoding (VmHWM reset after load + warm-up); %mm pk: achieved FLOP/s / the matmul peak in the case's "
          "dtype; %limit: (dense FLOPs / matmul peak + attention FLOPs / SDPA peak) / time; cos: lowest cosine of "
          "its vectors to the engine's")
    print("\ntargets:")
    for t in result["targets"]:
        print(f"  [{t['status']:>12}] {t['target']}: {t['detail']}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    rows = result["rows"]
    for k, method in enumerate(METHODS):
        pts = [r for r in rows if r["method"] == method and r["case"].isdigit()]
        ok = [r for r in pts if r["status"] == "ok"]
        if ok:
            axes[0].plot([int(r["case"]) for r in ok], [r["tokens_per_s"] for r in ok], "o-", color=f"C{k}",
                         label=method)
            axes[1].plot([int(r["case"]) for r in ok], [r["peak_rss"] / GIB for r in ok], "o-", color=f"C{k}",
                         label=method)
    failed: dict[int, list[str]] = {}
    for r in rows:
        if r["case"].isdigit() and r["status"] != "ok":
            failed.setdefault(int(r["case"]), []).append(f"{r['method']}: {r['status']}")
    for length, notes in failed.items():
        for ax in axes[:2]:
            ax.annotate("\n".join(notes), (length, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, va="bottom", ha="right")
    for ax, label in zip(axes[:2], ("tokens/s", "peak RSS of the process (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    corpora = list(result["mixed"])
    for k, method in enumerate(METHODS):
        for j, case in enumerate(corpora):
            r = next((r for r in rows if r["method"] == method and r["case"] == case), None)
            if r is None:
                continue
            x = j + (k - 1) * 0.27
            axes[2].bar(x, r["tokens_per_s"] if r["status"] == "ok" else 0, 0.25, color=f"C{k}",
                        label=method if j == 0 else None)
            if r["status"] != "ok":
                axes[2].text(x, 0, r["status"], rotation=90, ha="center", va="bottom", fontsize=8)
    axes[2].set_xticks(range(len(corpora)),
                       [f"{c}\n{m['docs']} docs, {m['tokens']:,} tok" for c, m in result["mixed"].items()])
    axes[2].set_ylabel("tokens/s")
    axes[2].set_title("mixed corpora")
    axes[2].legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"{result['model']} on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
                 f"load {result['load_average_start'][0]:.1f}-{result['load_average_end'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512/2k/8k and a small mixed corpus (up to 8k tokens)")
    ap.add_argument("--lengths", type=int, nargs="*", help="single-document lengths (default 512 2048 8192 16384 "
                                                           "32768; --quick: 512 2048 8192)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--mixed", nargs="*", metavar="DOCS:MAX", help="mixed corpora, e.g. 16:32768 (default "
                    "16:32768 8:8192; --quick: 8:8192; none given: no mixed corpus)")
    ap.add_argument("--batch-size", type=int, default=8, help="batch size of the two baselines")
    ap.add_argument("--time-cap", type=float, default=900, help="seconds per case, loading included")
    ap.add_argument("--mem-cap-gib", type=float, help="RSS cap per case (default: 12 or 60%% of available memory)")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive",
                    help="OMP_WAIT_POLICY of every case (default passive: on a shared CPU, spinning OpenMP threads "
                         "measure the contention, not the code; inherit: leave the environment as it is)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench-speed")
    ap.add_argument("--case", type=Path, help=argparse.SUPPRESS)  # internal: run one case in this process
    ap.add_argument("--peaks", type=Path, help=argparse.SUPPRESS)  # internal: measure the peaks into this file
    ap.add_argument("--report", type=Path, metavar="BENCH_JSON", help="print the table and redraw the PNG of an "
                                                                       "earlier run's bench.json, run nothing")
    args = ap.parse_args()
    if args.report:
        if not args.report.is_file():
            ap.error(f"--report {args.report}: no such file")
        result = json.loads(args.report.read_text())
        plot(result, args.report.with_name("bench.png"))
        print_report(result)
        return
    if args.case:
        spec = json.loads(args.case.read_text())
        Path(spec["result"]).write_text(json.dumps(run_case(spec)))
        return
    if args.peaks:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(json.loads(args.peaks.read_text())["folder"])
        args.peaks.write_text(json.dumps(measure_peaks(hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim,
                                                       hf.hidden_size, hf.intermediate_size)))
        return
    from longretr.backbone import resolve_backbone
    from longretr.config import load_config
    from longretr.embedder import pick_device_dtype

    lengths = args.lengths or ([512, 2048, 8192] if args.quick else [512, 2048, 8192, 16384, 32768])
    mixed_specs = args.mixed if args.mixed is not None else (["8:8192"] if args.quick else ["16:32768", "8:8192"])
    try:
        mixed = [(int(a), int(b)) for a, b in (m.split(":") for m in mixed_specs)]
    except ValueError:
        raise SystemExit(f"--mixed: expected DOCS:MAX_TOKENS items, got {mixed_specs}") from None
    mem_cap = int((args.mem_cap_gib or min(12.0, 0.6 * _meminfo()["MemAvailable"] / GIB)) * GIB)
    load_start = list(os.getloadavg())
    out = args.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    config = load_config("default")
    folder = resolve_backbone(config.backbone)
    _, dtype = pick_device_dtype(config.dtype, "cpu")
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf = AutoConfig.from_pretrained(folder)
    print(f"building documents from stdlib pydoc pages (lengths {lengths}, mixed {mixed}) ...", flush=True)
    docs = build_documents(tokenizer, lengths, mixed, ROOT / "results" / "bench-speed" / "pages")
    cases = [str(n) for n in lengths] + [mixed_name(longest) for _, longest in mixed]
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    print("measuring peak matmul / SDPA FLOP/s ...", flush=True)
    peak_runs = [measure_peaks_in_child(folder, out, env)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases) * len(args.methods), desc="cases", unit="case")
        for case in cases:
            texts = work / f"{case}.texts.json"
            texts.write_text(json.dumps(docs[case]))
            for method in args.methods:
                bar.set_postfix_str(f"{method} {case}")
                spec = {"method": method, "case": case, "texts": str(texts), "folder": str(folder),
                        "dtype": str(dtype).removeprefix("torch."), "batch_size": args.batch_size,
                        "max_tokens": config.max_tokens}
                rows.append(run_child(spec, work, args.time_cap, mem_cap, env))
                bar.update()
                r = rows[-1]
                tqdm.write(f"  {method:<22}{case:>10}: {r['status']}"
                           + (f", {r['tokens'] / r['seconds']:,.0f} tok/s" if r["status"] == "ok" else
                              f" ({r['note']})") + f", peak RSS {r['peak_rss'] / GIB:.2f} GiB")
        bar.close()
        print("measuring peak matmul / SDPA FLOP/s again ...", flush=True)
        peak_runs.append(measure_peaks_in_child(folder, out, env))
        # The machine's peak is the best it showed in this run; a loaded moment only lowers a measurement.
        peaks = {k: max(run[k] for run in peak_runs) for k in peak_runs[0]}
        add_derived(rows, docs, tokenizer, hf, config.max_tokens, peaks, work)
    corpora = {}
    for count, longest in mixed:
        sizes = [min(len(x), config.max_tokens) for x in tokenizer(docs[mixed_name(longest)])["input_ids"]]
        corpora[mixed_name(longest)] = {"docs": count, "max": longest, "tokens": sum(sizes), "lengths": sizes}
    result = {
        "date": datetime.now().isoformat(timespec="seconds"), "machine": machine(), "model": config.name,
        "backbone_folder": str(folder), "dtype": str(dtype).removeprefix("torch."), "peaks": peaks,
        "peaks_at_start_and_end": peak_runs,
        "caps": {"time_seconds": args.time_cap, "memory_bytes": mem_cap},
        "omp_wait_policy": env.get("OMP_WAIT_POLICY", "(unset: libgomp default, spins)"),
        "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
        "mixed": corpora,
        "flops": {"dense_per_token": model_flops(hf, [1])["dense_per_token"],
                  "per_token_by_length": {str(n): model_flops(hf, [n])["total"] / n for n in lengths},
                  "counted": model_flops.__doc__.split("\n\n", 1)[1].strip()},
        "rows": rows,
    }
    result["targets"] = check_targets(rows, str(max(lengths)))
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "bench.png")
    print_report(result)
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
