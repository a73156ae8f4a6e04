"""Reading the official checkpoint's config (issue 26 mutation survivors): the bits per stage, by hand."""

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
