"""`pyratok-eval ablation`: the Table 6 row switches build valid configs; a two-row run end to end on tiny shards."""

import json
import math
from pathlib import Path

import pytest
import yaml
from accelerate.state import AcceleratorState

from modeling_pyratok import PyraTokConfig
from pyratok.evaluation import cli
from pyratok.evaluation.ablation import (
    ABLATION_ROWS,
    PAPER_COLUMNS,
    PAPER_TABLE6,
    ROW_INFO,
    build_row_config,
    resolve_rows,
    run_ablation,
)
from pyratok.training.config import TrainConfig
from pyratok.training.make_shards import make_shards
from pyratok.training.train import build_model_config

RECIPE = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-cpu.yaml"
TINY_LM = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 8,
    "max_position_embeddings": 256,
}


# Tiny convolutions on a shared CPU: extra threads only add contention (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablation_shards")
    make_shards(out, seed=0, size=64, frames=9, num_train=4, num_val=0, num_test=4, shard_size=4)
    return out


@pytest.fixture(scope="module")
def tiny_recipe(shards, tmp_path_factory) -> Path:
    recipe = {
        "task": "pyratok",
        "model_preset": "tiny",
        "backbone_name_or_path": "none",
        "data": {
            "data_files": [str(shards / "train" / "*.tar")],
            "num_frames": [5],
            "resolutions": [[64, 64]],
            "batch_size": 1,
            "shuffle_buffer": 4,
        },
        "max_train_steps": 50,
        "learning_rate": 3e-3,
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "checkpointing_steps": 100,
        "recon_lpips_weight": 0.0,
        "use_ar_loss": True,
        "ar_language_model": None,
        "ar_language_model_config": TINY_LM,
        "max_ar_tokens": 64,
        "progress_bar": False,
    }
    path = tmp_path_factory.mktemp("ablation_recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def ablation(shards, tiny_recipe, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ablation_out")
    # "w/o drift" resolves to the base recipe here (drift is off in it): it must not be trained again.
    result = run_ablation(tiny_recipe, shards / "test", out, rows=["full", "w/o pyramid", "wo-drift"],
                          max_train_steps=2, max_clips=4, lpips_net=None)
    AcceleratorState._reset_state(True)
    return result


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]


def test_rows_cover_table6_and_the_issue():
    issue = {"full", "wo-lapq", "wo-text", "wo-pyramid", "levels-2", "levels-3", "levels-4", "wo-drift", "wo-ar",
             "wo-commitment", "wo-entropy", "wo-hierarchical", "wo-text-alignment", "wo-text-codebook", "wo-latent"}
    assert issue <= set(ABLATION_ROWS)
    assert set(ROW_INFO) == set(ABLATION_ROWS)
    # every Table 6 row of sections 1-4 has a config switch, and every referenced paper row exists
    assert {info.paper_row for info in ROW_INFO.values()} - {None} == set(PAPER_TABLE6)
    assert all(len(cells) == 2 and all(len(c.split(" / ")) == 3 for c in cells) for cells in PAPER_TABLE6.values())
    assert PAPER_TABLE6["w/o LaPQ"] == ("31.41 / 0.831 / 0.101", "31.47 / 0.799 / 0.118")
    assert all("." in key or key.startswith("use_") for row in ABLATION_ROWS.values() for key in row)


@pytest.mark.parametrize("row", list(ABLATION_ROWS))
def test_row_builds_valid_configs_from_the_shipped_recipe(row, tmp_path):
    config = build_row_config(RECIPE, row, tmp_path, max_train_steps=3)
    assert isinstance(config, TrainConfig)
    assert config.max_train_steps == 3 and config.output_dir == str(tmp_path / row)
    assert config.validation_data is None
    model_config = build_model_config(config)
    assert isinstance(model_config, PyraTokConfig) and config.model_preset == "small"
    for key, value in ABLATION_ROWS[row].items():
        if key.startswith("model_overrides."):
            assert getattr(model_config, key.split(".", 1)[1]) == value, key
        else:
            assert getattr(config, key) == value, key


