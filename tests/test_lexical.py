"""The BM25 index: ranking, persistence inside the index folder, its place in each version, and the modes."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import bm25s
import numpy as np
import pytest
from tiny_models import load_script, write_config, write_corpus
from typer.testing import CliRunner

from longretr import lexical, store
from longretr.cli import app
from longretr.fusion import DEFAULT_RANKING
from longretr.indexer import index_corpus, remove_documents
from longretr.lexical import BM25_PARAMS, LexicalIndex, LexicalIndexError, tokenize
from longretr.queries import Hit
from longretr.search import Searcher

TEXTS = {
    "argparse.txt": "Command-line parsing: define options and positional parameters for a program.",
    "hashlib.txt": "Secure hashes and message digests: SHA-256, SHA-1 and MD5 of bytes.",
    "zipfile.txt": "Read and write ZIP archives: compress members of an archive.",
    "threading.txt": "Threads: run work concurrently; locks, events and a pool of worker threads.",
    "csv.txt": "Read and write comma separated values (CSV) files row by row.",
}


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", TEXTS)


def test_tokenizer_drops_stopwords_and_case_without_stemming():
    assert tokenize(["The Archives of a ZIP file"]) == [["archives", "zip", "file"]]


def test_bm25_ranks_by_terms_and_skips_non_matching():
    index = LexicalIndex.build(list(TEXTS.values()), [10, 11, 12, 13, 14])
    (hits,) = index.search(["sha-256 digest of bytes"], k=5)
    assert hits[0][0] == 11 and len(hits) == 1  # only documents sharing a term are returned
    (hits,) = index.search(["read write archive"], k=5)
    assert [v for v, _ in hits][:1] == [12] and set(v for v, _ in hits) == {12, 14}
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    assert index.search(["the of and"], k=3) == [[]]  # stopwords only
    assert index.search(["xylophone"], k=3) == [[]]  # unknown term


def test_ties_are_broken_by_vid_and_k_is_respected():
    index = LexicalIndex.build(["alpha beta", "alpha gamma", "alpha delta", "epsilon"], [7, 3, 5, 1])
    (hits,) = index.search(["alpha"], k=10)
    assert [v for v, _ in hits] == [3, 5, 7]  # equal scores, by vid; "epsilon" does not match
    (hits,) = index.search(["alpha"], k=2)
    assert [v for v, _ in hits] == [3, 5]


def test_save_load_and_damage(tmp_path):
    index = LexicalIndex.build(list(TEXTS.values()), np.arange(5))
    index.save(tmp_path / "lex")
    assert not list(tmp_path.glob(".*tmp"))
    again = LexicalIndex.load(tmp_path / "lex")
    assert again.search(["zip archive"], 3) == index.search(["zip archive"], 3)
    empty = LexicalIndex.build([], [])
    empty.save(tmp_path / "empty")
    assert LexicalIndex.load(tmp_path / "empty").search(["zip"], 3) == [[]]
    (tmp_path / "lex" / "vids.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LexicalIndexError, match="lex: vids.npy is damaged or truncated"):
        LexicalIndex.load(tmp_path / "lex")
    index.save(tmp_path / "lex")
    (tmp_path / "lex" / "tf-terms.npy").unlink()
    with pytest.raises(LexicalIndexError, match="lex: truncated or not a longretr lexical index"):
        LexicalIndex.load(tmp_path / "lex")
    with pytest.raises(LexicalIndexError, match="missing"):
        LexicalIndex.load(tmp_path / "nothing")


def test_index_builds_lexical_beside_dense_and_modes_work(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    # a mode other than the default's, so that searching without one shows whose mode it takes
    index_corpus(corpus, folder, embedder, progress=False, ranking={"mode": "dense", "fusion": "rrf", "weight": 0.5})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["lexical"] == "lexical-000001" and (folder / "lexical-000001" / "vids.npy").exists()
    assert DEFAULT_RANKING["mode"] != "dense"
    assert manifest["ranking"] == {**DEFAULT_RANKING, "mode": "dense", "fusion": "rrf", "weight": 0.5}
    searcher = Searcher(folder, embedder)
    assert searcher.count == 5
    (lex,) = searcher.search(["SHA-256 digests"], k=3, mode="lexical")
    assert [h.id for h in lex] == ["hashlib.txt"] and lex[0].rank == 1 and "SHA-256" in lex[0].snippet
    (dense,) = searcher.search(["SHA-256 digests"], k=10, mode="dense")
    assert len(dense) == 5  # k larger than the corpus: every document once
    (hybrid,) = searcher.search(["SHA-256 digests"], k=10, mode="hybrid")
    assert sorted(h.id for h in hybrid) == sorted(TEXTS) and hybrid[0].id == "hashlib.txt"
    assert [h.rank for h in hybrid] == [1, 2, 3, 4, 5]
    assert searcher.search(["SHA-256 digests"], k=10) == [dense] != [hybrid]  # None: the manifest's mode
    with pytest.raises(ValueError, match="search mode 'bm25'"):
        searcher.search(["x"], mode="bm25")


def test_lexical_search_does_not_load_the_model(corpus, tmp_path, embedder, monkeypatch):
    """BM25 needs no vectors: `longretr search --mode lexical` answers without the model's load time and memory."""
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    loads = []
    monkeypatch.setattr("longretr.embedder.Embedder", lambda config: loads.append(config) or embedder)
    searcher = Searcher(folder)
    assert [h.id for h in searcher.search(["SHA-256 digests"], k=1, mode="lexical")[0]] == ["hashlib.txt"]
    assert loads == []
    searcher.search(["SHA-256 digests"], k=1, mode="dense")
    assert [c.fingerprint() for c in loads] == [embedder.config.fingerprint()]


