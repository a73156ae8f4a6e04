"""training/train_prior.py: token stream arithmetic, exact resume, tokenizer checks, the saved prior and its card."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_pyratok import (
    PyraTokConfig,
    PyraTokMaskedPrior,
    PyraTokMaskedPriorConfig,
    PyraTokModel,
    prior_from_pretrained,
)
from pyratok.token_datasets import load_token_dataset, tokenize_dataset
from pyratok.training.make_shards import _tar_add
from pyratok.training.prior_config import PriorTrainConfig
from pyratok.training.token_stream import TokenBatchStream
from pyratok.training.train import list_checkpoints
from pyratok.training.train_prior import PriorObjective, train_prior, validation_loss
from pyratok.video_io import encode_video
from tests.conftest import activate_text_attention, make_video

CAPTIONS = ["a red square jumps", "a blue circle spins", "a green star falls", "a grey cross grows",
            "an orange ring moves left", "a pink diamond moves up"]
PRIOR = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "factorized_bits": None}


# ---- the token stream -----------------------------------------------------------------------------------------------
def test_stream_visits_every_row_once_per_epoch_and_ranks_are_disjoint():
    ids = torch.arange(10)[:, None].repeat(1, 3)
    keys = [f"k{i}" for i in range(10)]
    seen = {}
    for rank in range(2):
        stream = TokenBatchStream(ids, keys, keys, batch_size=5, seed=3, rank=rank, world_size=2)
        seen[rank] = next(stream)["keys"]
        assert torch.equal(next(stream)["input_ids"][:, 0], torch.tensor([int(k[1:]) for k in next_epoch(3, rank)]))
    assert sorted(seen[0] + seen[1]) == sorted(keys)  # one epoch, split in two disjoint halves
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1_000_003))
    assert seen[0] == [f"k{i}" for i in expected[0::2].tolist()]


def next_epoch(seed: int, rank: int) -> list[str]:
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed * 1_000_003 + 1))[rank::2]
    return [f"k{i}" for i in order.tolist()]


def test_stream_state_resumes_mid_epoch_and_refuses_another_world_size():
    ids = torch.arange(7)[:, None]
    keys = [str(i) for i in range(7)]
    straight = TokenBatchStream(ids, keys, keys, batch_size=3, seed=1)
    batches = [next(straight)["keys"] for _ in range(5)]
    first = TokenBatchStream(ids, keys, keys, batch_size=3, seed=1)
    next(first), next(first)
    resumed = TokenBatchStream(ids, keys, keys, batch_size=3, seed=1)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [next(resumed)["keys"] for _ in range(3)] == batches[2:]
    assert resumed.stats["epochs_started"] == 3  # 15 rows drawn from 7-row epochs
    with pytest.raises(ValueError, match="same number of processes"):
        TokenBatchStream(ids, keys, keys, batch_size=3, rank=0, world_size=2).load_state_dict(first.state_dict())


# ---- training runs --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_root(tmp_path_factory, one_thread):
    """Six captioned 5-frame clips → a tiny tokenizer's token dataset (train) and the same clips as validation."""
    root = tmp_path_factory.mktemp("prior")
    (root / "shards").mkdir()
    with tarfile.open(root / "shards" / "s0.tar", "w") as tar:
        for i, caption in enumerate(CAPTIONS):
            clip = make_video(frames=5, size=64, seed=i)[0]
            frames = ((clip.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            _tar_add(tar, f"clip-{i}.mp4", encode_video(frames))
            _tar_add(tar, f"clip-{i}.json", json.dumps({"caption": caption}).encode())
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()
    activate_text_attention(model)
    model.save_pretrained(root / "tokenizer")
    kw = dict(num_frames=5, height=64, width=64, batch_size=3, progress=False)
    tokenize_dataset(str(root / "shards"), root / "tokens", model, str(root / "tokenizer"), **kw)
    return root


def config_for(root: Path, out: str, **fields) -> PriorTrainConfig:
    raw = {
        "prior_type": "masked",
        "prior_overrides": {k: v for k, v in PRIOR.items() if v is not None},
        "train_data": str(root / "tokens"),
        "validation_data": str(root / "tokens"),
        "batch_size": 3,
        "max_train_steps": 6,
        "learning_rate": 3e-3,
        "lr_warmup_steps": 2,
        "lr_scheduler": "cosine",
        "checkpointing_steps": 3,
        "checkpoints_total_limit": 5,
        "logging_steps": 1,
        "output_dir": str(root / out),
        "progress_bar": False,
        **fields,
    }
    return PriorTrainConfig.from_dict(raw)


def codebook_fields(tokenizer_dir: Path) -> dict:
    # The tiny tokenizer's codebook is small: the prior's factorised heads must split its bits.
    dim = PyraTokConfig.from_pretrained(tokenizer_dir).codebook_dim
    return {"factorized_bits": [dim // 2, dim - dim // 2]}


@pytest.fixture(scope="module")
def straight_run(token_root):
    config = config_for(token_root, "straight")
    config.prior_overrides.update(codebook_fields(token_root / "tokenizer"))
    return config, train_prior(config)


def test_resume_from_a_copied_checkpoint_reproduces_the_uninterrupted_run(token_root, straight_run):
    config, summary = straight_run
    assert summary["steps"] == 6 and [p.name for p in list_checkpoints(config.output_dir)] == [
        "checkpoint-3", "checkpoint-6"]
    # The interrupted run: the uninterrupted run's step-3 checkpoint (same schedule length), resumed with `latest`.
    resumed_dir = token_root / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(Path(config.output_dir) / "checkpoint-3", resumed_dir / "checkpoint-3")
    resumed = config_for(token_root, "resumed", resume_from_checkpoint="latest")
    resumed.prior_overrides.update(codebook_fields(token_root / "tokenizer"))
    assert train_prior(resumed)["steps"] == 6
    a = load_file(Path(config.output_dir) / "final" / "model.safetensors")
    b = load_file(resumed_dir / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # A resumed run with another learning rate would silently keep the checkpoint's: refused, naming the field.
    again = config_for(token_root, "resumed", resume_from_checkpoint="latest", learning_rate=1e-2)
    again.prior_overrides.update(codebook_fields(token_root / "tokenizer"))
    with pytest.raises(ValueError, match="learning_rate"):
        train_prior(again)


def test_saved_prior_records_its_tokenizer_and_its_card_the_run(token_root, straight_run):
    config, summary = straight_run
    final = Path(config.output_dir) / "final"
    prior = prior_from_pretrained(final)
    assert isinstance(prior, PyraTokMaskedPrior)
    tokenizer = PyraTokModel.from_pretrained(token_root / "tokenizer")
    from pyratok.cli import model_fingerprint

    assert prior.config.tokenizer_fingerprint == model_fingerprint(tokenizer)
    assert prior.config.layout == tokenizer.token_layout(5, 64, 64)
    card = (final / "README.md").read_text()
    assert card.count("## Training and evaluation") == 1 and "6 steps" in card and "6 token sequences" in card
    # The reported validation loss is the final prior's loss on the validation rows, recomputed here.
    from modeling_pyratok.text_encoder_pyratok import PyraTokTextEncoder

    encoder = PyraTokTextEncoder.from_name_or_path(tokenizer.config.text_encoder_name_or_path,
                                                   tokenizer.config.text_max_length)
    rows = load_token_dataset(token_root / "tokens")
    ids = torch.tensor(rows["input_ids"])
    recomputed = validation_loss(PriorObjective(prior, encoder), ids, list(rows["caption"]), config,
                                 torch.device("cpu"))
    assert summary["validation"]["loss"] == pytest.approx(recomputed["loss"], rel=1e-5)
    logs = [json.loads(line) for line in (Path(config.output_dir) / "logs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_refuses_a_tokenizer_that_did_not_write_the_tokens(token_root):
    torch.manual_seed(1)
    other = PyraTokModel(PyraTokConfig.from_preset("tiny"))
    other.save_pretrained(token_root / "other-tokenizer")
    config = config_for(token_root, "other", tokenizer=str(token_root / "other-tokenizer"))
    with pytest.raises(ValueError, match="fingerprint"):
        train_prior(config)


def test_init_from_must_be_the_recipes_prior_type_and_layout(token_root, straight_run):
    config, _ = straight_run
    ar = config_for(token_root, "init-ar", prior_type="ar", init_from=str(Path(config.output_dir) / "final"))
    with pytest.raises(ValueError, match="PyraTokMaskedPrior"):
        train_prior(ar)


def test_recipes_parse_and_the_shipped_size_fits():
    recipes = sorted(Path("training/configs").glob("prior-*.yaml"))
    assert {p.name for p in recipes} >= {"prior-masked-tiny-cpu.yaml", "prior-ar-tiny-cpu.yaml",
                                          "prior-masked-openvid-10k.yaml"}
    layout = PyraTokModel(PyraTokConfig.from_preset("small")).token_layout(17, 64, 64)
    for path in recipes:
        config = PriorTrainConfig.from_yaml(path)
        if "tiny-cpu" not in path.name:
            continue
        cls = PyraTokMaskedPriorConfig if config.prior_type == "masked" else None
        if cls is None:
            from modeling_pyratok import PyraTokARPriorConfig as cls
        from pyratok.training.train_prior import PRIOR_CLASSES

        model = PRIOR_CLASSES[config.prior_type][1](cls(token_layout=layout.to_dict(), **config.prior_overrides))
        megabytes = sum(p.numel() for p in model.parameters()) * 4 / 2**20
        assert megabytes < 20, f"{path.name}: {megabytes:.1f} MB"
