"""Model configs: plain TOML files in configs/, loaded by name or path."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomllib

PACKAGE = Path(__file__).resolve().parent
# The shipped model configs: configs/ in a checkout (an editable install), longretr/configs in an installed wheel.
REPO_CONFIGS = next((p for p in (PACKAGE.parent / "configs", PACKAGE / "configs") if p.is_dir()),
                    PACKAGE.parent / "configs")
# Where a config is looked up by name, in this order (`longretr models` lists the same): ./configs, where the
# command runs (a relative path on purpose), then the shipped ones.
CONFIG_DIRS = (Path("configs"), REPO_CONFIGS)
# The dtype names a config, `index --dtype` and `eval --dtype` take (embedder.DTYPES maps the last three to torch's);
# here, not there, so checking one needs no torch.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# An adapter path starting with this names a folder inside the longretr package (the shipped adapters), so a
# shipped config works both from a checkout and from an installed wheel.
IN_PACKAGE = "longretr:"
# A backbone naming a GGUF shipped in a PyPI package: "gguf-package:<module>" (gguf_cache_folder).
GGUF_PREFIX = "gguf-package:"
# Fewest tokens in a window of a document longer than max_tokens (ModelConfig.windows).
MIN_WINDOW = 256


def longretr_home() -> Path:
    return Path(os.environ.get("LONGRETR_HOME", Path.home() / ".cache" / "longretr"))


def gguf_cache_folder(module_name: str) -> Path:
    """Where a GGUF package's checkpoint is de-quantized once (backbone.py); here, not there, so that `longretr models`
    finds it without importing torch."""
    pkg = importlib.import_module(module_name)
    return longretr_home() / "models" / f"{module_name}-{pkg.EXPECTED_SHA256[:12]}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    # A hub id, a local folder, or "gguf-package:<module>" for a GGUF shipped in a PyPI package.
    backbone: str
    attention: str = "bidirectional"  # bidirectional | causal
    pooling: str = "mean"  # mean | last
    normalize: bool = True
    # The longest forward pass. A query or training text is cut to it. A longer document is encoded whole: its first
    # max_tokens as one pass, the rest in windows that are passes of their own (windows), whose spans (or, without
    # spans, whole windows) become more of its vectors.
    max_tokens: int = 8192
    dtype: str = "auto"
    query_instruction: str = ""
    # Path to a PEFT/LoRA adapter folder (relative to the config file; "longretr:weights/NAME" is inside the
    # package), "" for none; or a list of them, merged as their average (a "model soup": the mean of their weight
    # deltas; adapters.soup).
    adapter: str | tuple[str, ...] = ""
    # One weight per adapter: the merged delta is sum_i w_i dW_i instead of the mean. Empty: the mean (1/n each).
    adapter_weights: tuple[float, ...] = ()
    # > 0: a document longer than this many tokens also gets a second vector, of its first lead_tokens tokens,
    # and scores the higher of its two cosines. A whole document's mean dilutes its title and summary; the lead
    # keeps them (docs/training-studies.md, "Document vectors": it raised dense retrieval on three sets of long
    # documents and kept queries about their later parts). 0: off.
    # At or above max_tokens no document is longer than its lead, so it has no effect (a config cut short, e.g.
    # `replace(default, max_tokens=512)`, stays valid and matches the plain config's fingerprint).
    lead_tokens: int = 0
    # > 0: a document longer than this many tokens also gets one vector per span of span_tokens tokens, the mean of
    # that span's final-layer states from the same whole-document forward pass (late chunking: every span's states
    # attended to the whole document, so nothing is encoded twice), and scores the best cosine of all its vectors
    # (in hybrid fusion, averaged with its whole/lead score: fusion.fusion_scores).
    # A long document's mean also dilutes the parts a query may be about (docs/training-studies.md, "Span vectors").
    # Needs mean pooling. 0: off.
    span_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.adapter, str):
            object.__setattr__(self, "adapter", tuple(self.adapter))  # a TOML list; a tuple keeps the config frozen
            if not self.adapter or not all(isinstance(a, str) and a for a in self.adapter):
                raise ValueError(f"config {self.name}: adapter must be a path or a non-empty list of paths")
            object.__setattr__(self, "adapter", tuple(_from_package(a) for a in self.adapter))
        else:
            object.__setattr__(self, "adapter", _from_package(self.adapter))
        object.__setattr__(self, "adapter_weights", tuple(float(w) for w in self.adapter_weights))
        if self.adapter_weights and len(self.adapter_weights) != len(self.adapters):
            raise ValueError(f"config {self.name}: adapter_weights has {len(self.adapter_weights)} weights for "
                             f"{len(self.adapters)} adapters")
        if self.attention not in ("bidirectional", "causal"):
            raise ValueError(f"config {self.name}: attention must be bidirectional or causal, got {self.attention!r}")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"config {self.name}: pooling must be mean or last, got {self.pooling!r}")
        if self.max_tokens < 8:
            raise ValueError(f"config {self.name}: max_tokens must be >= 8, got {self.max_tokens}")
        if self.lead_tokens and self.lead_tokens < 8:
            raise ValueError(f"config {self.name}: lead_tokens must be 0 or at least 8, got {self.lead_tokens}")
        if self.span_tokens and self.span_tokens < 8:
            raise ValueError(f"config {self.name}: span_tokens must be 0 or at least 8, got {self.span_tokens}")
        if self.span_tokens and self.pooling != "mean":
            raise ValueError(f"config {self.name}: span_tokens needs mean pooling, got {self.pooling!r}")

    def to_dict(self) -> dict:
        """The settings, as an index manifest records them: adapters shipped inside longretr as "longretr:...", so
        the index still finds them after the checkout moves or from another install."""
        data = asdict(self)
        data["adapter"] = (_to_package(self.adapter) if isinstance(self.adapter, str)
                           else [_to_package(a) for a in self.adapter])
        return data

    @property
    def adapters(self) -> tuple[str, ...]:
        """The adapter folders: none, one, or several averaged."""
        if isinstance(self.adapter, str):
            return (self.adapter,) if self.adapter else ()
        return self.adapter

    def to_toml(self) -> str:
        """The config as a TOML file that `load_config` reads back to an equal config."""
        return "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else json.dumps(v)}\n"
                       for k, v in self.to_dict().items())

    @property
    def has_leads(self) -> bool:
        """Whether some document can be longer than its lead, and so get a lead vector."""
        return 0 < self.lead_tokens < self.max_tokens

    def lead_for(self, n: int) -> int:
        """Tokens of the lead vector a document of n tokens gets; 0: none."""
        return self.lead_tokens if 0 < self.lead_tokens < n else 0

    @property
    def has_spans(self) -> bool:
        """Whether some document can be longer than a span, and so get span vectors."""
        return 0 < self.span_tokens < self.max_tokens

    def spans_for(self, n: int) -> list[tuple[int, int]]:
        """[start, end) token ranges of the span vectors of a pass of n tokens (a document's first max_tokens):
        consecutive spans of span_tokens, the last piece joining the one before when shorter than a quarter span
        (a span of a few tokens is noise); none where that leaves one span, the whole document."""
        if not 0 < self.span_tokens < n:
            return []
        spans = _pieces(n, self.span_tokens)
        return spans if len(spans) > 1 else []

    def windows(self, n: int, head: int) -> list[tuple[int, int]]:
        """[start, end) token ranges of a document of n tokens beyond its first max_tokens, each encoded as a pass
        of its own after the document's first `head` tokens (its BOS, which the backbone expects first): pieces of
        max_tokens - head tokens, the last started earlier when it would hold fewer than MIN_WINDOW (a pass of a few
        tokens is noise). Windows do not see each other or the first pass; no token is encoded twice except in
        that overlap."""
        size = self.max_tokens - head
        out = [(s, min(s + size, n)) for s in range(self.max_tokens, n, size)]
        least = min(MIN_WINDOW, size)
        if out and out[-1][1] - out[-1][0] < least:
            out[-1] = (n - least, n)
        return out

    def window_ranges(self, start: int, end: int) -> list[tuple[int, int]]:
        """[start, end) token ranges of a window's vectors: one per span of span_tokens (at least one), or the
        whole window where spans are off."""
        if not self.span_tokens:
            return [(start, end)]
        return [(start + a, start + b) for a, b in _pieces(end - start, self.span_tokens)]

    def other_ranges(self, n: int, head: int) -> list[tuple[int, int]]:
        """[start, end) token ranges behind the other vectors of a document of n tokens whose first `head` tokens
        start every window (windows), in their order: lead, spans of the first max_tokens, then each window's."""
        first = min(n, self.max_tokens)
        lead = self.lead_for(first)
        out = ([(0, lead)] if lead else []) + self.spans_for(first)
        for start, end in self.windows(n, head):
            out += self.window_ranges(start, end)
        return out

    def fingerprint(self) -> str:
        """Hash of everything that changes a vector; an index is only searched with the same one."""
        keys = ("backbone", "attention", "pooling", "normalize", "max_tokens", "query_instruction", "adapter")
        values = {k: getattr(self, k) for k in keys}
        if self.adapter_weights:  # only when set, so the fingerprints of plain means stay as they were
            values["adapter_weights"] = list(self.adapter_weights)
        if self.has_leads:  # only when on, so indexes built before the setting existed keep their fingerprint
            values["lead_vectors"] = self.lead_tokens  # not "lead_tokens": that key meant one summed vector
        if self.has_spans:
            values["span_vectors"] = self.span_tokens
        if self.adapter:  # by content, so the same adapter matches wherever it is checked out
            missing = [a for a in self.adapters if not Path(a).is_dir()]
            if missing:  # else it hashes as empty: a "built with another model" error instead of this one
                raise FileNotFoundError(f"config {self.name}: adapter folder {missing[0]} not found")
            hashes = [_hash_folder(Path(a)) for a in self.adapters]
            values["adapter"] = hashes[0] if isinstance(self.adapter, str) else hashes
        payload = json.dumps(values, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def format_query(self, query: str) -> str:
        return f"{self.query_instruction}; {query}" if self.query_instruction else query


def _pieces(n: int, size: int) -> list[tuple[int, int]]:
    """n tokens as consecutive [start, end) pieces of `size`, a last piece shorter than a quarter joining the one
    before it."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size // 4:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def load_config(name_or_path: str | Path = "default") -> ModelConfig:
    """Load a config from a .toml path, or by name: NAME.toml in CONFIG_DIRS, else the one config there whose `name`
    is NAME (what `info`, `serve` and a manifest call the model; `default` is named for its adapters). A folder
    stands for the model.toml in it or in its adapter/ (a `longretr train` run's output)."""
    given = Path(name_or_path)
    candidates = [given / "model.toml", given / "adapter" / "model.toml"] if given.is_dir() else [given]
    by_name = not str(name_or_path).endswith(".toml")
    if by_name:
        candidates += [folder / f"{name_or_path}.toml" for folder in CONFIG_DIRS]
    for path in candidates:
        if path.is_file():
            return config_from_file(path)  # a file's name wins over a name declared inside another
    declaring = configs_named(str(name_or_path)) if by_name else []
    if len(declaring) > 1:  # refused rather than guessed: they may be different models
        raise ValueError(f"model name {name_or_path!r} is declared by {len(declaring)} configs: "
                         f"{', '.join(map(str, declaring))}; give the path of one")
    if declaring:
        return config_from_file(declaring[0])
    where = ", ".join(str(c) for c in candidates)
    named = f"; no config in {' or '.join(map(str, CONFIG_DIRS))} is named so" if by_name else ""
    raise FileNotFoundError(f"model config {name_or_path!r} not found (looked at {where}){named}")


def config_files(folders: list[Path] | None = None) -> list[Path]:
    """TOML configs in the given folders, or in CONFIG_DIRS, in load_config's order (each file once)."""
    seen: dict[Path, Path] = {}
    for folder in folders or CONFIG_DIRS:
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def declared_name(path: Path) -> str | None:
    """The `name` a config file sets, or None (none set, or not a readable TOML file: load_config names its problems
    when it is asked for that file)."""
    try:
        name = tomllib.loads(path.read_text()).get("name")
    except (OSError, ValueError):  # tomllib.TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return name if isinstance(name, str) else None


def configs_named(name: str) -> list[Path]:
    """The configs in CONFIG_DIRS whose declared `name` is `name`."""
    return [path for path in config_files() if declared_name(path) == name]


def config_from_file(path: Path) -> ModelConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not a readable TOML model config: {e}") from e
    unknown = unknown_keys(data)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(f.name for f in fields(ModelConfig))}")
    data.setdefault("name", path.stem)
    if "backbone" not in data:
        raise ValueError(f"{path}: no backbone (a hub id, local folder or gguf-package:<module>)")
    wrong = type_errors(ModelConfig, data)
    if wrong:
        raise ValueError(f"{path}: {'; '.join(wrong)}")

    def beside(a):  # a relative adapter path is relative to the config file; others stay as written
        relative = isinstance(a, str) and a and not a.startswith(IN_PACKAGE) and not Path(a).is_absolute()
        return str((path.parent / a).resolve()) if relative else a

    adapter = data.get("adapter")
    if adapter:
        data["adapter"] = [beside(a) for a in adapter] if isinstance(adapter, list) else beside(adapter)
    return ModelConfig(**data)


def _from_package(adapter: str) -> str:
    """An adapter path as a config holds it: "longretr:weights/NAME" becomes this package's folder, and so does an
    absolute path into another copy of longretr's weights that is missing here (an index built in a checkout since
    moved, or by another install); the fingerprint, by content, still checks that it is the same adapter."""
    if adapter.startswith(IN_PACKAGE):
        return str(PACKAGE / adapter.removeprefix(IN_PACKAGE))
    parts = Path(adapter).parts
    at = [i for i in range(len(parts) - 2) if parts[i:i + 2] == ("longretr", "weights")]
    if Path(adapter).is_absolute() and at and not Path(adapter).exists():
        here = PACKAGE.joinpath(*parts[at[-1] + 1:])
        return str(here) if here.is_dir() else adapter
    return adapter


def _to_package(adapter: str) -> str:
    """A folder inside this package as "longretr:..." (portable); any other path as it is."""
    path = Path(adapter)
    return IN_PACKAGE + path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else adapter


def unknown_keys(data: dict) -> list[str]:
    """The keys of a config table that are not ModelConfig settings, sorted."""
    return sorted(set(data) - {f.name for f in fields(ModelConfig)})


def type_errors(cls: type, data: dict) -> list[str]:
    """One line per value of a TOML table whose type does not fit the dataclass field it sets (an int passes for a
    float, a bool for nothing else), so a wrong type is named instead of failing later in a comparison."""
    hints = typing.get_type_hints(cls)
    return [f"{key} must be {_type_name(hints[key])}, got {value!r}" for key, value in data.items()
            if key in hints and not _fits(value, hints[key])]


def _fits(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (list, tuple):  # TOML arrays
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)  # type: ignore[arg-type]


def _type_name(hint: object, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0], plural=True)}"
    names = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"),
             bool: ("true or false", "booleans")}
    return names[hint][plural] if hint in names else str(hint)


def _hash_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.json")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