def test_lexical_follows_incremental_updates(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    (corpus / "hashlib.txt").unlink()
    (corpus / "json.txt").write_text("Encode and decode JSON documents.")
    (corpus / "csv.txt").write_text("Spreadsheet rows as comma separated values.")
    index_corpus(corpus, folder, embedder, progress=False)
    searcher = Searcher(folder, embedder)
    assert searcher.search(["SHA-256 digests"], k=3, mode="lexical") == [[]]
    assert [h.id for h in searcher.search(["decode JSON"], k=3, mode="lexical")[0]] == ["json.txt"]
    assert [h.id for h in searcher.search(["spreadsheet"], k=3, mode="lexical")[0]] == ["csv.txt"]
    assert searcher.snapshot.manifest["files"]["lexical"] == "lexical-000002"
    assert (folder / "lexical-000001").is_dir()  # the previous version stays for readers that hold it
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert not s.committed and store.read_manifest(folder)["version"] == 2  # nothing changed: no new version
    (corpus / "json.txt").unlink()
    index_corpus(corpus, folder, embedder, progress=False)
    assert sorted(p.name for p in folder.glob("lexical-*")) == ["lexical-000002", "lexical-000003"]
    assert sorted(p.name for p in folder.glob("vectors-*")) == ["vectors-000002.faiss", "vectors-000003.faiss"]


def test_old_index_without_lexical_is_upgraded_without_encoding(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    manifest = store.read_manifest(folder)
    del manifest["files"]["lexical"], manifest["ranking"], manifest["index_type_requested"]
    (folder / "manifest.json").write_text(json.dumps(manifest))  # as written before lexical search existed
    searcher = Searcher(folder, embedder)
    assert len(searcher.search(["zip"], k=2, mode="dense")[0]) == 2
    with pytest.raises(ValueError, match="no lexical index .* re-run `longretr index"):
        searcher.search(["zip"], k=2, mode="lexical")
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert s.committed and s.encoded == 0
    assert Searcher(folder, embedder).search(["zip archives"], k=1, mode="lexical")[0][0].id == "zipfile.txt"


def test_damaged_lexical_index_names_the_folder_and_reindex_repairs_it(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    lex = folder / store.read_manifest(folder)["files"]["lexical"]
    dense = [h.id for h in Searcher(folder, embedder).search(["zip archives"], k=3, mode="dense")[0]]
    (lex / "lexical.json").write_text("{")
    searcher = Searcher(folder, embedder)  # dense search needs only the vectors and the docs table
    assert list(searcher.damaged) == ["lexical"] and searcher.snapshot.lexical is None
    assert re.search(f"{lex.name}: truncated .* re-run `longretr index`.*; lexical and hybrid search refuse",
                     searcher.warnings()[0])
    assert [h.id for h in searcher.search(["zip archives"], k=3, mode="dense")[0]] == dense
    for mode in ("lexical", "hybrid"):
        with pytest.raises(store.IndexFolderError, match=f"{lex.name}: truncated .*; dense mode works meanwhile"):
            searcher.search(["zip"], k=2, mode=mode)
    (lex / "lexical.json").write_text(json.dumps({"count": 5, "tokenizer": {"stemmer": "porter"}}))
    assert "another tokenizer" in store.load(folder).damaged["lexical"]
    index_corpus(corpus, folder, embedder, progress=False)  # repaired
    lex = folder / store.read_manifest(folder)["files"]["lexical"]
    for name in ("vids.npy", "sha256.npy", "tf-indptr.npy", "tf-terms.npy", "tf-counts.npy", "terms.json"):
        whole = (lex / name).read_bytes()  # bytes overwritten, the length unchanged: searches failed or scored NaN
        (lex / name).write_bytes(whole[:-4] + bytes(b ^ 0xFF for b in whole[-4:]))
        assert f"{name} is damaged or truncated" in store.load(folder).damaged["lexical"]
        (lex / name).write_bytes(whole)
    assert not store.load(folder).damaged
    s = index_corpus(corpus, folder, embedder, progress=False, ranking={"weight": 0.7})  # writers never read it
    assert s.encoded == 0 and store.load(folder).lexical.count == 5


def test_cli_modes_and_ranking_options(corpus, tmp_path, tiny_gemma):
    cfg = write_config(tmp_path, tiny_gemma)
    runner = CliRunner()
    folder = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg),
                            "--mode", "lexical", "--fusion", "convex", "--weight", "0.3"])
    assert r.exit_code == 0, r.output
    assert store.read_manifest(folder)["ranking"] == {"mode": "lexical", "fusion": "convex", "weight": 0.3,
                                                      "rrf_k": 60}
    r = runner.invoke(app, ["search", "read zip archives", "--index", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.output)] == ["zipfile.txt", "csv.txt"]  # the index's default: lexical
    r = runner.invoke(app, ["search", "zip archives", "--index", str(folder), "--json", "--mode", "dense", "-k", "4"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 4
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "text": "zip archives"}\n{"id": "b", "text": "worker threads"}\n')
    run = tmp_path / "run.trec"
    r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder), "--mode", "hybrid",
                            "-k", "2", "--output", str(run)])
    assert r.exit_code == 0, r.output
    lines = run.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("a Q0 zipfile.txt 1 ") and lines[0].endswith("longretr-hybrid")
    r = runner.invoke(app, ["search", "x", "--index", str(folder), "--mode", "semantic"])
    assert r.exit_code == 2 and "--mode must be dense, lexical or hybrid" in r.output
    for bad, message in [(["--weight", "2"], "weight must be between 0 and 1"),
                         (["--fusion", "sum"], "fusion method 'sum'"), (["--mode", "bm25"], "search mode 'bm25'")]:
        r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg), *bad])
        assert r.exit_code == 2 and message in r.output, r.output
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg)])
    assert r.exit_code == 0 and store.read_manifest(folder)["ranking"]["mode"] == "lexical"  # settings are kept
    lex = folder / store.read_manifest(folder)["files"]["lexical"]
    (lex / "lexical.json").write_text("{")  # damaged: dense search goes on, with a warning
    r = runner.invoke(app, ["search", "zip archives", "--index", str(folder), "--json", "--mode", "dense"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 5  # all of them: k is 10
    assert f"warning: {lex}: truncated" in r.stderr and "lexical and hybrid search refuse meanwhile" in r.stderr
    r = runner.invoke(app, ["search", "zip archives", "--index", str(folder)])
    assert r.exit_code == 2 and f"{lex}: truncated" in r.stderr and "dense mode works meanwhile" in r.stderr


def test_compare_modes_script_scores_each_mode(corpus, tmp_path, embedder, monkeypatch):
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))  # where the MiniLM chunk vectors are cached
    compare = load_script("compare_modes")
    assert compare.score([["a", "b", "c"], ["c", "d"], ["x"]], [{"relevant": "b"}, {"relevant": "c"},
                                                               {"relevant": "y"}]) == \
        {"mrr@10": pytest.approx((1 / 2 + 1) / 3), "top1": pytest.approx(1 / 3), "top3": pytest.approx(2 / 3),
         "ranks": [2, 1, None]}
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "1", "text": "SHA-256 digests", "relevant": "hashlib.txt"}\n'
                       '{"id": "2", "text": "a pool of worker threads", "relevant": "threading.txt"}\n')
    out = tmp_path / "out"
    result = compare.main(["--index", str(folder), "--corpus", str(corpus), "--queries", str(queries),
                           "--out", str(out)])
    assert result["runs"]["lexical"]["ranks"] == [1, 1] and result["runs"]["lexical"]["mrr@10"] == 1.0
    assert len(result["runs"]["minilm-chunked"]["ranks"]) == 2  # the reference baseline on the same queries
    assert len(list((tmp_path / "home" / "cache").glob("minilm-chunks-*.npy"))) == 1
    assert {"dense", "lexical", "hybrid", "hybrid-rrf-w0.5", "hybrid-convex-w0.3"} <= set(result["runs"])
    assert (out / "compare_modes.png").stat().st_size > 1000
    written = json.loads((out / "compare_modes.json").read_text())
    assert written["runs"][written["best_mode"]]["mrr@10"] == max(written["runs"][m]["mrr@10"]
                                                                  for m in ("dense", "lexical", "hybrid"))
    with pytest.raises(SystemExit, match="built by .*not gemma3-270m-causal"):  # never scored under another name
        compare.main(["--index", str(folder), "--model", "gemma3-270m-causal", "--queries", str(queries)])
    queries.write_text('{"id": "1", "text": "x", "relevant": "nowhere.txt"}\n')
    with pytest.raises(SystemExit, match="relevant documents not in"):
        compare.main(["--index", str(folder), "--queries", str(queries), "--out", str(out)])


