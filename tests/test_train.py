import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import load_script, write_config

from longretr.config import load_config
from longretr.embedder import Embedder
from longretr.machine import describe
from longretr.train.data import (
    Triplet,
    dense_ranker,
    longdoc_triplets,
    manpage_triplets,
    mine_negatives,
    package_descriptions,
    package_triplets,
    section_triplets,
    sections,
    split_manpage,
    window_positives,
    write_jsonl,
)
from longretr.train.losses import diffusion_loss, info_nce, mask_tokens
from longretr.train.trainer import TrainConfig, Trainer, check_output

WORDS = "the quick brown fox jumps over a lazy dog while parsing command line arguments".split()


def _triplets(n=24):
    rows = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        rows.append(Triplet(f"{a}", f"{a} {a} {a} archive", [f"{b} {b} digest"], "Find it", "toy"))
    return rows


def _cfg(tmp_path, tiny_gemma, **kw):
    data = tmp_path / "toy.jsonl"
    write_jsonl(data, _triplets())
    model = write_config(tmp_path, tiny_gemma, dtype="float32")
    values = dict(model=str(model), data=[str(data)], output=str(tmp_path / "run"), steps=12, batch_size=6,
                  warmup=2, lr=5e-3, max_doc_tokens=32, max_query_tokens=16, save_every=4,
                  gradient_checkpointing=True, dtype="float32", lora_dropout=0.0)
    values.update(kw)
    return TrainConfig(**values)


def test_info_nce_prefers_aligned_pairs():
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert info_nce(q, q) < info_nce(q, q.flip(0))


def test_info_nce_with_owners_scores_each_candidate_by_its_best_vector():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    noise = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    # candidate 0: a vector far from query 0, then one equal to it; candidate 1: query 1 itself
    vectors = torch.cat([noise[:1], q[:1], q[1:], noise[1:]])
    owners = torch.tensor([0, 0, 1, 1, 1])
    best = torch.stack([(q @ vectors[owners == c].T).amax(1) for c in range(2)], dim=1)
    expected = torch.nn.functional.cross_entropy(best * 50.0, torch.arange(2))
    torch.testing.assert_close(info_nce(q, vectors, owners=owners), expected)
    assert info_nce(q, vectors, owners=owners) < info_nce(q, vectors[[0, 2]])  # the whole vectors alone score worse


def test_span_scoring_trains_the_span_vectors_that_indexing_makes(tmp_path, tiny_gemma):
    """doc_scoring = "best": the training pass's span vectors are the ones `longretr index` stores (same spans, same
    pass), and a run with them learns."""
    model = write_config(tmp_path, tiny_gemma, name="spans", span_tokens=8)
    cfg = _cfg(tmp_path, tiny_gemma, model=str(model), doc_scoring="best", steps=8)
    trainer = Trainer(cfg)
    docs = [" ".join(WORDS[:n]) for n in (5, 14, 30)]  # 6 to 31 tokens: no spans, and two to four
    trainer.model.eval()
    with torch.no_grad():
        vecs, owners, _ = trainer._embed(docs, cfg.max_doc_tokens, spans=True)
    encoded = Embedder(str(model)).encode_documents(docs, progress=False)
    for row in range(len(docs)):
        expected = [encoded.vectors[row]] + list(encoded.extra.get(row, []))
        assert len(expected) == int((owners == row).sum())
        torch.testing.assert_close(vecs[owners == row], torch.tensor(np.stack(expected)), atol=1e-4, rtol=1e-4)
    assert len(encoded.extra) == 2
    trainer.train(progress=False)
    log = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(log[-3:]) < sum(log[:3]) * 0.8, log
    with pytest.raises(ValueError, match="span_tokens = 0"):
        Trainer(_cfg(tmp_path, tiny_gemma, doc_scoring="best"))


def test_masking_and_diffusion_loss():
    ids = torch.arange(4, 104).reshape(2, 50)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    noisy, masked, t = mask_tokens(ids, mask, mask_id=1, generator=torch.Generator().manual_seed(0))
    assert not masked[:, 0].any() and not masked[1, 30:].any()
    assert (noisy[masked] == 1).all() and (noisy[~masked] == ids[~masked]).all()
    emb = torch.randn(110, 8)
    hidden = torch.randn(2, 50, 8)
    loss = diffusion_loss(hidden, emb, ids, masked, t, mask)
    assert loss.item() > 0
    # padding the batch with more columns (never masked) leaves the loss as it is; it used to divide by them too
    pad = torch.zeros(2, 20, dtype=ids.dtype)
    padded = diffusion_loss(torch.cat([hidden, torch.randn(2, 20, 8)], 1), emb, torch.cat([ids, pad], 1),
                            torch.cat([masked, pad.bool()], 1), t, torch.cat([mask, pad], 1))
    assert torch.allclose(padded, loss)
    shifted = [(masked[i, 1:], hidden[i, :-1], ids[i, 1:]) for i in range(2)]
    ce = sum((torch.nn.functional.cross_entropy(h[m] @ emb.T, x[m], reduction="none") / t[i]).sum()
             for i, (m, h, x) in enumerate(shifted))
    assert torch.allclose(loss, ce / (49 + 29))  # real tokens that can be masked: all but each row's first


def test_contrastive_training_lowers_loss_and_resumes(tmp_path, tiny_gemma):
    cfg = _cfg(tmp_path, tiny_gemma)
    Trainer(cfg).train(progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 12 and {r["dataset"] for r in log} == {"toy"}
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < first * 0.8, (first, last)
    out = tmp_path / "run"
    assert (out / "adapter" / "adapter_model.safetensors").exists() and (out / "loss.png").exists()
    assert _trained_layers(out) == {0, 1, 2, 3}  # under gradient checkpointing, every layer's LoRA learns
    assert "steps: 12 of 12 x batch 6" in (out / "card.md").read_text()
    # the checkpoint is bf16 files (small enough to commit); resume below casts them back
    from safetensors.torch import load_file

    for name in ("adapter_model", "exp_avg", "exp_avg_sq"):
        tensors = load_file(out / "checkpoint" / f"{name}.safetensors")
        assert tensors and {v.dtype for v in tensors.values()} == {torch.bfloat16}, name
    assert load_file(out / "checkpoint" / "exp_avg.safetensors").keys() == \
        load_file(out / "checkpoint" / "exp_avg_sq.safetensors").keys()
    # the adapter's model config loads through the normal path and changes the vectors
    trained = Embedder(str(out / "adapter" / "model.toml"))
    plain = Embedder(cfg.model)
    assert trained.config.adapter and not torch.allclose(
        torch.from_numpy(trained.encode_queries(["fox"])), torch.from_numpy(plain.encode_queries(["fox"])))
    # resume continues from the checkpoint to a longer schedule without repeating steps
    Trainer(_cfg(tmp_path, tiny_gemma, steps=16)).train(resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))
    with pytest.raises(FileExistsError):
        Trainer(cfg).train(progress=False)
    (out / "log.jsonl").unlink()  # a checkpoint alone (a carried-over run) is not overwritten by a fresh start
    with pytest.raises(FileExistsError, match="a run is already here"):
        Trainer(cfg).train(progress=False)


