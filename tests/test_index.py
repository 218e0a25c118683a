import json
from dataclasses import replace

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_models import write_config, write_corpus
from typer.testing import CliRunner

from longretr import index_types, indexer, store
from longretr.cli import app
from longretr.embedder import Embedder
from longretr.fusion import fuse_ranked
from longretr.indexer import LazyEmbedder, index_corpus, remove_documents
from longretr.search import ModelMismatch, Searcher, snippet

TEXTS = {
    "fox.txt": "# Fox\nthe quick brown fox jumps over a lazy dog",
    "json.md": "# JSON\nparsing json and csv with regular expressions",
    "zip.txt": "computing a digest of every file in the archive",
    "time.rst": "Times\n=====\ndates times threads and the command line arguments",
}


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", TEXTS)


def test_index_then_search_finds_copied_passage(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    summary = index_corpus(corpus, folder, embedder, progress=False)
    assert summary.documents == 4 and summary.encoded == 4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["count"] == 4 and manifest["dim"] == 32 and manifest["model"]["name"] == "tiny"
    for name, text in TEXTS.items():
        # A document's own text finds it (the random tiny model separates little else reliably; the real model's
        # copied-passage test is in test_default_model.py).
        hits = Searcher(folder, embedder).search([text], k=4, mode="dense")[0]
        assert len(hits) == 4 and [h.rank for h in hits] == [1, 2, 3, 4]
        assert hits[0].id == name and hits[0].score > hits[1].score + 0.02, hits
    docs = store.load(folder).docs.to_pylist()
    assert {d["title"] for d in docs} == {"Fox", "JSON", "zip", "Times"}


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_search_names_a_bad_k_or_query_in_every_mode(corpus, tmp_path, embedder, mode):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    searcher = Searcher(folder, embedder)
    for bad in (2.5, "3", True, None):  # True searched for one hit; the others failed in faiss or numpy
        with pytest.raises(TypeError, match=f"k must be an integer, got {type(bad).__name__}"):
            searcher.search(["fox"], k=bad, mode=mode)
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        searcher.search(["fox"], k=0, mode=mode)
    assert len(searcher.search(["fox"], k=np.int64(1), mode=mode)[0]) == 1  # faiss refused a numpy k
    with pytest.raises(TypeError, match="queries must be a list of strings, got one str"):
        searcher.search("fox", mode=mode)  # not three one-letter queries
    for bad in (None, b"fox", 3):  # an AttributeError from the snippet or the BM25 tokenizer
        with pytest.raises(TypeError, match=f"queries\\[1\\] must be a str, got {type(bad).__name__}"):
            searcher.search(["fox", bad], mode=mode)
    with pytest.raises(ValueError, match="queries\\[0\\] is empty or whitespace only"):
        searcher.search([" "], mode=mode)  # dense searched with the instruction alone, lexical found nothing
    assert searcher.search([], k=3, mode=mode) == []
    # k above the index size: what there is (every document; lexically, the one holding "fox"), not an empty list
    hits = searcher.search(["fox"], k=99, mode=mode)[0]
    assert sorted(h.id for h in hits) == (["fox.txt"] if mode == "lexical" else sorted(TEXTS))


def test_search_vectors_checks_k_and_one_vector_per_query(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    searcher = Searcher(folder, embedder)
    vectors = embedder.encode_queries(["fox", "json"])
    assert [len(h) for h in searcher.search_vectors(vectors, ["fox", "json"], 2)] == [2, 2]
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):  # it searched for one hit
        searcher.search_vectors(vectors, ["fox", "json"], 0)
    with pytest.raises(ValueError, match="2 query vectors for 1 queries"):  # the second was dropped
        searcher.search_vectors(vectors, ["fox"], 2)
    dim = vectors.shape[1]
    for bad in (vectors[:, :-1], vectors[0]):  # faiss asserted with no message; one vector was "dim queries"
        with pytest.raises(ValueError, match=rf"query vectors must be an array \[queries, {dim}\], got shape"):
            searcher.search_vectors(bad, ["fox"], 2)
    with pytest.raises(TypeError, match="queries must be a list of strings"):
        searcher.search_vectors(vectors, "fj", 2)
    with pytest.raises(ValueError, match=r"queries\[0\] is not valid Unicode \(it contains a lone surrogate\)"):
        searcher.search(["zip\udc80file"], 2, mode="dense")  # the tokenizer failed on it with a TypeError
    with pytest.raises(TypeError, match=r"embedder must be an Embedder \(e.g. Embedder\('default'\)\)"):
        Searcher(folder, "default")
    with pytest.raises(TypeError, match="a document id is a str, got NoneType"):
        searcher.document(None)
    with pytest.raises(TypeError, match=r"wrap it in a list: \['fox.txt'\]"):
        remove_documents(folder, "fox.txt")  # it removed nothing and named 'f', 'o', 'x'... as unknown


def test_a_run_refused_before_writing_leaves_no_folder(corpus, tmp_path, embedder):
    folder = tmp_path / "new"
    for bad in ({"index_type": "bogus"}, {"ranking": {"mode": "fuzzy"}}):
        with pytest.raises(ValueError):
            index_corpus(corpus, folder, embedder, progress=False, **bad)
        assert not folder.exists()  # a folder holding only .lock read as "no index here"
    with pytest.raises(TypeError, match="embedder must be an Embedder or a LazyEmbedder"):
        index_corpus(corpus, folder, "default", progress=False)
    index_corpus(corpus, folder, embedder, progress=False)
    with pytest.raises(ValueError):  # an existing index is left as it was, lock file included
        index_corpus(corpus, folder, embedder, progress=False, index_type="bogus")
    assert (folder / ".lock").exists() and Searcher(folder, embedder).count == 4


def test_reindex_is_incremental(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    before = {d["id"]: d["vid"] for d in store.load(folder).docs.to_pylist()}
    (corpus / "fox.txt").write_text("# Fox\nthe fox changed its text")
    (corpus / "zip.txt").unlink()
    (corpus / "new.txt").write_text("a new lazy dog")
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.encoded, s.unchanged, s.removed, s.documents) == (2, 2, 1, 4)
    snap = store.load(folder)
    after = {d["id"]: d["vid"] for d in snap.docs.to_pylist()}
    assert after["json.md"] == before["json.md"] and after["fox.txt"] != before["fox.txt"]
    fresh = tmp_path / "fresh"
    index_corpus(corpus, fresh, embedder, progress=False)
    # the incremental index holds the same vectors as a fresh build
    for doc_id, vid in after.items():
        other = {d["id"]: d["vid"] for d in store.load(fresh).docs.to_pylist()}[doc_id]
        assert np.allclose(snap.index.reconstruct(vid), store.load(fresh).index.reconstruct(other), atol=1e-6)


def test_interrupted_run_resumes_from_shards(corpus, tmp_path, embedder, monkeypatch):
    folder = tmp_path / "idx"

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, folder, embedder, progress=False, shard_tokens=1)
    assert store.read_manifest(folder) is None and len(list((folder / "pending").rglob("*.npz"))) == 4
    monkeypatch.undo()
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.encoded, s.resumed, s.documents) == (0, 4, 4)
    assert not (folder / "pending").exists()