def test_compare_runs_counts_moved_queries_and_weights_sets_by_size(tmp_path, capsys):
    runs = load_script("compare_runs")

    def run(name: str, ids: list[str], dense: list, hybrid: list, lexical: list | None = None):
        rows = {m: {"ranks": r, "mrr@10": sum(1 / x for x in r if x) / len(r)} for m, r in
                (("dense", dense), ("hybrid", hybrid), ("lexical", lexical)) if r}
        (tmp_path / name).mkdir()
        path = tmp_path / name / "compare_modes.json"
        path.write_text(json.dumps({"query_ids": ids, "runs": rows}))
        return path

    a, b = run("a", ["1", "2"], [1, 2], [1, 1], [1, 4]), run("b", ["1", "2"], [2, 1], [1, None], [1, 4])
    c, d = run("c", ["3"], [None], [1], [2]), run("d", ["3"], [1], [1], [2])
    assert runs.compare(json.loads(a.read_text()), json.loads(b.read_text()))["dense"] == \
        {"base": 0.75, "candidate": 0.75, "up": 1, "down": 1, "queries": 2}
    runs.main(["--pair", str(a), str(b), "--pair", str(c), str(d)])
    out = capsys.readouterr().out
    assert "| b | hybrid | 2 | 1.000 | 0.500 | 0 / 1 |" in out
    assert "dense, all 3 queries (query-weighted): base 0.5000, candidate 0.8333" in out
    assert "lexical, all 3 queries (query-weighted): base 0.5833, candidate 0.5833" in out  # (1 + 1/4 + 1/2) / 3
    assert "minilm-chunked" not in out  # printed only where every run scored it
    assert "above BM25" not in out  # no run scored MiniLM
    with pytest.raises(SystemExit, match="different queries"):
        runs.compare(json.loads(a.read_text()), json.loads(c.read_text()))
    for path, minilm in ((a, [2, 2]), (b, [1, 1]), (c, [2]), (d, [2])):  # each run's baselines are its own
        data = json.loads(path.read_text())
        data["runs"]["minilm-chunked"] = {"ranks": minilm, "mrr@10": sum(1 / x for x in minilm) / len(minilm)}
        path.write_text(json.dumps(data))
    runs.main(["--pair", str(a), str(b), "--pair", str(c), str(d)])
    out = capsys.readouterr().out  # sets are named by the candidate's folder (b, d); b: hybrid 0.5 < MiniLM 1
    assert "hybrid above BM25 and chunked MiniLM (each run's own), sets: base 2 of 2 (not: none), " \
        "candidate 1 of 2 (not: b)" in out
    assert "dense above BM25 and chunked MiniLM (each run's own), sets: base 1 of 2 (not: d), " \
        "candidate 1 of 2 (not: b)" in out


