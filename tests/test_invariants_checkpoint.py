"""The official checkpoint's config and converted card, the Wan 2.1 latent statistics (issue 26 mutation survivors)."""

import pytest

from modeling_pyratok.checkpoint_pyratok import official_codebook_dim


@pytest.mark.parametrize(
    ("raw", "bits"),
    [
        ({}, 16),  # the official defaults: 2**16 codes of 16 bits
        ({"lapq_num_codes": 256, "lapq_codebook_dim": None}, 8),  # null dim: log2 of the code count
        ({"lapq_num_codes": 2, "lapq_codebook_dim": None}, 1),
        ({"lapq_num_codes": 2**12, "lapq_codebook_dim": 12}, 12),
    ],
)
def test_official_codebook_dim(raw, bits):
    assert official_codebook_dim(raw) == bits


def test_official_codebook_dim_refuses_a_count_that_is_not_two_to_the_dim():
    with pytest.raises(ValueError, match=r"lapq_num_codes=300 is not 2\*\*lapq_codebook_dim"):
        official_codebook_dim({"lapq_num_codes": 300, "lapq_codebook_dim": None})
    with pytest.raises(ValueError, match=r"lapq_num_codes=256 is not 2\*\*lapq_codebook_dim \(= 2\*\*4\)"):
        official_codebook_dim({"lapq_num_codes": 256, "lapq_codebook_dim": 4})


def test_converted_model_card_states_the_licence_it_found_or_says_none_was_stated(tiny_model):
    from modeling_pyratok.convert_official import OFFICIAL_WEIGHTS_URL, model_card

    stated = model_card("some/folder", None, tiny_model, "mit")
    assert stated.startswith("---\nlicense: mit\n") and "`mit`, as stated by the source model card." in stated
    unstated = model_card("some/folder", None, tiny_model, None)
    assert unstated.startswith("---\nlicense: other\n")
    assert f"not stated in the source folder: check the terms at {OFFICIAL_WEIGHTS_URL}" in unstated
    assert "as stated by the source model card" not in unstated


def test_wan21_preset_carries_diffusers_latent_statistics():
    # diffusers' AutoencoderKLWan defaults are the Wan 2.1 VAE's: an independent copy of the same numbers.
    import inspect

    from diffusers import AutoencoderKLWan

    from modeling_pyratok import PyraTokConfig

    defaults = inspect.signature(AutoencoderKLWan.__init__).parameters
    config = PyraTokConfig.from_preset("wan2.1")
    assert config.latents_mean == list(defaults["latents_mean"].default)
    assert config.latents_std == list(defaults["latents_std"].default)