class ReadDepths:
    """A FAISS index that records how deep each search reads."""

    def __init__(self, index, depths: list[int]) -> None:
        self.index, self.depths, self.ntotal = index, depths, index.ntotal

    def search(self, x, k, params=None):
        self.depths.append(k)
        return self.index.search(x, k, params=params)


@pytest.mark.parametrize("other", [{"lead_tokens": 16}, {"span_tokens": 8}, {"lead_tokens": 16, "span_tokens": 8}],
                         ids=["lead", "spans", "lead+spans"])
def test_other_vectors_are_indexed_resumed_searched_and_removed_with_their_document(tmp_path, embedder,
                                                                                   monkeypatch, other):
    texts = {"long.txt": "the archive index " + " ".join(["fox jumps"] * 30),
             "other.txt": "a lazy dog sleeps " + " ".join(["in the sun"] * 20), "short.txt": "the fox"}
    corpus, folder, cfg = write_corpus(tmp_path / "corpus", texts), tmp_path / "idx", embedder.config
    try:
        embedder.config = extra = replace(cfg, **other)
        monkeypatch.setattr(store, "commit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):  # the other vectors go through the pending shards too
            index_corpus(corpus, folder, embedder, progress=False, shard_tokens=1)
        monkeypatch.undo()
        s = index_corpus(corpus, folder, embedder, progress=False)
        assert (s.encoded, s.resumed, s.documents) == (0, 3, 3)
        snap = store.load(folder)
        vid = {d["id"]: d["vid"] for d in snap.docs.to_pylist()}
        ids = {v: d for d, v in vid.items()}
        enc = embedder.encode_documents(list(texts.values()), progress=False)
        assert sorted(enc.extra) == [0, 1]  # the short one has none
        assert enc.n_tokens[1] > extra.max_tokens  # other.txt has a window
        assert all(len(v) == len(extra.other_ranges(n, head=1)) for v, n in zip(enc.extra.values(), enc.n_tokens))
        others = {vid[d] + store.EXTRA_ID + j * store.EXTRA_STEP for d, r in [("long.txt", 0), ("other.txt", 1)]
                  for j in range(len(enc.extra[r]))}
        assert set(faiss.vector_to_array(snap.index.id_map).tolist()) == set(vid.values()) | others
        queries = ["archive index", "fox jumps", "lazy dog", "the fox"]
        want = enc.scores(embedder.encode_queries(queries))
        fusing = enc.fusion_scores(embedder.encode_queries(queries))
        assert ("span_tokens" in other) == (not np.allclose(fusing, want))
        rebuilt = index_corpus(corpus, folder, embedder, progress=False, rebuild=True)
        # the summary counts the tokens of every pass: leads' and windows' too (spans come from those passes)
        assert [extra.windows(n, head=1) for n in enc.n_tokens] == [[(4, 67)], [(47, 110)], []]  # one full each
        assert rebuilt.tokens == (64 + 1 + 63) * 2 + 3 + 16 * 2 * ("lead_tokens" in other)
        for index_type in ("flat", "hnsw"):  # the ann index carries the other ids too
            index_corpus(corpus, folder, embedder, progress=False, index_type=index_type)
            for k in (1, 3):  # each document once, scored its best cosine
                searcher, depths = Searcher(folder, embedder), []
                searcher.index = ReadDepths(searcher.index, depths)
                for row, w in zip(searcher.search(queries, k=k, mode="dense"), want):
                    assert [h.id for h in row] == [list(texts)[i] for i in np.argsort(-w)[:k]]
                    assert np.allclose([h.score for h in row], np.sort(w)[::-1][:k], atol=1e-4)
                # hybrid fuses BM25's list with the fusion scores (fusion.fusion_scores), all three documents deep
                lexical = searcher.snapshot.lexical.search(queries, 3)
                for row, w, lx in zip(searcher.search(queries, k=k, mode="hybrid"), fusing, lexical):
                    dense = sorted(((vid[d], float(x)) for d, x in zip(texts, w)), key=lambda t: -t[1])
                    fused = fuse_ranked(dense, lx, k, searcher.ranking)
                    assert [h.id for h in row] == [ids[v] for v, _ in fused]
                    assert np.allclose([h.score for h in row], [x for _, x in fused], atol=1e-4)
            if "span_tokens" in other:  # many vectors per document: the first 2k vectors did not hold 3 documents
                assert len(depths) > 1 and depths[-1] > 2 * 3
        remove_documents(folder, ["long.txt"])
        snap = store.load(folder)  # held: the id map is freed with its index
        ids = set(faiss.vector_to_array(snap.index.id_map).tolist())
        kept = {i for i in others if i & store.VID_MASK == vid["other.txt"]}
        assert ids == {vid["other.txt"], vid["short.txt"]} | kept
        (corpus / "long.txt").unlink()  # else it comes back
        (corpus / "other.txt").write_text("the fox")  # changed, and now too short for other vectors: they go
        index_corpus(corpus, folder, embedder, progress=False)
        snap = store.load(folder)
        assert all(i < store.EXTRA_ID for i in faiss.vector_to_array(snap.index.id_map)) and snap.index.ntotal == 2
        embedder.config = cfg
        with pytest.raises(ModelMismatch):  # vectors with other vectors are not comparable with plain ones
            Searcher(folder, embedder)
        assert Searcher(folder).embedder.config == extra
    finally:
        embedder.config = cfg


@pytest.mark.parametrize("other", [{}, {"span_tokens": 8}], ids=["one vector", "spans"])
def test_tied_documents_rank_by_id_order_for_every_k(tmp_path, embedder, other):
    """Copies of a file tie; FAISS returned them in an order that changed with k, so pages of hits overlapped."""
    texts = {f"copy{i}.txt": TEXTS["fox.txt"] for i in range(6)} | {k: v for k, v in TEXTS.items() if k != "fox.txt"}
    corpus, folder, cfg = write_corpus(tmp_path / "corpus", texts), tmp_path / "idx", embedder.config
    try:
        embedder.config = replace(cfg, **other)
        index_corpus(corpus, folder, embedder, progress=False)
        searcher = Searcher(folder, embedder)
        vector = searcher.embedder.encode_documents([TEXTS["fox.txt"]]).vectors
        if not other:  # the query is exactly the copies' vector: they tie at the top
            full = [h.id for h in searcher.search_vectors(vector, ["fox"], 9)[0]]
            assert sorted(full[:6]) == [f"copy{i}.txt" for i in range(6)]
            for k in range(1, 9):
                assert [h.id for h in searcher.search_vectors(vector, ["fox"], k)[0]] == full[:k]
        full = [h.id for h in searcher.search(["quick brown fox"], 9, mode="dense")[0]]
        for k in range(1, 9):
            assert [h.id for h in searcher.search(["quick brown fox"], k, mode="dense")[0]] == full[:k]
        vids = dict(zip(searcher.snapshot.docs.column("id").to_pylist(),
                        searcher.snapshot.docs.column("vid").to_pylist()))
        copies = [vids[i] for i in full if i.startswith("copy")]
        assert copies == sorted(copies) and len(copies) == 6
    finally:
        embedder.config = cfg


def test_empty_slots_of_an_ann_search_are_not_a_tie(tmp_path, embedder):
    """An ANN index that finds fewer than k fills the rest with id -1 and the lowest float: those slots "tied", so the
    search read on to the whole index, in vain."""
    corpus = write_corpus(tmp_path / "corpus", {f"d{i}.txt": f"document {i} about foxes" for i in range(40)})
    index_corpus(corpus, tmp_path / "idx", embedder, progress=False)
    searcher, asked = Searcher(tmp_path / "idx", embedder), []

    class FewHits:  # what IVF with a low nprobe answers: two hits, then empty slots
        ntotal = searcher.index.ntotal

        def search(self, vectors, k, params=None):
            asked.append(k)
            scores, ids = np.full((len(vectors), k), -3.4e38, dtype="float32"), np.full((len(vectors), k), -1)
            scores[:, :2], ids[:, :2] = [0.9, 0.8], [0, 1]
            return scores, ids

    searcher.index = FewHits()
    hits = searcher.search(["fox"], k=3, mode="dense")[0]
    assert len(hits) == 2 and asked == [4]


def test_a_hit_names_the_passage_closest_to_the_query(tmp_path, embedder):
    long = "# Fox\n" + " ".join(f"the fox {w} jumps" for w in ["over", "a lazy", "dog"] * 4)
    texts = {"long.txt": long, "short.txt": "the fox"}
    corpus, folder, cfg = write_corpus(tmp_path / "corpus", texts), tmp_path / "idx", embedder.config
    try:
        embedder.config = replace(cfg, lead_tokens=16, span_tokens=16)
        index_corpus(corpus, folder, embedder, progress=False)
        searcher = Searcher(folder, embedder)
        snap = searcher.snapshot
        row = snap.docs.to_pylist()[snap.docs.column("id").to_pylist().index("long.txt")]
        passages = row["passages"]
        assert len(passages) == 1 + len(embedder.config.spans_for(row["n_tokens"])) > 2  # the lead, then spans
        others = np.stack([snap.index.reconstruct(store.EXTRA_ID + j * store.EXTRA_STEP + row["vid"])
                           for j in range(len(passages))])
        for j, (a, b) in enumerate(passages):  # a query that is exactly the j-th other vector is matched by it
            (hit, *_), = searcher.search_vectors(others[j][None], ["jumps"], 1)
            assert (hit.id, hit.passage) == ("long.txt", [a, b])
            assert hit.snippet.strip("…") in " ".join(long[a:b].split())  # the snippet comes from the passage
        # found by its whole vector (or by BM25 alone): still the passage whose vector is closest to the query
        whole = snap.index.reconstruct(row["vid"])
        (hit, *_), = searcher.search_vectors(whole[None], ["fox"], 1)
        assert (hit.id, hit.passage) == ("long.txt", passages[int(np.argmax(others @ whole))])
        q = embedder.encode_queries(["a lazy dog"])[0]
        for mode in ("dense", "hybrid"):
            hits = {h.id: h.passage for h in searcher.search(["a lazy dog"], k=2, mode=mode)[0]}
            assert hits == {"long.txt": passages[int(np.argmax(others @ q))], "short.txt": None}  # short: none
        assert all(h.passage is None for h in searcher.search(["a lazy dog"], k=2, mode="lexical")[0])

        # an index written before passages were kept is searched without them, and gets them at the next
        # `longretr index` without encoding anything
        docs = folder / snap.manifest["files"]["docs"]
        pq.write_table(pq.read_table(docs).drop_columns(["passages"]), docs)
        assert all(h.passage is None for h in Searcher(folder, embedder).search(["a lazy dog"], k=2, mode="dense")[0])
        summary = index_corpus(corpus, folder, embedder, progress=False)
        assert (summary.encoded, summary.committed) == (0, True)
        rows = {d["id"]: d["passages"] for d in store.load(folder).docs.to_pylist()}
        assert rows == {"long.txt": passages, "short.txt": []}
        assert not index_corpus(corpus, folder, embedder, progress=False).committed  # nothing left to add

        # a passages entry that does not match its document's vectors (here: one range too few) is not trusted
        snap = store.load(folder)
        docs = folder / snap.manifest["files"]["docs"]
        table = pq.read_table(docs)
        edited = [p[:-1] if p else p for p in table.column("passages").to_pylist()]
        pq.write_table(table.set_column(table.schema.get_field_index("passages"), store.PASSAGES,
                                        pa.array(edited, store.PASSAGES.type)), docs)
        assert {d["id"]: d["passages"] for d in store.load(folder).docs.to_pylist()} == \
            {"long.txt": None, "short.txt": []}
        assert all(h.passage is None for h in Searcher(folder, embedder).search(["a lazy dog"], k=2, mode="dense")[0])
        assert index_corpus(corpus, folder, embedder, progress=False).committed  # and is found again
        assert {d["id"]: d["passages"] for d in store.load(folder).docs.to_pylist()} == \
            {"long.txt": passages, "short.txt": []}
    finally:
        embedder.config = cfg


def test_snippets_stay_inside_the_passage_and_use_its_width():
    text = " ".join(f"w{i:03d}" for i in range(200))  # 5 characters per word
    part = lambda a, b: " ".join(text[a:b].split())  # noqa: E731  (snippets fold whitespace)
    assert snippet(text, "w010") == part(0, 200) + "…"  # whole text: from the opening, the word 50 characters in
    assert snippet(text, "w100") == "…" + part(450, 650) + "…"
    lo, hi = 300, 600
    assert snippet(text, "nothing", within=[lo, hi]) == "…" + part(300, 500) + "…"  # no word: the part's opening
    assert snippet(text, "w118", within=[lo, hi]) == "…" + part(400, 600) + "…"  # near its end: the last 200
    assert snippet(text, "w030", within=[lo, hi]) == "…" + part(300, 500) + "…"  # a word outside it is not used
    assert snippet(text, "w199", within=[900, len(text)]) == "…" + part(900, len(text))


def test_index_types_are_planned_on_vectors_not_documents(tmp_path, embedder, monkeypatch):
    texts = {f"d{i}.txt": f"the archive {i} " + " ".join(["fox jumps over the lazy dog"] * 6) for i in range(8)}
    corpus, folder, cfg = write_corpus(tmp_path / "corpus", texts), tmp_path / "idx", embedder.config
    monkeypatch.setattr(index_types, "MIN_TRAIN_VECTORS", 20)  # more than the documents, fewer than the vectors
    try:
        embedder.config = replace(cfg, span_tokens=8)
        s = index_corpus(corpus, folder, embedder, progress=False, index_type="ivf")
        snap = store.load(folder)
        assert snap.count == 8 and snap.index.ntotal > 20 and s.index_type.startswith("IDMap2,IVF") and snap.ann
        assert not index_corpus(corpus, folder, embedder, progress=False).committed  # nothing changed: no rewrite
    finally:
        embedder.config = cfg


def test_other_model_is_refused(corpus, tmp_path, embedder, tiny_gemma):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    causal = Embedder(str(write_config(tmp_path, tiny_gemma, name="causal", attention="causal")))
    with pytest.raises(ModelMismatch, match="was built with model 'tiny'"):
        Searcher(folder, causal)
    with pytest.raises(store.IndexFolderError, match="--rebuild"):
        index_corpus(corpus, folder, causal, progress=False)
    assert index_corpus(corpus, folder, causal, rebuild=True, progress=False).encoded == 4


def test_a_model_config_from_another_version_is_a_clear_error(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    path = folder / store.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["model"]["query_map"] = ""  # a setting this version does not have
    path.write_text(json.dumps(manifest))
    with pytest.raises(store.IndexFolderError, match=r"manifest.json: .*does not know \(query_map\).*--rebuild"):
        Searcher(folder)


def test_corrupt_files_give_clear_errors(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    manifest = store.read_manifest(folder)
    vec = folder / manifest["files"]["vectors"]
    vec.write_bytes(vec.read_bytes()[:50])
    with pytest.raises(store.IndexFolderError, match="truncated or not a FAISS index"):
        store.load(folder)
    index_corpus(corpus, folder, embedder, progress=False, rebuild=True)
    docs = folder / store.read_manifest(folder)["files"]["docs"]
    docs.write_bytes(b"garbage")
    with pytest.raises(store.IndexFolderError, match="corrupt or unreadable docs table"):
        store.load(folder)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(store.IndexFolderError, match="unreadable manifest"):
        store.load(folder)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_reindexing_repairs_a_damaged_lexical_or_ann_file(corpus, tmp_path, embedder, index_type, capsys):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False, index_type=index_type)
    for kind in ("lexical", "ann") if index_type == "hnsw" else ("lexical",):
        name = store.read_manifest(folder)["files"][kind]
        (folder / name / "lexical.json" if kind == "lexical" else folder / name).write_bytes(b"junk")
        damaged = Searcher(folder, embedder)
        assert name in damaged.damaged[kind] and "re-run `longretr index` on the corpus" in damaged.damaged[kind]
        if kind == "lexical":
            with pytest.raises(store.IndexFolderError, match=f"{name}.*re-run `longretr index` on the corpus"):
                damaged.search(["fox"], k=2, mode="lexical")
        else:  # exact search over the flat vectors meanwhile: the same hits as the flat index gives
            assert damaged.snapshot.ann is None and damaged.index.ntotal == store.load(folder).index.ntotal
            assert damaged.search(["lazy dog"], k=1, mode="hybrid")[0][0].id == "fox.txt"
        s = index_corpus(corpus, folder, embedder, progress=False)  # nothing to encode, and yet a new version
        assert s.committed and s.encoded == 0 and name in capsys.readouterr().err
        assert Searcher(folder, embedder).search(["lazy dog"], k=1, mode="lexical")[0][0].id == "fox.txt"
    assert not index_corpus(corpus, folder, embedder, progress=False).committed  # nothing damaged: nothing written


def test_a_run_with_nothing_to_encode_loads_no_model(corpus, tmp_path, embedder, monkeypatch):
    folder = tmp_path / "idx"
    lazy = LazyEmbedder(embedder.config)
    assert index_corpus(corpus, folder, lazy, progress=False).encoded == 4 and lazy._embedder is not None
    loads, notices = [], []
    monkeypatch.setattr(LazyEmbedder, "get", lambda self: loads.append(1) or embedder)
    monkeypatch.setattr(LazyEmbedder, "notice", property(lambda self: notices.append(1)))  # imports model code
    assert not index_corpus(corpus, folder, LazyEmbedder(embedder.config), progress=False).committed
    s = index_corpus(corpus, folder, LazyEmbedder(embedder.config), progress=False, ranking={"weight": 0.3})
    assert s.committed and store.read_manifest(folder)["ranking"]["weight"] == 0.3
    with pytest.raises(ValueError, match="--shard-tokens must be at least 1"):
        index_corpus(corpus, folder, LazyEmbedder(embedder.config), progress=False, shard_tokens=0)
    with pytest.raises(store.IndexFolderError, match="built with model 'tiny'"):
        index_corpus(corpus, folder, LazyEmbedder(replace(embedder.config, name="other", max_tokens=48)),
                     progress=False)
    with pytest.raises(ValueError, match="unknown dtype 'bogus'"):  # said even when nothing is to be encoded
        LazyEmbedder(embedder.config, dtype="bogus")
    assert loads == [] and notices == []  # no-op, settings change, refusals: no model, no model code
    (corpus / "new.txt").write_text("a new document about owls")
    assert index_corpus(corpus, folder, LazyEmbedder(embedder.config), progress=False).encoded == 1
    assert loads  # this one had something to encode


def test_rebuild_recovers_from_a_manifest_with_the_wrong_dim(corpus, tmp_path, embedder):
    """The refusal says to pass --rebuild; the rebuild took the bad dim from the manifest and failed in faiss."""
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    manifest = store.read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({**manifest, "dim": 16}))
    with pytest.raises(store.IndexFolderError, match="manifest says dim 16.*pass --rebuild"):
        index_corpus(corpus, folder, embedder, progress=False)
    s = index_corpus(corpus, folder, embedder, progress=False, rebuild=True)
    assert s.documents == 4 and store.read_manifest(folder)["dim"] == 32 == store.load(folder).index.d


def test_an_interrupted_index_run_says_what_it_kept(corpus, tmp_path, embedder, tiny_gemma, monkeypatch):
    folder, cfg = tmp_path / "idx", write_config(tmp_path, tiny_gemma)
    encode = embedder.encode_documents
    calls = []

    def stop_after_one(*args, **kwargs):  # Ctrl-C while the second shard is encoding
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return encode(*args, **kwargs)

    monkeypatch.setattr(LazyEmbedder, "get", lambda self: embedder)
    monkeypatch.setattr(embedder, "encode_documents", stop_after_one)
    r = CliRunner().invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg),
                                 "--shard-tokens", "1"])
    assert r.exit_code == 130
    assert "interrupted; the index was not written yet; the vectors of 1 encoded document are " \
        f"saved in {folder}/pending/" in r.output
    assert indexer.pending_documents(folder) == 1
    r = CliRunner().invoke(app, ["info", "--index", str(folder)])
    assert r.exit_code == 2 and "interrupted or still going, has 1 shard of encoded vectors" in r.output
    monkeypatch.setattr(embedder, "encode_documents", encode)
    assert indexer.pending_model(folder)["name"] == embedder.config.name
    # the rerun without --model takes up the interrupted run's model, not the default (whose shards there are none)
    r = CliRunner().invoke(app, ["index", str(corpus), "--index", str(folder), "--shard-tokens", "1"])
    assert r.exit_code == 0 and "4 documents in index: 3 encoded" in r.output and "1 resumed" in r.output, r.output
    assert store.read_manifest(folder)["model"]["name"] == embedder.config.name