def test_resume_from_the_bf16_checkpoint_follows_the_uninterrupted_run(tmp_path, tiny_gemma):
    """A run stopped after every step of its first four and resumed gives the losses of a run that never stopped,
    up to bf16 rounding of the checkpointed weights and moments. The stopped run goes first, so the straight one
    also checks that LoRA's random init comes from the config's seed, not from whatever ran before."""
    def losses(out: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]

    straight = _cfg(tmp_path, tiny_gemma, steps=8, output=str(tmp_path / "straight"), gradient_checkpointing=False,
                    lr=1e-3)
    stopped = replace(straight, output=str(tmp_path / "stopped"), max_minutes=1e-9)
    for _ in range(4):  # the time limit stops each run after one step
        Trainer(stopped).train(resume=True, progress=False)
    Trainer(replace(stopped, max_minutes=0)).train(resume=True, progress=False)
    torch.manual_seed(123)
    Trainer(straight).train(progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "stopped")
    assert len(b) == 8 and b[:1] == a[:1]
    assert b == pytest.approx(a, rel=1e-2, abs=1e-4), (a, b)


def test_accumulation_widens_the_batch_with_exact_gradients(tmp_path, tiny_gemma):
    """grad_accum 3 x batch 2 gives the gradient of one batch of 6 (every query against all 12 documents), with the
    dropout masks of a single pass, while only one micro-batch holds activations at a time."""
    from longretr.train.trainer import _texts

    torch.manual_seed(0)
    trainer = Trainer(_cfg(tmp_path, tiny_gemma, batch_size=2, grad_accum=3, lora_dropout=0.3))
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:  # zero at init, which would leave lora_A without gradient
                p.normal_(0, 0.05)
    params = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    batch = _triplets(6)
    trainer.model.train()

    torch.manual_seed(1)
    loss, tokens = trainer._contrastive_step(batch)
    cached = {n: p.grad.clone() for n, p in params.items()}
    trainer.model.zero_grad()

    torch.manual_seed(1)  # the reference: one graph over the same micro-batches, in the same order
    parts = [_texts(batch[i:i + 2]) for i in range(0, 6, 2)]
    reps = [trainer._embed_part(*part) for part in parts]
    q = torch.cat([r[0] for r in reps])
    d = torch.cat([r[1][:2] for r in reps] + [r[1][2:] for r in reps])
    queries, docs = _texts(batch)
    reference = trainer._loss(q, d, None, queries, docs)
    reference.backward()
    assert tokens == sum(r[3] for r in reps)
    assert d.shape[0] == 12 and abs(loss - reference.item()) < 1e-5
    assert any(g.abs().sum() > 0 for n, g in cached.items() if "lora_A" in n)
    for n, p in params.items():
        torch.testing.assert_close(cached[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def _trained_layers(run) -> set[int]:
    """Layers whose LoRA B matrices (zero at the start) moved."""
    from safetensors.torch import load_file

    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    return {int(k.split(".layers.")[1].split(".")[0])
            for k, v in weights.items() if "lora_B" in k and v.abs().sum() > 0}


def test_top_layers_only_train_those_layers(tmp_path, tiny_gemma):
    cfg = _cfg(tmp_path, tiny_gemma, steps=3, lora_layers=[2, 3])
    Trainer(cfg).train(progress=False)
    assert _trained_layers(tmp_path / "run") == {2, 3}


def test_training_on_top_of_a_configs_weighted_adapters_applies_them_all(tmp_path, tiny_gemma):
    first = _cfg(tmp_path, tiny_gemma, steps=3, output=str(tmp_path / "a"))
    Trainer(first).train(progress=False)
    Trainer(replace(first, output=str(tmp_path / "b"), seed=2)).train(progress=False)
    soup = write_config(tmp_path, tiny_gemma, name="soup", adapter=[str(tmp_path / "a" / "adapter"),
                                                                     str(tmp_path / "b" / "adapter")],
                        adapter_weights=[0.7, 0.6])
    top = Trainer(replace(first, model=str(soup), output=str(tmp_path / "top"), steps=3))
    top.train(progress=False)
    applied = load_config(tmp_path / "top" / "adapter" / "model.toml")
    assert applied.adapter_weights == (0.7, 0.6, 1.0)
    assert [Path(a).name for a in applied.adapters[:2]] == ["adapter", "adapter"]
    top.model.eval()
    with torch.no_grad():
        trained = top._embed(["Find it; fox", "Find it; lazy dog"], 16)[0].numpy()
    plain = Embedder(str(soup)).encode_queries(["fox", "lazy dog"])
    loaded = Embedder(str(tmp_path / "top" / "adapter" / "model.toml")).encode_queries(["fox", "lazy dog"])
    assert (loaded * trained).sum(axis=1).min() > 0.999  # the model.toml gives what was trained
    assert (plain * trained).sum(axis=1).min() < 0.9999  # and the new adapter changed it
    narrow = replace(first, model=str(soup), output=str(tmp_path / "narrow"), lora_targets=["q_proj"])
    with pytest.raises(ValueError, match="adapts modules"):
        Trainer(narrow)


def test_diffusion_then_contrastive_continues_the_adapter(tmp_path, tiny_gemma, embedder):
    for n in range(8, 40):  # window masks of the training shapes, made under inference mode
        embedder.encode_documents([" ".join((WORDS * 4)[:n])], progress=False)
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"id": i, "text": " ".join(WORDS * 60)}) + "\n" for i in range(3)))
    from tiny_models import make_tokenizer

    make_tokenizer(tmp_path / "tok")  # the toy tokenizer has no mask token: add one
    cfg = _cfg(tmp_path, tiny_gemma, objective="diffusion", data=[str(raw)], steps=3, batch_size=2)
    trainer = Trainer(cfg)
    trainer.tokenizer.add_special_tokens({"mask_token": "<unk>"})
    trainer.train(progress=False)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
    from safetensors.torch import load_file

    stage1 = tmp_path / "run" / "adapter"
    second = Trainer(_cfg(tmp_path, tiny_gemma, output=str(tmp_path / "run2"), init_adapter=str(stage1), steps=2))
    start = {k: v for k, v in second.model.state_dict().items() if ".lora_" in k}
    saved = load_file(stage1 / "adapter_model.safetensors")
    assert len(start) == len(saved) > 0
    for key, value in saved.items():
        match = [v for k, v in start.items() if k.replace(".default", "") == key]
        assert len(match) == 1 and torch.equal(match[0], value), key
    second.train(progress=False)
    assert (tmp_path / "run2" / "adapter" / "model.toml").exists()
    # shipping both stages: the last adapter in bf16, each stage's log under its run's name, vectors kept
    shipped = tmp_path / "shipped"
    load_script("ship_adapter").ship(shipped, [tmp_path / "run", tmp_path / "run2"])
    assert {p.name for p in (shipped / "training").iterdir()} == {
        f"{r}-{f}" for r in ("run", "run2") for f in ("log.jsonl", "loss.png", "train.json")}
    assert {v.dtype for v in load_file(shipped / "adapter_model.safetensors").values()} == {torch.bfloat16}
    run2 = Embedder(str(tmp_path / "run2" / "adapter" / "model.toml"))
    ours = Embedder(str(write_config(tmp_path, tiny_gemma, name="shipped", adapter=str(shipped))))
    a, b = run2.encode_queries(["fox", "dog"]), ours.encode_queries(["fox", "dog"])
    assert (a * b).sum(axis=1).min() > 0.999


