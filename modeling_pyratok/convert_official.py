"""Convert the official PyraTok release (an `AutoencoderKLPyraTok` diffusers folder) into a native PyraTok folder.

    python -m modeling_pyratok.convert_official SRC_DIR OUT_DIR
    python -m modeling_pyratok.convert_official onkarsus13/PyraTok OUT_DIR --subfolder vae

The output is a `PyraTokModel` folder (`config.json` with `quantizer_mode="residual"`, `model.safetensors`) that both
`PyraTokModel` and `AutoencoderPyraTok` load, plus a `README.md` model card stating where the weights came from.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .checkpoint_pyratok import OFFICIAL_CLASS_NAME, is_official_config, read_config, resolve_checkpoint
from .modeling_pyratok import PyraTokModel

OFFICIAL_CODE_URL = "https://github.com/PLAN-Lab/PyraTok"
OFFICIAL_WEIGHTS_URL = "https://huggingface.co/onkarsus13/PyraTok"
# Wan 2.1 VAE, which the released weights fine-tune.
WAN21_LICENSE = "apache-2.0"


def _source_license(src: str, subfolder: str | None) -> str | None:
    """The `license:` of a model card next to the source folder (or its parent), if there is one."""
    if not os.path.isdir(src):
        return None
    for folder in (Path(src) / (subfolder or ""), Path(src)):
        card = folder / "README.md"
        if card.is_file():
            match = re.search(r"^license:\s*(\S+)\s*$", card.read_text(encoding="utf-8"), flags=re.MULTILINE)
            if match:
                return match.group(1)
    return None


def model_card(src: str, subfolder: str | None, model: PyraTokModel, license_id: str | None) -> str:
    cfg = model.config
    licence_line = (
        f"`{license_id}`, as stated by the source model card."
        if license_id
        else "not stated in the source folder: check the terms at "
        f"{OFFICIAL_WEIGHTS_URL} before redistributing. The backbone is a fine-tune of the Wan 2.1 VAE "
        f"({WAN21_LICENSE})."
    )
    front = f"---\nlicense: {license_id}\n" if license_id else "---\nlicense: other\n"
    front += "library_name: transformers\ntags:\n- pyratok\n- video-tokenizer\n- wan\n---\n"
    return (
        front
        + f"""
# PyraTok (converted official release)

The official PyraTok weights ({OFFICIAL_WEIGHTS_URL}, folder `vae/`, class `{OFFICIAL_CLASS_NAME}`, code
{OFFICIAL_CODE_URL}) converted to the native `modeling_pyratok` layout by
`python -m modeling_pyratok.convert_official`.

- Source: `{src}`{f" (subfolder `{subfolder}`)" if subfolder else ""}.
- Licence of the weights: {licence_line}
- Architecture: a fine-tuned Wan 2.1 VAE (z_dim {cfg.z_dim}, {cfg.scale_factor_temporal}x{cfg.scale_factor_spatial}x
  {cfg.scale_factor_spatial}) whose posterior mean goes through {cfg.num_levels} residual sign-quantizer stages of
  {cfg.codebook_dim} bits (stage i contributes 2^-i x sign(residual)), then `post_quant_conv` and the decoder
  (`quantizer_mode="residual"`). Token ids: {cfg.num_levels} tensors `(B, T', H', W')` in `[0, 2**{cfg.codebook_dim})`,
  bit = value >= 0, channel 0 = most significant bit.
- Conversion: backbone weights copied unchanged; the quantizers' `bitmask` / `codebook` buffers checked against the
  regenerated ones and dropped; the text-conditioning weights (`lapq_text_mlp.*`, per-stage `cross_attn`,
  `query_norm`, `text_context_norm`, `text_proj`) dropped, because the official quantizer forces their scale to 0, so
  text never changes the output. Reconstructions and ids equal the official model's.

```python
from modeling_pyratok import AutoencoderPyraTok, PyraTokModel

vae = AutoencoderPyraTok.from_pretrained("path/to/this/folder")
ids = vae.encode_to_ids(video)  # video: (B, 3, 4k+1, H, W) in [-1, 1], H and W multiples of 8
video_hat = vae.decode_from_ids(ids)
```
"""
    )


def convert_official(src: str | os.PathLike, out: str | os.PathLike, subfolder: str | None = None) -> PyraTokModel:
    """Load an official `AutoencoderKLPyraTok` folder (local or Hub id) and save it as a native PyraTok folder.

    Args:
        src: The official folder (the one holding its `config.json`), its parent with `subfolder`, or a Hub id.
        out: Output folder (created).
        subfolder: Subfolder of `src` holding the VAE (`"vae"` for the Hub repo).

    Returns:
        The loaded `PyraTokModel`.

    Raises:
        ValueError: when `src` is not an official `AutoencoderKLPyraTok` folder, its weights do not fit, or `out` is
            `src` (or lies inside it), where writing would overwrite the official files.
    """
    src = str(src)
    check_out_outside_source(src, out)
    files = resolve_checkpoint(src, subfolder)
    if not is_official_config(read_config(files.config_file)):
        raise ValueError(f"{src!r} (subfolder={subfolder!r}) is not an official {OFFICIAL_CLASS_NAME} folder")
    model = PyraTokModel.from_pretrained(src, subfolder=subfolder)
    out = Path(out)
    model.save_pretrained(out)
    (out / "README.md").write_text(model_card(src, subfolder, model, _source_license(src, subfolder)), "utf-8")
    return model


def check_out_outside_source(src: str, out: str | os.PathLike) -> None:
    """Raise `ValueError` when the output folder is a local `src` or lies inside it: the native `config.json`,
    `model.safetensors` and `README.md` would replace the official ones."""
    if not os.path.isdir(src):
        return  # a Hub id: nothing local to overwrite
    source, target = Path(src).resolve(), Path(out).expanduser().resolve()
    if target == source or source in target.parents:
        raise ValueError(
            f"output folder {out} is inside the source folder {src}; converting there would overwrite the official "
            "files (pick an output folder outside it)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="official AutoencoderKLPyraTok folder (or Hub id, with --subfolder)")
    parser.add_argument("out", help="output folder for the native PyraTok checkpoint")
    parser.add_argument("--subfolder", default=None, help='subfolder of SRC holding the VAE (e.g. "vae")')
    args = parser.parse_args(argv)
    try:
        convert_official(args.src, args.out, subfolder=args.subfolder)
    except (ValueError, OSError) as err:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(err).split())}\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