def test_compare_scripts_name_a_missing_file_without_a_traceback(tmp_path, capsys):
    """compare_modes.py --queries and compare_runs.py --pair naming no file used to end in a FileNotFoundError
    traceback; now argparse's usage error names the argument and the path."""
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SystemExit) as done:
        load_script("compare_modes").main(["--index", str(tmp_path / "idx"), "--queries", str(missing)])
    assert done.value.code == 2 and f"--queries {missing}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        load_script("compare_runs").main(["--pair", str(missing), str(missing)])
    assert done.value.code == 2 and f"--pair: no such file: {missing}" in capsys.readouterr().err


def test_compare_modes_times_searches_not_the_first_load(monkeypatch):
    compare = load_script("compare_modes")

    class LazySearcher:  # like Searcher: the model and index files load at the first search
        ranking = {"mode": "hybrid", "fusion": "convex", "weight": 0.5, "rrf_k": 60}
        embedder = type("E", (), {"encode_queries": staticmethod(lambda qs: list(qs))})()
        loaded = False

        def search(self, texts, k, mode=None):
            if not self.loaded:
                time.sleep(0.5)
                self.loaded = True
            return [[Hit(rank=1, id="a.txt", score=1.0, title="a", path="a.txt", snippet="")] for _ in texts]

    runs = compare.evaluate(LazySearcher(), [{"id": "1", "text": "q", "relevant": "a.txt"}])
    assert all(runs[m]["ms_per_query"] < 250 for m in ("dense", "lexical", "hybrid")), runs


