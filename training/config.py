"""One config object for a training run: a YAML recipe plus `--key value` command-line overrides.

Every knob of `training/train.py` is a field here (nanoGPT-style: defaults → recipe file, over the recipe its `base:`
names → command line). Model fields live in `PyraTokConfig` (`model_preset` + `model_overrides`), data fields in
`VideoDataConfig` (`data`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pyratok.training.optimization import BACKBONE_INITS, LR_SCALINGS

TASKS = ("pyratok", "backbone_vae")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
MIXED_PRECISION = ("no", "fp16", "bf16")
BASE_KEY = "base"  # a recipe's parent recipe file (`load_recipe`)


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads exponent floats without a dot (`1e-4`, `3E5`) as floats, as YAML 1.2 does.

    PyYAML implements YAML 1.1, whose float pattern needs a dot, so `learning_rate: 1e-4` (or `--learning_rate 1e-4`)
    would otherwise arrive as the string `"1e-4"`.
    """


# The YAML 1.2 core schema's float forms (https://yaml.org/spec/1.2.2/#1023-core-schema), plus 1.1's `_` separators.
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text_or_stream: Any) -> Any:
    """Parse YAML with `RecipeLoader` (safe, exponent floats as floats)."""
    return yaml.load(text_or_stream, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader


@dataclass
class TrainConfig:
    """A PyraTok training run.

    Args:
        task: `"pyratok"` (LaPQ + LoRA on a frozen backbone, the paper's recipe) or `"backbone_vae"` (pretrain a
            plain Wan KL video VAE on the same data, which a `"pyratok"` run then freezes: how the CPU default
            checkpoint gets a backbone when no pretrained Wan weights are reachable).
        model_preset, model_overrides: `PyraTokConfig.from_preset(model_preset, **model_overrides)`.
        init_from: Weights to start from instead of a fresh model: for `"pyratok"` a PyraTok checkpoint (folder or
            Hub id), built from its own config with `model_overrides` applied on top (`model_preset` unused; an
            override that changes the architecture is an error); for `"backbone_vae"` a diffusers `AutoencoderKLWan`
            (folder or Hub id, `backbone_subfolder` inside it), e.g. an earlier phase's `final` folder or Wan's own
            VAE to fine-tune; its architecture must match the preset's backbone.
        backbone_name_or_path, backbone_subfolder: Pretrained `AutoencoderKLWan` weights for the frozen backbone, or
            a local PyraTok checkpoint folder whose frozen backbone to reuse (default: the model config's). `"none"`
            keeps the random backbone (tests only). Unused by a `"pyratok"` run with `init_from`, whose checkpoint
            holds its backbone.
        data, validation_data: `VideoDataConfig` fields (see `training/data.py`); validation is optional.
        output_dir: Checkpoints, logs and the final model go here.
        max_train_steps: Optimizer steps.
        learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay: AdamW.
        lr_scheduler, lr_warmup_steps: `transformers.get_scheduler` name and warm-up.
        lr_scaling, fan_in_lr: `"none"`: every parameter at `learning_rate`; `"fan_in"`: each weight at
            `fan_in_lr / fan_in`, biases and gains at `learning_rate` (muP's Adam rule; `training/optimization.py`).
        backbone_init: `"backbone_vae"` only: `"default"` (diffusers / PyTorch) or `"zero_bias_residual"` (zero
            biases, every residual / attention block starting as the identity).
        gradient_accumulation_steps, max_grad_norm, mixed_precision, gradient_checkpointing, seed: as in
            `accelerate` / diffusers training scripts.
        use_recon_loss, use_codebook_loss, use_latent_loss, use_ar_loss, use_drift_loss: loss switches (the weights
            are the model config's `recon_weight`, `codebook_weight`, `latent_loss_weight`, `ar_weight`,
            `drift_weight`; the codebook's inner terms are switched by their own weights, 0 = off).
        recon_l1_weight, recon_ssim_weight, recon_lpips_weight, recon_chroma_weight, recon_salient_weight: inner
            weights of the reconstruction loss (chroma: L1 of each pixel's colour around its RGB mean; salient: L1
            weighted by each pixel's colour distance from its frame's median colour; both off by default; see
            `ReconstructionLoss`).
        lpips_net, lpips_pretrained_backbone: LPIPS backbone; `False` builds a random one (tests only).
        lpips_max_frames: frames per clip scored by LPIPS.
        mask_patch_size: spatial patch of the training mask (default: the backbone's spatial factor).
        ar_language_model, ar_language_model_config: the AR loss's causal LM (Hub id/folder, or a config dict for a
            small random LM); ar_train_language_model: also train it; max_ar_tokens: visual tokens per sequence.
        drift_reference_encoder, drift_reference_config: frozen reference vision encoder (Hub id/folder or config
            dict); drift_feature_index: which encoder tap is compared (Python index into the taps);
            drift_temperature: softmax temperature.
        vae_kl_weight: KL weight of the `"backbone_vae"` task.
        vae_sample_posterior: `"backbone_vae"`: decode a posterior sample (`mean + std * noise`, a KL VAE's usual
            training) or, if False, the posterior mean (the KL term still trains the variance).
        find_unused_parameters: DDP flag (text-free batches leave text weights unused).
        logging_steps, checkpointing_steps, checkpoints_total_limit, resume_from_checkpoint: logging and state.
            A checkpoint is written under a temporary name and renamed when complete; older ones beyond the limit
            are removed only then. `resume_from_checkpoint: latest` takes the newest complete checkpoint (partial
            ones, left by a kill, are skipped and named in the log); `logs.jsonl` keeps one record per step. The
            optimizer and schedule come back from the checkpoint, so a resume with another `learning_rate`,
            `adam_beta1`, `adam_beta2`, `adam_epsilon`, `weight_decay`, `lr_scheduler`, `lr_warmup_steps`,
            `lr_scaling` or `fan_in_lr` is refused (naming the field and both values), never silently ignored;
            `max_train_steps` may change. One run at a time per `output_dir` (a second is refused).
        validation_steps, num_validation_batches: held-out PSNR/SSIM every N steps.
        report_to: accelerate trackers (`"tensorboard"`, `"wandb"`, ...) besides the jsonl log; `[]` for none.
        tracker_project_name: tracker project.
        progress_bar: tqdm progress on the main process.
    """

    task: str = "pyratok"
    model_preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    backbone_name_or_path: str | None = None
    backbone_subfolder: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    validation_data: dict[str, Any] | None = None
    output_dir: str = "out/pyratok"
    max_train_steps: int = 1000
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 0
    lr_scaling: str = "none"
    fan_in_lr: float = 0.03
    backbone_init: str = "default"
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    use_recon_loss: bool = True
    use_codebook_loss: bool = True
    use_latent_loss: bool = True
    use_ar_loss: bool = False
    use_drift_loss: bool = False
    recon_l1_weight: float = 1.0
    recon_ssim_weight: float = 1.0
    recon_lpips_weight: float = 1.0
    recon_chroma_weight: float = 0.0
    recon_salient_weight: float = 0.0
    lpips_net: str = "alex"
    lpips_pretrained_backbone: bool = True
    lpips_max_frames: int = 4
    mask_patch_size: int | None = None
    ar_language_model: str | None = "Qwen/Qwen2.5-VL-3B-Instruct"
    ar_language_model_config: dict[str, Any] | None = None
    ar_train_language_model: bool = False
    max_ar_tokens: int = 1024
    drift_reference_encoder: str | None = "facebook/dinov3-vits16-pretrain-lvd1689m"
    drift_reference_config: dict[str, Any] | None = None
    drift_feature_index: int = -2
    drift_temperature: float = 1.0
    vae_kl_weight: float = 1e-6
    vae_sample_posterior: bool = True
    find_unused_parameters: bool = True
    logging_steps: int = 10
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    validation_steps: int = 0
    num_validation_batches: int = 4
    report_to: list[str] = field(default_factory=list)
    tracker_project_name: str = "pyratok"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self._check_field_types()
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; expected one of {TASKS}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r}; expected one of {SCHEDULERS}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; expected one of {MIXED_PRECISION}")
        positive = {
            "max_train_steps": self.max_train_steps,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "logging_steps": self.logging_steps,
            "checkpointing_steps": self.checkpointing_steps,
            "max_ar_tokens": self.max_ar_tokens,
            # The validation stream repeats forever, so a batch count is what ends a validation pass.
            "num_validation_batches": self.num_validation_batches,
        }
        bad = {k: v for k, v in positive.items() if v < 1}  # their int type is checked above
        if bad:
            raise ValueError(f"these fields must be positive integers: {bad}")
        if self.learning_rate <= 0 or self.max_grad_norm < 0 or self.lr_warmup_steps < 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} must be > 0, max_grad_norm={self.max_grad_norm} and "
                f"lr_warmup_steps={self.lr_warmup_steps} >= 0"
            )
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling={self.lr_scaling!r}; expected one of {LR_SCALINGS}")
        if self.fan_in_lr <= 0:
            raise ValueError(f"fan_in_lr={self.fan_in_lr} must be > 0")
        if self.backbone_init not in BACKBONE_INITS:
            raise ValueError(f"backbone_init={self.backbone_init!r}; expected one of {BACKBONE_INITS}")
        if self.backbone_init != "default" and self.task != "backbone_vae":
            raise ValueError(
                f"backbone_init={self.backbone_init!r} only applies to task='backbone_vae' (a pyratok run loads or "
                "freezes its backbone), got task={self.task!r}"
            )
        if self.backbone_init != "default" and self.init_from:
            raise ValueError(
                f"backbone_init={self.backbone_init!r} and init_from={self.init_from!r} exclude each other: the "
                "initialisation would be overwritten by the loaded weights"
            )
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit={self.checkpoints_total_limit} must be >= 1 or null")
        if (
            self.task == "pyratok"
            and self.use_ar_loss
            and not (self.ar_language_model or self.ar_language_model_config)
        ):
            raise ValueError("use_ar_loss needs ar_language_model or ar_language_model_config")
        if (
            self.task == "pyratok"
            and self.use_drift_loss
            and not (self.drift_reference_encoder or self.drift_reference_config)
        ):
            raise ValueError("use_drift_loss needs drift_reference_encoder or drift_reference_config")
        if not self.data:
            raise ValueError("data is empty: give at least data.data_files or data.dataset_name")

    def _check_field_types(self) -> None:
        """Numbers, flags and names must have their field's type: a quoted `"1e-4"` or `learning_rate: fast` is
        named here rather than failing later inside the optimizer."""
        wrong = wrong_field_types(self)
        if wrong:
            raise ValueError("training config fields of the wrong type: " + "; ".join(wrong))

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
        """Read a recipe (resolving its `base:` chain, see `load_recipe`), then apply `--key value` overrides
        (e.g. `--data.batch_size 4`)."""
        raw = load_recipe(path)
        apply_overrides(raw, parse_overrides(overrides or []))
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{source}: unknown training config fields {unknown}")
        return cls(**copy.deepcopy(raw))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def wrong_field_types(config: Any) -> list[str]:
    """`"name=value (expected type)"` for each field of a config dataclass whose value does not have its annotated
    type (float, int, bool, str, optionally `| None`; bools are not ints here). Shared by the training configs."""
    expected = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}
    wrong = []
    for f in dataclasses.fields(config):
        annotation = str(f.type).replace(" ", "")
        optional = annotation.endswith("|None")
        kinds = expected.get(annotation.removesuffix("|None"))
        if kinds is None:
            continue
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        is_bool = isinstance(value, bool)
        if not isinstance(value, kinds) or (is_bool and bool not in kinds):
            wrong.append(f"{f.name}={value!r} (expected {annotation.replace('|', ' | ')})")
    return wrong


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file as one mapping, with its `base:` recipe (and that one's base, ...) merged underneath.

    `base: other.yaml` (a path relative to the recipe's own folder, or absolute) starts from `other.yaml`'s fields;
    the recipe's own fields win, and nested mappings (`data`, `model_overrides`, ...) merge key by key, so a recipe
    names only what it changes (`data: {resolutions: [[64, 64]]}` keeps the base's `data_files`). Lists and
    scalars replace the base's value whole. Like mmengine's `_base_` or OmegaConf's merge, without their extras.
    """
    return _load_recipe(os.path.abspath(path), chain=())


def _load_recipe(path: str, chain: tuple[str, ...]) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(os.path.basename(p) for p in (*chain, path))
        raise ValueError(f"recipe base chain loops: {cycle}")
    if not os.path.isfile(path):
        named_by = f" (the base of {chain[-1]!r})" if chain else ""
        raise FileNotFoundError(f"training config {path!r}{named_by} does not exist")
    with open(path) as f:
        raw = load_yaml(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of field: value, got {type(raw).__name__}")
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{path}: `{BASE_KEY}:` must name one recipe file, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(base)))
    return merge_recipes(_load_recipe(base_path, (*chain, path)), raw)


def merge_recipes(base: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """`recipe` over `base`: mappings merge recursively, every other value replaces the base's (inputs untouched)."""
    merged = copy.deepcopy(base)
    for key, value in recipe.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipes(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`["--a.b", "3", "--c", "[1, 2]"]` → `{"a.b": 3, "c": [1, 2]}`; values are parsed as YAML."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or len(key) == 2:
            raise ValueError(f"expected --key value pairs, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"--{key} has no value")
            value = argv[i + 1]
            i += 2
        out[key.replace("-", "_")] = load_yaml(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set dotted keys in a nested mapping in place (`"data.batch_size"` → `raw["data"]["batch_size"]`)."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for name in parents:
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {dotted!r}: {name!r} is not a mapping")
            node = child
        node[leaf] = value


__all__ = [
    "RecipeLoader",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "load_yaml",
    "merge_recipes",
    "parse_overrides",
    "wrong_field_types",
]
