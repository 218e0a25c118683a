"""What `longretr models` shows: each model config with its backbone's size (counted from its config.json on the
meta device, no weights read) and whether the weights are already on this machine.

No torch or transformers at import: counting needs them (4-9 s to import on a 2-core CPU), so a count is kept in
$LONGRETR_HOME/cache/parameter-counts.json and they are imported only for a checkpoint config not counted before."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from contextlib import suppress
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from .atomic import atomic_write_bytes
from .config import GGUF_PREFIX, ModelConfig, config_from_file, gguf_cache_folder, longretr_home
from .families import (
    REMOTE_PREFIX,
    CheckpointError,
    checkpoint_file,
    family_for,
    looks_like_path,
    read_checkpoint_config,
)


@dataclass
class ModelEntry:
    config: str  # path of the TOML file
    name: str = ""
    backbone: str = ""
    family: str = ""
    parameters: int | None = None  # of the encoder that runs (no LM head)
    max_tokens: int | None = None
    attention: str = ""
    pooling: str = ""
    adapters: tuple[str, ...] = ()  # averaged when several
    weights: str = ""  # where the weights are, or why they are not usable yet
    error: str = ""  # a config that cannot be read

    def to_dict(self) -> dict:
        return asdict(self)


def mark_shadowed(entries: list[ModelEntry]) -> None:
    """Entries in load_config's search order: note where `--model NAME` loads another file than the entry's, by its
    file name (a later one of the same name) or by the name it declares (a file of that name, or several declaring
    it)."""
    first: dict[str, str] = {}
    for e in entries:
        stem = Path(e.config).stem
        if stem in first:
            _note(e, f"shadowed by {first[stem]}: --model {stem} loads that")
        first.setdefault(stem, e.config)
    declared = Counter(e.name for e in entries if e.name != Path(e.config).stem)
    for e in entries:
        if e.name == Path(e.config).stem:
            continue
        if e.name in first:
            _note(e, f"--model {e.name} loads {first[e.name]}, the file of that name")
        elif declared[e.name] > 1:
            _note(e, f"--model {e.name} is refused: {declared[e.name]} configs are named so")


def _note(entry: ModelEntry, note: str) -> None:
    entry.error = "; ".join(filter(None, [entry.error, note]))


def describe(path: Path) -> ModelEntry:
    try:
        cfg = config_from_file(path)
    except (ValueError, TypeError) as e:  # the path first, where the message lacks it (a file that is not UTF-8)
        error = str(e) if str(path) in str(e) else f"{path}: {e}"
        return ModelEntry(config=str(path), name=path.stem, error=error)
    entry = ModelEntry(config=str(path), name=cfg.name, backbone=cfg.backbone, max_tokens=cfg.max_tokens,
                       attention=cfg.attention, pooling=cfg.pooling, adapters=cfg.adapters)
    entry.weights = weights_status(cfg)
    try:
        entry.family, entry.parameters = count_parameters(cfg)
    except (CheckpointError, OSError, ValueError) as e:
        entry.family, entry.error = "?", str(e)
    return entry


def count_parameters(cfg: ModelConfig) -> tuple[str, int | None]:
    """(family, parameters of the encoder) from the checkpoint's config.json, without reading any weight."""
    spec = cfg.backbone
    if spec.startswith(REMOTE_PREFIX):
        return "remote-code", None
    source = _local_source(spec)
    if source is None or checkpoint_file(source, "config.json", local_only=True) is None:
        return "?", None  # not downloaded yet: nothing to count from
    raw = read_checkpoint_config(source, local_only=True)
    bidirectional = cfg.attention == "bidirectional"
    # the count follows from config.json and the modules transformers builds from it: both in the key
    key = json.dumps([raw, bidirectional, version("transformers")], sort_keys=True)
    key = hashlib.sha256(key.encode()).hexdigest()[:24]
    counts = _read_counts()
    if isinstance(counts.get(key), list) and len(counts[key]) == 2:
        return tuple(counts[key])
    import torch  # only here: its import is most of the command's time

    family = family_for(raw, source)
    config = family.native_config(raw, bidirectional=bidirectional)
    with torch.device("meta"):
        model = family.empty_model(config)
    counts[key] = [family.name, sum(p.numel() for p in model.parameters())]
    with suppress(OSError):  # an unwritable $LONGRETR_HOME: counted again next time
        _counts_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(_counts_file(), json.dumps(counts, indent=1).encode())
    return tuple(counts[key])


