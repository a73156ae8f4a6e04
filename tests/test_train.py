"""The trainer end to end on generated shards: loss goes down, exact resume, final folders, recipes, config errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel
from pyratok.training.config import TrainConfig, parse_overrides
from pyratok.training.make_shards import make_shards
from pyratok.training.model_card import losses_on, write_training_model_card
from pyratok.training.train import build_objective, list_checkpoints, portable_backbone_source, train

# Tokenizer recipes (experiments/ too); the prior recipes (prior-*.yaml) are train_prior.py's, tested with it.
RECIPES = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "training" / "configs").rglob("*.yaml")
    if not p.name.startswith("prior-")
)
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


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    make_shards(out, seed=0, size=64, frames=9, num_train=16, num_val=4, num_test=4, shard_size=8)
    return out


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)


def tiny_run(shards: Path, output_dir: Path, **overrides) -> TrainConfig:
    fields = {
        "task": "pyratok",
        "model_preset": "tiny",
        "backbone_name_or_path": "none",
        "data": {
            "data_files": [str(shards / "train" / "*.tar")],
            "num_frames": [5],
            "resolutions": [[64, 64]],
            "batch_size": 2,
            "shuffle_buffer": 8,
        },
        "output_dir": str(output_dir),
        "max_train_steps": 20,
        "learning_rate": 3e-3,
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "checkpointing_steps": 10,
        "recon_lpips_weight": 0.0,
        "use_ar_loss": True,
        "ar_language_model": None,
        "ar_language_model_config": TINY_LM,
        "max_ar_tokens": 64,
        "progress_bar": False,
    }
    fields.update(overrides)
    return TrainConfig.from_dict(fields)


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "logs.jsonl").read_text().splitlines()]


def test_thirty_steps_lower_the_loss_and_save_both_faces(shards, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_run(shards, out, max_train_steps=30, checkpointing_steps=30))
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    # every loss term is logged on its own
    record = read_log(out)[-1]
    for key in ("recon/l1", "recon/ssim", "codebook/entropy", "codebook/commitment", "latent", "ar"):
        assert key in record, key
    final = Path(summary["final"])
    model = PyraTokModel.from_pretrained(final)
    vae = AutoencoderPyraTok.from_pretrained(out / "final-diffusers")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), vae.state_dict().values(), strict=True))
    # training-only heads stay out of the model folder but are in the training state
    assert not any("ar_head" in k for k in load_file(final / "model.safetensors"))
    card = (final / "README.md").read_text()
    assert "30 x batch 2" in card and "reconstruction (1·L1 + 1·1-SSIM)" in card  # the chroma term is off by default
    assert list_checkpoints(out)[-1].name == "checkpoint-30"


def test_model_card_states_every_loss_weight_of_the_default_recipe():
    # The shipped default departs from the preset's codebook / latent weights: its card must say which it used.
    recipe = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-cpu.yaml")
    model_config = PyraTokConfig.from_preset(recipe.model_preset, **recipe.model_overrides)
    assert losses_on(recipe, model_config) == [
        "reconstruction (1·L1 + 0.5·1-SSIM + 4·chroma) ×2.5",
        "codebook (0.25·commitment + 0.1·entropy + 0.1·hierarchical KL + 0.1·text KL + 1·text-codebook InfoNCE) ×2.5",
        "latent matching ×10",
        "AR global alignment ×1.5",
    ]
    # switched-off terms, zero weights and an all-zero codebook drop out rather than printing as if trained
    recipe.use_ar_loss = False
    quiet = PyraTokConfig.from_preset(recipe.model_preset, **{
        **recipe.model_overrides, "latent_loss_weight": 0.0, "commitment_weight": 0.0, "entropy_weight": 0.0,
        "hierarchical_weight": 0.0, "text_alignment_weight": 0.0, "text_codebook_weight": 0.0,
    })
    assert losses_on(recipe, quiet) == ["reconstruction (1·L1 + 0.5·1-SSIM + 4·chroma) ×2.5"]


def test_resume_reproduces_the_uninterrupted_run(shards, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_run(shards, straight))
    AcceleratorState._reset_state(True)
    interrupted = tmp_path / "interrupted"
    train(tiny_run(shards, interrupted, max_train_steps=10))
    AcceleratorState._reset_state(True)
    train(tiny_run(shards, interrupted, resume_from_checkpoint="latest"))

    full = {r["step"]: r["loss"] for r in read_log(straight)}
    resumed = {r["step"]: r["loss"] for r in read_log(interrupted)}
    assert sorted(resumed) == list(range(1, 21))
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(interrupted / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_backbone_vae_task_feeds_a_pyratok_run(shards, tmp_path):
    backbone = tmp_path / "backbone"
    train(tiny_run(shards, backbone, task="backbone_vae", max_train_steps=2, use_ar_loss=False, recon_chroma_weight=2))
    # the chroma term (the CPU backbone recipes' colour phases) is on and logged
    assert all("recon/chroma" in r for r in read_log(backbone) if "loss" in r)
    AcceleratorState._reset_state(True)
    config = tiny_run(shards, tmp_path / "pyratok", backbone_name_or_path=str(backbone / "final"))
    _, model = build_objective(config)
    from diffusers import AutoencoderKLWan

    pretrained = AutoencoderKLWan.from_pretrained(backbone / "final")
    ours = model.core.backbone.wan_state_dict()
    assert all(torch.equal(ours[k], v) for k, v in pretrained.state_dict().items())
    # The saved config carries no path of this machine; the run's recipe and its card say where the backbone came from.
    AcceleratorState._reset_state(True)
    train(tiny_run(shards, tmp_path / "pyratok", backbone_name_or_path=str(backbone / "final"), max_train_steps=1,
                   use_ar_loss=False))
    saved = json.loads((tmp_path / "pyratok" / "final" / "config.json").read_text())
    assert saved["backbone_name_or_path"] is None
    recipe = json.loads((tmp_path / "pyratok" / "train_config.json").read_text())
    assert recipe["backbone_name_or_path"] == str(backbone / "final")
    assert f"Backbone weights: `{backbone / 'final'}`" in (tmp_path / "pyratok" / "final" / "README.md").read_text()
    reloaded = PyraTokModel.from_pretrained(tmp_path / "pyratok" / "final")
    assert reloaded.config.backbone_name_or_path is None


@pytest.mark.parametrize(
    ("source", "portable"),
    [("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), ("gpt2", "gpt2"),
     ("out/tiny-cpu-backbone-long-32px/final", None), ("/abs/backbone", None), ("./vae", None), ("none", None),
     (None, None)],
)
def test_portable_backbone_source_keeps_hub_ids_and_drops_local_paths(source, portable, tmp_path):
    assert portable_backbone_source(source) == portable
    (tmp_path / "Wan-AI" / "local").mkdir(parents=True)  # a folder shaped like a Hub id is still a local path
    assert portable_backbone_source(str(tmp_path / "Wan-AI" / "local")) is None


def test_backbone_vae_with_fan_in_rates_and_identity_init_resumes_exactly(shards, tmp_path):
    # The fan-in backbone recipe (experiments/tiny-cpu-backbone-fan-in.yaml): one optimizer group per rate must line
    # up on resume.
    run = dict(task="backbone_vae", use_ar_loss=False, lr_scaling="fan_in", fan_in_lr=0.1,
               backbone_init="zero_bias_residual", max_train_steps=6, checkpointing_steps=3)
    objective, vae = build_objective(tiny_run(shards, tmp_path / "init", **run))
    assert all(not p.any() for n, p in vae.named_parameters() if n.endswith("bias"))
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(tiny_run(shards, straight, **run))
    AcceleratorState._reset_state(True)
    train(tiny_run(shards, interrupted, **{**run, "max_train_steps": 3}))
    AcceleratorState._reset_state(True)
    train(tiny_run(shards, interrupted, **run, resume_from_checkpoint="latest"))
    full = {r["step"]: r["loss"] for r in read_log(straight)}
    resumed = {r["step"]: r["loss"] for r in read_log(interrupted)}
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert full[6] < full[1]
    assert read_log(straight)[0]["lr"] == pytest.approx(3e-3)  # the logged rate is learning_rate, not a weight's
    card = tmp_path / "card.md"
    write_training_model_card(card, PyraTokConfig.from_preset("tiny"), tiny_run(shards, straight, **run), {"steps": 6})
    assert "AdamW lr 0.1 / fan-in per weight, 0.003 for biases and gains" in card.read_text()


def test_backbone_vae_continues_from_an_earlier_phase_and_rejects_another_architecture(shards, tmp_path):
    # The progressive CPU recipe: phase 2 (tiny-cpu-backbone-64px.yaml) starts from phase 1's final folder.
    from diffusers import AutoencoderKLWan

    phase1 = tmp_path / "phase1"
    small_frames = {**tiny_run(shards, phase1).data, "resolutions": [[32, 32]]}
    train(tiny_run(shards, phase1, task="backbone_vae", use_ar_loss=False, max_train_steps=2, data=small_frames,
                   backbone_init="zero_bias_residual"))
    AcceleratorState._reset_state(True)
    phase2 = dict(task="backbone_vae", use_ar_loss=False, init_from=str(phase1 / "final"))
    _, vae = build_objective(tiny_run(shards, tmp_path / "phase2", **phase2))
    ours = vae.state_dict()
    saved = AutoencoderKLWan.from_pretrained(phase1 / "final").state_dict()
    assert saved.keys() == ours.keys() and all(torch.equal(ours[k], v) for k, v in saved.items())
    assert any(p.any() for n, p in vae.named_parameters() if n.endswith("bias"))  # trained, not re-initialised
    with pytest.raises(ValueError, match=r"not the backbone of model_preset='small'.*differ in \['base_dim'"):
        build_objective(tiny_run(shards, tmp_path / "other", **phase2, model_preset="small"))


@pytest.mark.parametrize("sample_posterior", [True, False])
def test_backbone_vae_decodes_a_posterior_sample_or_its_mean(shards, tmp_path, sample_posterior):
    config = tiny_run(shards, tmp_path, task="backbone_vae", use_ar_loss=False, vae_sample_posterior=sample_posterior)
    objective, _ = build_objective(config)
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    losses = [objective(video, generator=torch.Generator().manual_seed(seed)).loss for seed in (0, 1)]
    assert (losses[0] != losses[1]) == sample_posterior  # the mean needs no noise: same loss whatever the seed
    losses[0].backward()
    assert all(p.grad is not None for p in objective.parameters())


def test_validation_logs_psnr_per_causal_chunk(shards, tmp_path):
    validation = {"data_files": [str(shards / "val" / "*.tar")], "num_frames": [9], "resolutions": [[64, 64]],
                  "batch_size": 2, "shuffle_buffer": 1}
    out = tmp_path / "run"
    train(tiny_run(shards, out, task="backbone_vae", use_ar_loss=False, max_train_steps=1, validation_steps=1,
                   validation_data=validation, num_validation_batches=1))
    (record,) = [r for r in read_log(out) if "val/psnr" in r]
    assert record["val/clips"] == 2
    assert all(math.isfinite(record[f"val/psnr_frames_{k}"]) for k in ("0", "1-4", "5-8"))


def test_trainable_parameters_are_lora_and_quantizer_only(shards, tmp_path):
    objective, model = build_objective(tiny_run(shards, tmp_path))
    trainable = {n for n, p in objective.named_parameters() if p.requires_grad}
    assert trainable and all(
        "lora_" in n or n.startswith("model.core.quantizer.") or n.startswith("ar_head.") for n in trainable
    ), sorted(trainable)[:5]
    assert not any(n.startswith("ar_head.language_model") for n in trainable)
    assert not any("lpips" in k or "language_model" in k for k in objective.state_dict())


def test_a_run_from_a_saved_checkpoint_keeps_its_backbone_frozen(shards, tmp_path):
    # transformers' from_pretrained materialises weights as fresh parameters (requires_grad=True): an `init_from`
    # fine-tune trained all of the backbone (60 steps at 3e-5 cost the CPU default 1.2 dB) until it was re-frozen.
    objective, model = build_objective(tiny_run(shards, tmp_path / "fresh"))
    model.save_pretrained(tmp_path / "saved")
    fresh = {n for n, p in objective.named_parameters() if p.requires_grad}
    AcceleratorState._reset_state(True)
    run = tiny_run(shards, tmp_path / "run", init_from=str(tmp_path / "saved"), max_train_steps=2)
    loaded, _ = build_objective(run)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == fresh
    assert any("lora_" in n for n in fresh)  # the adapters train; the Wan weights under them do not
    summary = train(run)
    before = load_file(tmp_path / "saved" / "model.safetensors")
    after = load_file(Path(summary["final"]) / "model.safetensors")
    backbone = [k for k in before if k.startswith("core.backbone.") and "lora_" not in k]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("core.quantizer."))


def test_init_from_applies_the_recipes_model_overrides_and_refuses_another_architecture(shards, tmp_path):
    _, model = build_objective(tiny_run(shards, tmp_path / "fresh"))
    model.save_pretrained(tmp_path / "saved")
    AcceleratorState._reset_state(True)
    start = {"init_from": str(tmp_path / "saved")}
    _, loaded = build_objective(tiny_run(shards, tmp_path / "a", **start, model_overrides={"text_dropout": 1.0}))
    assert loaded.config.text_dropout == 1.0 and model.config.text_dropout != 1.0  # not silently the checkpoint's
    with pytest.raises(ValueError, match="does not match the model built from its config"):
        build_objective(tiny_run(shards, tmp_path / "b", **start, model_overrides={"codebook_dim": 8}))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_parse(recipe):
    config = TrainConfig.from_yaml(recipe)
    assert config.data["num_frames"] and all((t - 1) % 4 == 0 for t in config.data["num_frames"])


def test_overrides_and_bad_fields():
    assert parse_overrides(["--data.batch_size", "4", "--seed=3", "--report_to", "[tensorboard]"]) == {
        "data.batch_size": 4,
        "seed": 3,
        "report_to": ["tensorboard"],
    }
    recipe = RECIPES[0]
    config = TrainConfig.from_yaml(recipe, ["--data.batch_size", "4", "--max_train_steps", "7"])
    assert config.data["batch_size"] == 4 and config.max_train_steps == 7
    bad_overrides = {  # override → what the error must name
        ("--learnig_rate", "1"): "unknown training config fields",
        ("--max_train_steps", "0"): "max_train_steps",
        ("--num_validation_batches", "null"): "num_validation_batches",  # would validate forever
        ("--num_validation_batches", "0"): "num_validation_batches",
        ("--task", "gan"): "task",
        ("--lr_scaling", "sqrt"): "lr_scaling",
        ("--fan_in_lr", "0"): "fan_in_lr",
        ("--backbone_init", "orthogonal"): "backbone_init",
        ("--task", "pyratok", "--backbone_init", "zero_bias_residual"): "only applies to task='backbone_vae'",
        ("--task", "backbone_vae", "--backbone_init", "zero_bias_residual", "--init_from", "out/a/final"):
            "exclude each other",
    }
    for override, message in bad_overrides.items():
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_yaml(recipe, list(override))
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_yaml("nope.yaml")
    with pytest.raises(ValueError, match="--key value"):
        parse_overrides(["batch_size", "3"])


def test_exponent_floats_without_a_dot_are_floats_in_recipes_and_overrides(tmp_path):
    # PyYAML follows YAML 1.1, where `1e-4` is the string "1e-4"; it reached AdamW as a string and failed as a
    # TypeError on `str <= int`.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {data_files: [shards/*.tar]}\nlearning_rate: 2e-4\nvae_kl_weight: 1E-6\n")
    config = TrainConfig.from_yaml(recipe)
    assert (config.learning_rate, config.vae_kl_weight) == (2e-4, 1e-6)
    overrides = ["--learning_rate", "1e-4", "--fan_in_lr=3E-2", "--adam_epsilon", "-1e-9"]
    config = TrainConfig.from_yaml(RECIPES[0], overrides)
    assert (config.learning_rate, config.fan_in_lr, config.adam_epsilon) == (1e-4, 3e-2, -1e-9)
    assert parse_overrides(["--output_dir", "1e", "--seed", "7"]) == {"output_dir": "1e", "seed": 7}


def test_fields_of_the_wrong_type_are_named():
    recipe = RECIPES[0]
    with pytest.raises(ValueError, match=r"learning_rate='fast' \(expected float\)"):
        TrainConfig.from_yaml(recipe, ["--learning_rate", "fast"])
    with pytest.raises(ValueError, match=r"max_train_steps=2.5 \(expected int\)"):
        TrainConfig.from_yaml(recipe, ["--max_train_steps", "2.5"])
    with pytest.raises(ValueError, match="progress_bar='sometimes'"):
        TrainConfig.from_yaml(recipe, ["--progress_bar", "sometimes"])
    with pytest.raises(ValueError, match="seed=True"):  # a bool is an int in Python, not a seed
        TrainConfig.from_yaml(recipe, ["--seed", "true"])
    config = TrainConfig.from_yaml(recipe, ["--learning_rate", "1", "--checkpoints_total_limit", "null"])
    assert config.learning_rate == 1 and config.checkpoints_total_limit is None  # an int is a valid float