def test_an_other_vector_without_its_document_is_refused(corpus, tmp_path, embedder):
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    snap = store.load(folder)
    orphan = int(max(snap.docs.column("vid").to_pylist())) + 1 + store.EXTRA_ID + 3 * store.EXTRA_STEP
    snap.index.add_with_ids(np.ones((1, snap.index.d), "float32"), np.array([orphan], "int64"))
    (folder / snap.manifest["files"]["vectors"]).write_bytes(faiss.serialize_index(snap.index).tobytes())
    with pytest.raises(store.IndexFolderError, match="vector ids differ from the vid column"):
        store.load(folder)


def test_cli_index_and_search(corpus, tmp_path, tiny_gemma):
    cfg = write_config(tmp_path, tiny_gemma)
    runner = CliRunner()
    folder = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "4 documents in index" in r.output and "truncated" not in r.output and "cut by" not in r.output
    (corpus / "new.md").write_text("# New\na fresh page about foxes")
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder)])  # no --model: the index's own, not default
    assert r.exit_code == 0 and "5 documents in index: 1 encoded" in r.output, r.output
    r = runner.invoke(app, ["search", "lazy dog", "--index", str(folder), "-k", "2", "--json", "--mode", "dense"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert len(hits) == 2 and {"id", "score", "title", "path", "snippet"} <= set(hits[0])
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tlazy dog\nq2\tjson csv\n")
    run = tmp_path / "run.trec"
    r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder), "-k", "3",
                            "--output", str(run), "--mode", "dense"])
    assert r.exit_code == 0, r.output
    lines = run.read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("q1 Q0 ") and lines[0].endswith(" longretr-dense")
    # suffixes in capitals name the same formats (JSONL queries in, a TREC run out)
    upper_q, upper_run = tmp_path / "Q.JSONL", tmp_path / "RUN.TREC"
    upper_q.write_text(json.dumps({"id": "q1", "text": "lazy dog"}) + "\n")
    r = runner.invoke(app, ["search", "--queries", str(upper_q), "--index", str(folder), "-k", "3",
                            "--output", str(upper_run), "--mode", "dense"])
    assert r.exit_code == 0 and upper_run.read_text().splitlines() == lines[:3], r.output
    r = runner.invoke(app, ["search", "x", "--index", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no index here" in r.output
    r = runner.invoke(app, ["search", "  ", "--index", str(folder)])
    assert r.exit_code == 2 and "the query is empty" in r.output
    queries.write_text("q1\tlazy dog\nq2\t \n")
    r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder)])
    assert r.exit_code == 2 and f"{queries}:2: query 'q2' has no text" in r.output
    r = runner.invoke(app, ["search", "--queries", str(tmp_path / "none.tsv"), "--index", str(folder)])
    assert r.exit_code == 2 and f"{tmp_path / 'none.tsv'}: no such file" in r.output
    causal = write_config(tmp_path, tiny_gemma, name="causal", attention="causal")
    r = runner.invoke(app, ["search", "x", "--index", str(folder), "--model", str(causal)])
    assert r.exit_code == 2 and "was built with model" in r.output


