"""One config object for a prior training run (`training/train_prior.py`): a YAML recipe plus `--key value` overrides.

The same recipe machinery as the tokenizer's `TrainConfig` (`base:` chains, dotted overrides, typed fields); the
prior's own architecture fields live in its config class (`prior_type` + `prior_overrides`), the tokens in a
Parquet dataset written by `pyratok tokenize-dataset`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from pyratok.training.config import (
    MIXED_PRECISION,
    SCHEDULERS,
    apply_overrides,
    load_recipe,
    parse_overrides,
    wrong_field_types,
)

PRIOR_TYPES = ("masked", "ar")


@dataclass
class PriorTrainConfig:
    """A prior training run.

    Args:
        prior_type: `"masked"` (absorbing-mask discrete diffusion, MaskGIT / MotionAura style) or `"ar"`
            (autoregressive over frame-major tokens, Open-MAGVIT2 style).
        prior_overrides: fields of `PyraTokMaskedPriorConfig` / `PyraTokARPriorConfig` (hidden_size,
            num_hidden_layers, ...); the token layout and the tokenizer's name and fingerprint come from the data.
        init_from: a saved prior (folder or Hub id) to fine-tune instead of a fresh one (the paper fine-tunes its
            priors on PyraTok codes); it must model the data's layout.
        train_data, validation_data: folders written by `pyratok tokenize-dataset` (validation optional).
        text_encoder: the frozen text encoder embedding the captions; default: the one the token data's tokenizer
            names (`text_encoder_name_or_path` of its config), read from `tokenizer`.
        tokenizer: the tokenizer the tokens came from (folder or Hub id; default: the dataset's `tokenizer_name`).
            Its fingerprint must equal the data's, so a prior never trains on a mix of tokenizers.
        batch_size, shuffle, seed: the token stream (a seeded permutation per epoch, sharded across processes).
        output_dir, max_train_steps, learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay,
        lr_scheduler, lr_warmup_steps, gradient_accumulation_steps, max_grad_norm, mixed_precision: as `TrainConfig`.
        logging_steps, checkpointing_steps, checkpoints_total_limit, resume_from_checkpoint: as `TrainConfig`
            (atomic checkpoints, `latest`, optimizer fields refused on resume).
        validation_steps, num_validation_batches: held-out loss every N steps (a fixed masking / order seed).
        progress_bar: tqdm on the main process.
    """

    prior_type: str = "masked"
    prior_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    train_data: str = ""
    validation_data: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    batch_size: int = 16
    shuffle: bool = True
    output_dir: str = "out/prior"
    max_train_steps: int = 1000
    learning_rate: float = 5e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 50
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    logging_steps: int = 10
    checkpointing_steps: int = 200
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    validation_steps: int = 0
    num_validation_batches: int = 4
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self._check_field_types()
        if self.prior_type not in PRIOR_TYPES:
            raise ValueError(f"prior_type={self.prior_type!r}; expected one of {PRIOR_TYPES}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r}; expected one of {SCHEDULERS}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; expected one of {MIXED_PRECISION}")
        positive = {
            "batch_size": self.batch_size,
            "max_train_steps": self.max_train_steps,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "logging_steps": self.logging_steps,
            "checkpointing_steps": self.checkpointing_steps,
            "num_validation_batches": self.num_validation_batches,
        }
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise ValueError(f"these fields must be positive integers: {bad}")
        if self.learning_rate <= 0 or self.max_grad_norm < 0 or self.lr_warmup_steps < 0 or self.validation_steps < 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} must be > 0; max_grad_norm={self.max_grad_norm}, "
                f"lr_warmup_steps={self.lr_warmup_steps} and validation_steps={self.validation_steps} >= 0"
            )
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit={self.checkpoints_total_limit} must be >= 1 or null")
        if not self.train_data:
            raise ValueError("train_data is empty: give the folder `pyratok tokenize-dataset --out` wrote")

    def _check_field_types(self) -> None:
        wrong = wrong_field_types(self)
        if not isinstance(self.prior_overrides, dict):
            wrong.append(f"prior_overrides={self.prior_overrides!r} (expected a mapping)")
        if wrong:
            raise ValueError("prior training config fields of the wrong type: " + "; ".join(wrong))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> PriorTrainConfig:
        raw = load_recipe(path)
        apply_overrides(raw, parse_overrides(overrides or []))
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> PriorTrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{source}: unknown prior training config fields {unknown}")
        return cls(**copy.deepcopy(raw))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["PRIOR_TYPES", "PriorTrainConfig"]