def test_row_switches_and_overrides():
    lapq = build_model_config(build_row_config(RECIPE, "wo-lapq", "out"))
    assert lapq.num_levels == 1 and lapq.level_spatial_strides == [1]
    flat = build_model_config(build_row_config(RECIPE, "wo-pyramid", "out"))
    assert flat.num_levels == 4 and flat.level_spatial_strides == [1, 1, 1, 1]
    text = build_model_config(build_row_config(RECIPE, "wo-text", "out"))
    assert text.text_dropout == 1.0 and text.text_alignment_weight == 0 and text.text_codebook_weight == 0
    # user overrides apply before the row switches, which win on a clash
    config = build_row_config(RECIPE, "wo-ar", "out", overrides=["data.batch_size=2", "--use_ar_loss=true"])
    assert config.data["batch_size"] == 2 and config.use_ar_loss is False
    with pytest.raises(ValueError, match="key=value"):
        build_row_config(RECIPE, "full", "out", overrides=["data.batch_size"])
    with pytest.raises(ValueError, match="unknown training config fields"):
        build_row_config(RECIPE, "full", "out", overrides=["learnig_rate=1"])


def test_resolve_rows():
    assert resolve_rows(None) == list(ABLATION_ROWS)
    assert resolve_rows("wo-ar,full") == ["full", "wo-ar"]  # table order
    assert resolve_rows(["W/O LaPQ", "3 levels"]) == ["wo-lapq", "levels-3"]
    with pytest.raises(ValueError, match="unknown ablation rows"):
        resolve_rows(["wo-nothing"])


def test_run_ablation_end_to_end(ablation):
    out = Path(ablation["output_dir"])
    data = json.loads((out / "ablation.json").read_text())
    rows = {row["row"]: row for row in data["rows"]}
    assert list(rows) == ["full", "wo-pyramid", "wo-drift"]
    for name in ("full", "wo-pyramid"):
        assert rows[name]["status"] == "trained" and rows[name]["steps"] == 2
        assert (out / name / "final" / "config.json").is_file()
        metrics = rows[name]["metrics"]
        assert math.isfinite(metrics["psnr"]) and -1 <= metrics["ssim"] <= 1
        assert 0 < metrics["code_usage_mean"] <= 1 and 0 <= metrics["r1_t2v"] <= 1 and 0 <= metrics["r1_v2t"] <= 1
        assert metrics["num_clips"] == 4
    # four levels on one grid spend 4x one level's tokens; the pyramid ~1.33x
    assert rows["wo-pyramid"]["metrics"]["bits_per_pixel"] > rows["full"]["metrics"]["bits_per_pixel"]
    assert rows["wo-drift"]["status"] == "same_as" and rows["wo-drift"]["same_as"] == "full"
    assert "use_drift_loss=false" in rows["wo-drift"]["note"] and not (out / "wo-drift").exists()
    assert rows["full"]["paper"]["row"] == "4 Blocks (Default)"
    assert rows["wo-pyramid"]["paper"][PAPER_COLUMNS[0]] == "34.02 / 0.859 / 0.082"


def test_markdown_is_a_well_formed_table(ablation):
    markdown = Path(ablation["markdown"]).read_text()
    assert "not comparable in absolute value" in markdown and "**2 optimizer steps**" in markdown
    assert "model preset `tiny`" in markdown
    table = table_rows(markdown)
    header, rule, body = table[0], table[1], table[2:]
    assert all(f"paper: {column}" in header for column in PAPER_COLUMNS)
    assert all(set(cell) <= {"-", " "} for cell in rule)
    assert [len(r) for r in body] == [len(header)] * 3 and len(rule) == len(header)
    labels = [r[0] for r in body]
    assert labels == ["full (4 levels)", "w/o pyramid", "w/o drift"]
    assert body[1][header.index(f"paper: {PAPER_COLUMNS[1]}")] == "34.02 / 0.839 / 0.094"


def test_cli_reuses_finished_rows_with_resume(ablation, tiny_recipe, shards, tmp_path):
    common = ["ablation", "--data", str(shards / "test"), "--base-config", str(tiny_recipe), "--rows", "full",
              "--output-dir", ablation["output_dir"], "--max-train-steps", "2", "--max-clips", "2",
              "--lpips-net", "none"]
    assert cli.main(common) == 2  # the row folder holds a run and --resume was not given
    report = tmp_path / "report.json"
    assert cli.main(common + ["--resume", "--out", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]["rows"]
    assert [(r["row"], r["status"], r["steps"]) for r in rows] == [("full", "reused", 2)]
    # a finished row trained with other switches is never passed off as this one
    assert cli.main(common + ["--resume", "--train-override", "learning_rate=0.1"]) == 2
