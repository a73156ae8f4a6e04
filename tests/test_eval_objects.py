"""Object fidelity (evaluation/objects.py): CIELAB and ΔE against scikit-image and published pairs, hand-made
objects, and the object fields of the reconstruction report."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab

from pyratok.evaluation.clips import ClipReader, load_vis_annotations, vis_instances
from pyratok.evaluation.objects import (
    colour_name,
    delta_e_76,
    delta_e_2000,
    object_scores,
    srgb_to_lab,
    summarize_objects,
)
from pyratok.evaluation.reconstruction import evaluate_reconstruction
from pyratok.training.make_shards import OBJECT_COLORS, make_shards


def test_srgb_to_lab_matches_skimage():
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.random((300, 3)), np.array(list(OBJECT_COLORS.values())) / 255,
                          [[0, 0, 0], [1, 1, 1], [0.01, 0.02, 0.0]]])
    # skimage rounds the CIE constants (0.008856, 7.787) and the white point: agreement to ~5e-3 in L*a*b* units.
    np.testing.assert_allclose(srgb_to_lab(rgb).numpy(), rgb2lab(rgb), atol=1e-2)
    np.testing.assert_allclose(srgb_to_lab([1.0, 1.0, 1.0]).numpy(), [100, 0, 0], atol=1e-9)


def test_delta_e_match_skimage_and_sharma_pairs():
    rng = np.random.default_rng(1)
    lab1, lab2 = rgb2lab(rng.random((400, 3))), rgb2lab(rng.random((400, 3)))
    np.testing.assert_allclose(delta_e_2000(torch.tensor(lab1), torch.tensor(lab2)).numpy(),
                               deltaE_ciede2000(lab1, lab2), atol=1e-9)
    np.testing.assert_allclose(delta_e_76(torch.tensor(lab1), torch.tensor(lab2)).numpy(),
                               deltaE_cie76(lab1, lab2), atol=1e-9)
    # Sharma, Wu & Dalal (2005), Table 1: pairs 1, 2, 7, 12 (hue wrap, achromatic) and 34 (dark).
    p1 = torch.tensor([[50, 2.6772, -79.7751], [50, 3.1571, -77.2803], [50, 0, 0], [50, 2.5, 0],
                       [2.0776, 0.0795, -1.1350]], dtype=torch.float64)
    p2 = torch.tensor([[50, 0, -82.7485], [50, 0, -82.7485], [50, -1, 2], [50, 0, -2.5],
                       [0.9033, -0.0636, -0.5514]], dtype=torch.float64)
    np.testing.assert_allclose(delta_e_2000(p1, p2).numpy(), [2.0425, 2.8615, 2.3669, 4.3065, 0.9082], atol=1e-4)
    np.testing.assert_allclose(delta_e_2000(p2, p1).numpy(), delta_e_2000(p1, p2).numpy(), atol=1e-12)


def test_colour_name_is_the_nearest_palette_entry():
    for name, rgb in OBJECT_COLORS.items():
        assert colour_name(torch.tensor(rgb) / 255) == name
    assert colour_name([0.97, 0.55, 0.1]) == "orange"


def _frame_with_square(colour, background=(128, 128, 128), size=8, frames=2):
    """(3, T, size, size) in [-1, 1] with a 2x3 object at rows 2-3, cols 3-5, and its mask (T, size, size)."""
    video = torch.tensor(background, dtype=torch.float64).view(3, 1, 1, 1).repeat(1, frames, size, size)
    mask = torch.zeros(frames, size, size, dtype=torch.bool)
    mask[:, 2:4, 3:6] = True
    video[:, mask] = torch.tensor(colour, dtype=torch.float64)[:, None]
    return video / 255 * 2 - 1, mask


def test_perfect_copy_scores_zero():
    video, mask = _frame_with_square((220, 30, 30))
    (row,) = object_scores(video, video.clone(), mask[None], labels=["red"])
    assert row["delta_e_2000"] == 0 and row["delta_e_76"] == 0 and row["psnr"] == math.inf
    assert row["pixels"] == 2 * 2 * 3
    assert row["source_name"] == row["reconstruction_name"] == "red" and row["name_survives"]
    summary = summarize_objects([row])
    assert summary["name_survival"] == 1.0 and summary["source_name_matches_label"] == 1.0
    assert summary["delta_e_2000"] == 0 and summary["skipped_empty"] == 0


def test_greyed_object_scores_high_by_hand():
    source, mask = _frame_with_square((220, 30, 30))
    greyed, _ = _frame_with_square((128, 128, 128))  # the object vanishes into the grey background
    (row,) = object_scores(source, greyed, mask[None])
    # By hand: CIE76 between red (220, 30, 30) and grey 128 through scikit-image's Lab; PSNR from the 8-bit errors.
    lab_red, lab_grey = rgb2lab(np.array([[220, 30, 30]]) / 255), rgb2lab(np.array([[128, 128, 128]]) / 255)
    assert row["delta_e_76"] == pytest.approx(float(deltaE_cie76(lab_red, lab_grey)[0]), abs=1e-2)
    assert row["delta_e_2000"] == pytest.approx(float(deltaE_ciede2000(lab_red, lab_grey)[0]), abs=1e-2)
    assert row["delta_e_2000"] > 25 and row["delta_e_76"] > 70
    mse = ((92**2 + 98**2 + 98**2) / 3) * (2 / 255) ** 2
    assert row["psnr"] == pytest.approx(10 * math.log10(4 / mse), abs=1e-9)
    assert row["source_name"] == "red" and row["reconstruction_name"] != "red" and not row["name_survives"]
    assert row["reconstruction_rgb"] == [128.0, 128.0, 128.0]


def test_empty_masks_are_skipped_and_counted():
    video, mask = _frame_with_square((30, 70, 220))
    masks = torch.stack([mask, torch.zeros_like(mask)])
    rows = object_scores(video, video, masks)
    assert rows[1] is None
    summary = summarize_objects(rows)
    assert summary["num_objects"] == 1 and summary["skipped_empty"] == 1
    assert summarize_objects([None])["delta_e_2000"] is None


def test_object_scores_reject_bad_shapes():
    video, mask = _frame_with_square((30, 70, 220))
    with pytest.raises(ValueError, match="masks must be"):
        object_scores(video, video, mask)
    with pytest.raises(ValueError, match="2 labels for 1 masks"):
        object_scores(video, video, mask[None], labels=["a", "b"])


class _StubTokenizer(torch.nn.Module):
    """Reconstruction = `fn(input)`; enough of `PyraTokModel` for `evaluate_reconstruction`."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(spatial_multiple=16, codebook_dim=4, quantizer_mode="pyramid")

    def forward(self, x, text=None, return_loss=False):
        return SimpleNamespace(reconstruction=self.fn(x), ids=[torch.zeros(1, 2, dtype=torch.long)])

    def bits_per_pixel(self, height, width, frames):
        return 0.0


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("objshards")
    make_shards(out, seed=0, size=32, frames=5, num_train=0, num_val=0, num_test=4, pan_fraction=0.25, shard_size=8)
    return out / "test"