def test_cli_search_takes_several_queries_with_one_model_load(corpus, tmp_path, tiny_gemma, monkeypatch):
    import longretr.embedder

    cfg, folder, runner = write_config(tmp_path, tiny_gemma), tmp_path / "idx", CliRunner()
    assert runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg)]).exit_code == 0
    search = ["search", "--index", str(folder), "-k", "2", "--mode", "dense"]
    one = {q: json.loads(runner.invoke(app, [*search, q, "--json"]).output) for q in ("lazy dog", "json csv")}
    loads, real = [], longretr.embedder.Embedder
    monkeypatch.setattr(longretr.embedder, "Embedder", lambda *a, **k: loads.append(a) or real(*a, **k))
    r = runner.invoke(app, [*search, "lazy dog", "json csv", "--json"])
    both = json.loads(r.output)
    assert r.exit_code == 0 and [row["query"] for row in both] == list(one), r.output
    for row, hits in zip(both, one.values()):  # the same hits; scores to float error (the queries share a batch)
        assert [h["id"] for h in row["hits"]] == [h["id"] for h in hits]
        assert [h["score"] for h in row["hits"]] == pytest.approx([h["score"] for h in hits], abs=1e-5)
    r = runner.invoke(app, [*search, "lazy dog", "json csv"])
    blocks = r.output.split("\n\n")
    assert r.exit_code == 0 and [b.splitlines()[0] for b in blocks] == ["== lazy dog", "== json csv"], r.output
    assert [b.splitlines()[1].split()[2] for b in blocks] == [one[q][0]["title"] for q in one]
    assert len(loads) == 2  # one per command, not one per query
    r = runner.invoke(app, [*search, "lazy dog", " "])
    assert r.exit_code == 2 and "one of the queries is empty" in r.output


