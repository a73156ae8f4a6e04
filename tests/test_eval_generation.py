"""Generation evaluation: Fréchet distance, caption parsing, the procedural classifier, consistency metrics, I3D
plumbing, `evaluate_generation` and the `pyratok-eval train-classifier` / `generation` subcommands."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from pyratok.evaluation import generation as gen
from pyratok.evaluation.background_colour import background_consistency
from pyratok.evaluation.generation import (
    FRECHET_CLASSIFIER_KEY,
    I3DFeatures,
    chance_levels,
    evaluate_generation,
    feature_statistics,
    frechet_distance,
    generate_clips,
    i3d_preprocess,
    temporal_consistency,
    text_consistency,
)
from pyratok.evaluation.video_classifier import (
    HEADS,
    VOCABULARIES,
    LabelledClips,
    PromptObject,
    VideoClassifier,
    VideoClassifierConfig,
    attribute_sets,
    augment,
    evaluate_classifier,
    multi_hot,
    parse_procedural_caption,
    parse_prompt,
    to_uint8_video,
    top_k_sets,
    train_video_classifier,
)
from pyratok.training.make_shards import _rng, make_shards, render_procedural

TINY = dict(channels=(4, 8), appearance_channels=(4, 8), feature_dim=8, num_frames=5, size=16)

# ------------------------------------------------------------------------------------------------ Fréchet distance


def test_frechet_distance_diagonal_closed_form():
    # N(mu_a, diag(va)) vs N(mu_b, diag(vb)): |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    expected = 1.0 + 0.0 + 6.25 + (1 - 3) ** 2 + (2 - 1) ** 2 + (0.5 - 0) ** 2
    assert frechet_distance((mu_a, np.diag(va)), (mu_b, np.diag(vb))) == pytest.approx(expected, abs=1e-10)
    assert frechet_distance((mu_a, np.diag(va)), (mu_a, np.diag(va))) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_full_covariance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 5))
    b = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 5)) + 0.7
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    brute = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * np.real(scipy.linalg.sqrtm(s_a @ s_b)))
    assert frechet_distance(a, b) == pytest.approx(brute, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(brute, rel=1e-4)
    # statistics by hand (ddof = 1)
    mu, sigma = feature_statistics(a)
    centred = a - a.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(a) - 1), rtol=1e-12)
    np.testing.assert_allclose(mu, a.sum(0) / len(a), rtol=1e-12)


def test_frechet_distance_shift_only_and_bad_input():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((10, 20))  # fewer samples than features: singular covariance
    shift = np.arange(20) / 10
    assert frechet_distance(a, a + shift) == pytest.approx(float(np.sum(shift**2)), abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(a, a[:, :5])


# -------------------------------------------------------------------------------------------------- captions


def test_caption_parsing_round_trips_make_shards_captions():
    seen = {"objects": set(), "textures": set()}
    for index in range(150):
        _, meta, _ = render_procedural(_rng(7, "train", "procedural", index), 16, 3)
        objects = parse_procedural_caption(meta["caption"])
        expected = [PromptObject(o["category"], o["color"], o["motion"], o["texture"]) for o in meta["objects"]]
        assert objects == expected, meta["caption"]
        assert parse_prompt(meta["caption"]) == (expected[0].shape, expected[0].color, expected[0].motion)
        seen["objects"].add(len(objects))
        seen["textures"].update(o.texture for o in objects)
    assert seen["objects"] == {1, 2, 3} and seen["textures"] == {"solid", "stripes", "checker", "dots"}


@pytest.mark.parametrize("caption", [
    "the camera pans left across a photograph of a cat",
    "an orange striped circle spins on a sky blue background",  # unknown motion
    "a orange striped circle rotates on a sky blue background",  # wrong article is not the template
    "an orange striped circle rotates",  # no background
    "an orange striped circle rotates on a sky blue background, a red square grows",
    "a red square grows and a blue star jumps, a green cross bounces on a gray background",  # order of joins
])
def test_caption_parsing_rejects_other_text(caption):
    assert parse_procedural_caption(caption) is None


def test_caption_parsing_examples():
    objs = parse_procedural_caption(
        "a purple dotted cross rotates, a red checkered circle grows and a white star stays still "
        "on a noisy navy background")
    assert [(o.shape, o.color, o.motion, o.texture) for o in objs] == [
        ("cross", "purple", "rotates", "dots"), ("circle", "red", "grows", "checker"),
        ("star", "white", "stays still", "solid")]
    assert parse_prompt("an orange striped circle rotates on a sky blue background") == ("circle", "orange", "rotates")


# ------------------------------------------------------------------------------------------- classifier pieces


def test_top_k_sets_by_hand():
    logits = {"a": torch.tensor([[0.1, 0.9, 0.5, -1.0], [2.0, 2.0, 0.0, 3.0]])}
    sets = top_k_sets(logits, {"a": torch.tensor([2, 1])})["a"]
    assert sets.tolist() == [[False, True, True, False], [False, False, False, True]]
    sets = top_k_sets(logits, {"a": torch.tensor([0, 3])})["a"]  # tie at 2.0: both kept with k = 3
    assert sets.tolist() == [[False] * 4, [True, True, False, True]]
    with pytest.raises(ValueError, match="counts"):
        top_k_sets(logits, {"a": torch.tensor([5, 1])})


def test_augment_swaps_motion_labels_with_the_pixels():
    vocab = VOCABULARIES["motion"]
    videos = torch.randn(64, 3, 4, 5, 6)
    motion = torch.eye(len(vocab))[torch.arange(64) % len(vocab)]
    out, out_motion = augment(videos, motion, torch.Generator().manual_seed(0))
    flips = reverses = 0
    for i in range(64):
        flipped = not torch.equal(out[i], videos[i]) and (
            torch.equal(out[i], videos[i].flip(-1)) or torch.equal(out[i], videos[i].flip(-1).flip(1)))
        reversed_ = torch.equal(out[i], videos[i].flip(1)) or torch.equal(out[i], videos[i].flip(-1).flip(1))
        name = vocab[int(motion[i].argmax())]
        expected = name
        if flipped and name in ("moves left", "moves right"):
            expected = "moves right" if name == "moves left" else "moves left"
        if reversed_:
            swap = {"moves left": "moves right", "moves right": "moves left", "moves up": "moves down",
                    "moves down": "moves up", "grows": "shrinks", "shrinks": "grows"}
            expected = swap.get(expected, expected)
        assert vocab[int(out_motion[i].argmax())] == expected
        flips += flipped
        reverses += reversed_
    assert 10 < flips < 54 and 10 < reverses < 54


def _synthetic_clips(n: int = 8, seed: int = 3) -> LabelledClips:
    videos, targets, nobj = [], {h: [] for h in HEADS}, []
    for index in range(n):
        frames, meta, _ = render_procedural(_rng(seed, "train", "procedural", index), 16, 5)
        videos.append(torch.from_numpy(frames).permute(3, 0, 1, 2))
        hot = multi_hot(attribute_sets(meta["objects"]))
        for h in HEADS:
            targets[h].append(hot[h])
        nobj.append(len(meta["objects"]))
    return LabelledClips(torch.stack(videos), {h: torch.stack(v) for h, v in targets.items()}, torch.tensor(nobj),
                         [f"k{i}" for i in range(n)])


def test_tiny_classifier_fits_a_tiny_synthetic_set(one_thread):
    data = _synthetic_clips()
    model, report = train_video_classifier(data, data, steps=150, batch_size=8, lr=1e-2, seed=0,
                                           config=VideoClassifierConfig(**TINY), augmentation=False)
    # the set-accuracy definition, recomputed by hand from the logits
    logits = model(data.videos)
    for h in HEADS:
        k = data.targets[h].sum(1).long()
        hand = [set(torch.topk(logits[h][i], int(k[i])).indices.tolist()) ==
                set(torch.nonzero(data.targets[h][i]).flatten().tolist()) for i in range(len(data))]
        assert report["val"]["accuracy"][h] == pytest.approx(sum(hand) / len(hand), abs=1e-4)
    assert report["val"]["accuracy"]["all"] == 1.0
    assert report["val"]["num_clips"] == 8


@pytest.mark.parametrize("appearance", [(4, 8), ()])
def test_classifier_save_load_identical_predictions(tmp_path, appearance):
    torch.manual_seed(0)
    model = VideoClassifier(VideoClassifierConfig(**{**TINY, "appearance_channels": appearance})).eval()
    video = torch.rand(3, 3, 5, 16, 16) * 2 - 1
    model.save_pretrained(tmp_path / "clf", report={"note": "x"})
    loaded = VideoClassifier.load(tmp_path / "clf")
    assert torch.equal(model.features(video), loaded.features(video))
    for h in HEADS:
        assert torch.equal(model.predict(video)[h], loaded.predict(video)[h])
    meta = json.loads((tmp_path / "clf" / "classifier_config.json").read_text())
    assert meta["config"]["vocabularies"]["shape"] == list(VOCABULARIES["shape"])
    assert meta["training_report"] == {"note": "x"}
    # uint8 input and another size are resampled to the configured geometry
    assert torch.allclose(model.features(to_uint8_video(video)), model.features(video), atol=0.05)
    assert model.features(torch.zeros(1, 3, 9, 32, 32)).shape == (1, 8)
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        VideoClassifier.load(tmp_path / "nothing")
    meta["config"]["vocabularies"]["color"] = ["red", "blue"]
    (tmp_path / "clf" / "classifier_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="color vocabulary"):
        VideoClassifier.load(tmp_path / "clf")


# ------------------------------------------------------------------------------------------ consistency metrics


class _TableClassifier:
    """Stub classifier: the logits of clip i are row `video[i, 0, 0, 0, 0]` of a fixed table."""

    def __init__(self, table: dict[str, torch.Tensor]):
        self.table = table

    def eval(self):
        return self

    def __call__(self, video):
        rows = video[:, 0, 0, 0, 0].round().long()
        return {h: t[rows] for h, t in self.table.items()}


def _one_hot_logits(values: list[str], head: str) -> torch.Tensor:
    out = torch.zeros(len(VOCABULARIES[head]))
    for rank, v in enumerate(values):
        out[VOCABULARIES[head].index(v)] = 10.0 - rank
    return out


def test_text_consistency_on_hand_made_predictions():
    prompts = [
        "a red circle rotates on a gray background",  # predicted: red circle rotates → all right
        "a blue square jumps on a gray background",  # predicted: blue star jumps → shape wrong
        "a green striped cross moves left and a red star grows on a teal background",  # predicted {green, red} {cross,
        # star} {moves left, shrinks} → motion wrong
        "the camera zooms in on a photograph of a cat",  # skipped
    ]
    predicted = [
        (["circle"], ["red"], ["rotates"]),
        (["star"], ["blue"], ["jumps"]),
        (["star", "cross"], ["red", "green"], ["shrinks", "moves left"]),
        (["circle"], ["red"], ["rotates"]),
    ]
    table = {h: torch.stack([_one_hot_logits(p[i], h) for p in predicted]) for i, h in enumerate(HEADS)}
    videos = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 2, 2, 2)
    result = text_consistency(videos, prompts, _TableClassifier(table), batch_size=2)
    assert result["num_clips"] == 3 and result["skipped_prompts"] == 1
    assert result["recognised"] == pytest.approx({"shape": 2 / 3, "color": 1.0, "motion": 2 / 3, "all": 1 / 3})
    assert result["single_object"]["num_clips"] == 2
    assert result["single_object"]["shape"] == pytest.approx(0.5)
    # chance: 1/C(V, k) averaged; all = product per prompt, averaged
    chance = {"shape": (1 / 7 + 1 / 7 + 1 / 21) / 3, "color": (1 / 12 + 1 / 12 + 1 / 66) / 3,
              "motion": (1 / 10 + 1 / 10 + 1 / 45) / 3,
              "all": (2 / (7 * 12 * 10) + 1 / (21 * 66 * 45)) / 3}
    assert result["chance"] == pytest.approx(chance)
    with pytest.raises(ValueError, match="3 prompts"):
        text_consistency(videos, prompts[:3], _TableClassifier(table))


def test_chance_levels_single_object():
    levels = chance_levels([[PromptObject("square", "red", "jumps", "solid")]])
    assert levels == pytest.approx({"shape": 1 / 7, "color": 1 / 12, "motion": 1 / 10, "all": 1 / 840})


def test_temporal_consistency_by_hand():
    # clip 0: frames at -1, 1, 1 (pixels 0, 1, 1): |diffs| 1, 0; clip 1: 0, 0.5, 0 (pixels 0.5, 0.75, 0.5): 0.25, 0.25
    values = torch.tensor([[-1.0, 1.0, 1.0], [0.0, 0.5, 0.0]])
    videos = values.view(2, 1, 3, 1, 1).expand(2, 3, 3, 4, 4).clone()
    assert temporal_consistency(videos) == pytest.approx(1 - (1 + 0 + 0.25 + 0.25) / 4)
    assert temporal_consistency(list(videos)) == pytest.approx(1 - 1.5 / 4)
    assert temporal_consistency(torch.zeros(1, 3, 5, 2, 2)) == 1.0
    with pytest.raises(ValueError, match=">= 2 frames"):
        temporal_consistency(torch.zeros(1, 3, 1, 2, 2))


# ------------------------------------------------------------------------------------------------------- I3D


class _FakeI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        assert not rescale and not resize and return_features
        return torch.stack([x.mean(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4)), x[:, 0, 15, 0, 0]], dim=1)


def test_i3d_preprocess_and_plumbing(tmp_path):
    video = torch.rand(2, 3, 17, 32, 48) * 2 - 1
    x = i3d_preprocess(video)
    assert x.shape == (2, 3, 16, 224, 224)
    # by hand: [0, 1], short side 32 → 224 (width 48 → 336), centre crop 56 px from the left, back to [-1, 1]
    frame = torch.nn.functional.interpolate((video[:, :, 3] + 1) / 2, size=(224, 336), mode="bilinear",
                                            align_corners=False)[:, :, :, 56:280] * 2 - 1
    torch.testing.assert_close(x[:, :, 3], frame)
    assert torch.allclose(i3d_preprocess(torch.full((1, 3, 16, 8, 8), 0.25)), torch.tensor(0.25))
    with pytest.raises(ValueError, match="16 frames"):
        i3d_preprocess(torch.zeros(1, 3, 9, 8, 8))

    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_FakeI3D()).save(str(path))
    feats = I3DFeatures(path)(video)
    torch.testing.assert_close(feats, _FakeI3D()(x, rescale=False, resize=False, return_features=True))
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        I3DFeatures(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------ evaluate_generation


def test_evaluate_generation_with_real_clips_as_generations(tmp_path):
    data = _synthetic_clips(6, seed=5)
    torch.manual_seed(0)
    clf = VideoClassifier(VideoClassifierConfig(**TINY)).eval()
    real = data.videos.float() / 127.5 - 1
    prompts = []
    for index in range(6):
        _, meta, _ = render_procedural(_rng(5, "train", "procedural", index), 16, 5)
        prompts.append(meta["caption"])
    calls = []

    def generate_fn(batch, seed):
        start = prompts.index(batch[0])
        calls.append((len(batch), seed))
        return real[start : start + len(batch)]

    i3d = tmp_path / "i3d.pt"
    torch.jit.script(_FakeI3D()).save(str(i3d))
    long_real = real.repeat(1, 1, 4, 1, 1)  # 20 frames for the I3D path
    result = evaluate_generation(lambda b, s: long_real[prompts.index(b[0]):][:len(b)], prompts, long_real, clf,
                                 batch_size=4, seed=10, i3d=i3d)
    assert result["fvd"] == pytest.approx(0.0, abs=1e-6)
    result = evaluate_generation(generate_fn, prompts, real, clf, batch_size=4, seed=10, real_prompts=prompts)
    assert calls == [(4, 10), (2, 11)]
    assert result[FRECHET_CLASSIFIER_KEY] == pytest.approx(0.0, abs=1e-6)
    assert "not comparable to published FVD" in result["frechet_note"]
    # text consistency of the "generations" = the classifier's accuracy on these clips
    accuracy = evaluate_classifier(clf, data)["accuracy"]
    assert result["text_consistency"]["recognised"] == pytest.approx(accuracy, abs=1e-4)
    assert result["text_consistency"] == result["real_text_consistency"]
    assert result["temporal_consistency"]["generated"] == pytest.approx(temporal_consistency(real))
    expected = background_consistency(real, prompts)  # read on the same clips, so the same counts
    assert result["background_consistency"] == result["real_background_consistency"] == expected
    assert result["temporal_consistency"]["generated"] == result["temporal_consistency"]["real"]
    assert result["seconds_per_clip"] >= 0 and result["num_generated"] == 6
    with pytest.raises(ValueError, match=r"\(4, 3, T, H, W\)"):
        evaluate_generation(lambda b, s: real[:1], prompts, real, clf, batch_size=4)


def test_generate_clips_follows_the_prior_api():
    seen = {}
    layout = object()

    class Encoder:
        def __call__(self, prompts, device):
            seen["prompts"] = list(prompts)
            return torch.ones(len(prompts), 3, 4), torch.ones(len(prompts), 3, dtype=torch.bool)

    class Tokenizer:
        def get_text_encoder(self):
            return Encoder()

        def decode_from_sequence(self, ids, lay):
            assert lay is layout
            return ids.float().view(len(ids), 1, 1, 1, 1).expand(len(ids), 3, 5, 2, 2) * 0.5

    def prior(model_type):
        def generate(embeds, mask, **kwargs):
            seen["kwargs"] = kwargs
            return torch.arange(embeds.shape[0])[:, None].expand(-1, 4)[:, :1] * 3

        return SimpleNamespace(config=SimpleNamespace(model_type=model_type, layout=layout), generate=generate)

    out = generate_clips(prior("pyratok_masked_prior"), Tokenizer(), ["a", "b"], guidance_scale=2.0,
                         num_inference_steps=5, seed=3)
    assert seen["prompts"] == ["a", "b"] and seen["kwargs"]["num_inference_steps"] == 5
    assert seen["kwargs"]["guidance_scale"] == 2.0 and seen["kwargs"]["generator"].initial_seed() == 3
    assert out[:, 0, 0, 0, 0].tolist() == [0.0, 1.0]  # ids 0, 3 → 0, 1.5 → clamped to [-1, 1]
    generate_clips(prior("pyratok_ar_prior"), Tokenizer(), ["a"], num_inference_steps=5)
    assert "num_inference_steps" not in seen["kwargs"]
    with pytest.raises(ValueError, match="non-empty"):
        generate_clips(prior("pyratok_ar_prior"), Tokenizer(), ["a", " "])


# ----------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out, seed=1, size=16, frames=5, num_train=8, num_val=2, num_test=6, pan_fraction=0.25)
    return out


def test_cli_train_classifier_then_generation(tiny_shards, tmp_path, monkeypatch):
    from pyratok.evaluation.cli import main
    from pyratok.evaluation.clips import ClipReader

    clf_dir = tmp_path / "clf"
    rc = main(["train-classifier", "--data", str(tiny_shards / "train"), "--test-data", str(tiny_shards / "test"),
               "--classifier", str(clf_dir), "--steps", "3", "--batch-size", "2", "--channels", "4,8",
               "--appearance-channels", "4,8", "--appearance-frames", "2",
               "--feature-dim", "8", "--input-frames", "5", "--input-size", "16", "--threads", "1",
               "--out", str(tmp_path / "train.json")])
    assert rc == 0
    report = json.loads((tmp_path / "train.json").read_text())["results"]
    assert report["train_clips"] == 6 and report["train_skipped"] == {"pan": 2}
    assert report["test"]["num_clips"] == 4 and report["test"]["skipped"] == {"pan": 2}
    clf = VideoClassifier.load(clf_dir)
    assert clf.config.channels == (4, 8) and clf.config.appearance_frames == 2
    assert evaluate_classifier(clf, tiny_shards / "test")["accuracy"] == report["test"]["accuracy"]

    real = {c.caption: c.video for c in ClipReader(tiny_shards / "test") if c.meta["objects"]}

    class Tokenizer:
        def get_text_encoder(self):
            return lambda prompts, device: (torch.zeros(len(prompts), 1, 4), torch.ones(len(prompts), 1).bool())

        def decode_from_sequence(self, ids, layout):
            return torch.stack([list(real.values())[i] for i in ids[:, 0].tolist()])

    def load_prior(path, device):
        def generate(embeds, mask, **kwargs):
            return torch.arange(embeds.shape[0])[:, None]

        cfg = SimpleNamespace(model_type="pyratok_ar_prior", layout=None, tokenizer_name=None)
        return SimpleNamespace(config=cfg, generate=generate, check_tokenizer=lambda tok: None)

    monkeypatch.setattr(gen, "_load_prior", load_prior)
    monkeypatch.setattr(gen, "_load_tokenizer", lambda path, device: Tokenizer())
    (tmp_path / "p1").mkdir()
    rc = main(["generation", "--data", str(tiny_shards / "test"), "--prior", f"first={tmp_path / 'p1'}",
               "--classifier", str(clf_dir), "--batch-size", "4", "--out", str(tmp_path / "gen.json"),
               "--save-videos", str(tmp_path / "videos")])
    assert rc == 0
    results = json.loads((tmp_path / "gen.json").read_text())["results"]
    row = results["priors"]["first"]
    assert results["num_prompts"] == 4
    # the fake prior returns each test clip for its own caption (batch of 4 = all): a perfect generator
    assert row[FRECHET_CLASSIFIER_KEY] == pytest.approx(0.0, abs=1e-5)
    assert row["text_consistency"] == results["classifier_text_consistency_on_real"]
    assert sorted(p.name for p in (tmp_path / "videos" / "first").iterdir()) == [
        "000.mp4", "001.mp4", "002.mp4", "003.mp4", "prompts.txt"]

    assert main(["generation", "--data", str(tiny_shards / "test"), "--prior", str(tmp_path / "p1"),
                 "--classifier", str(tmp_path / "nope")]) == 2
    assert main(["generation", "--data", str(tiny_shards / "test"), "--prior", str(tmp_path / "missing"),
                 "--classifier", str(clf_dir)]) == 2
    assert main(["generation", "--data", str(tiny_shards / "test"), "--classifier", str(clf_dir)]) == 2
    assert math.isfinite(row["seconds_per_clip"])


def test_prior_and_tokenizer_flags(tmp_path):
    pairs = gen._named_paths(["a=/x/p1,/y/p2", "c=/z/p3"], "--prior")
    assert pairs == [("a", "/x/p1"), (None, "/y/p2"), ("c", "/z/p3")]
    with pytest.raises(ValueError, match="NAME=PATH"):
        gen._named_paths(["=/x"], "--prior")
    with pytest.raises(ValueError, match="given twice"):
        gen._unique([("a", "/x"), ("a", "/y")], "--prior")
    prior = SimpleNamespace(config=SimpleNamespace(tokenizer_name=str(tmp_path)))
    assert gen._tokenizer_for("a", prior, {"a": "/tok-a", None: "/tok"}, "/default") == "/tok-a"
    assert gen._tokenizer_for("b", prior, {"a": "/tok-a", None: "/tok"}, "/default") == "/tok"
    assert gen._tokenizer_for("b", prior, {}, "/default") == str(tmp_path)  # the prior's recorded folder
    prior.config.tokenizer_name = "some/hub-name"
    assert gen._tokenizer_for("b", prior, {}, "/default") == "/default"