def test_report_has_object_fields(split):
    perfect = evaluate_reconstruction(_StubTokenizer(lambda x: x), split, lpips_net=None)
    vis = load_vis_annotations(split / "annotations_vis.json")
    expected = sum(len(v) for v in vis["annotations_by_video"].values())
    assert perfect["objects"]["num_objects"] == expected > 0
    assert perfect["object_delta_e"] == 0 and perfect["object_name_survival"] == 1.0
    assert perfect["object_psnr"] == math.inf
    pan = [c for c in perfect["clips"] if c["key"].startswith("pan")]
    assert pan and all(c["objects"] is None for c in pan)

    grey = evaluate_reconstruction(_StubTokenizer(lambda x: x.mean(dim=1, keepdim=True).expand_as(x)), split,
                                   lpips_net=None)
    # Independent: each object's mean colour from the decoded clip and its RLE masks, ΔE2000 through scikit-image.
    expected_de = []
    for clip in ClipReader(split):
        if not clip.key.startswith("proc"):
            continue
        frames = ((clip.video.permute(1, 2, 3, 0).numpy() + 1) / 2)  # (T, H, W, 3)
        for inst in vis_instances(vis, clip.key):
            pixels = frames[inst["masks"][: clip.num_frames]]
            mean = pixels.mean(axis=0)
            expected_de.append(deltaE_ciede2000(rgb2lab(mean[None]), rgb2lab(np.full((1, 3), mean.mean())))[0])
    assert grey["object_delta_e"] == pytest.approx(float(np.mean(expected_de)), abs=0.05)
    assert grey["object_delta_e"] > 10
    assert grey["objects"]["skipped_empty"] == 0
