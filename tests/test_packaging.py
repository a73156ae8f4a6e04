"""The installed package: a wheel built from this repository works from any folder and adds no generic top-level names.

Builds the wheel, installs it (without dependencies: they come from this interpreter's site-packages) into a fresh
venv outside the repository, and runs the README's main job there on the shipped default checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "procedural_jump.mp4"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = out.glob("pyratok-*.whl")
    return path


def top_level_names(wheel: Path) -> set[str]:
    names = zipfile.ZipFile(wheel).namelist()
    return {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}


def test_wheel_installs_only_project_names_and_ships_the_default_checkpoint(wheel):
    assert top_level_names(wheel) == {"modeling_pyratok", "pyratok"}
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = REPO / "model_cards" / "pyratok-small-procedural"
    for file in ("config.json", "model.safetensors", "README.md"):
        assert f"pyratok/model_cards/pyratok-small-procedural/{file}" in names
    assert zipfile.ZipFile(wheel).getinfo("pyratok/model_cards/pyratok-small-procedural/model.safetensors").file_size \
        == (shipped / "model.safetensors").stat().st_size
    # Recipes and accelerate configs travel with the training code (pyratok-eval ablation reads the default recipe).
    assert "pyratok/training/configs/tiny-cpu.yaml" in names
    assert "pyratok/training/accelerate/cpu.yaml" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    torch_requirement = next(line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch"))
    assert "==" not in torch_requirement, f"a library must not pin torch exactly: {torch_requirement}"


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    # System site-packages provide the dependencies (torch etc.); the package itself comes from the wheel only.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir


def test_the_installed_wheel_runs_the_main_job_from_another_folder(fresh_venv, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(SAMPLE, work / "clip.mp4")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    probe = subprocess.run(
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import importlib.util, json, pyratok.cli, pyratok.training, pyratok.evaluation; "
            "print(json.dumps({'training': importlib.util.find_spec('training') is not None, "
            "'evaluation': importlib.util.find_spec('evaluation') is not None, "
            "'package': pyratok.cli.__file__, 'default_model': str(pyratok.cli.DEFAULT_MODEL)}))",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["training"] is False and found["evaluation"] is False
    assert Path(found["package"]).is_relative_to(fresh_venv), found  # the wheel's copy, not this checkout
    assert Path(found["default_model"]).is_relative_to(fresh_venv), found

    run = subprocess.run(
        [str(fresh_venv / "bin" / "pyratok"), "reconstruct", "clip.mp4", "--max-frames", "9", "--out", "o"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((work / "o" / "metrics.json").read_text())
    assert Path(metrics["model"]).is_relative_to(fresh_venv)
    assert metrics["frames"] == 9
    # The shipped demo checkpoint, not a random model: the README figure for the first 9 frames is about 20 dB.
    assert metrics["psnr"] > 15
    assert {"reconstruction.mp4", "side_by_side.mp4", "tokens.safetensors", "metrics.json"} <= {
        p.name for p in (work / "o").iterdir()
    }