def test_documents_without_a_word_are_indexed(tmp_path, embedder):
    """bm25s cannot index documents none of which has a word (only stopwords or single letters): the commit failed
    with "max() arg is an empty sequence"."""
    for texts in ({"a.txt": "the of a", "b.txt": "x y z"}, {"a.txt": "the of a", "b.txt": "real words here"}):
        corpus, folder = write_corpus(tmp_path / "c", texts), tmp_path / "idx"
        index_corpus(corpus, folder, embedder, progress=False, rebuild=True)
        searcher = Searcher(folder, embedder)
        found = [h.id for h in searcher.search(["real words"], 2, mode="lexical")[0]]
        assert found == ([] if "x y z" in texts.values() else ["b.txt"])
        assert len(searcher.search(["real words"], 2, mode="dense")[0]) == 2


def _same_ranking(index: LexicalIndex, texts: list[str], vids, queries: list[str]) -> None:
    """`index` ranks as one built from scratch over the same rows does."""
    fresh = LexicalIndex.build(texts, vids)
    for got, want in zip(index.search(queries, 10), fresh.search(queries, 10)):
        assert [v for v, _ in got] == [v for v, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6)


QUERIES = ["read write archive", "sha-256 digests", "decode json", "tar archives", "threads values"]


def test_weights_from_term_counts_are_bm25s_own():
    """The weights derived from the stored term counts are those bm25s computes from the tokens (Lucene's BM25)."""
    texts = [*TEXTS.values(), "the of a", "zip zip zip archive threads", "Zip wörds, ünïcode wörds"]
    index = LexicalIndex.build(texts, np.arange(len(texts)))
    ref = bm25s.BM25(**BM25_PARAMS)
    ref.index(tokenize(texts), show_progress=False)
    for query in ["zip archive", "read write values", "sha-256 threads zip zip", "wörds"]:
        tokens = tokenize([query])[0]
        got = index.bm25.get_scores_from_ids(index.bm25.get_tokens_ids(tokens))
        np.testing.assert_allclose(got, ref.get_scores(tokens), rtol=1e-6)
    tuned = index.with_params(k1=0.9, b=0.4)  # the same counts under other settings (scripts/lexical_params_study)
    ref = bm25s.BM25(**{**BM25_PARAMS, "k1": 0.9, "b": 0.4})
    ref.index(tokenize(texts), show_progress=False)
    tokens = tokenize(["zip archive threads"])[0]
    np.testing.assert_allclose(tuned.bm25.get_scores_from_ids(tuned.bm25.get_tokens_ids(tokens)),
                               ref.get_scores(tokens), rtol=1e-6)


