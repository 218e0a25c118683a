"""An installed wheel (not the checkout) finds the shipped model configs and their adapters."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from longretr.config import REPO_CONFIGS, load_config

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
    probe = (
        "import json; from longretr.config import load_config, REPO_CONFIGS\n"
        "names = sorted(p.stem for p in REPO_CONFIGS.glob('*.toml'))\n"
        "out = {n: [load_config(n).fingerprint(), list(load_config(n).adapters)] for n in names}\n"
        "print(json.dumps({'configs': str(REPO_CONFIGS), 'models': out}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["configs"]).is_relative_to(target)
    shipped = sorted(p.stem for p in REPO_CONFIGS.glob("*.toml"))
    assert sorted(found["models"]) == shipped and "default" in shipped
    for name, (fingerprint, adapters) in found["models"].items():
        assert fingerprint == load_config(name).fingerprint(), name  # an index built from a checkout still matches
        for folder in map(Path, adapters):
            assert folder.is_relative_to(target) and (folder / "adapter_model.safetensors").is_file(), folder
            assert (folder / "GEMMA_NOTICE.txt").is_file(), folder
    assert len(found["models"]["default"][1]) == 2
