"""Configurations of the text-conditioned token priors (DESIGN.md §7, issue 23 §2).

`PyraTokMaskedPriorConfig` (MaskGIT / MotionAura-style absorbing-mask discrete diffusion) and `PyraTokARPriorConfig`
(Open-MAGVIT2-style autoregressive prior) share one vocabulary: the token layout they model, the tokenizer they were
trained on, the transformer size, the text conditioning and the factorised output heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PretrainedConfig

from .tokens_pyratok import PyraTokTokenLayout

MASK_SCHEDULES = ("cosine",)


def _positive_int(value: Any, name: str) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class PyraTokPriorConfigBase(PretrainedConfig):
    """Fields shared by both priors (see `PyraTokMaskedPriorConfig` for their meaning)."""

    def __init__(
        self,
        token_layout: Mapping[str, Any] | PyraTokTokenLayout | None = None,
        tokenizer_name: str | None = None,
        tokenizer_fingerprint: str | None = None,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        text_embed_dim: int = 384,
        max_text_length: int = 32,
        cond_dropout_prob: float = 0.1,
        factorized_bits: Sequence[int] = (8, 8),
        **kwargs,
    ) -> None:
        if isinstance(token_layout, PyraTokTokenLayout):
            token_layout = token_layout.to_dict()
        self.token_layout = dict(token_layout) if token_layout is not None else None
        self.tokenizer_name = tokenizer_name
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_hidden_layers = _positive_int(num_hidden_layers, "num_hidden_layers")
        self.num_attention_heads = _positive_int(num_attention_heads, "num_attention_heads")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size={hidden_size} must be a multiple of num_attention_heads={num_attention_heads}"
            )
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        self.mlp_ratio = float(mlp_ratio)
        for name, value in (("dropout", dropout), ("cond_dropout_prob", cond_dropout_prob)):
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        self.dropout = float(dropout)
        self.cond_dropout_prob = float(cond_dropout_prob)
        self.text_embed_dim = _positive_int(text_embed_dim, "text_embed_dim")
        self.max_text_length = _positive_int(max_text_length, "max_text_length")
        bits = list(factorized_bits) if isinstance(factorized_bits, Sequence) else None
        if bits is None or len(bits) != 2 or any(type(b) is not int or b < 1 for b in bits):
            raise ValueError(f"factorized_bits must be two positive ints (b1, b2), got {factorized_bits!r}")
        self.factorized_bits = bits
        if self.token_layout is not None:
            self._check_layout_fields(self.layout)
        super().__init__(**kwargs)

    def _check_layout_fields(self, layout: PyraTokTokenLayout) -> None:
        if layout.pad_to_square or layout.separators:
            raise ValueError(
                f"a prior models code ids only: token_layout needs pad_to_square=False and separators=False, got "
                f"pad_to_square={layout.pad_to_square}, separators={layout.separators}"
            )
        if sum(self.factorized_bits) != layout.codebook_dim:
            raise ValueError(
                f"factorized_bits {tuple(self.factorized_bits)} must sum to the layout's codebook_dim "
                f"{layout.codebook_dim}"
            )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        *,
        tokenizer_name: str | None = None,
        **kwargs,
    ) -> PyraTokPriorConfigBase:
        """A config for the frame-major token sequences `tokenizer` makes of `num_frames x height x width` clips.

        Fills `token_layout`, `tokenizer_name`, `tokenizer_fingerprint` (`pyratok.cli.model_fingerprint`),
        `text_embed_dim` and `max_text_length` (the tokenizer's text encoder) and `factorized_bits` (halves of
        `codebook_dim`, the larger first); `kwargs` set or override any field.

        Args:
            tokenizer: a `PyraTokModel` or `AutoencoderPyraTok`.
        """
        from .prior_layers import tokenizer_fingerprint

        core = getattr(tokenizer, "core", None)
        if core is None or not hasattr(core, "token_layout"):
            raise ValueError(f"tokenizer must be a PyraTokModel or AutoencoderPyraTok, got {type(tokenizer).__name__}")
        layout = core.token_layout(num_frames, height, width, order=kwargs.pop("order", "frame_major"))
        d = layout.codebook_dim
        fields = {
            "token_layout": layout.to_dict(),
            "tokenizer_name": tokenizer_name,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "text_embed_dim": core.config.text_embed_dim,
            "max_text_length": core.config.text_max_length,
            "factorized_bits": ((d + 1) // 2, d // 2),
        }
        return cls(**{**fields, **kwargs})

    @property
    def layout(self) -> PyraTokTokenLayout:
        """The `PyraTokTokenLayout` this prior models (fixes `seq_len` and the codebook)."""
        if self.token_layout is None:
            raise ValueError("this prior config has no token_layout: pass token_layout=layout.to_dict()")
        return PyraTokTokenLayout.from_dict(self.token_layout)


class PyraTokMaskedPriorConfig(PyraTokPriorConfigBase):
    """Config of [`PyraTokMaskedPrior`]: absorbing-`[MASK]` discrete diffusion (MaskGIT / MotionAura).

    Args:
        token_layout (`dict`): `PyraTokTokenLayout.to_dict()` of the sequences modelled (`pad_to_square=False`,
            `separators=False`); fixes `seq_len = layout.seq_len` and `codebook_size = 2**layout.codebook_dim`.
        tokenizer_name (`str`, *optional*): Hub id or folder of the tokenizer that made the training tokens.
        tokenizer_fingerprint (`str`, *optional*): `pyratok.cli.model_fingerprint(tokenizer)` of that tokenizer.
        hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, dropout: transformer size.
        text_embed_dim (`int`): width of the text embeddings (384 for the shipped MiniLM).
        max_text_length (`int`): most text tokens a prompt may have.
        cond_dropout_prob (`float`): training probability of replacing the prompt by the learned null text (CFG).
        factorized_bits (`(b1, b2)`): output heads over `pre = id >> b2` (`2**b1` classes) and
            `post = id & (2**b2 - 1)` (`2**b2` classes); `b1 + b2 = codebook_dim`.
        mask_schedule (`str`): `"cosine"`: mask ratio `cos(π/2 · u)`, `u ~ U(0, 1)` (MaskGIT).
        spectral_mixing (`bool`): add a learned global spectral filter along the sequence to every block
            (MotionAura-style FFT token mixing; see `prior_layers.PyraTokSpectralMixing`).
    """

    model_type = "pyratok_masked_prior"

    def __init__(self, mask_schedule: str = "cosine", spectral_mixing: bool = False, **kwargs) -> None:
        if mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {MASK_SCHEDULES}, got {mask_schedule!r}")
        if not isinstance(spectral_mixing, bool):
            raise ValueError(f"spectral_mixing must be a bool, got {spectral_mixing!r}")
        self.mask_schedule = mask_schedule
        self.spectral_mixing = spectral_mixing
        super().__init__(**kwargs)


class PyraTokARPriorConfig(PyraTokPriorConfigBase):
    """Config of [`PyraTokARPrior`]: a causal transformer over frame-major tokens (Open-MAGVIT2 style).

    Fields as in [`PyraTokMaskedPriorConfig`] (without the mask schedule and spectral mixing); the layout's order
    must be `"frame_major"` so a clip's first latent frames are a prefix of its sequence (continuation).
    """

    model_type = "pyratok_ar_prior"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def _check_layout_fields(self, layout: PyraTokTokenLayout) -> None:
        super()._check_layout_fields(layout)
        if layout.order != "frame_major":
            raise ValueError(f"the AR prior needs token_layout order='frame_major', got order={layout.order!r}")


__all__ = ["PyraTokARPriorConfig", "PyraTokMaskedPriorConfig", "PyraTokPriorConfigBase"]
