"""What the reports and files users read promise, pinned to values computed independently (issue 26): every field of
`pyratok reconstruct`'s metrics.json, the held-out scorer (SSIM data range included), the reconstruction report's
per-clip values and means, and both directions of retrieval recall."""

import json
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import pyratok.evaluation.reconstruction as reconstruction_eval
import pyratok.evaluation.retrieval as retrieval_eval
from modeling_pyratok import PyraTokModel
from pyratok import cli
from pyratok.quality import clip_scores, code_usage, lpips_or_reason
from pyratok.training.heldout import evaluate_reconstruction, psnr_by_chunk
from pyratok.video_io import read_video, video_to_tensor, write_video
from tests.conftest import activate_text_attention, make_video, tiny_config

PROMPT = "a red square drifts to the right"


def psnr_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR (dB) of two arrays in [-1, 1] (data range 2), float64."""
    mse = ((x.double() - y.double()) ** 2).mean().item()
    return 10 * math.log10(4.0 / mse)


def ssim_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """skimage SSIM of two `(3, H, W)` frames in [-1, 1], scored as the [0, 2] images they encode (data range 2)."""
    return float(structural_similarity((x + 1).double().numpy(), (y + 1).double().numpy(), data_range=2.0,
                                       channel_axis=0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def usage_by_hand(ids: list[torch.Tensor], codebook_size: int) -> dict:
    values = torch.cat([i.flatten() for i in ids]).tolist()
    counts = np.array(list(Counter(values).values()), dtype=np.float64)
    share = counts / counts.sum()
    return {"tokens": len(values), "distinct_codes": len(counts), "codebook_fraction": len(counts) / codebook_size,
            "perplexity": float(np.exp(-(share * np.log(share)).sum()))}


def noisy(video: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (video + scale * torch.randn(video.shape, generator=g)).clamp(-1, 1)


# ------------------------------------------------------------------------------------------------ held-out scorer


def test_clip_scores_are_per_clip_means_of_per_frame_psnr_and_ssim_at_data_range_2():
    target = make_video(batch=2, frames=3, size=32, seed=2)
    recon = torch.stack([noisy(target[0], 0.05, 0), noisy(target[1], 0.4, 1)])
    scores = clip_scores(recon, target)
    assert scores["lpips"] == [None, None]
    for b in range(2):
        frames = range(target.shape[2])
        psnr = np.mean([psnr_by_hand(recon[b, :, t], target[b, :, t]) for t in frames])
        ssim = np.mean([ssim_by_hand(recon[b, :, t], target[b, :, t]) for t in frames])
        assert scores["psnr"][b] == pytest.approx(psnr, rel=1e-5)
        assert scores["ssim"][b] == pytest.approx(ssim, rel=1e-4, abs=1e-5)
    assert scores["psnr"][0] > scores["psnr"][1] + 5  # the two clips are told apart, not averaged together


def test_code_usage_and_psnr_by_chunk_by_hand():
    ids = [torch.tensor([[0, 3, 3], [3, 5, 0]]), torch.tensor([7, 3])]
    assert code_usage(ids, 16) == pytest.approx(usage_by_hand(ids, 16))
    # {0: 2, 3: 4, 5: 1, 7: 1} of 8 tokens
    shares = [2 / 8, 4 / 8, 1 / 8, 1 / 8]
    assert code_usage(ids, 16)["perplexity"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in shares)))
    # frame MSE sums over clips, clip counts per frame; chunk 2 → frame 0, frames 1-2, frames 3-4
    squared = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.0], dtype=torch.float64)
    counts = torch.tensor([2, 2, 2, 1, 1], dtype=torch.float64)
    out = psnr_by_chunk(squared, counts, 2)
    assert out == pytest.approx({
        "psnr_frames_0": 10 * math.log10(4 / 0.2),
        "psnr_frames_1-2": 10 * math.log10(4 / (0.4 / 4)),
        "psnr_frames_3-4": 10 * math.log10(4 / (0.2 / 2)),
    })


class HalfwayVAE(torch.nn.Module):
    """A stand-in diffusers VAE whose "reconstruction" is the clip pulled halfway to grey and shifted."""

    config = SimpleNamespace(temperal_downsample=[False, True])  # one temporal downsampling → chunks of 2 frames

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, sample_posterior: bool = False) -> SimpleNamespace:
        return SimpleNamespace(sample=0.5 * x + 0.1 + self.weight)


def test_heldout_evaluation_means_over_clips_and_pools_frame_errors_by_chunk():
    clips = [make_video(batch=2, frames=5, size=16, seed=s) for s in (0, 1)]
    batches = [{"pixel_values": c, "captions": [None, None]} for c in clips]
    metrics = evaluate_reconstruction(HalfwayVAE(), batches, None, torch.device("cpu"))
    videos = torch.cat(clips)  # 4 clips
    recons = 0.5 * videos + 0.1
    assert metrics["clips"] == 4
    per_clip = [np.mean([psnr_by_hand(r[:, t], v[:, t]) for t in range(5)]) for r, v in zip(recons, videos,
                                                                                            strict=True)]
    assert metrics["psnr"] == pytest.approx(np.mean(per_clip), rel=1e-5)
    assert "ssim" in metrics and -1 <= metrics["ssim"] <= 1

    def chroma(v: torch.Tensor) -> float:
        return (v - v.mean(1, keepdim=True)).abs().mean().item()

    assert metrics["chroma"] == pytest.approx(chroma(recons.clamp(-1, 1)), rel=1e-5)
    assert metrics["data_chroma"] == pytest.approx(chroma(videos), rel=1e-5)
    frame_mse = ((recons - videos) ** 2).mean(dim=(1, 3, 4)).double()  # (clips, T)
    for name, frames in (("psnr_frames_0", [0]), ("psnr_frames_1-2", [1, 2]), ("psnr_frames_3-4", [3, 4])):
        assert metrics[name] == pytest.approx(10 * math.log10(4 / frame_mse[:, frames].mean().item()), rel=1e-5)


# ----------------------------------------------------------------------------------------------- reconstruction report


class FakeReader:
    """Two clips of different sizes, the second without caption, in place of `ClipReader` (no shards needed)."""

    def __init__(self, *args, **kwargs) -> None:
        self.stats = SimpleNamespace(skipped=0, as_dict=lambda: {"skipped_keys": {"bad": "unreadable"}})
        self.clips = [
            SimpleNamespace(key="a", caption=PROMPT, video=make_video(frames=5, size=64, seed=3)[0]),
            SimpleNamespace(key="b", caption=" ", video=make_video(frames=9, size=64, seed=4)[0]),
        ]

    def __iter__(self):
        return iter(self.clips)


def test_reconstruction_report_fields_by_hand(monkeypatch, one_thread):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    activate_text_attention(model)
    monkeypatch.setattr(reconstruction_eval, "ClipReader", FakeReader)
    report = reconstruction_eval.evaluate_reconstruction(model, "unused", lpips_net=None)
    size = 2**model.config.codebook_dim
    rows, level_ids, bpps, tokens = [], None, [], []
    for clip in FakeReader().clips:
        x = clip.video[None]
        with torch.no_grad():  # the caption conditions the tokens; a blank one means no text
            out = model(x, text=clip.caption if clip.caption.strip() else None, return_loss=False)
        recon = out.reconstruction.clamp(-1, 1)[0]
        frames = range(x.shape[2])
        rows.append({
            "key": clip.key, "num_frames": x.shape[2], "height": 64, "width": 64,
            "psnr": np.mean([psnr_by_hand(recon[:, t], x[0, :, t]) for t in frames]),
            "ssim": np.mean([ssim_by_hand(recon[:, t], x[0, :, t]) for t in frames]), "lpips": None,
        })
        level_ids = [[] for _ in out.ids] if level_ids is None else level_ids
        for store, ids in zip(level_ids, out.ids, strict=True):
            store.append(ids)
        latent_t = (x.shape[2] - 1) // 4 + 1
        level_tokens = [latent_t * (8 // s) ** 2 for s in model.config.level_spatial_strides]  # 64 px / 8 = 8
        tokens.append(sum(level_tokens))
        bpps.append(sum(level_tokens) * model.config.codebook_dim / (x.shape[2] * 64 * 64))
    assert report["num_clips"] == 2 and report["skipped"] == {"bad": "unreadable"}
    assert report["prompt_from_caption"] is True and report["codebook_size"] == size
    assert report["lpips"] is None and report["lpips_net"] is None and "disabled" in report["lpips_unavailable_reason"]
    for got, want in zip(report["clips"], rows, strict=True):
        # Object-fidelity fields are checked by hand in test_eval_objects.py; these clips have no object masks.
        assert set(got) - set(want) == {"objects", "object_rows"}
        assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert report["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]), rel=1e-5)
    assert report["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rows]), rel=1e-4)
    assert report["tokens_per_clip"] == np.mean(tokens)
    assert report["bits_per_pixel"] == pytest.approx(np.mean(bpps))
    assert [u["level"] for u in report["code_usage"]] == list(range(1, len(level_ids) + 1))
    for got, ids in zip(report["code_usage"], level_ids, strict=True):
        assert {k: v for k, v in got.items() if k != "level"} == pytest.approx(usage_by_hand(ids, size))


# ------------------------------------------------------------------------------------------------ retrieval


def test_retrieval_reports_each_direction_from_its_own_axis(monkeypatch):
    # similarity[text i, video j]: text→video ranks rows, video→text ranks columns.
    #   text→video R@1: rows 0, 1, 2 all peak on their diagonal → 1;
    #   video→text R@1: column 1 peaks at text 0 (0.95 > 0.5) → 2/3.
    similarity = torch.tensor([[1.0, 0.95, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.8]])
    videos = iter(similarity.t())  # video j's embedding: column j, so text_i · video_j = similarity[i, j]
    clips = [SimpleNamespace(key=k, caption=f"caption {k}", video=torch.zeros(3, 1, 8, 8)) for k in "abc"]
    stats = SimpleNamespace(as_dict=lambda: {"skipped_keys": {}})
    monkeypatch.setattr(retrieval_eval, "ClipReader", lambda *args, **kwargs: ListReader(clips, stats))
    monkeypatch.setattr(retrieval_eval, "_core", lambda model: None)
    monkeypatch.setattr(retrieval_eval, "clip_embedding", lambda model, video: next(videos)[None])
    monkeypatch.setattr(retrieval_eval, "text_embeddings", lambda model, captions: torch.eye(3))
    report = retrieval_eval.evaluate_retrieval(torch.nn.Linear(1, 1), "unused", ks=(1, 2, 5))
    assert report["ks"] == [1, 2] and report["ks_skipped"] == [5]
    assert report["text_to_video"] == pytest.approx({"R@1": 1.0, "R@2": 1.0})
    assert report["video_to_text"] == pytest.approx({"R@1": 2 / 3, "R@2": 1.0})
    assert report["chance"] == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3})
    assert report["keys"] == ["a", "b", "c"] and report["num_clips"] == 3


class ListReader:
    """A `ClipReader` stand-in over a list of clips."""

    def __init__(self, clips, stats) -> None:
        self.clips, self.stats = clips, stats

    def __iter__(self):
        return iter(self.clips)


# ------------------------------------------------------------------------------------------------ pyratok reconstruct


def test_reconstruct_metrics_json_every_field_by_hand(tmp_path, monkeypatch, one_thread):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    activate_text_attention(model)
    model.save_pretrained(tmp_path / "model")
    write_video(tmp_path / "clip.mp4", make_video(frames=9, size=64, seed=5)[0], fps=8)
    written = {}
    monkeypatch.setattr(cli, "write_video", lambda path, frames, fps=8.0, crf=12: written.setdefault(
        str(path).rsplit("/", 1)[-1], np.array(frames)))
    out = tmp_path / "rec"
    code = cli.main(["reconstruct", str(tmp_path / "clip.mp4"), "--prompt", PROMPT, "--model",
                     str(tmp_path / "model"), "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())

    frames, fps = read_video(tmp_path / "clip.mp4")
    x = video_to_tensor(frames)[None]  # (1, 3, 9, 64, 64): exactly what the command scores against
    loaded = PyraTokModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        whole = loaded(x, text=PROMPT, return_loss=False)
    recon = whole.reconstruction[0]
    psnr = np.mean([psnr_by_hand(recon[:, t], x[0, :, t]) for t in range(9)])
    ssim = np.mean([ssim_by_hand(recon[:, t], x[0, :, t]) for t in range(9)])
    assert metrics["psnr"] == pytest.approx(psnr, rel=1e-4)
    assert metrics["ssim"] == pytest.approx(ssim, rel=1e-3, abs=1e-4)
    lpips_module, reason = lpips_or_reason("alex")
    if lpips_module is None:
        assert metrics["lpips"] is None and metrics["lpips_unavailable_reason"] == reason and "LPIPS" in reason
    else:
        frames_x = recon.transpose(0, 1)
        expected = lpips_module(frames_x, x[0].transpose(0, 1)).flatten().mean().item()
        assert metrics["lpips"] == pytest.approx(expected, rel=1e-3) and metrics["lpips_unavailable_reason"] is None
    # 9 frames → 3 latent frames of 8x8; levels at strides 1, 2, 4, 8
    level_tokens = [3 * (8 // s) ** 2 for s in loaded.config.level_spatial_strides]
    assert metrics["bits_per_pixel"] == pytest.approx(sum(level_tokens) * loaded.config.codebook_dim / (9 * 64 * 64))
    assert (metrics["frames"], metrics["height"], metrics["width"]) == (9, 64, 64)
    assert metrics["fps"] == pytest.approx(fps) and metrics["latent_size"] == [3, 8, 8]
    assert metrics["source_size"] == [9, 64, 64] and metrics["prompt"] == PROMPT
    size = 2**loaded.config.codebook_dim
    assert [lv["level"] for lv in metrics["levels"]] == list(range(len(level_tokens)))
    for level, ids, tokens in zip(metrics["levels"], whole.ids, level_tokens, strict=True):
        assert level["tokens"] == tokens
        assert {k: v for k, v in level.items() if k != "level"} == pytest.approx(usage_by_hand([ids], size))


class PlainVAE(HalfwayVAE):
    """The same stand-in with a config that states no temporal factor."""

    config = SimpleNamespace()


def test_heldout_evaluation_leaves_out_chunk_psnr_without_a_temporal_factor():
    batches = [{"pixel_values": make_video(batch=1, frames=5, size=16), "captions": [None]}]
    metrics = evaluate_reconstruction(PlainVAE(), batches, None, torch.device("cpu"))
    assert sorted(metrics) == ["chroma", "clips", "data_chroma", "psnr", "ssim"]
