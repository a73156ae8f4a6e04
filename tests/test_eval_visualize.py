"""PNG figures of evaluation/visualize.py: every figure type, with matplotlib and with the PIL fallback."""

import argparse
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

import pyratok.evaluation.visualize as vz
from modeling_pyratok import PyraTokModel
from pyratok.training.make_shards import make_shards
from tests.conftest import make_video, tiny_config

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
RENDERERS = [pytest.param(True, marks=pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed"),
                          id="matplotlib"), pytest.param(False, id="pil")]


@pytest.fixture(params=RENDERERS)
def renderer(request, monkeypatch):
    monkeypatch.setattr(vz, "USE_MATPLOTLIB", request.param)
    return request.param


def _open(path) -> Image.Image:
    image = Image.open(path)
    image.verify()  # a complete, valid PNG
    image = Image.open(path)
    assert image.format == "PNG"
    return image


def _embeddings(num_latent: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(8, num_latent, s, s, generator=g), dim=0) for s in (8, 4, 2, 1)]


def test_pca_maps_one_row_per_level(tmp_path):
    video = make_video(frames=9)[0]
    path = vz.plot_pca_maps(_embeddings(), tmp_path / "pca.png", video=video, cell=32, title="a clip")
    image = _open(path)
    # Label column + 3 latent frames of 32 + 2 px; title + header + (input row + 4 levels) of 32 + 2 px.
    assert image.size == (vz.LABEL_WIDTH + 3 * 34, 2 * vz.HEADER_HEIGHT + 5 * 34)
    pixels = np.asarray(image)
    assert pixels.std() > 0  # not a blank canvas


def test_pca_rgb_is_joint_and_in_range():
    maps = vz.pca_rgb(_embeddings())
    assert [m.shape for m in maps] == [(3, 8, 8, 3), (3, 4, 4, 3), (3, 2, 2, 3), (3, 1, 1, 3)]
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps)
    with pytest.raises(ValueError, match="one d"):
        vz.pca_rgb([torch.zeros(8, 1, 2, 2), torch.zeros(4, 1, 2, 2)])


@pytest.mark.parametrize("num_clips", [2, 12])
def test_tsne_scatter(tmp_path, renderer, num_clips):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(num_clips, 16, generator=g)
    labels = [f"class {i % 3}" for i in range(num_clips)]
    image = _open(vz.plot_tsne(emb, labels, tmp_path / "tsne.png", size=(400, 300)))
    assert image.size == (400, 300)
    with pytest.raises(ValueError, match="got 1 labels for 2 embeddings"):
        vz.plot_tsne(torch.zeros(2, 4), ["a"], tmp_path / "bad.png")


def test_codebook_usage_histograms(tmp_path, renderer):
    g = torch.Generator().manual_seed(0)
    ids = [[torch.randint(0, 2**16, (1, 3, s, s), generator=g) for _ in range(2)] for s in (8, 4, 2, 1)]
    image = _open(vz.plot_codebook_usage(ids, tmp_path / "usage.png", size=(500, 400)))
    assert image.size == (500, 400)
    with pytest.raises(ValueError, match="outside \\[0, 16\\)"):
        vz.plot_codebook_usage([torch.tensor([3, 16])], tmp_path / "bad.png", codebook_size=16)


def test_reconstruction_strip(tmp_path):
    video = make_video(frames=9, size=64)[0]
    image = _open(vz.plot_reconstruction(video, video.flip(-1), tmp_path / "recon.png", max_frames=4))
    assert image.size == (vz.LABEL_WIDTH + 4 * 66, vz.HEADER_HEIGHT + 2 * 66)
    with pytest.raises(ValueError, match="differ in shape"):
        vz.plot_reconstruction(video, video[:, :5], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="must end in .png"):
        vz.plot_reconstruction(video, video, tmp_path / "recon.jpg")


def test_segmentation_overlay(tmp_path):
    video = make_video(frames=5, size=64)[0]
    masks = torch.zeros(5, 64, 64, dtype=torch.bool)
    masks[:, 10:30, 20:40] = True
    image = _open(vz.plot_segmentation_overlay(video, masks, tmp_path / "seg.png", ground_truth=masks, cell=48))
    assert image.size == (vz.LABEL_WIDTH + 5 * 50, vz.HEADER_HEIGHT + 2 * 50)
    tinted = vz.overlay_mask(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool))
    assert tinted[0, 0].tolist() == list(vz.MASK_COLOR) and tinted[0, 1].tolist() == [0, 0, 0]


def test_localization_timeline(tmp_path, renderer):
    scores = np.sin(np.linspace(0, 3, 17))
    path = vz.plot_localization_timeline(scores, tmp_path / "loc.png", fps=8.0, threshold=0.5,
                                         predicted=[[0.5, 1.25]], ground_truth=[[0.4, 1.5]],
                                         curve=np.convolve(scores, np.ones(5) / 5, "valid"), curve_window=5,
                                         title="red square jumps", size=(600, 250))
    assert _open(path).size == (600, 250)
    with pytest.raises(ValueError, match="start <= end"):
        vz.plot_localization_timeline(scores, tmp_path / "bad.png", predicted=[[2.0, 1.0]])


def test_run_writes_every_figure(tmp_path):
    data = tmp_path / "shards"
    make_shards(data, seed=0, size=64, frames=5, num_train=1, num_val=1, num_test=3, shard_size=8)
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    parser = argparse.ArgumentParser()
    for flag in ("--data", "--out"):
        parser.add_argument(flag)
    for flag in ("--max-clips", "--num-frames", "--size", "--seed"):
        parser.add_argument(flag, type=int)
    vz.add_arguments(parser)
    args = parser.parse_args(["--data", str(data / "test"), "--out", str(tmp_path / "report.json"),
                              "--cell", "32", "--loc-window", "3"])
    figures = vz.run(args, model=model)
    expected = {"pca_levels", "tsne", "codebook_usage", "reconstruction", "segmentation", "localization"}
    assert set(figures) == expected
    for path in figures.values():
        assert str(tmp_path / "report_figures") in path
        assert min(_open(path).size) > 32