def test_shipped_adapters_fit_the_same_backbone():
    """Every committed adapter has the default's LoRA tensors (the default's end-to-end tests load that shape)."""
    from safetensors import safe_open

    def shapes(folder):
        with safe_open(folder / "adapter_model.safetensors", "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}

    default = Path(load_config("default").adapters[0])
    folders = [p for p in default.parent.iterdir() if (p / "adapter_model.safetensors").exists()]
    assert len(folders) >= 2 and all((p / "GEMMA_NOTICE.txt").exists() for p in folders)
    for folder in folders:
        assert shapes(folder) == shapes(default), folder


def test_longdoc_triplets_split_documents():
    body = "This is a longer sentence about topic %d that says something real about the subject. "
    docs = [(f"dir{i % 3}/doc{i}", f"The title of {i}\n==============\n\n" + body % i * 40) for i in range(40)]
    train, val = longdoc_triplets(docs, seed=1)
    train_pos = {t.positive for t in train}
    assert train and val and not train_pos & {t.positive for t in val}
    assert all(t.negatives[0] != t.positive for t in train + val)
    assert {t.query for t in train} >= {"The title of 5", "The title of 7"} - {t.query for t in val}


def test_section_headings_become_queries_for_their_own_body():
    body = "Some words about %s that go on for a while and say what the section is about, in full sentences. "
    rst = ("Watchdog timers\n===============\n\nIntro text.\n\n"
           "2. Enabling the timer at boot\n------------------------------\n\n" + body % "boot" * 5 + "\n\n"
           "=========================\nStopping the timer safely\n=========================\n\n" + body % "stop" * 5
           + "\n\nNotes\n-----\n\n" + body % "notes" * 5)
    assert [h for h, _ in sections(rst)] == ["Watchdog timers", "Enabling the timer at boot",
                                             "Stopping the timer safely", "Notes"]
    html = "Title\n\n# 1.2.3. Setting the system clock from the network\n" + body % "clocks" * 5
    assert sections(html) == [("Setting the system clock from the network", (body % "clocks" * 5).strip())]
    rows = section_triplets([("kernel/watchdog.rst", rst), ("other.rst", rst)], {"kernel/watchdog.rst"})
    assert {t.query for t in rows} == {"Enabling the timer at boot", "Stopping the timer safely"}  # 3+ words
    for t in rows:
        assert t.query not in t.positive and "====" not in t.positive and t.positive.startswith("Some words")
        assert t.negatives == [next(r.positive for r in rows if r is not t)]  # the document's other section
        assert t.instruction and t.dataset == "section" and t.extra == {"name": "kernel/watchdog.rst"}


def test_window_positives_hold_the_query_where_a_cut_from_the_start_would_not():
    filler = "".join(f"line {i} of filler text about nothing in particular\n" for i in range(200))
    doc = filler[:3000] + "The scheduler balances run queues\nacross every CPU it can find.\n" + filler[3000:]
    other = "another page\n" * 500
    rows = [Triplet("The scheduler balances run queues across every CPU it can find.", doc, [other], "", "longdoc"),
            Triplet("line 1 of filler text about nothing in particular", doc, [other], "", "longdoc")]
    for seed in range(20):
        far, near = window_positives(rows, max_chars=1000, seed=seed)
        assert near == rows[1]  # the query is in the opening: nothing to do
        assert len(far.positive) == 1000 and far.positive in doc and far.positive.startswith("line")
        assert "The scheduler balances run queues\nacross every CPU" in far.positive[:500 + 64]
        assert len(far.negatives[0]) == 1000 and far.negatives[0] in other
    # the query's place in the window and the negative's place in its page are drawn, not fixed
    draws = [window_positives(rows, max_chars=1000, seed=s)[0] for s in range(20)]
    assert len({doc.find(t.positive) for t in draws}) > 1


def test_mined_negative_is_the_closest_document_of_another_group():
    texts = {"a": "nau8825 audio codec jack detection pin",
             "b": "nau8824 audio codec jack detection, an older part of the same family",
             "c": "scheduler run queues and load balancing", "d": "memory barriers for smp"}
    sibling = "audio codec jack detection pin notes"
    rows = [Triplet("audio codec jack detection", texts["a"], [texts["d"]], "", "docs", {"name": "a"}),
            # a sibling of the first positive (same concept / document): matches best, never a negative for it
            Triplet("audio codec jack", sibling, [texts["c"]], "", "docs", {"name": "a"}),
            Triplet("run queues", texts["c"], [texts["d"]], "", "docs", {"name": "c"}),
            Triplet("codec", texts["b"], [texts["c"]], "", "docs", {"name": "b"}),
            Triplet("load balancing", "a positive outside the pool of this dataset", ["x"], "", "other", {"name": "z"})]
    mined = mine_negatives(rows, "name")
    assert [t.query for t in mined] == [t.query for t in rows]  # order kept
    assert mined[0].negatives == [texts["b"], texts["d"]]  # closest other document, old negative second
    assert mined[1].negatives[0] == texts["b"]  # neither its positive nor that positive's sibling
    assert mined[3].negatives[0] == texts["a"]
    assert mined[2].negatives == [texts["d"]]  # nothing else shares a term with the query: unchanged
    assert mined[4].negatives == ["x"]  # only its own dataset's positives are candidates


def test_dense_mining_ranks_by_the_embedder_with_the_triplets_instruction(tmp_path, tiny_gemma):
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)))
    texts = {"a": "memory barriers for smp", "b": "Find it; run queues", "c": "run queues",
             "d": "audio codec jack detection"}
    rows = [Triplet("run queues", texts["a"], [texts["d"]], "Find it", "docs", {"name": "a"}),
            Triplet("run queues", texts["c"], [texts["d"]], "", "docs", {"name": "c"}),
            Triplet("audio codec jack detection", texts["d"], [texts["a"]], "", "docs", {"name": "d"}),
            Triplet("x", texts["b"], [texts["a"]], "", "docs", {"name": "b"})]
    rank = dense_ranker(embedder, max_doc_tokens=64)
    order = [texts["a"], texts["c"], texts["d"], texts["b"]]  # the pool: positives in row order
    hits = rank(rows, order)
    assert hits[0][0] == 3 and hits[1][0] == 1  # identical text first: with the instruction, then without
    assert hits[2][0] == 2
    mined = mine_negatives(rows, "name", rank)
    assert mined[0].negatives == [texts["b"], texts["d"]]  # the embedder's closest other document, old one second
    assert mined[1].negatives[0] == order[hits[1][1]]  # its own positive ranks first and is skipped
    assert mined[2].negatives[0] == order[hits[2][1]] != texts["d"]



