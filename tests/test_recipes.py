"""Recipe files: the `base:` key (a recipe over its parent recipe), `--print_config`, and the shipped recipe chain."""

from pathlib import Path

import pytest
import yaml

from pyratok.training.config import TrainConfig, load_recipe, merge_recipes
from pyratok.training.train import parse_args

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"

BASE = """
task: backbone_vae
model_preset: small
model_overrides: {lora_rank: 0, latent_loss_weight: 10.0}
data:
  data_files: [shards/train/*.tar]
  num_frames: [1, 5, 17]
  resolutions: [[32, 32]]
  batch_size: 8
output_dir: out/base
max_train_steps: 100
learning_rate: 3.0e-4
checkpoints_total_limit: 2
seed: 0
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_merges_mappings_key_by_key_and_replaces_everything_else(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    # The base path is relative to the recipe's own folder, not to the working directory.
    child = write(tmp_path / "phases" / "child.yaml", """
base: ../base.yaml
model_overrides: {latent_loss_weight: 3.0}
data:
  num_frames: [5]
  resolutions: [[64, 64]]
output_dir: out/child
checkpoints_total_limit: null
""")
    grandchild = write(tmp_path / "phases" / "grandchild.yaml", "base: child.yaml\nmax_train_steps: 7\n")

    config = TrainConfig.from_yaml(child)
    assert config.data == {"data_files": ["shards/train/*.tar"], "num_frames": [5], "resolutions": [[64, 64]],
                           "batch_size": 8}  # the base's data_files and batch_size kept; the two lists replaced whole
    assert config.model_overrides == {"lora_rank": 0, "latent_loss_weight": 3.0}
    assert (config.output_dir, config.max_train_steps, config.learning_rate) == ("out/child", 100, 3.0e-4)
    assert config.checkpoints_total_limit is None  # an explicit null replaces the base's value too

    deeper = TrainConfig.from_yaml(grandchild, ["--data.batch_size", "2"])  # overrides apply after the chain
    assert deeper.max_train_steps == 7 and deeper.output_dir == "out/child"
    assert deeper.data["resolutions"] == [[64, 64]] and deeper.data["batch_size"] == 2
    assert "base" not in load_recipe(grandchild)


def test_merge_recipes_leaves_its_inputs_alone():
    base = {"data": {"num_frames": [1, 5], "batch_size": 8}, "seed": 0}
    recipe = {"data": {"batch_size": 2}}
    merged = merge_recipes(base, recipe)
    merged["data"]["num_frames"].append(17)
    assert base == {"data": {"num_frames": [1, 5], "batch_size": 8}, "seed": 0}
    assert recipe == {"data": {"batch_size": 2}}
    assert merged == {"data": {"num_frames": [1, 5, 17], "batch_size": 2}, "seed": 0}


def test_bad_base_chains_say_what_is_wrong(tmp_path):
    missing = write(tmp_path / "missing.yaml", "base: nowhere.yaml\nseed: 1\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml.*the base of .*missing\.yaml"):
        load_recipe(missing)

    write(tmp_path / "a.yaml", "base: b.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "base: a.yaml\nseed: 2\n")
    with pytest.raises(ValueError, match=r"loops: a\.yaml -> b\.yaml -> a\.yaml"):
        load_recipe(tmp_path / "a.yaml")
    itself = write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        load_recipe(itself)

    for bad in ("[a.yaml, b.yaml]", "''", "3"):
        recipe = write(tmp_path / "bad.yaml", f"base: {bad}\nseed: 1\n")
        with pytest.raises(ValueError, match="must name one recipe file"):
            load_recipe(recipe)

    write(tmp_path / "list.yaml", "- 1\n- 2\n")
    child_of_list = write(tmp_path / "child_of_list.yaml", "base: list.yaml\n")
    with pytest.raises(ValueError, match="a recipe is a YAML mapping"):
        load_recipe(child_of_list)
    # A base's unknown field is caught like the recipe's own.
    write(tmp_path / "typo.yaml", BASE + "learnig_rate: 1.0\n")
    with pytest.raises(ValueError, match=r"unknown training config fields \['learnig_rate'\]"):
        TrainConfig.from_yaml(write(tmp_path / "child_of_typo.yaml", "base: typo.yaml\n"))


def test_print_config_prints_the_resolved_recipe_and_exits(tmp_path, capsys):
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", "base: base.yaml\ndata: {resolutions: [[64, 64]]}\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(child), "--print_config", "--seed", "4"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "base" not in printed
    assert printed == TrainConfig.from_yaml(child, ["--seed", "4"]).to_dict()
    assert printed["data"]["data_files"] == ["shards/train/*.tar"] and printed["seed"] == 4
    # Without the flag the same command line is a training config.
    assert parse_args(["--config", str(child), "--seed", "4"]).to_dict() == printed


def test_shipped_backbone_phases_resolve_to_the_recipes_results_md_measured():
    """The progressive backbone's phases are short files over their parents: each must still resolve to the run
    that produced the default checkpoint's backbone (fields as in that run's train_config.json)."""
    phase = "out/tiny-cpu-backbone-{}/final"
    expected = {  # phase → (init_from, resolution, steps, fan_in_lr, learning_rate, chroma, sample posterior, seed)
        "tiny-cpu-backbone-32px": (None, 32, 2500, 0.03, 3e-4, 0.0, True, 0),
        "tiny-cpu-backbone-64px": (phase.format("32px"), 64, 400, 0.01, 1e-4, 0.0, True, 0),
        "tiny-cpu-backbone-colour-32px": (phase.format("64px"), 32, 1000, 0.02, 2e-4, 4.0, True, 0),
        "tiny-cpu-backbone-colour-64px": (phase.format("colour-32px"), 64, 300, 0.01, 1e-4, 4.0, True, 0),
        "tiny-cpu-backbone-refine-32px": (phase.format("colour-64px"), 32, 2000, 0.02, 2e-4, 4.0, False, 1),
        "tiny-cpu-backbone-refine-64px": (phase.format("refine-32px"), 64, 300, 0.01, 1e-4, 4.0, False, 1),
        "tiny-cpu-backbone-long-32px": (phase.format("refine-64px"), 32, 900, 0.01, 1e-4, 4.0, False, 3),
    }
    for name, (init_from, size, steps, fan_in_lr, lr, chroma, sample, seed) in expected.items():
        config = TrainConfig.from_yaml(CONFIGS / f"{name}.yaml")
        got = (config.init_from, config.data["resolutions"], config.validation_data["resolutions"],
               config.max_train_steps, config.fan_in_lr, config.learning_rate, config.recon_chroma_weight,
               config.vae_sample_posterior, config.seed, config.output_dir)
        assert got == (init_from, [[size, size]], [[size, size]], steps, fan_in_lr, lr, chroma, sample, seed,
                       f"out/{name}"), name
        assert config.task == "backbone_vae" and config.lr_scaling == "fan_in"
        if name == "tiny-cpu-backbone-long-32px":  # phase 7: 49-frame clips from their own shards, batch 4
            assert config.data["num_frames"] == config.validation_data["num_frames"] == [49]
            assert config.data["data_files"] == ["data/procedural49/train/*.tar"] and config.data["batch_size"] == 4
        else:
            assert config.data["num_frames"] == [1, 5, 17] and config.validation_data["num_frames"] == [17]
        assert config.backbone_init == ("zero_bias_residual" if init_from is None else "default")
    # The default's stage 2 reads phase 7's output.
    assert TrainConfig.from_yaml(CONFIGS / "tiny-cpu.yaml").backbone_name_or_path == (
        "out/tiny-cpu-backbone-long-32px/final")


def test_configs_hold_the_paper_stages_and_the_default_chain_and_experiments_resolve_to_their_parents():
    """training/configs/ keeps the paper's stages and every recipe the default checkpoint's chain uses (through
    `base:`); recipes tried and not adopted live in experiments/ and still resolve over their parents there."""
    stages = {"stage1.yaml", "stage2.yaml", "stage3.yaml"}
    default_chain = {"tiny-cpu.yaml"} | {f"tiny-cpu-backbone-{p}.yaml" for p in (
        "32px", "64px", "colour-32px", "colour-64px", "refine-32px", "refine-64px", "long-32px")}
    gpu_default = {"gpu-backbone-z16.yaml", "gpu-pyratok-z16.yaml"}  # `python -m pyratok.training.gpu_default`
    # train_prior.py's recipes: the shipped priors, the Table 2 analogue, the paper-scale configs
    priors = {f"prior-{k}-tiny-cpu.yaml" for k in ("masked", "ar")} | {f"prior-{k}-openvid-10k.yaml" for k in (
        "masked", "ar")} | {"prior-masked-table2.yaml"}
    kept = stages | default_chain | gpu_default | priors
    assert {p.name for p in CONFIGS.glob("*.yaml")} == kept
    for name in kept:  # every base: of a kept recipe is a kept recipe
        base = yaml.safe_load((CONFIGS / name).read_text()).get("base")
        assert base is None or base in kept, (name, base)
    experiments = CONFIGS / "experiments"
    assert {p.name for p in experiments.glob("*.yaml")} == {
        "tiny-cpu-backbone.yaml", "tiny-cpu-backbone-fan-in.yaml", "tiny-cpu-backbone-polish-32px.yaml",
        "tiny-cpu-backbone-polish-64px.yaml", "tiny-cpu-long.yaml", "tiny-cpu-continue.yaml"}
    default = TrainConfig.from_yaml(CONFIGS / "tiny-cpu.yaml")
    for name in ("tiny-cpu-long.yaml", "tiny-cpu-continue.yaml"):  # stage-2 fine-tunes of the shipped checkpoint
        config = TrainConfig.from_yaml(experiments / name)
        assert config.init_from == "model_cards/pyratok-small-procedural"
        assert config.model_overrides == default.model_overrides and config.use_ar_loss == default.use_ar_loss
    polish = TrainConfig.from_yaml(experiments / "tiny-cpu-backbone-polish-64px.yaml")
    phase6 = TrainConfig.from_yaml(CONFIGS / "tiny-cpu-backbone-refine-64px.yaml")
    # phase 6's recipe (its data, read through `base: ../`) at half its peak rates, from the polish-32px output
    assert polish.data == phase6.data and polish.max_train_steps == phase6.max_train_steps == 300
    assert (polish.fan_in_lr, polish.learning_rate) == (phase6.fan_in_lr / 2, phase6.learning_rate / 2)
    assert polish.init_from == "out/tiny-cpu-backbone-polish-32px/final" and polish.seed == 2
    first = TrainConfig.from_yaml(experiments / "tiny-cpu-backbone.yaml")
    fan_in = TrainConfig.from_yaml(experiments / "tiny-cpu-backbone-fan-in.yaml")  # base: tiny-cpu-backbone.yaml there
    assert (first.lr_scaling, fan_in.lr_scaling, fan_in.backbone_init) == ("none", "fan_in", "zero_bias_residual")
    assert fan_in.data["data_files"] == first.data["data_files"]
