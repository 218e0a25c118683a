"""The mteb wrapper answers mteb 2 (DataLoader batches), mteb 1 (lists) and the older retrieval hooks with the
same vectors `longretr` itself computes (mteb is not installed here; its calling conventions are)."""

from enum import Enum

import numpy as np
import pytest
from torch.utils.data import DataLoader

from longretr.embedder import Embedder
from longretr.evaluate.mteb import LONGEMBED_TASKS, LongretrEncoder


class PromptType(str, Enum):  # mirrors mteb.types.PromptType
    query = "query"
    document = "document"


@pytest.fixture(scope="module")
def encoder(tiny_gemma, tmp_path_factory):
    from tiny_models import write_config

    return LongretrEncoder(embedder=Embedder(str(write_config(tmp_path_factory.mktemp("cfg"), tiny_gemma))))


DOCS = ["the quick brown fox", "a lazy dog jumps over the archive", "json csv dates"]
QUERIES = ["brown fox", "lazy dog"]


def test_mteb2_dataloader_batches(encoder):
    rows = [{"text": t} for t in DOCS]
    loader = DataLoader(rows, batch_size=2, collate_fn=lambda b: {"text": [r["text"] for r in b]})
    got = encoder.encode(loader, task_metadata=None, hf_split="test_256", hf_subset="default",
                         prompt_type=PromptType.document)
    assert np.allclose(got, encoder.embedder.encode_documents(DOCS, progress=False).vectors, atol=1e-5)
    queries = DataLoader([{"text": q} for q in QUERIES], batch_size=8,
                         collate_fn=lambda b: {"text": [r["text"] for r in b]})
    got_q = encoder.encode(queries, task_metadata=None, hf_split="test", hf_subset="default",
                           prompt_type=PromptType.query)
    assert np.allclose(got_q, encoder.embedder.encode_queries(QUERIES), atol=1e-5)


def test_mteb1_lists_and_prompt_types(encoder):
    q = encoder.encode(QUERIES, task_name="LEMBPasskeyRetrieval", prompt_type="query")
    d = encoder.encode(DOCS, task_name="LEMBPasskeyRetrieval", prompt_type="passage")
    assert np.allclose(q, encoder.embedder.encode_queries(QUERIES), atol=1e-5)
    assert np.allclose(d, encoder.embedder.encode_documents(DOCS, progress=False).vectors, atol=1e-5)
    assert not np.allclose(q, encoder.encode(QUERIES), atol=1e-3)  # no prompt type -> document side


def test_older_retrieval_hooks(encoder):
    rows = [{"title": "Fox", "text": "the quick brown fox"}, {"title": "", "text": "a lazy dog"}]
    got = encoder.encode_corpus(rows)
    want = encoder.embedder.encode_documents(["Fox the quick brown fox", "a lazy dog"], progress=False).vectors
    assert np.allclose(got, want, atol=1e-5)
    columnar = encoder.encode_corpus({"title": ["Fox", ""], "text": ["the quick brown fox", "a lazy dog"]})
    assert np.allclose(columnar, want, atol=1e-5)
    assert np.allclose(encoder.encode_queries(QUERIES), encoder.embedder.encode_queries(QUERIES), atol=1e-5)
    assert encoder.encode_queries([]).shape == (0, encoder.embedder.dim)


def test_texts_that_are_not_strings_are_refused_not_stringified(encoder):
    with pytest.raises(TypeError, match="a batch's text must be a str, got NoneType"):  # was encoded as "None"
        encoder.encode([{"text": ["the fox", None]}], prompt_type=PromptType.document)
    with pytest.raises(TypeError, match="a row's text must be a str, got int"):  # was encoded as "5"
        encoder.encode_corpus([{"title": "Fox", "text": 5}])
    with pytest.raises(TypeError, match="a row's text must be a str, got NoneType"):  # {id: row}: was its ids
        encoder.encode_corpus({"d1": {"title": "Fox", "text": "the quick brown fox"}})


def test_one_batch_or_one_row_not_in_a_list_is_encoded_not_its_keys(encoder):
    want = encoder.embedder.encode_documents(DOCS[:2], progress=False).vectors
    assert np.allclose(encoder.encode({"text": DOCS[:2]}), want, atol=1e-5)  # was the word "text"
    row = encoder.encode_corpus({"title": "Fox", "text": "the quick brown fox"})  # was 3 rows, "F t", "o h", "x e"
    assert np.allclose(row, encoder.embedder.encode_documents(["Fox the quick brown fox"], progress=False).vectors,
                       atol=1e-5)


def test_similarity_is_cosine(encoder):
    a, b = np.array([[3.0, 4.0]]), np.array([[3.0, 4.0], [-4.0, 3.0]])
    assert np.allclose(encoder.similarity(a, b).numpy(), [[1.0, 0.0]])
    assert np.allclose(encoder.similarity_pairwise(b, b[::-1]).numpy(), [0.0, 0.0])


def test_task_names_and_identity(encoder):
    assert LONGEMBED_TASKS == ["LEMBPasskeyRetrieval", "LEMBNeedleRetrieval", "LEMBNarrativeQARetrieval",
                               "LEMBQMSumRetrieval", "LEMBSummScreenFDRetrieval", "LEMBWikimQARetrieval"]
    assert encoder.model_name == "tiny" and encoder.revision == encoder.config.fingerprint()
    with pytest.raises(TypeError, match="cannot encode an input of type int"):
        encoder.encode([1, 2])