def test_a_commit_tokenizes_only_the_documents_it_adds(corpus, tmp_path, embedder, monkeypatch):
    """Kept documents' term counts are carried over (by vid and text hash): BM25 was rebuilt from all the text at
    every commit, 11.5 s for `longretr rm` of one document of 20,000."""
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    seen: list[str] = []
    real = lexical.tokenize
    monkeypatch.setattr(lexical, "tokenize", lambda texts: seen.extend(texts) or real(texts))
    (corpus / "hashlib.txt").unlink()
    (corpus / "json.txt").write_text("Encode and decode JSON documents.")
    # changed, and the one with the highest vid: the new json.txt gets that vid, with other text
    (corpus / "zipfile.txt").write_text("ZIP archives, and now tar archives too.")
    index_corpus(corpus, folder, embedder, progress=False)
    assert sorted(seen) == ["Encode and decode JSON documents.", "ZIP archives, and now tar archives too."]
    seen.clear()
    remove_documents(folder, ["csv.txt"])
    assert seen == []
    snap = store.load(folder)
    monkeypatch.setattr(lexical, "tokenize", real)
    _same_ranking(snap.lexical, snap.docs.column("text").to_pylist(), snap.docs.column("vid").to_numpy(), QUERIES)
    assert "sha" not in snap.lexical.vocab and "values" not in snap.lexical.vocab  # terms of removed documents go


def test_damaged_term_counts_are_not_carried_over(corpus, tmp_path, embedder, monkeypatch):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    lex = folder / store.read_manifest(folder)["files"]["lexical"]
    counts = (lex / "tf-counts.npy").read_bytes()
    (lex / "tf-counts.npy").write_bytes(counts[:-4] + b"\x7f\x00\x00\x00")  # a count changed: no error, wrong scores
    seen: list[str] = []
    real = lexical.tokenize
    monkeypatch.setattr(lexical, "tokenize", lambda texts: seen.extend(texts) or real(texts))
    remove_documents(folder, ["csv.txt"])
    assert len(seen) == 4  # every document tokenized again
    monkeypatch.setattr(lexical, "tokenize", real)
    snap = store.load(folder)
    assert not snap.damaged
    _same_ranking(snap.lexical, snap.docs.column("text").to_pylist(), snap.docs.column("vid").to_numpy(), QUERIES)


def _write_format1(path, texts: list[str], vids) -> None:
    """A lexical folder as longretr wrote them before term counts: bm25s' own save of its index."""
    bm25 = bm25s.BM25(**BM25_PARAMS)
    bm25.index(tokenize(texts), show_progress=False)
    path.mkdir()
    bm25.save(str(path), show_progress=False)
    np.save(path / "vids.npy", np.asarray(vids, dtype="int64"))
    (path / "lexical.json").write_text(json.dumps({"tokenizer": lexical.TOKENIZER, "bm25": BM25_PARAMS,
                                                   "count": len(vids), "bm25s": bm25s.__version__, "scored": True}))


