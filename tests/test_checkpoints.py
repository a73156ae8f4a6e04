"""Save/load: exact round trips in both classes and across them, clear errors on mismatch, Hub-style loading."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
from tests.conftest import activate_text_attention

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def trained_like_model(tiny_model):
    # Non-default weights everywhere that matters, so a loader that re-initialises anything is caught.
    activate_text_attention(tiny_model, seed=3)
    with torch.no_grad():
        for name, p in tiny_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return tiny_model


def test_pyratok_model_roundtrip_is_exact(trained_like_model, video, tmp_path):
    trained_like_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = PyraTokModel.from_pretrained(tmp_path).eval()
    assert_same_state(trained_like_model, loaded)
    assert loaded.config.to_init_kwargs() == trained_like_model.config.to_init_kwargs()
    a = trained_like_model.tokenize(video, text="a cat").ids
    b = loaded.tokenize(video, text="a cat").ids
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_autoencoder_roundtrip_is_exact(tiny_vae, video, tmp_path):
    activate_text_attention(tiny_vae)
    tiny_vae.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = AutoencoderPyraTok.from_pretrained(tmp_path).eval()
    assert_same_state(tiny_vae, loaded)
    fields = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert fields(loaded.config) == fields(tiny_vae.config)
    assert torch.equal(tiny_vae.encode(video).latent_dist.mode(), loaded.encode(video).latent_dist.mode())


def test_checkpoints_cross_load_between_the_two_classes(trained_like_model, video, tmp_path):
    trained_like_model.save_pretrained(tmp_path / "hf")
    vae = AutoencoderPyraTok.from_pretrained(tmp_path / "hf").eval()
    assert_same_state(trained_like_model, vae)
    assert vae.config.z_dim == 4 and vae.config.latents_mean == [0.0] * 4
    ids_model = trained_like_model.tokenize(video, text="a cat").ids
    ids_vae = vae.encode_to_ids(video, text="a cat")
    assert all(torch.equal(x, y) for x, y in zip(ids_model, ids_vae))

    vae.save_pretrained(tmp_path / "diffusers")
    back = PyraTokModel.from_pretrained(tmp_path / "diffusers")
    assert_same_state(trained_like_model, back)


def test_config_weight_mismatch_names_the_keys(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape mismatch"):
        PyraTokModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="shape mismatch"):
        AutoencoderPyraTok.from_pretrained(tmp_path)


def test_missing_weight_is_an_error_not_a_random_init(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if "quantizer" in k)
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing"):
        PyraTokModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing"):
        AutoencoderPyraTok.from_pretrained(tmp_path)


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        PyraTokModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        AutoencoderPyraTok.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        PyraTokModel.from_pretrained(tmp_path / "empty")


def test_remote_code_folder_loads_with_automodel(trained_like_model, video, tmp_path):
    """`AutoModel.from_pretrained(folder, trust_remote_code=True)` in a fresh process that never imports us."""
    export = tmp_path / "export"
    trained_like_model.save_pretrained(export)
    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_pyratok.PyraTokModel"
    assert {"modeling_pyratok.py", "configuration_pyratok.py", "quantizer_pyratok.py"} <= set(os.listdir(export))
    torch.save({"video": video, "ids": trained_like_model.tokenize(video).ids}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        model = AutoModel.from_pretrained({str(export)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert "modeling_pyratok" not in sys.modules
        ids = model.tokenize(ref["video"]).ids
        assert all(torch.equal(a, b) for a, b in zip(ids, ref["ids"])), "ids differ"
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_hub_id_resolves_through_an_offline_hf_cache(trained_like_model, video, tmp_path):
    """The literal `PyraTokModel.from_pretrained("plan-lab/pyratok")` a user types, served from a laid-out cache."""
    export = tmp_path / "export"
    trained_like_model.save_pretrained(export)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--plan-lab--pyratok"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in export.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    expected = trained_like_model.tokenize(video).ids
    torch.save({"video": video, "ids": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        model = PyraTokModel.from_pretrained("plan-lab/pyratok")
        ids = model.tokenize(ref["video"]).ids
        assert all(torch.equal(a, b) for a, b in zip(ids, ref["ids"])), "ids differ"
        vae = AutoencoderPyraTok.from_pretrained("plan-lab/pyratok")
        assert all(torch.equal(a, b) for a, b in zip(vae.encode_to_ids(ref["video"]), ref["ids"]))
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_pretrained_backbone_weights_load_into_the_frozen_backbone(tmp_path, video):
    from diffusers import AutoencoderKLWan

    from tests.conftest import tiny_config

    config = tiny_config()
    torch.manual_seed(7)
    wan = AutoencoderKLWan(**config.backbone_config)
    wan.save_pretrained(tmp_path / "vae")
    torch.manual_seed(0)
    model = PyraTokModel(config)
    model.load_pretrained_backbone(str(tmp_path), subfolder="vae")
    with torch.no_grad():
        expected = wan.encode(video).latent_dist.mean
        got = model.core.backbone.encode_features(video).moments[:, :4]
    assert torch.equal(expected, got)

    wrong = AutoencoderKLWan(**{**config.backbone_config, "base_dim": 16})
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(ValueError, match="base_dim"):
        model.load_pretrained_backbone(str(tmp_path / "wrong"), subfolder="")


def test_backbone_loads_from_another_pyratok_checkpoint(tmp_path, video):
    from tests.conftest import tiny_config

    torch.manual_seed(7)
    donor = PyraTokModel(tiny_config())
    donor.save_pretrained(tmp_path / "donor")
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config())
    model.load_pretrained_backbone(str(tmp_path / "donor"), subfolder="")
    with torch.no_grad():
        expected = donor.core.backbone.encode_features(video).moments
        got = model.core.backbone.encode_features(video).moments
    assert torch.equal(expected, got)
    # Only the frozen backbone is copied: the new model's own LaPQ stays as initialised.
    pairs = zip(donor.core.quantizer.parameters(), model.core.quantizer.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    # A checkpoint in a subfolder is found there, as for a diffusers VAE.
    fresh = PyraTokModel(tiny_config())
    fresh.load_pretrained_backbone(str(tmp_path), subfolder="donor")
    with torch.no_grad():
        assert torch.equal(fresh.core.backbone.encode_features(video).moments, expected)

    PyraTokModel(tiny_config(backbone_config={**tiny_config().backbone_config, "z_dim": 8,
                                              "latents_mean": [0.0] * 8, "latents_std": [1.0] * 8})
                 ).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="z_dim"):
        model.load_pretrained_backbone(str(tmp_path / "other"), subfolder="")


def test_save_pretrained_writes_a_model_card_and_push_uploads_it(tiny_model, tmp_path, monkeypatch):
    tiny_model.save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert card.startswith("---") and "library_name: transformers" in card and "16 bits (65536 codes)" in card

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=True):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded.update(repo=repo_id, files=sorted(os.listdir(folder_path)))
            return "commit"

    monkeypatch.setattr("modeling_pyratok.modeling_pyratok.HfApi", FakeApi)
    assert tiny_model.push_to_hub("someone/pyratok-tiny") == "commit"
    assert uploaded["repo"] == "someone/pyratok-tiny"
    assert {"README.md", "config.json", "model.safetensors", "modeling_pyratok.py"} <= set(uploaded["files"])