def test_positive_aware_mining_leaves_out_texts_scored_too_close_to_the_positive(tmp_path, tiny_gemma):
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)))
    texts = ["run queues and load balancing", "the run queue of each cpu", "audio codec jack detection",
             "memory barriers for smp", "page cache writeback"]
    rows = [Triplet("which cpu runs a task", text, ["x"], "", "docs", {"name": str(i)}) for i, text in
            enumerate(texts)]
    scores = embedder.encode_texts([t.query_text for t in rows]) @ embedder.encode_texts(texts, max_tokens=64).T
    plain = dense_ranker(embedder, max_doc_tokens=64)(rows, texts)
    first, second = sorted(scores[0, 1:], reverse=True)[:2]
    assert scores[0, 0] > 0 and first > second
    ratio = float((first + second) / 2 / scores[0, 0])  # between the two closest other texts: the closest goes
    aware = dense_ranker(embedder, max_doc_tokens=64, max_ratio=ratio)(rows, texts)
    closest = next(v for v in plain[0] if v != 0)
    assert closest not in aware[0] and len(aware[0]) < len(plain[0])
    assert aware[0] == [v for v in plain[0] if scores[0, v] <= ratio * scores[0, 0]]
    mined = mine_negatives(rows, "name", dense_ranker(embedder, max_doc_tokens=64, max_ratio=ratio))
    assert mined[0].negatives == [texts[next(v for v in aware[0] if v != 0)], "x"]

PAGE = """getopt(3)                Library Functions Manual                getopt(3)

NAME
       getopt, getopt_long, optarg - Parse
       command-line options

SYNOPSIS
       #include <unistd.h>

DESCRIPTION
       The getopt() function parses the command-line arguments.
"""


def test_manpage_summary_is_the_query_and_leaves_the_page():
    summary, body = split_manpage(PAGE)
    assert summary == "Parse command-line options"
    assert "NAME\n       getopt, getopt_long, optarg\n\nSYNOPSIS" in body and "Parse" not in body
    assert "The getopt() function parses" in body
    assert split_manpage(PAGE.replace(" - Parse", " Parse")) is None  # no summary: not a pair
    pages = [(f"p{i}.3", f"summary number {i}", f"page {i} " * 200) for i in range(40)]
    train, val = manpage_triplets(pages, seed=3)
    assert len(train) + len(val) == 40 and not {t.positive for t in train} & {t.positive for t in val}
    assert all(t.negatives[0] != t.positive and t.query in {p[1] for p in pages} for t in train + val)


TRANSLATION = """Package: grep-like
Description-md5: 0
Description-en: search files for lines matching a pattern
 Searches the named input files for lines containing a match to the given
 pattern.
 .
 It prints each matching line.

Package: libxml-tool
Description-en: XML parsing library
 A small library that reads XML.

"""


def test_package_descriptions_read_apts_translation_files(tmp_path):
    import gzip

    (tmp_path / "deb_main_i18n_Translation-en.gz").write_bytes(gzip.compress(TRANSLATION.encode()))
    assert list(package_descriptions(tmp_path)) == [
        ("grep-like", "search files for lines matching a pattern",
         "Searches the named input files for lines containing a match to the given\npattern.\n\nIt prints each "
         "matching line."),
        ("libxml-tool", "XML parsing library", "A small library that reads XML.")]
    with pytest.raises(FileNotFoundError, match="Acquire::Languages=en"):
        list(package_descriptions(tmp_path / "empty"))


def test_package_pairs_skip_python_and_copies_of_a_description():
    def body(what: str) -> str:
        return f"A tool that {what}.\n\n" + "More about it. " * 30

    packages = [(f"tool{i}", f"summary of tool {i}", body(f"does task {i}")) for i in range(30)]
    packages += [("tool0-dev", "development files of tool 0", body("does task 0")),  # same first paragraph
                 ("pyfoo", "library for Python 3", body("wraps foo")), ("tiny", "short description", "x")]
    train, val = package_triplets(packages, val_fraction=0.1, seed=1)
    rows = train + val
    assert len(rows) == 30 and len(val) == 3 and not {t.positive for t in train} & {t.positive for t in val}
    assert {t.extra["name"] for t in rows} == {f"tool{i}" for i in range(30)}
    assert all(t.negatives[0] != t.positive and t.dataset == "package" for t in rows)


def test_default_config_loads():
    assert load_config("default").pooling == "mean"


def test_time_limit_stops_resumably(tmp_path, tiny_gemma):
    cfg = _cfg(tmp_path, tiny_gemma, steps=6, max_minutes=1e-9)
    assert Trainer(cfg).train(progress=False) == {"steps": 1, "seconds": pytest.approx(0, abs=60), "finished": False,
                                                     "interrupted": False}
    assert (tmp_path / "run" / "adapter" / "model.toml").exists()
    cfg = _cfg(tmp_path, tiny_gemma, steps=6)
    assert Trainer(cfg).train(resume=True, progress=False)["steps"] == 6
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 6
    card = (tmp_path / "run" / "card.md").read_text()  # each run of the command, with its machine
    assert "steps 1-1, " in card and "steps 2-6, " in card and card.count(describe()["summary"]) == 2, card


def test_resume_refuses_changed_training_data(tmp_path, tiny_gemma):
    cfg = _cfg(tmp_path, tiny_gemma, steps=6, max_minutes=1e-9)
    Trainer(cfg).train(progress=False)
    write_jsonl(Path(cfg.data[0]), _triplets()[::-1])  # same rows, another order: the saved orders would lie
    with pytest.raises(ValueError, match=r"training data differs .*\['toy'\]"):
        Trainer(cfg).train(resume=True, progress=False)