def test_trec_lines_percent_encode_whitespace_in_ids():
    from longretr.queries import Hit, trec_lines

    hit = Hit(rank=1, id="my notes/a 100% b.md", score=0.5, title="", path="", snippet="")
    assert trec_lines("q 1", [hit], "run") == ["q%201 Q0 my%20notes/a%20100%25%20b.md 1 0.500000 run"]
    assert all(len(line.split()) == 6 for line in trec_lines("q\t2", [hit], "run"))


def test_cli_search_shows_the_matching_passage(tmp_path, tiny_gemma):
    long = " ".join(["the quick brown fox jumps over a lazy dog"] * 4)
    corpus = write_corpus(tmp_path / "corpus", {"long.txt": long, "short.txt": "the fox"})
    cfg, folder, runner = write_config(tmp_path, tiny_gemma, name="spans", span_tokens=8), tmp_path / "idx", CliRunner()
    assert runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg)]).exit_code == 0
    args = ["search", "lazy dog", "--index", str(folder), "-k", "2", "--mode", "dense"]
    hits = {h["id"]: h for h in json.loads(runner.invoke(app, [*args, "--json"]).output)}
    assert hits["short.txt"]["passage"] is None  # one span: only its whole vector
    a, b = hits["long.txt"]["passage"]  # its best of a whole vector and 4 spans' is a span's
    assert hits["long.txt"]["snippet"].strip("…") in long[a:b]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and f"long.txt  (passage: characters {a:,}-{b:,})" in r.output
    # `longretr show` prints that passage, given as search prints it; the header goes to stderr, the text alone out
    show = ["show", "long.txt", "--index", str(folder)]
    r = runner.invoke(app, [*show, "--chars", f"{a:,}-{b:,}"])
    assert r.exit_code == 0 and r.stdout == long[a:b] + "\n", r.output
    assert f"long  (long.txt, 37 tokens; characters {a:,}-{b:,} of {len(long):,})" in r.stderr
    assert runner.invoke(app, show).stdout == long + "\n"
    doc = json.loads(runner.invoke(app, [*show, "--json", "--chars", "4-9"]).stdout)
    assert doc == {"id": "long.txt", "path": "long.txt", "title": "long", "n_tokens": 37, "truncated": False,
                   "length": len(long), "start": 4, "end": 9, "text": "quick"}
    assert json.loads(runner.invoke(app, [*show, "--json", "--chars", "4-100000"]).stdout)["text"] == long[4:]
    for bad, message in ((["--chars", "9-4"], "characters 9-4: not a range inside 'long.txt'"),
                         (["--chars", "9"], "--chars '9': expected START-END"),
                         (["--chars", f"{len(long)}-{len(long) + 5}"], "not a range inside")):
        r = runner.invoke(app, [*show, *bad])
        assert r.exit_code == 2 and message in r.output, r.output
    r = runner.invoke(app, ["show", "lng.txt", "--index", str(folder)])
    assert r.exit_code == 2 and "no document 'lng.txt'; did you mean 'long.txt'" in r.output, r.output


