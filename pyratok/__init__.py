"""PyraTok: the installable package around the model code in `modeling_pyratok`.

- `pyratok.cli`: the `pyratok` command (reconstruct / tokenize / detokenize video files).
- `pyratok.video_io`, `pyratok.quality`: video files ↔ tensors, and the quality metrics (PSNR, SSIM, LPIPS, code
  usage) shared by the CLI, training and evaluation.
- `pyratok.training`, `pyratok.evaluation`: the repository's `training/` and `evaluation/` folders (`pyratok-eval`).
- `pyratok.model_cards`: the shipped demo checkpoint, as package data.

The model classes live in `modeling_pyratok` (a flat folder that also ships as Hub remote code) and are re-exported
here.
"""

from pathlib import Path as _Path

# An installed wheel maps the repository's top-level `training/`, `evaluation/` and `model_cards/` folders into this
# package (setup.cfg `package_dir`). In a source checkout (no install, a git worktree, or `accelerate launch
# training/train.py` run from the repository) the same names resolve from the checkout this file belongs to, so a
# checkout never mixes its own code with another installed copy.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "setup.cfg").is_file() and (_checkout / "training" / "__init__.py").is_file():
    __path__.append(str(_checkout))

__version__ = "0.1.0"

_MODEL_CLASSES = ("AutoencoderPyraTok", "PyraTokConfig", "PyraTokModel", "PyraTokOutput", "PyraTokTokens")


def __getattr__(name: str):
    # Lazy re-export: `import pyratok.video_io` stays cheap (no transformers / diffusers import).
    if name in _MODEL_CLASSES:
        import modeling_pyratok

        return getattr(modeling_pyratok, name)
    raise AttributeError(f"module 'pyratok' has no attribute {name!r}")


__all__ = ["AutoencoderPyraTok", "PyraTokConfig", "PyraTokModel", "PyraTokOutput", "PyraTokTokens", "__version__"]
