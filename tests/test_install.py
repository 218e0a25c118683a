"""An installed wheel (not the checkout) finds the shipped model configs and their adapters, also where an index's
manifest (written by another install or a checkout since moved) names them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longretr.config import PACKAGE, REPO_CONFIGS, ModelConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_install_loads_every_shipped_config_with_its_adapters(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"
    # A copy of the tracked files: building in the checkout would leave build/ behind.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file() and not name.startswith(("tests/", "docs/", "scripts/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    shutil.rmtree(source)  # nothing may resolve into the source tree
    # as an index manifest records the soup (a list of shipped adapters) here, and as one written before adapters
    # were recorded portably
    recorded = load_config("gemma3-270m-diffembed-soup").to_dict()
    names = [a.split("/")[-1] for a in recorded["adapter"]]
    legacy = {**recorded, "adapter": [f"/gone/checkout/longretr/weights/{n}" for n in names]}
    probe = (
        "import json; from longretr.config import load_config, ModelConfig, REPO_CONFIGS\n"
        "names = sorted(p.stem for p in REPO_CONFIGS.glob('*.toml'))\n"
        "out = {n: [load_config(n).fingerprint(), list(load_config(n).adapters)] for n in names}\n"
        f"manifests = [ModelConfig(**m) for m in json.loads({json.dumps([recorded, legacy])!r})]\n"
        "out |= {f'manifest{i}': [c.fingerprint(), list(c.adapters)] for i, c in enumerate(manifests)}\n"
        "print(json.dumps({'configs': str(REPO_CONFIGS), 'models': out}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["configs"]).is_relative_to(target)
    shipped = sorted(p.stem for p in REPO_CONFIGS.glob("*.toml"))
    soup = found["models"]["gemma3-270m-diffembed-soup"]
    assert found["models"].pop("manifest0") == found["models"].pop("manifest1") == soup
    assert sorted(found["models"]) == shipped and "default" in shipped
    for name, (fingerprint, adapters) in found["models"].items():
        assert fingerprint == load_config(name).fingerprint(), name  # an index built from a checkout still matches
        for folder in map(Path, adapters):
            assert folder.is_relative_to(target) and (folder / "adapter_model.safetensors").is_file(), folder
            assert (folder / "GEMMA_NOTICE.txt").is_file(), folder
    assert len(soup[1]) == 2 and len(found["models"]["default"][1]) == 1


def test_a_manifest_names_shipped_adapters_portably_and_a_missing_adapter_is_named():
    soup = load_config("gemma3-270m-diffembed-soup")  # a list of two shipped adapters
    recorded = soup.to_dict()
    names = ("gemma3-270m-diffembed-cpu2", "gemma3-270m-diffembed")
    assert recorded["adapter"] == [f"longretr:weights/{n}" for n in names]
    assert ModelConfig(**recorded) == soup
    assert all(Path(a).is_relative_to(PACKAGE) for a in soup.adapters)
    # a manifest from a checkout since moved: its absolute paths are gone, this package's copies are the same adapters
    moved = ModelConfig(**{**recorded, "adapter": [f"/gone/longretr/weights/{Path(a).name}" for a in soup.adapters]})
    assert moved == soup and moved.fingerprint() == soup.fingerprint()
    gone = ModelConfig(**{**recorded, "adapter": "/gone/elsewhere/my-adapter"})  # not longretr's: stays as written
    assert gone.adapter == "/gone/elsewhere/my-adapter" and gone.to_dict()["adapter"] == "/gone/elsewhere/my-adapter"
    with pytest.raises(FileNotFoundError, match="adapter folder /gone/elsewhere/my-adapter not found"):
        gone.fingerprint()  # it hashed as an empty folder: "built with another model" instead