def test_vector_headroom_tells_whole_lead_and_span_vectors_apart(tmp_path, embedder):
    """scripts/vector_headroom.py counts which kind of vector won each first place; it reads the kinds back from the
    index's ids as search does (a lead only where the document is longer than lead_tokens)."""
    from tiny_models import load_script

    headroom = load_script("vector_headroom")
    texts = {"long.txt": "the archive index " + " ".join(["fox jumps"] * 30),
             "mid.txt": "a lazy dog sleeps in the sun all day and all night long",  # spans, but no lead
             "short.txt": "the fox"}
    cfg = embedder.config
    try:
        embedder.config = replace(cfg, lead_tokens=48, span_tokens=8)
        folder = tmp_path / "idx"
        index_corpus(write_corpus(tmp_path / "corpus", texts), folder, embedder, progress=False)
        enc = embedder.encode_documents(list(texts.values()), progress=False)
        docs, vecs, owner, kinds = headroom.index_vectors(str(folder))
        assert docs == sorted(texts)
        n = dict(zip(texts, enc.n_tokens))
        lead_for, spans_for = embedder.config.lead_for, embedder.config.spans_for
        assert spans_for(n["mid.txt"]) and not lead_for(n["mid.txt"]) and lead_for(n["long.txt"])
        other = {d: len(embedder.config.other_ranges(n[d], head=1)) for d in texts}  # a window's spans are spans
        assert other["long.txt"] > 1 + len(spans_for(embedder.config.max_tokens))  # long.txt has windows
        want = {d: ["whole"] + ["lead"] * bool(lead_for(n[d])) + ["span"] * (other[d] - bool(lead_for(n[d])))
                for d in texts}
        for col, d in enumerate(docs):
            assert sorted(k for k, o in zip(kinds, owner.tolist()) if o == col) == sorted(want[d]), d
        pick = [kinds.index("lead"), kinds.index("span"), kinds.index("whole")]
        top = owner[pick]
        assert headroom.winning_kinds(vecs[pick], vecs, owner, kinds, top) == ["lead", "span", "whole"]
    finally:
        embedder.config = cfg


