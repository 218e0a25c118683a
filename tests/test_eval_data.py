"""The loader against fixtures in the published LongEmbed layout (tests/data/longembed)."""

import json
import shutil
from pathlib import Path

import pytest

from longretr.evaluate import data
from longretr.evaluate.data import DataError, load_task, parse_lengths, parse_tasks, resolve_data, subsample

FIXTURE = Path(__file__).parent / "data" / "longembed"


def test_synthetic_tasks_split_by_context_length():
    sets = load_task(FIXTURE, "passkey", (256, 512, 8192))
    assert [s.split for s in sets] == ["test_256", "test_512", "test_8192"]
    s = sets[0]
    assert s.context_length == 256 and len(s.corpus) == 3 and len(s.queries) == 2
    assert s.qrels == {"passkey_q_256_0": {"passkey_256_0": 1}, "passkey_q_256_1": {"passkey_256_1": 1}}
    assert s.queries["passkey_q_256_0"] == "what is the passkey for Malayah Graves?"
    assert "Malayah Graves's pass key is 41906." in s.corpus["passkey_256_0"]


def test_real_tasks_are_one_split_each():
    for task in ("narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa"):
        [s] = load_task(FIXTURE, task)
        assert s.split == "test" and s.context_length is None
        assert len(s.corpus) == 3 and len(s.queries) == 2 and s.qrels[f"{task}_q1"] == {f"{task}_d2": 1}


def test_missing_length_names_the_folder_and_the_lengths_it_has():
    with pytest.raises(DataError, match=r"needle: no rows with context_length 1024; has \[256, 512, 8192\]"):
        load_task(FIXTURE, "needle", (1024,))


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "le"
    shutil.copytree(FIXTURE, root)
    return root


def test_missing_file_is_named(tmp_path):
    root = _copy(tmp_path)
    (root / "qmsum" / "qrels.jsonl").unlink()
    with pytest.raises(DataError, match=r"qmsum/qrels.jsonl: missing"):
        load_task(root, "qmsum")
    shutil.rmtree(root / "qmsum")
    with pytest.raises(DataError, match="missing task folder 'qmsum'"):
        load_task(root, "qmsum")


def test_malformed_rows_name_file_and_line(tmp_path):
    root = _copy(tmp_path)
    path = root / "2wikimqa" / "queries.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"2wikimqa/queries.jsonl line 3: invalid JSON"):
        load_task(root, "2wikimqa")
    path.write_text('{"qid": "q9"}\n')
    with pytest.raises(DataError, match=r"queries.jsonl line 1: missing field\(s\) \['text'\]"):
        load_task(root, "2wikimqa")


def test_synthetic_rows_need_context_length(tmp_path):
    root = _copy(tmp_path)
    path = root / "passkey" / "corpus.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    del rows[0]["context_length"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"passkey/corpus.jsonl line 1: missing field\(s\) \['context_length'\]"):
        load_task(root, "passkey", (256,))


def test_qrels_must_point_at_known_documents_and_queries(tmp_path):
    root = _copy(tmp_path)
    path = root / "summ_screen_fd" / "qrels.jsonl"
    path.write_text(path.read_text() + '{"qid": "summ_screen_fd_q0", "doc_id": "nope"}\n')
    with pytest.raises(DataError, match="names doc_id 'nope', which is not in corpus.jsonl"):
        load_task(root, "summ_screen_fd")
    path.write_text('{"qid": "ghost", "doc_id": "summ_screen_fd_d0"}\n')
    with pytest.raises(DataError, match="names qid 'ghost', which is not in queries.jsonl"):
        load_task(root, "summ_screen_fd")


def test_graded_qrels_are_kept_and_bad_scores_refused(tmp_path):
    root = _copy(tmp_path)
    path = root / "qmsum" / "qrels.jsonl"
    path.write_text('{"qid": "qmsum_q0", "doc_id": "qmsum_d0", "score": 2}\n'
                    '{"qid": "qmsum_q0", "doc_id": "qmsum_d1", "score": 0}\n')
    [s] = load_task(root, "qmsum")
    assert s.qrels == {"qmsum_q0": {"qmsum_d0": 2, "qmsum_d1": 0}}
    assert s.notes == ["1 queries without qrels skipped"]  # d1 is judged but not relevant
    path.write_text('{"qid": "qmsum_q0", "doc_id": "qmsum_d0", "score": "high"}\n')
    with pytest.raises(DataError, match="score 'high' for 'qmsum_q0' is not an integer"):
        load_task(root, "qmsum")


def test_duplicate_ids_and_unjudged_queries(tmp_path):
    root = _copy(tmp_path)
    corpus = root / "qmsum" / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + '{"doc_id": "qmsum_d0", "text": "again"}\n')
    with pytest.raises(DataError, match="duplicate doc_id 'qmsum_d0'"):
        load_task(root, "qmsum")
    shutil.copy(FIXTURE / "qmsum" / "corpus.jsonl", corpus)
    queries = root / "qmsum" / "queries.jsonl"
    queries.write_text(queries.read_text() + '{"qid": "extra", "text": "no judgement"}\n')
    [s] = load_task(root, "qmsum")
    assert "extra" not in s.queries and s.notes == ["1 queries without qrels skipped"]


def test_subsample_keeps_relevant_documents_and_is_reproducible():
    [s] = load_task(FIXTURE, "2wikimqa")
    small = subsample(s, max_queries=1, max_docs=1, seed=3)
    [qid] = small.queries
    assert set(small.corpus) == set(s.qrels[qid])  # the relevant document survives the cut
    # the same seed gives the same cut; over ten seeds, as an unseeded draw of one of two queries agrees half the time
    assert all(subsample(s, 1, 1, seed=n).queries == subsample(s, 1, 1, seed=n).queries for n in range(3, 13))
    assert subsample(s, None, None, seed=3) is s


def test_task_and_length_parsing():
    assert parse_tasks(None, has_data=False) == ["passkey", "needle"]
    assert parse_tasks(None, has_data=True) == list(data.TASKS)
    assert parse_tasks("real,passkey", has_data=True) == ["narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa",
                                                           "passkey"]
    with pytest.raises(DataError, match="unknown task 'nqa'"):
        parse_tasks("nqa", has_data=True)
    with pytest.raises(DataError, match="the real tasks .* need --data"):
        parse_tasks("qmsum", has_data=False)
    assert parse_lengths("256,8192") == (256, 8192)
    with pytest.raises(DataError, match="LongEmbed's context lengths are 256"):
        parse_lengths("300")
    with pytest.raises(DataError, match="comma list of integers"):
        parse_lengths("4k")


def test_resolve_data_local_folder_and_hub_failure(tmp_path, monkeypatch):
    assert resolve_data(FIXTURE, ["passkey"]) == FIXTURE
    with pytest.raises(DataError, match="no such folder"):
        resolve_data(tmp_path / "absent", ["passkey"])

    def offline(**kwargs):
        assert kwargs["repo_id"] == "dwzhu/LongEmbed" and kwargs["repo_type"] == "dataset"
        assert kwargs["allow_patterns"] == ["passkey/*.jsonl"]
        raise OSError("network unreachable")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(DataError, match=r"downloading it from the hub failed \(OSError: network unreachable\)"):
        resolve_data("dwzhu/LongEmbed", ["passkey"])