def test_cli_train_exits_75_at_time_limit_and_resumes(tmp_path, tiny_gemma):
    from dataclasses import asdict

    from typer.testing import CliRunner

    from longretr.cli import app

    cfg = asdict(_cfg(tmp_path, tiny_gemma, steps=3, max_minutes=1e-9))
    path = tmp_path / "train.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
    runner = CliRunner()
    first = runner.invoke(app, ["train", "--config", str(path)])
    assert first.exit_code == 75, first.output
    path.write_text(path.read_text().replace("max_minutes = 1e-09", "max_minutes = 0"))
    second = runner.invoke(app, ["train", "--config", str(path), "--resume"])
    assert second.exit_code == 0, second.output
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3


def test_shipped_training_configs_load():
    configs = sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.toml"))
    assert configs
    for path in configs:
        cfg = TrainConfig.from_toml(path)
        assert load_config(cfg.model).attention == "bidirectional" or cfg.objective == "contrastive", path


def test_training_config_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "default"\nlearning_rate = 1e-4\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*learning_rate"):
        TrainConfig.from_toml(bad)
    bad.write_text('doc_scoring = "best"\ngrad_accum = 2\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*grad_accum"):
        TrainConfig.from_toml(bad)


def test_recipe_sweep_trains_and_scores_each_variant(tmp_path, tiny_gemma):
    sweep = load_script("recipe_sweep")
    assert sweep.parse_variant("fast:lr=2e-4,steps=9") == ("fast", {"lr": 2e-4, "steps": 9})
    with pytest.raises(ValueError, match="unknown keys"):
        sweep.parse_variant("x:learning_rate=1")
    cfg = _cfg(tmp_path, tiny_gemma, steps=3)
    base = tmp_path / "base.toml"
    base.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in vars(cfg).items()))
    val = tmp_path / "val"
    val.mkdir()
    rows = [Triplet(t.query, t.positive, t.negatives, t.instruction, "reasonaug-q2c") for t in _triplets(8)]
    write_jsonl(val / "reasonaug-val.jsonl", rows)
    write_jsonl(val / "longdoc-val.jsonl", rows)
    sweep.main(["--base", str(base), "--out", str(tmp_path / "sweep"), "--data", str(val), "--sets", "reasonaug-q2c",
                "--variant", "a", "--variant", "b:steps=2,lr=1e-3", "--baseline", cfg.model])
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert list(summary["variants"]) == ["a", "b"]
    a, b = summary["variants"]["a"], summary["variants"]["b"]
    assert a["train"]["steps"] == 3 and b["train"]["steps"] == 2 and b["overrides"] == {"steps": 2, "lr": 1e-3}
    assert len(a["card"]["models"]) == 2 and len(b["card"]["models"]) == 1  # the baseline is scored once
    for card in (a["card"], b["card"]):
        for scores in card["models"].values():
            assert 0 < scores["reasonaug-q2c"]["dense"]["mrr@10"] <= 1
    assert json.loads((tmp_path / "sweep" / "b" / "train.json").read_text())["lr"] == 1e-3