def test_span_context_study_reencodes_the_index_spans(embedder):
    """scripts/span_context_study.py: a window as long as the document gives the index's own span vectors (late
    chunking over the whole pass); window 0 gives each span encoded alone, after the document's first token."""
    from tiny_models import load_script

    study = load_script("span_context_study")
    text = "the archive index " + " ".join(["fox jumps over"] * 12)
    cfg = embedder.config
    try:
        embedder.config = replace(cfg, span_tokens=8)
        enc = embedder.encode_documents([text], progress=False)
        ids, _ = embedder.tokenize([text])
        spans = embedder.config.spans_for(len(ids[0]))
        assert len(spans) > 2
        whole, owner, _, tokens = study.encode_spans(embedder, ids, 10_000)
        np.testing.assert_allclose(whole, enc.extra[0], atol=1e-5)
        assert owner.tolist() == [0] * len(spans) and tokens == len(ids[0])
        alone, _, _, tokens = study.encode_spans(embedder, ids, 0)
        assert tokens == len(ids[0]) + len(spans) - 1  # every span but the first gets <bos> in front
        for (s, e), v in zip(spans, alone):
            head = ids[0][:1] if s else []
            piece = embedder._encode_ids([head + ids[0][s:e]], progress=False, spans=[[(len(head), len(head) + e - s)]])
            np.testing.assert_allclose(v, piece[2][0][0], atol=1e-5)
        assert not np.allclose(alone[1:], whole[1:], atol=1e-3)  # less context, other vectors
    finally:
        embedder.config = cfg


def test_span_size_study_pools_the_index_spans_and_other_sizes(embedder):
    """scripts/span_size_study.py: one pass pools every size's spans; the config's own size gives the spans that
    encode_documents keeps (late chunking), and each other size's are its ranges' means from that pass."""
    from tiny_models import load_script

    study = load_script("span_size_study")
    texts = ["the archive index " + " ".join(["fox jumps over"] * 30), "a lazy dog"]
    cfg = embedder.config
    try:
        embedder.config = replace(cfg, span_tokens=16)
        enc = embedder.encode_documents(texts, progress=False, max_tokens=cfg.max_tokens)  # the study's first pass
        ids, _ = embedder.tokenize(texts)
        whole, spans, _ = study.pool_spans(embedder, ids, [16, 8])
        np.testing.assert_allclose(whole, enc.vectors, atol=1e-5)
        vecs16, owner16 = spans[16]
        np.testing.assert_allclose(vecs16, enc.extra[0], atol=1e-5)
        assert owner16.tolist() == [0] * len(enc.extra[0]) and 1 not in enc.extra  # "a lazy dog": no spans
        ranges8 = replace(embedder.config, span_tokens=8).spans_for(len(ids[0]))
        vecs8, owner8 = spans[8]
        assert len(vecs8) == len(ranges8) > len(vecs16) > 2 and owner8.tolist() == [0] * len(ranges8)
        np.testing.assert_allclose(vecs8, embedder._encode_ids(ids[:1], False, spans=[ranges8])[2][0], atol=1e-5)
    finally:
        embedder.config = cfg