def test_a_format1_lexical_folder_is_searched_and_the_next_commit_rewrites_it(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    snap = store.load(folder)
    lex = folder / snap.manifest["files"]["lexical"]
    want = [[h.id for h in hits] for hits in Searcher(folder, embedder).search(QUERIES, k=5, mode="lexical")]
    shutil.rmtree(lex)
    _write_format1(lex, snap.docs.column("text").to_pylist(), snap.docs.column("vid").to_numpy())
    assert [[h.id for h in hits] for hits in Searcher(folder, embedder).search(QUERIES, k=5, mode="lexical")] == want
    with pytest.raises(ValueError, match="no term counts"):
        store.load(folder).lexical.with_params(k1=1.2)
    vocab = json.loads((lex / "vocab.index.json").read_text())
    far = json.dumps({**vocab, next(iter(vocab)): 99999})  # a term id past the matrix: a ValueError in search
    for name, damaged, why in [("indices.csc.index.npy", None, "damaged BM25 score matrix"),  # a document past all
                               ("data.csc.index.npy", None, "damaged BM25 score matrix"),  # NaN scores
                               ("vocab.index.json", far.encode(), "damaged vocabulary")]:
        whole = (lex / name).read_bytes()  # bytes overwritten, the length unchanged (or nearly, for the vocabulary)
        (lex / name).write_bytes(damaged or whole[:-16] + b"\xff" * 16)
        assert why in store.load(folder).damaged["lexical"]
        (lex / name).write_bytes(whole)
    summary = index_corpus(corpus, folder, embedder, progress=False)  # nothing changed: written anew all the same
    new = folder / store.read_manifest(folder)["files"]["lexical"]
    assert summary.committed and summary.encoded == 0 and json.loads((new / "lexical.json").read_text())["format"] == 2
    assert not index_corpus(corpus, folder, embedder, progress=False).committed
    remove_documents(folder, ["csv.txt"])
    snap = store.load(folder)
    _same_ranking(snap.lexical, snap.docs.column("text").to_pylist(), snap.docs.column("vid").to_numpy(), QUERIES)


def test_long_texts_are_counted_in_pieces_cut_between_words(monkeypatch):
    """A long text is tokenized a piece at a time (its tokens, as Python strings, took several times its size); the
    pieces are cut at spaces and line ends, so they give the whole text's counts."""
    words = ["alpha", "beta", "gamma", "zipfile", "archive", "threading"]
    text = "\n".join(" ".join(words[(i * 7 + j) % 6] for j in range(i % 9 + 1)) for i in range(3000))
    texts = [text, "alpha zip", "", text[:777], "x" * 5000]  # the last: a "word" longer than a piece
    whole = LexicalIndex.build(texts, np.arange(5))
    want = LexicalIndex.build(texts[:4], np.arange(4)).search(["gamma archive"], 3)
    monkeypatch.setattr(lexical, "PIECE_CHARS", 100)
    pieces = LexicalIndex.build(texts, np.arange(5))
    n = whole.indptr[4]  # the first four texts' entries: the same terms and counts
    assert np.array_equal(pieces.indptr[:5], whole.indptr[:5]) and np.array_equal(pieces.tf[:n], whole.tf[:n])
    assert [pieces.vocab[t] for t in pieces.terms[:n]] == [whole.vocab[t] for t in whole.terms[:n]]
    assert pieces.tf[n:].tolist() == [50] and pieces.vocab[pieces.terms[n]] == "x" * 100  # the long word, cut
    assert LexicalIndex.build(texts[:4], np.arange(4)).search(["gamma archive"], 3) == want


def test_a_larger_k_only_adds_hybrid_results(corpus, tmp_path, embedder, monkeypatch):
    """Hybrid search fetches max(k, HYBRID_DEPTH) of each list but scores the first HYBRID_DEPTH whatever k is: a
    larger k used to reorder the first results (`-k 200` against `-k 10`: 29 of 44 demo queries)."""
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False, ranking={"fusion": "convex"})
    monkeypatch.setattr("longretr.search.HYBRID_DEPTH", 2)
    searcher = Searcher(folder, embedder)
    queries = ["read and write archives of files", "values in rows", "threads and locks", "sha-256 of bytes"]
    short, full = searcher.search(queries, k=2, mode="hybrid"), searcher.search(queries, k=5, mode="hybrid")
    for a, b in zip(short, full):
        assert [(h.id, round(h.score, 6)) for h in b[:2]] == [(h.id, round(h.score, 6)) for h in a]
        assert len(b) == 5 and all(x.score >= y.score for x, y in zip(b, b[1:]))