def test_training_config_names_wrong_types_and_values(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in [('lr = "fast"\n', r"lr must be a number, got 'fast'"),
                          ('data = "x.jsonl"\n', r"data must be a list of strings"),  # not one file per character
                          ("steps = 0\n", r"steps = 0 \(must be at least 1\)"),  # "finished" untrained, exit 0
                          ("save_every = 0\n", r"save_every = 0"),  # ZeroDivisionError after the first step
                          ("lr = 0\n", r"lr must be above 0")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=rf"bad\.toml: {message}"):
            TrainConfig.from_toml(bad)
    with pytest.raises(ValueError, match="objective must be contrastive or diffusion"):  # the CLI's --objective
        replace(TrainConfig(), objective="foo")


def test_triplet_rows_with_wrong_values_are_refused_with_their_line(tmp_path):
    from longretr.train.data import read_triplets

    good = '{"query": "fox", "positive": "the fox", "negative": "a dog"}\n'
    path = tmp_path / "t.jsonl"
    for row, message in [('{"query": "", "positive": "p", "negative": "n"}', "non-empty strings"),
                         ('{"query": 5, "positive": "p", "negative": "n"}', "non-empty strings"),
                         ('{"query": "q", "positive": "p", "negatives": "a dog"}', "list of strings"),
                         ("[1, 2]", "expected a JSON object")]:
        path.write_text(good + row + "\n")
        with pytest.raises(ValueError, match=rf"t\.jsonl:2: .*{message}"):
            read_triplets(path)


def test_a_triplet_without_an_instruction_gets_the_one_search_uses(tmp_path, tiny_gemma):
    """A user's triplets without instructions were trained (and validated) bare, then searched with the config's."""
    from longretr.train.data import read_triplets
    from longretr.train.trainer import _Sampler
    from longretr.train.validate import validation_tasks

    path = tmp_path / "t.jsonl"
    path.write_text('{"query": "fox", "positive": "the fox", "negative": "a dog"}\n'
                    '{"query": "owl", "positive": "an owl", "negative": "a cat", "instruction": ""}\n'
                    '{"query": "elk", "positive": "an elk", "negative": "a cow", "instruction": "Find"}\n')
    assert [t.query_text for t in read_triplets(path)] == ["fox", "owl", "Find; elk"]
    assert [t.query_text for t in read_triplets(path, "Search")] == ["Search; fox", "owl", "Find; elk"]
    assert validation_tasks([str(path)], 10, "Search")["t"][0] == ["Search; fox", "owl", "Find; elk"]
    seen = []

    class Recording(_Sampler):
        def __init__(self, *args):
            super().__init__(*args)
            seen.extend(t.query_text for t in self.sets["t"])

    cfg = _cfg(tmp_path, tiny_gemma, data=[str(path)], steps=1, batch_size=3, warmup=0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("longretr.train.trainer._Sampler", Recording)
        Trainer(cfg).train(progress=False)
    assert sorted(seen) == ["Find it; fox", "Find; elk", "owl"]  # "Find it": write_config's query_instruction


def test_a_run_checkpointed_before_the_instruction_default_resumes_as_it_began(tmp_path, tiny_gemma):
    """Its rows without an instruction were trained bare: the data hash covers the query text, so the new default
    would refuse the resume ("training data differs") and change the recipe mid-run."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}", "negative": f"n{i}"}) + "\n"
                            for i in range(6)))
    cfg = _cfg(tmp_path, tiny_gemma, data=[str(path)], steps=2, batch_size=3, warmup=0, save_every=1)
    old = Trainer(cfg)
    old.model_cfg = replace(old.model_cfg, query_instruction="")  # as longretr trained such rows before
    old.train(progress=False)
    state_path = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["sampler"].pop("instruction") == ""
    state_path.write_text(json.dumps(state))  # a checkpoint written before the key existed
    train_json = tmp_path / "run" / "train.json"  # and a train.json written before it kept the model config
    train_json.write_text(json.dumps({k: v for k, v in json.loads(train_json.read_text()).items()
                                      if k != "model_config"}))
    result = Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)
    assert result["steps"] == 3
    state = json.loads(state_path.read_text())
    assert state["sampler"]["instruction"] == ""  # it went on bare, and says so now


def test_resume_picks_up_a_checkpoint_left_between_the_renames(tmp_path, tiny_gemma):
    """A kill between _save_checkpoint's two renames leaves only .checkpoint.old: resume used to start afresh,
    log the steps twice and delete it at the first save."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=4, save_every=2, max_minutes=1e-9)
    Trainer(replace(cfg, max_minutes=0.0, steps=2)).train(progress=False)
    run = tmp_path / "run"
    (run / "checkpoint").rename(run / ".checkpoint.old")
    assert Trainer(replace(cfg, max_minutes=0.0)).train(resume=True, progress=False)["steps"] == 4
    assert [json.loads(r)["step"] for r in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert "steps 1-2, " in (run / "card.md").read_text()


def test_resume_from_a_damaged_checkpoint_names_it_and_keeps_it(tmp_path, tiny_gemma):
    cfg = _cfg(tmp_path, tiny_gemma, steps=2, save_every=2)
    Trainer(cfg).train(progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    (ckpt / "trainer.pt").write_bytes((ckpt / "trainer.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"run/checkpoint: damaged checkpoint"):
        Trainer(replace(cfg, steps=4)).train(resume=True, progress=False)
    assert len((ckpt / "trainer.pt").read_bytes()) == 100  # refused, not overwritten


def test_build_train_data_refuses_a_missing_reasonaug_without_a_traceback(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "build_train_data.py"
    done = subprocess.run([sys.executable, str(script), "--reasonaug", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and "--reasonaug" in done.stderr and "pairs.jsonl" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_ship_adapter_and_recipe_sweep_refuse_bad_arguments_before_writing(tmp_path, capsys):
    """ship_adapter.py on an unfinished run used to copy what it found, then stop on a FileNotFoundError traceback;
    recipe_sweep.py on a missing base config or a variant TrainConfig refuses ended in a ValueError traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"not a finished run: no .*run/loss\.png.*adapter_model\.safetensors"):
        load_script("ship_adapter").ship(tmp_path / "shipped", [run])
    assert not (tmp_path / "shipped").exists()
    sweep = load_script("recipe_sweep")
    base = tmp_path / "base.toml"
    base.write_text('model = "default"\ndata = ["x.jsonl"]\n')
    for args, message in [(["--base", str(tmp_path / "nope.toml"), "--variant", "a"], "nope.toml: not a readable"),
                          (["--base", str(base), "--variant", "a:steps=0"], "steps = 0 (must be at least 1)"),
                          (["--base", str(base), "--variant", "a:learning_rate=1"], "unknown keys")]:
        with pytest.raises(SystemExit) as done:
            sweep.main([*args, "--out", str(tmp_path / "sweep")])
        assert done.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_train_default_keeps_the_trainers_val_json_and_ships_the_study_beside_it(tmp_path):
    """train_default.sh (no argument: the default's CPU recipe) wrote train_card.py's study over the last run's
    val.json (the trainer's before/after scores), and ship_adapter.py shipped that as training/val.json. Here with
    `longretr` and `python` stubbed: no training."""
    import subprocess

    stub = tmp_path / "bin" / "stub"  # logs its arguments; writes {"by": "stub"} to its --out
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\necho "$(basename "$0") $*" >> calls.txt\n'
                    'while [ $# -gt 0 ]; do [ "$1" = --out ] && echo \'{"by": "stub"}\' > "$2"; shift; done\n')
    stub.chmod(0o755)
    for name in ("longretr", "python"):
        (stub.parent / name).symlink_to(stub)
    runs = [tmp_path / "runs" / "cpu-1-diffusion", tmp_path / "runs" / "cpu-2f-long"]
    for run in runs:  # what the two stages leave; stage 2 has val files, so its own val.json
        (run / "adapter").mkdir(parents=True)
        for name in ("log.jsonl", "loss.png", "train.json", "adapter/adapter_model.safetensors"):
            (run / name).write_text(name)
    (runs[1] / "val.json").write_text('{"before": {}, "after": {}}')
    script = Path(__file__).parent.parent / "scripts" / "train_default.sh"
    subprocess.run(["bash", str(script)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "BIN": str(stub.parent)},
                   check=True, capture_output=True)
    card = (tmp_path / "calls.txt").read_text().splitlines()[-1]
    assert card.startswith("python scripts/train_card.py ") and card.endswith("--out runs/cpu-2f-long/val-study.json")
    assert json.loads((runs[1] / "val.json").read_text()) == {"before": {}, "after": {}}
    shipped = tmp_path / "shipped"
    load_script("ship_adapter").ship(shipped, runs)
    assert sorted(p.name for p in (shipped / "training").iterdir() if "val" in p.name) == [
        "cpu-2f-long-val.json", "val-study.json"]
    assert json.loads((shipped / "training" / "cpu-2f-long-val.json").read_text()) == {"before": {}, "after": {}}
    assert json.loads((shipped / "training" / "val-study.json").read_text()) == {"by": "stub"}


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def _write_toml(path: Path, cfg: TrainConfig) -> Path:
    from dataclasses import asdict

    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in asdict(cfg).items()))
    return path


KILL_AT_STEP = """
import os, signal, sys
from longretr.train.trainer import Trainer, TrainConfig
calls = 0
step = Trainer._contrastive_step
def dying_step(self, batch):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):  # mid-step, after the checkpoint of step 3
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, batch)
Trainer._contrastive_step = dying_step
Trainer(TrainConfig.from_toml(sys.argv[1])).train(progress=False)
"""


def test_runs_killed_or_interrupted_resume_to_the_uninterrupted_adapter(tmp_path, tiny_gemma, monkeypatch):
    """SIGKILL mid-step (a real one, in a subprocess) and Ctrl-C (through the CLI) both resume to the adapter of a
    run that never stopped, up to the bf16 rounding of the checkpoint. Ctrl-C used to end in a bare exit 130, with
    the steps since the last checkpoint lost and no word on resuming."""
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from longretr.cli import app

    straight = _cfg(tmp_path, tiny_gemma, steps=8, save_every=3, lr=1e-3, lora_dropout=0.1,
                    output=str(tmp_path / "straight"))
    Trainer(straight).train(progress=False)
    expected = _adapter(tmp_path / "straight")

    killed = _write_toml(tmp_path / "killed.toml", replace(straight, output=str(tmp_path / "killed")))
    done = subprocess.run([sys.executable, "-c", KILL_AT_STEP, str(killed), "5"], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert json.loads((tmp_path / "killed" / "checkpoint" / "state.json").read_text())["step"] == 3
    Trainer(TrainConfig.from_toml(killed)).train(resume=True, progress=False)

    interrupted = _write_toml(tmp_path / "interrupted.toml", replace(straight, output=str(tmp_path / "interrupted")))
    step, calls = Trainer._contrastive_step, []

    def ctrl_c_in_step_2(self, batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch)

    import os

    monkeypatch.setattr(Trainer, "_contrastive_step", ctrl_c_in_step_2)
    # Ctrl-C handled as Python sets it up, however pytest was started (as a background job it ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    stopped = CliRunner().invoke(app, ["train", "--config", str(interrupted)])
    assert stopped.exit_code == 130, stopped.output
    assert f"longretr train --config {interrupted} --resume" in stopped.output
    assert json.loads((tmp_path / "interrupted" / "checkpoint" / "state.json").read_text())["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    signal.signal(signal.SIGINT, previous)
    resumed = CliRunner().invoke(app, ["train", "--config", str(interrupted), "--resume"])
    assert resumed.exit_code == 0, resumed.output

    for run in ("killed", "interrupted"):
        got = _adapter(tmp_path / run)
        assert got.keys() == expected.keys()
        drift = max(((got[k].float() - expected[k].float()).norm() / expected[k].float().norm()).item()
                    for k in expected)
        assert drift < 0.01, (run, drift)  # bf16's own step is 0.4%
        steps = [json.loads(r)["step"] for r in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 9)), run


def test_resume_refuses_a_config_that_trains_differently(tmp_path, tiny_gemma, capsys):
    """--resume used to take any config and overwrite train.json with it: one run of two recipes, its card naming
    only the second."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=2, save_every=1)
    Trainer(cfg).train(progress=False)
    for change in ({"lr": 1e-3}, {"objective": "diffusion"}, {"lora_r": 8}, {"seed": 1}):
        with pytest.raises(ValueError, match=rf"differs from the run's .*{next(iter(change))} = "):
            check_output(replace(cfg, **change), resume=True)  # as the CLI calls it, before data or model load
    with pytest.raises(ValueError, match=r"differs from the run's .*lr = "):  # and train() again
        Trainer(replace(cfg, lr=1e-3)).train(resume=True, progress=False)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["lr"] == cfg.lr  # not overwritten
    Trainer(replace(cfg, steps=3, max_minutes=5.0)).train(resume=True, progress=False)  # how long: fine, and said
    assert "resuming with steps = 3 (was 2)" in capsys.readouterr().out


def test_log_gives_the_lr_each_step_used(tmp_path, tiny_gemma):
    """The log's lr used to be read after the scheduler's step: the next step's (full lr at step 1 of a warm-up,
    0 at the last step)."""
    Trainer(_cfg(tmp_path, tiny_gemma, steps=4, warmup=2, lr=1e-3)).train(progress=False)
    lrs = [json.loads(r)["lr"] for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_diffusion_refuses_a_backbone_with_its_own_output_head(tmp_path, tiny_gemma):
    """The diffusion loss reads tokens off the input embeddings; on an untied checkpoint (Llama 3, Mistral) that
    trained against the wrong head without a word."""
    import shutil

    untied = shutil.copytree(tiny_gemma, tmp_path / "untied")
    config = json.loads((untied / "config.json").read_text())
    (untied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"text": " ".join(WORDS * 60)}) + "\n")
    with pytest.raises(ValueError, match="tie_word_embeddings.*has a separate one"):
        Trainer(_cfg(tmp_path, untied, objective="diffusion", data=[str(raw)]))
    Trainer(_cfg(tmp_path, untied))  # contrastive training does not use the head


def test_validation_files_put_before_and_after_scores_on_the_card(tmp_path, tiny_gemma, capsys):
    from longretr.train.validate import score, validation_tasks

    cfg = _cfg(tmp_path, tiny_gemma, steps=6, val=[str(tmp_path / "toy.jsonl")], val_queries=10)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):  # before any training
        Trainer(replace(cfg, val=[str(tmp_path / "nope.jsonl")])).train(progress=False)
    assert not (tmp_path / "run" / "log.jsonl").exists()
    Trainer(cfg).train(progress=False)
    val = json.loads((tmp_path / "run" / "val.json").read_text())
    tasks = validation_tasks(cfg.val, 10)
    queries, docs, relevant = tasks["toy"]
    assert len(queries) == 10 and len(docs) == len(set(docs)) and all(docs[r].endswith("archive") for r in relevant)
    # the card's figures are the two models scored afresh the same way
    assert val["before"] == score(cfg.model, tasks, cfg.max_query_tokens, cfg.max_doc_tokens, progress=True)
    assert f"validation: {cfg.model} on toy (10 queries, {len(docs)} documents)" in capsys.readouterr().out
    assert val["after"] == score(str(tmp_path / "run" / "adapter" / "model.toml"), tasks, cfg.max_query_tokens,
                                 cfg.max_doc_tokens)
    assert val["before"]["toy"]["queries"] == 10 and val["before"] != val["after"]
    card = (tmp_path / "run" / "card.md").read_text()
    b, a = val["before"]["toy"], val["after"]["toy"]
    assert f"| toy | 10 | {b['documents']} | {b['mrr@10']:.3f} / {b['top1']:.3f} | {a['mrr@10']:.3f} / " in card


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it():
    import signal

    from longretr.train.trainer import _StopOnCtrlC

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `longretr train ... &` from a script starts
    try:
        guard = _StopOnCtrlC()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        guard.close()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        guard = _StopOnCtrlC()
        assert signal.getsignal(signal.SIGINT) == guard._handle
        guard.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_at_step(monkeypatch, n: int):
    """A Ctrl-C (SIGINT) during contrastive step n, handled as Python sets it up however pytest was started (as a
    background job it ignores SIGINT); returns the handler to put back."""
    import os
    import signal

    step, calls = Trainer._contrastive_step, []

    def ctrl_c(self, batch):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_contrastive_step", ctrl_c)
    return signal.signal(signal.SIGINT, signal.default_int_handler)


def test_ctrl_c_prints_a_resume_command_with_every_override(tmp_path, tiny_gemma, monkeypatch):
    """The printed command used to drop --steps and --objective: run as printed, it resumed to the config's steps
    (the card said "steps: 114 of 6") or was refused for the objective."""
    import shlex
    import signal

    from typer.testing import CliRunner

    from longretr.cli import app

    path = _write_toml(tmp_path / "with space.toml", _cfg(tmp_path, tiny_gemma, steps=40, save_every=2))
    previous = _interrupt_at_step(monkeypatch, 2)
    try:
        stopped = CliRunner().invoke(app, ["train", "--config", str(path), "--steps", "5", "--objective",
                                           "contrastive", "--output", str(tmp_path / "out")])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.exit_code == 130, stopped.output
    command = stopped.output.split("continue with: ")[1].strip()
    args = shlex.split(command)
    assert args[:2] == ["longretr", "train"] and args[-1] == "--resume", command
    assert {"--steps": "5", "--objective": "contrastive", "--output": str(tmp_path / "out"),
            "--config": str(path)}.items() <= dict(zip(args[2:-1:2], args[3:-1:2])).items(), command
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, args[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "steps: 5 of 5 x" in (tmp_path / "out" / "card.md").read_text()


def test_resume_with_nothing_to_resume_says_so(tmp_path, tiny_gemma, capsys):
    """--resume in an empty or missing folder used to start a new run without a word."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=2)
    Trainer(cfg).train(resume=True, progress=False)
    assert f"--resume: no checkpoint in {cfg.output}; starting a new run" in capsys.readouterr().err
    shutil_rmtree(tmp_path / "run" / "checkpoint")  # another run's train.json (lr) and nothing else to resume
    for name in ("adapter", "card.md", "loss.png"):
        shutil_rmtree(tmp_path / "run" / name)
    with pytest.raises(ValueError, match=r"differs from the run's \(train\.json\): lr = "):
        Trainer(replace(cfg, lr=1e-3)).train(resume=True, progress=False)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_a_folder_holding_any_of_a_runs_outputs_is_refused(tmp_path, tiny_gemma, capsys):
    """A finished or shipped run (adapter/, card.md, train.json, no log or checkpoint) used to be overwritten; a run
    that failed before its first step (train.json and an empty log) must not block the corrected one."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=2)
    Trainer(cfg).train(progress=False)
    run = tmp_path / "run"
    for name in ("checkpoint", "log.jsonl"):
        shutil_rmtree(run / name)
    for resume in (False, True):
        with pytest.raises(FileExistsError, match=r"a run is already here \(train\.json, adapter, card\.md, loss\.png"
                           if not resume else r"no checkpoint to resume from, but a run's outputs \(adapter"):
            Trainer(cfg).train(resume=resume, progress=False)
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    for name in ("adapter", "card.md", "loss.png"):
        shutil_rmtree(run / name)
    (run / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')  # steps logged, nothing saved
    with pytest.raises(FileExistsError, match="delete its train.json and log.jsonl"):
        Trainer(cfg).train(progress=False)
    (run / "log.jsonl").write_text("")  # stopped before its first step: a corrected config starts over
    capsys.readouterr()
    Trainer(replace(cfg, lr=1e-3)).train(progress=False)
    assert "holds only what a run that stopped before its first step left" in capsys.readouterr().err
    assert json.loads((run / "train.json").read_text())["lr"] == 1e-3
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        Trainer(replace(cfg, output=str(tmp_path / "file"))).train(progress=False)


def test_resume_refuses_fewer_steps_and_extends_with_the_right_lr(tmp_path, tiny_gemma):
    """--resume --steps below the step reached used to "finish" (card "345 of 100"); a finished run extended took its
    first new step at lr 0.0."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=4, warmup=2, lr=1e-3)
    Trainer(cfg).train(progress=False)
    with pytest.raises(ValueError, match="steps = 3 is below the step the run has reached, 4"):
        Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)
    Trainer(replace(cfg, steps=8)).train(resume=True, progress=False)
    lrs = [json.loads(r)["lr"] for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert lrs[4:] == pytest.approx([1e-3 * (8 - s) / 6 for s in range(4, 8)])  # as an 8-step run from step 5 on


def test_settings_that_make_no_sense_are_refused_or_warned(tmp_path, tiny_gemma, capsys):
    bad = tmp_path / "bad.toml"
    for text, message in [("scale = -3.0\n", r"scale = -3.0 \(must be above 0\)"),  # reverses InfoNCE
                          ("lora_alpha = 0\n", r"lora_alpha = 0 \(must be above 0\)"),
                          ("lora_dropout = 1.0\n", r"lora_dropout = 1.0 \(must be at least 0 and below 1\)"),
                          ("lora_dropout = -0.1\n", r"lora_dropout = -0.1"),
                          ("distill_temperature = 0.0\n", r"distill_temperature = 0.0 \(must be above 0\)"),
                          ("weight_decay = -0.1\n", r"weight_decay = -0.1 \(must be at least 0\)")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=rf"bad\.toml: {message}"):
            TrainConfig.from_toml(bad)
    with pytest.raises(ValueError, match=r"lora_layers \[4\]: .* has layers 0 to 3"):
        Trainer(_cfg(tmp_path, tiny_gemma, lora_layers=[2, 4]))
    Trainer(_cfg(tmp_path, tiny_gemma, steps=2, warmup=2, batch_size=30)).train(progress=False)
    err = capsys.readouterr().err
    assert "warning: warmup = 2 is not below steps = 2" in err
    assert "warning: a batch takes 30 rows from one dataset, more than toy (24) has" in err


def test_diffusion_refuses_no_mask_token_and_texts_too_short(tmp_path, tiny_gemma):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"text": " ".join(WORDS * 60)}) + "\n")
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "a short text"}) + "\n")
    cfg = _cfg(tmp_path, tiny_gemma, objective="diffusion", data=[str(raw)], steps=2, batch_size=2)
    with pytest.raises(ValueError, match="has no mask token"):  # masked_fill ... NoneType, mid-step
        Trainer(cfg).train(progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"short\.jsonl: no text longer than 500 characters"):
        Trainer(replace(cfg, data=[str(raw), str(short)]))  # before the model loads


def test_data_file_errors_name_the_file(tmp_path):
    from longretr.train.data import read_triplets

    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"query": "q", "positive": "p", "negative": "n"}\n{"query": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl line 2: not UTF-8"):
        read_triplets(path)
    with pytest.raises(ValueError, match="a folder, not a data file"):  # IsADirectoryError and a traceback
        read_triplets(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such data file$"):
        read_triplets(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="scripts/build_train_data.py"):
        read_triplets(tmp_path / "data" / "train" / "nope.jsonl")


def test_cli_train_help_and_messages(tmp_path, tiny_gemma):
    import inspect

    from typer.testing import CliRunner

    from longretr.cli import app, train

    # a hard line break inside a paragraph stays one in the help ("log.jsonl," / "loss.png" on two lines)
    assert all("\n" not in para for para in inspect.cleandoc(train.__doc__).split("\n\n"))
    path = _write_toml(tmp_path / "t.toml", _cfg(tmp_path, tiny_gemma))
    runner = CliRunner()
    done = runner.invoke(app, ["train", "--config", str(path), "--steps", "1"])
    assert done.exit_code == 0 and "run: 1 step in " in done.output, done.output
    (tmp_path / "file").write_text("")
    done = runner.invoke(app, ["train", "--config", str(path), "--output", str(tmp_path / "file")])
    assert done.exit_code == 2 and "file: the output is a file, not a folder" in done.output, done.output