def test_passage_lexical_study_scores_pages_by_their_best_passage(tmp_path, embedder):
    """scripts/passage_lexical_study.py: passages are a document's span passages without its lead (joined W spans at
    a time), a document without spans is one passage, and a page scores its best passage's BM25."""
    from tiny_models import load_script

    from longretr.fusion import fuse
    from longretr.lexical import LexicalIndex

    study = load_script("passage_lexical_study")
    texts = {"long.txt": "the archive index " + " ".join(["fox jumps"] * 12) + " archive archive " + "fox " * 20,
             "mid.txt": "a lazy dog sleeps in the sun all day and all night long by the archive",  # spans, no lead
             "short.txt": "the fox"}
    cfg = embedder.config
    try:
        embedder.config = replace(cfg, lead_tokens=48, span_tokens=8)
        folder = tmp_path / "idx"
        index_corpus(write_corpus(tmp_path / "corpus", texts), folder, embedder, progress=False)
        searcher = Searcher(folder, embedder)
        docs = searcher.snapshot.docs
        vid = dict(zip(docs.column("id").to_pylist(), docs.column("vid").to_pylist()))
        passages = dict(zip(docs.column("id").to_pylist(), docs.column("passages").to_pylist()))
        assert passages["long.txt"][0][0] == 0 and passages["long.txt"][0][1] > passages["long.txt"][1][1]  # the lead
        units, owners = study.passage_units(searcher, 1)
        by_doc = {d: [u for u, o in zip(units, owners) if o == vid[d]] for d in texts}
        assert by_doc["long.txt"] == [texts["long.txt"][a:b] for a, b in passages["long.txt"][1:]]
        assert by_doc["mid.txt"] == [texts["mid.txt"][a:b] for a, b in passages["mid.txt"]]
        assert by_doc["short.txt"] == ["the fox"]
        units2, owners2 = study.passage_units(searcher, 2)
        spans = passages["long.txt"][1:]
        assert units2[list(owners2).index(vid["long.txt"])] == texts["long.txt"][spans[0][0]:spans[1][1]]
        assert list(owners2).count(vid["long.txt"]) == len(spans) - 1
        index = LexicalIndex.build(units, owners)
        ranked = index.search(["archive"], 100)[0]  # passages (by owner vid), best first
        best = study.max_passage(index, ["archive"], 10)[0]
        assert {v for v, _ in best} == {vid["long.txt"], vid["mid.txt"]}
        assert sum(o == vid["long.txt"] for o, _ in ranked) >= 2  # two of its passages match: the best one counts
        assert dict(best) == {v: max(s for o, s in ranked if o == v) for v, _ in best}
        assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
        a, b = [(1, 3.0), (2, 2.0), (3, 0.5)], [(3, 9.0), (1, 4.0), (4, 1.0)]
        got, want = study.convex([a, b], (0.5, 0.5), 4), fuse(a, b, 4, "convex", 0.5)
        assert [v for v, _ in got] == [v for v, _ in want] == [1, 3, 2, 4]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    finally:
        embedder.config = cfg


def test_the_readme_python_example_runs_as_written(corpus, tmp_path, tiny_gemma, monkeypatch, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("\n## Python\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count('Embedder("default")') == 1  # the tiny model for the shipped default
    code = code.replace('Embedder("default")', f"Embedder({str(write_config(tmp_path, tiny_gemma))!r})")
    assert code.count('{"getopt.txt", "optparse.txt"}') == 1  # and the demo corpus's ids for the fixture's
    code = code.replace('{"getopt.txt", "optparse.txt"}', '{"fox.txt", "time.rst"}')
    monkeypatch.chdir(tmp_path)  # the example's corpus/ is the fixture's; it writes indexes/mine here
    exec(compile(code, "README.md (Python)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("4 documents in index: 4 encoded") and len(out) == 6, out
    assert [line.split()[0] for line in out[1:4]] == ["1", "2", "3"]
    assert sorted(eval(out[4])) == ["fox.txt", "time.rst"]  # dense or hybrid: both, whatever the scores
    assert out[5].startswith("[[") and (tmp_path / "indexes" / "mine" / "manifest.json").is_file()


def test_a_document_cut_by_an_older_longretr_is_encoded_whole_by_the_next_run(tmp_path, embedder, monkeypatch):
    texts = {"long.txt": " ".join(["fox jumps over the lazy dog"] * 20), "short.txt": "the fox"}
    corpus, folder = write_corpus(tmp_path / "corpus", texts), tmp_path / "idx"
    whole = Embedder.encode_documents
    with monkeypatch.context() as m:  # as longretr indexed before windows: the first max_tokens, the rest cut
        m.setattr(Embedder, "encode_documents",
                  lambda self, t, progress=True: whole(self, t, progress, max_tokens=self.config.max_tokens))
        cut = index_corpus(corpus, folder, embedder, progress=False)
    assert "files skipped, 1 cut by an older longretr;" in cut.line()
    rows = {r["id"]: r for r in store.load(folder).docs.to_pylist()}
    assert (rows["long.txt"]["truncated"], rows["long.txt"]["n_tokens"]) == (True, 64)
    r = CliRunner().invoke(app, ["info", "--index", str(folder)])
    assert "1 cut at 64 by an older longretr (`longretr index` encodes them whole)" in r.stdout, r.output

    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.encoded, s.unchanged, s.truncated) == (1, 1, 0)
    snap = store.load(folder)
    rows = {r["id"]: r for r in snap.docs.to_pylist()}
    assert (rows["long.txt"]["truncated"], rows["long.txt"]["n_tokens"]) == (False, 121)
    n_windows = len(embedder.config.windows(121, head=1))
    assert n_windows == 1 and len(rows["long.txt"]["passages"]) == n_windows  # no lead or spans in this config
    assert snap.index.ntotal == 2 + n_windows
    r = CliRunner().invoke(app, ["info", "--index", str(folder)])
    assert "(longest 121; 1 longer than 64, in windows); 3 vectors (1 of leads, spans and windows)" in r.stdout, \
        r.output
    assert index_corpus(corpus, folder, embedder, progress=False).encoded == 0  # and not again
