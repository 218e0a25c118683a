"""Shared fixtures: tiny models the tests build themselves (see tiny_models.py)."""

from pathlib import Path

import pytest
from tiny_models import make_gemma3, write_config

from longretr.embedder import Embedder


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    return make_gemma3(tmp_path_factory.mktemp("tiny-gemma3"), ["sliding_attention", "full_attention"] * 2)


@pytest.fixture()
def tiny_config(tiny_gemma, tmp_path) -> Path:
    return write_config(tmp_path, tiny_gemma)


@pytest.fixture(scope="module")
def embedder(tiny_gemma, tmp_path_factory) -> Embedder:
    """The tiny model as an Embedder; a test module may override this fixture."""
    return Embedder(str(write_config(tmp_path_factory.mktemp("cfg"), tiny_gemma)))