def _counts_file() -> Path:
    return longretr_home() / "cache" / "parameter-counts.json"


def _read_counts() -> dict:
    try:
        counts = json.loads(_counts_file().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: count again
        return {}
    return counts if isinstance(counts, dict) else {}


def _local_source(spec: str) -> Path | str | None:
    if spec.startswith(GGUF_PREFIX):
        folder = _gguf_folder(spec[len(GGUF_PREFIX):])
        return folder if isinstance(folder, Path) and (folder / "config.json").is_file() else None
    if not Path(spec).exists() and looks_like_path(spec):
        return None  # a folder that is not there (not a hub id to look up in the HF cache)
    return spec


def _gguf_folder(module: str) -> Path | str:
    """The GGUF package's cache folder, or why there is none (a config naming a missing or non-GGUF module)."""
    try:
        return gguf_cache_folder(module)
    except ImportError:
        return f"no (package {module} not installed)"
    except (AttributeError, ValueError):  # no EXPECTED_SHA256 (not a GGUF package), an empty name
        return f"no ({module!r} is not a GGUF package)"


def weights_status(cfg: ModelConfig) -> str:
    spec = cfg.backbone
    status = _backbone_status(spec)
    if not all((Path(a) / "adapter_config.json").is_file() for a in cfg.adapters):
        status += "; adapter missing"
    return status


def _backbone_status(spec: str) -> str:
    if spec.startswith(GGUF_PREFIX):
        folder = _gguf_folder(spec[len(GGUF_PREFIX):])
        if isinstance(folder, str):
            return folder
        if (folder / "config.json").is_file():
            return "yes (GGUF cache under $LONGRETR_HOME)"
        return "package installed; de-quantized on first use"
    source = spec.removeprefix(REMOTE_PREFIX)
    if Path(source).exists():
        return _folder_status(Path(source))
    if looks_like_path(source):
        return "no (folder not found)"
    return _hub_cache_status(source)


def _folder_status(folder: Path) -> str:
    shards = _weight_files(folder, lambda name: folder / name if (folder / name).is_file() else None)
    if shards is None:
        return "no weights in folder"
    present = sum(p is not None for p in shards.values())
    return "yes (local folder)" if present == len(shards) else f"partial ({present}/{len(shards)} shards)"


def _hub_cache_status(repo: str) -> str:
    def find(name: str) -> Path | None:
        return checkpoint_file(repo, name, local_only=True)

    if find("config.json") is None:
        return "no (not in the HF cache)"
    shards = _weight_files(repo, find)
    if shards is None:
        return "config only (weights not in the HF cache)"
    present = sum(p is not None for p in shards.values())
    return "yes (HF cache)" if present == len(shards) else f"partial ({present}/{len(shards)} shards in the HF cache)"


def _weight_files(source, find) -> dict[str, Path | None] | None:
    """Each weight file the checkpoint needs -> where it is (None: absent); None if the checkpoint names none."""
    index = find("model.safetensors.index.json")
    if index is not None:
        try:
            names = set(json.loads(Path(index).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return None
        return {n: find(n) for n in sorted(names)}
    single = find("model.safetensors")
    return {"model.safetensors": single} if single is not None else None


def format_table(entries: list[ModelEntry]) -> str:
    header = ("config", "backbone", "family", "params", "max tokens", "attention", "pooling", "weights here")
    rows = [header]
    for e in entries:
        name = Path(e.config).stem  # what --model takes, and so does the name it declares
        if e.name and e.name != name:
            name += f" ({e.name})"
        if e.error and not e.backbone:
            rows.append((name, "", "", "", "", "", "", f"error: {e.error}"))  # last: it would widen a column
            continue
        params = _human(e.parameters) if e.parameters else "?"
        backbone = e.backbone + (f" + adapter {' & '.join(Path(a).name for a in e.adapters)}" if e.adapters else "")
        rows.append((name, backbone, e.family, params, str(e.max_tokens), e.attention, e.pooling,
                     e.weights + (f" [{e.error}]" if e.error else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