def test_a_damaged_lexical_json_is_reported_and_a_commit_repairs_it(corpus, tmp_path, embedder):
    """lexical.json has no checksum: a key lost from it (a hand edit, a byte changed in its name) escaped load as a
    KeyError, which broke every Searcher (dense search too) and every commit (`longretr index` and `rm`, which read the
    previous counts, could not repair it). Damaged BM25 settings failed only at the first search, and a crc32 table
    without an entry checked nothing."""
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    lex = folder / store.read_manifest(folder)["files"]["lexical"]
    whole = json.loads((lex / "lexical.json").read_text())
    damaged = [{k: v for k, v in whole.items() if k != key} for key in ("bm25", "count", "terms", "crc32")]
    damaged += [{**whole, "bm25": {"k1": 1.5, "method": "lucene"}}, {**whole, "bm25": {**BM25_PARAMS, "k1": "1.5"}},
                {**whole, "bm25": "lucene"}, {**whole, "crc32": {}}, {**whole, "format": 3}]
    for meta in damaged:
        (lex / "lexical.json").write_text(json.dumps(meta))
        with pytest.raises(LexicalIndexError, match=f"{lex.name}: "):
            LexicalIndex.load(lex)
        searcher = Searcher(folder, embedder)
        assert list(searcher.damaged) == ["lexical"] and len(searcher.search(["zip"], 2, mode="dense")[0]) == 2
    remove_documents(folder, ["csv.txt"])  # every document tokenized again
    snap = store.load(folder)
    assert not snap.damaged
    _same_ranking(snap.lexical, snap.docs.column("text").to_pylist(), snap.docs.column("vid").to_numpy(), QUERIES)


def test_long_texts_without_spaces_are_cut_between_words_too(monkeypatch):
    """Pieces were cut only at spaces and line ends, else mid-word: a long text without them for a piece's length
    (minified JSON, tab-separated values, Japanese) got split words ("alue_0", "co") and wrong counts. Cut at other
    non-word characters, a piece is lowercased as part of the whole text: a capital sigma's lowercase depends on what
    follows it."""
    texts = ["{" + ",".join(f'"key_{i}":"value_{i % 7}"' for i in range(300)) + "}",
             "\t".join(f"col{i}" for i in range(400)), "日本語の文章。" * 100, "alpha\r" * 200,
             "".join(f"ΟΣ.Α{i}" for i in range(300))]  # lowercased, "οσ" (σ: a letter follows past the ".")

    def counts(index: LexicalIndex) -> list[dict[str, int]]:
        return [{index.vocab[t]: int(c) for t, c in zip(index.terms[a:b], index.tf[a:b])}
                for a, b in zip(index.indptr[:-1], index.indptr[1:])]

    whole = counts(LexicalIndex.build(texts, np.arange(len(texts))))
    monkeypatch.setattr(lexical, "PIECE_CHARS", 100)
    assert counts(LexicalIndex.build(texts, np.arange(len(texts)))) == whole


def test_terms_are_utf8_whatever_the_locale(tmp_path):
    """terms.json was written and read in the locale's encoding (bm25s wrote its vocabulary as UTF-8): under an ASCII or
    Latin-1 locale a commit of any other word failed with a UnicodeEncodeError, and a folder written under UTF-8 read
    back as damaged, or as other words."""
    LexicalIndex.build(["Straße wörter 日本語"], [0]).save(tmp_path / "utf8")
    script = ("import sys; from pathlib import Path; from longretr.lexical import LexicalIndex\n"
              "folder = Path(sys.argv[1])\n"
              "assert LexicalIndex.load(folder / 'utf8').search(['straße 日本語'], 1)[0][0][0] == 0\n"
              "LexicalIndex.build(['x', 'Straße wörter 日本語'], [0, 1]).save(folder / 'ascii')\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    script = script.encode("ascii", "backslashreplace").decode()  # (an ASCII command line: the words as escapes)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stderr
    assert [v for v, _ in LexicalIndex.load(tmp_path / "ascii").search(["wörter", "日本語"], 1)[0]] == [1]
