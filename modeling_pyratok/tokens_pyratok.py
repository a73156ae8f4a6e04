"""Token sequences for priors: PyraTok's per-level ids as one sequence per clip and back (DESIGN.md §7).

A [`PyraTokTokenLayout`] records everything needed to flatten a clip's level ids into one id sequence, to undo it
exactly, and to decode the result: the level grids, the order, the square padding and the codebook. Special ids (mask,
pad, `<SOI>`, `<Q-SEP>`) live at and above `codebook_size`. The bit converters map ids to ±1 codes (channel 0 = most
significant bit, as vector-quantize-pytorch's LFQ) and to Open-MAGVIT2's factorised `(pre, post)` groups.

Orders (each level's `(T', H_l, W_l)` grid in raster order inside a block):
- `"frame_major"` (default): latent frame by latent frame, coarse level first within a frame (descending stride; in
  residual mode, where every stride is 1, stage order). The ids of a clip's first k latent frames are a prefix of its
  sequence, so streaming pieces (`iter_encode_to_ids`), priming and continuation line up.
- `"level_major"`: level by level in the model's order (shallow → deep), each in `(t, h, w)` order, as the AR head of
  `training/heads.py` reads them; with `separators=True` the sequence is the paper's `<SOI> q1 <Q-SEP> … <Q-SEP> qL`
  (a text prefix, if any, is the prior's own).
- `"planes"`: every level space-to-depth onto the coarsest grid, coarse level first, giving one
  `(T'·P, H'/S, W'/S)` grid (`S` the largest stride, `P = Σ (S/s_l)²`) read in raster order; also frame-major.

With `pad_to_square=True` the sequence is padded at its end with id 0 (a valid id, so consumers whose embedding has
no pad row accept it) to `square_side²` tokens; `unflatten` drops the pads whatever they hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from .quantizer_pyratok import MAX_CODEBOOK_DIM
from .quantizer_pyratok import bits_to_ids as _bits_to_ids
from .quantizer_pyratok import ids_to_bits as _ids_to_bits

ORDERS = ("frame_major", "level_major", "planes")
# Special ids in the order they follow the codebook: mask_token_id = codebook_size, then pad, <SOI>, <Q-SEP>.
SPECIAL_TOKENS = ("mask", "pad", "soi", "sep")
# Value of the square padding positions (see the module docstring).
SQUARE_PAD_ID = 0
# Marks special and pad positions in `level_index()` / `frame_index()`.
NO_INDEX = -1


# ---------------------------------------------------------------------------------------------------------------------
# Bit converters
# ---------------------------------------------------------------------------------------------------------------------


def ids_to_bits(ids: torch.Tensor, codebook_dim: int, dim: int = -1) -> torch.Tensor:
    """Ids → ±1 codes, channel 0 = most significant bit (as vector-quantize-pytorch's `LFQ.indices_to_codes`).

    The quantizer's own converter with the bit dimension last by default (the quantizer's puts it at `dim=1`).

    Args:
        ids (`torch.LongTensor`): any shape, values in `[0, 2**codebook_dim)`.
        codebook_dim (`int`): bits per id `d`.
        dim (`int`): where the bit dimension goes in the output.

    Returns:
        `torch.FloatTensor` (fp32) of `ids.shape` with `d` inserted at `dim`, values in `{-1., +1.}`.
    """
    return _ids_to_bits(ids, codebook_dim, dim=dim)


def bits_to_ids(bits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of [`ids_to_bits`]: bit `i` is `bits[..., i] > 0`, read most significant first.

    Args:
        bits (`torch.Tensor`): any shape with `d = bits.shape[dim]` bits.
        dim (`int`): the bit dimension.

    Returns:
        `torch.LongTensor` of `bits.shape` without `dim`, values in `[0, 2**d)`.
    """
    return _bits_to_ids(bits, dim=dim)


def _check_factorized_bits(factorized_bits: Sequence[int]) -> tuple[int, int]:
    bits = tuple(factorized_bits) if isinstance(factorized_bits, Sequence) else ()
    if len(bits) != 2 or any(type(b) is not int or b < 1 for b in bits) or sum(bits) > MAX_CODEBOOK_DIM:
        raise ValueError(
            f"factorized_bits must be two positive ints (k, d - k) with d <= {MAX_CODEBOOK_DIM}, got {factorized_bits}"
        )
    return bits


def ids_to_factorized(ids: torch.Tensor, factorized_bits: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids → Open-MAGVIT2's asymmetric token factorisation `(pre, post)`.

    With `d = k + m` bits and channels `c_0 … c_{d-1}` of the ±1 code (`c_0` the most significant bit of the id),
    Open-MAGVIT2 reads each group least significant first: `pre = Σ_{i<k} [c_i > 0]·2**i`,
    `post = Σ_{i<m} [c_{k+i} > 0]·2**i` (`LFQ.forward` with `token_factorization=True` in
    https://github.com/TencentARC/SEED-Voken `src/Open_MAGVIT2/modules/vqvae/lookup_free_quantize.py`, Apache-2.0).

    Args:
        ids (`torch.LongTensor`): any shape, values in `[0, 2**d)`.
        factorized_bits (`Sequence[int]`): `(k, m)`, e.g. `(6, 10)` or `(8, 8)` for 16-bit ids.

    Returns:
        `(pre, post)`: two `torch.LongTensor` of `ids.shape`, in `[0, 2**k)` and `[0, 2**m)`.
    """
    k, m = _check_factorized_bits(factorized_bits)
    bits = (ids_to_bits(ids, k + m) > 0).long()  # (..., d), MSB first
    pre = (bits[..., :k] * (2 ** torch.arange(k, device=bits.device))).sum(-1)
    post = (bits[..., k:] * (2 ** torch.arange(m, device=bits.device))).sum(-1)
    return pre, post


def factorized_to_ids(pre: torch.Tensor, post: torch.Tensor, factorized_bits: Sequence[int]) -> torch.Tensor:
    """Inverse of [`ids_to_factorized`]: `(pre, post)` → ids in `[0, 2**(k + m))` (MSB first from channel 0)."""
    k, m = _check_factorized_bits(factorized_bits)
    groups = []
    for name, part, width in (("pre", pre, k), ("post", post, m)):
        if not isinstance(part, torch.Tensor) or part.dtype.is_floating_point or part.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {getattr(part, 'dtype', type(part).__name__)}")
        if part.numel() and (int(part.min()) < 0 or int(part.max()) >= 2**width):
            raise ValueError(
                f"{name} must lie in [0, {2**width}) for factorized_bits={(k, m)}; "
                f"got min {int(part.min())}, max {int(part.max())}"
            )
        groups.append((part.long().unsqueeze(-1) >> torch.arange(width, device=part.device)) & 1)  # LSB first
    if pre.shape != post.shape:
        raise ValueError(f"pre and post must have one shape, got {tuple(pre.shape)} and {tuple(post.shape)}")
    return bits_to_ids(torch.cat(groups, dim=-1))


# ---------------------------------------------------------------------------------------------------------------------
# Level ids that remember an image input
# ---------------------------------------------------------------------------------------------------------------------


class PyraTokLevelIds(list):
    """A list of per-level ids `(B, T', H_l, W_l)` that remembers whether it came from `(B, C, H, W)` images.

    `encode_to_ids` returns one; `decode_from_ids(ids)` then returns images `(B, 3, H, W)` for image ids (4-D in, 4-D
    out). A plain list of tensors decodes to video unless `is_image=True` is passed.
    """

    def __init__(self, ids: Sequence[torch.Tensor] = (), is_image: bool = False) -> None:
        super().__init__(ids)
        self.is_image = bool(is_image)


# ---------------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------------


def _int_tuple(value: Any, length: int | None, name: str) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    wrong_length = items is not None and length is not None and len(items) != length
    if items is None or wrong_length or any(type(v) is not int or v < 1 for v in items):
        size = "" if length is None else f"{length} "
        raise ValueError(f"{name} must be a sequence of {size}positive ints, got {value!r}")
    return items


@dataclass(frozen=True)
class PyraTokTokenLayout:
    """How one clip's per-level ids become one id sequence `(B, N)` and back (see the module docstring).

    Build it with `model.token_layout(num_frames, height, width, order=...)` or get it from `encode_to_sequence`.

    Args:
        level_shapes (`tuple[tuple[int, int, int], ...]`): `(T', H_l, W_l)` per level, shallow → deep, as the model
            returns the ids; every level has the same `T'` and `H_l·s_l = H'`, `W_l·s_l = W'`.
        level_strides (`tuple[int, ...]`): `s_l` per level (the quantizer's `level_spatial_strides`).
        codebook_dim (`int`): bits per id `d`; ids lie in `[0, 2**d)`.
        order (`str`): one of `ORDERS`.
        pad_to_square (`bool`): pad the sequence with id 0 to `square_side**2` tokens.
        frame_size (`tuple[int, int]`, *optional*): the clip's pixel `(H, W)`; decoding crops to it when the model
            padded the input to a larger size (the pad sits at the bottom and right).
        is_image (`bool`): the ids came from `(B, C, H, W)` images (decoding returns images).
        separators (`bool`): `level_major` only: `<SOI>` before the first level and `<Q-SEP>` between levels.
    """

    level_shapes: tuple[tuple[int, int, int], ...]
    level_strides: tuple[int, ...]
    codebook_dim: int
    order: str = "frame_major"
    pad_to_square: bool = False
    frame_size: tuple[int, int] | None = None
    is_image: bool = False
    separators: bool = False

    def __post_init__(self) -> None:
        shapes = self.level_shapes
        if not isinstance(shapes, Sequence) or len(shapes) == 0:
            raise ValueError(f"level_shapes must be a non-empty sequence of (T', H_l, W_l), got {shapes!r}")
        shapes = tuple(_int_tuple(s, 3, f"level_shapes[{i}]") for i, s in enumerate(shapes))
        strides = _int_tuple(self.level_strides, len(shapes), "level_strides")
        object.__setattr__(self, "level_shapes", shapes)
        object.__setattr__(self, "level_strides", strides)
        if type(self.codebook_dim) is not int or not 1 <= self.codebook_dim <= MAX_CODEBOOK_DIM:
            raise ValueError(f"codebook_dim must be an int in 1..{MAX_CODEBOOK_DIM}, got {self.codebook_dim!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        for name in ("pad_to_square", "is_image", "separators"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.separators and self.order != "level_major":
            raise ValueError(f"separators=True needs order='level_major', got order={self.order!r}")
        if self.frame_size is not None:
            object.__setattr__(self, "frame_size", _int_tuple(self.frame_size, 2, "frame_size"))
        latent = {(t, h * s, w * s) for (t, h, w), s in zip(shapes, strides, strict=True)}
        if len(latent) != 1:
            raise ValueError(
                f"level_shapes {list(shapes)} with strides {list(strides)} do not share one latent grid "
                "(T', H_l·s_l, W_l·s_l)"
            )
        largest = max(strides)
        if any(largest % s for s in strides) or any(
            h % (largest // s) or w % (largest // s) for (_, h, w), s in zip(shapes, strides, strict=True)
        ):
            raise ValueError(
                f"level_strides {list(strides)} must each divide the largest, and every level grid {list(shapes)} "
                "must fold onto the coarsest"
            )
        if self.is_image and shapes[0][0] != 1:
            raise ValueError(f"an image layout has T' = 1, got level_shapes {list(shapes)}")

    # ---- sizes -------------------------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.level_shapes)

    @property
    def latent_size(self) -> tuple[int, int, int]:
        """`(T', H', W')`: the decoder latent grid."""
        t, h, w = self.level_shapes[0]
        return (t, h * self.level_strides[0], w * self.level_strides[0])

    @property
    def num_latent_frames(self) -> int:
        return self.level_shapes[0][0]

    @property
    def level_order(self) -> tuple[int, ...]:
        """Levels coarse first (descending stride, ties in the model's order): the frame-major and planes order."""
        return tuple(sorted(range(self.num_levels), key=lambda level: -self.level_strides[level]))

    @property
    def num_id_tokens(self) -> int:
        """Code ids per clip: `T'·Σ_l H_l·W_l`."""
        return sum(t * h * w for t, h, w in self.level_shapes)

    @property
    def num_tokens(self) -> int:
        """Sequence length without the square padding (ids plus `<SOI>` / `<Q-SEP>` when `separators`)."""
        return self.num_id_tokens + (self.num_levels if self.separators else 0)

    @property
    def square_side(self) -> int:
        """Side of the smallest square holding `num_tokens` tokens."""
        return math.isqrt(self.num_tokens - 1) + 1

    @property
    def seq_len(self) -> int:
        """Sequence length `N` that `flatten` returns and `unflatten` takes (with the square padding)."""
        return self.square_side**2 if self.pad_to_square else self.num_tokens

    @property
    def num_planes(self) -> int:
        """`P = Σ_l (S/s_l)²` with `S` the largest stride."""
        largest = max(self.level_strides)
        return sum((largest // s) ** 2 for s in self.level_strides)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """The planes grid `(T'·P, H'/S, W'/S)` (for `order="planes"`, its sequence read in raster order)."""
        t, h, w = self.latent_size
        largest = max(self.level_strides)
        return (t * self.num_planes, h // largest, w // largest)

    # ---- special ids ---------------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return 2**self.codebook_dim

    @property
    def mask_token_id(self) -> int:
        """The absorbing `[MASK]` of masked / discrete-diffusion priors: `codebook_size`."""
        return self.codebook_size + SPECIAL_TOKENS.index("mask")

    @property
    def pad_token_id(self) -> int:
        """For padding sequences of different lengths in a batch (the square padding uses id 0, see above)."""
        return self.codebook_size + SPECIAL_TOKENS.index("pad")

    @property
    def soi_token_id(self) -> int:
        return self.codebook_size + SPECIAL_TOKENS.index("soi")

    @property
    def sep_token_id(self) -> int:
        return self.codebook_size + SPECIAL_TOKENS.index("sep")

    @property
    def vocab_size(self) -> int:
        """Code ids plus every special id."""
        return self.codebook_size + len(SPECIAL_TOKENS)

    # ---- position structure --------------------------------------------------------------------------------------
    def _arrange(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level `(B, T', H_l, W_l)` → `(B, num_id_tokens)` in this layout's order (no special or pad slots)."""
        if self.order == "level_major":
            return torch.cat([level.flatten(1) for level in levels], dim=1)
        if self.order == "frame_major":
            per_frame = [levels[level].flatten(2) for level in self.level_order]  # (B, T', H_l·W_l)
            return torch.cat(per_frame, dim=2).flatten(1)
        # planes: space-to-depth of each level by r = S/s_l: "b t (h r1) (w r2) -> b t (r1 r2) h w" (consumers.md §1.5)
        largest = max(self.level_strides)
        planes = []
        for level in self.level_order:
            r = largest // self.level_strides[level]
            b, t, h, w = levels[level].shape
            x = levels[level].reshape(b, t, h // r, r, w // r, r).permute(0, 1, 3, 5, 2, 4)
            planes.append(x.reshape(b, t, r * r, h // r, w // r))
        return torch.cat(planes, dim=2).flatten(1)  # (B, T'·P·(H'/S)·(W'/S)), frames outer

    def _positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(source, id_positions)`: `source[i]` says what sequence position `i` holds (`j >= 0`: code id `j` of the
        levels concatenated shallow → deep; `-1 - k`: special `SPECIAL_TOKENS[k]`; `NO_INDEX - len(...)`: square pad),
        `id_positions[j]` is the position of code id `j`."""
        cached = self.__dict__.get("_positions_cache")
        if cached is not None:
            return cached
        sizes = [t * h * w for t, h, w in self.level_shapes]
        offsets = [sum(sizes[:level]) for level in range(self.num_levels)]
        index = [torch.arange(o, o + n).reshape(1, *shape) for o, n, shape in zip(offsets, sizes, self.level_shapes)]
        arranged = self._arrange(index)[0]
        if self.separators:
            soi = torch.tensor([-1 - SPECIAL_TOKENS.index("soi")])
            sep = torch.tensor([-1 - SPECIAL_TOKENS.index("sep")])
            parts = [soi]
            for level, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
                parts += ([sep] if level else []) + [arranged[offset : offset + size]]
            arranged = torch.cat(parts)
        pad = torch.full((self.seq_len - arranged.numel(),), -1 - len(SPECIAL_TOKENS))
        source = torch.cat([arranged, pad])
        id_positions = torch.empty(self.num_id_tokens, dtype=torch.long)
        is_id = source >= 0
        id_positions[source[is_id]] = torch.nonzero(is_id).flatten()
        self.__dict__["_positions_cache"] = (source, id_positions)  # frozen dataclass: cache outside the fields
        return source, id_positions

    def level_index(self) -> torch.LongTensor:
        """`(seq_len,)`: the level (0 = shallowest, as in the ids list) of every position; `-1` at special / pad."""
        source = self._positions()[0]
        bounds = torch.tensor([t * h * w for t, h, w in self.level_shapes]).cumsum(0)
        level = torch.bucketize(source, bounds, right=True)
        return torch.where(source >= 0, level, NO_INDEX)

    def frame_index(self) -> torch.LongTensor:
        """`(seq_len,)`: the latent frame of every position; `-1` at special / pad positions."""
        frames = [torch.arange(t).view(1, t, 1, 1).expand(1, t, h, w) for t, h, w in self.level_shapes]
        flat = torch.cat([f.flatten(1) for f in frames], dim=1)[0]  # frame of each concatenated code id
        source = self._positions()[0]
        return torch.where(source >= 0, flat[source.clamp_min(0)], NO_INDEX)

    # ---- flatten / unflatten ---------------------------------------------------------------------------------------
    def _check_level_ids(self, level_ids: Any) -> int:
        if not isinstance(level_ids, Sequence) or len(level_ids) != self.num_levels:
            got = len(level_ids) if isinstance(level_ids, Sequence) else type(level_ids).__name__
            raise ValueError(f"expected {self.num_levels} id tensors (one per level), got {got}")
        batch = None
        for level, (ids, shape) in enumerate(zip(level_ids, self.level_shapes, strict=True)):
            if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                got = getattr(ids, "dtype", type(ids).__name__)
                raise ValueError(f"level {level}: ids must be an integer tensor, got {got}")
            batch = ids.shape[0] if batch is None and ids.ndim == 4 else batch
            if ids.ndim != 4 or tuple(ids.shape[1:]) != shape or ids.shape[0] != batch:
                raise ValueError(
                    f"level {level}: expected ids of shape (B, {', '.join(map(str, shape))}) with one B for every "
                    f"level (this layout's level_shapes {list(self.level_shapes)}), got {tuple(ids.shape)}"
                )
            self._check_values(ids, f"level {level}")
        return batch

    def _check_values(self, ids: torch.Tensor, where: str) -> None:
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.codebook_size:
            hint = " (the mask id: an unfilled position)" if high == self.mask_token_id else ""
            raise ValueError(f"{where}: ids must lie in [0, {self.codebook_size}), got min {low}, max {high}{hint}")

    def flatten(self, level_ids: Sequence[torch.Tensor]) -> torch.LongTensor:
        """Per-level ids → one sequence.

        Args:
            level_ids (`Sequence[torch.LongTensor]`): one per level, `(B, *level_shapes[l])`, in `[0, codebook_size)`.

        Returns:
            `torch.LongTensor` of shape `(B, seq_len)`: ids in this layout's order, then (if `separators`) the
            special ids in their slots and (if `pad_to_square`) the pad id 0.
        """
        self._check_level_ids(level_ids)
        source, _ = self._positions()
        device = level_ids[0].device
        joined = torch.cat([ids.long().flatten(1) for ids in level_ids], dim=1)  # (B, num_id_tokens)
        specials = [self.codebook_size + k for k in range(len(SPECIAL_TOKENS))] + [SQUARE_PAD_ID]
        extra = torch.tensor(specials, device=device).expand(joined.shape[0], -1)
        # source: j >= 0 → joined[j]; -1 - k → extra[k] (the last entry of extra is the square pad).
        index = torch.where(source >= 0, source, joined.shape[1] - 1 - source).to(device)
        return torch.cat([joined, extra], dim=1)[:, index]

    def unflatten(self, seq: torch.Tensor) -> PyraTokLevelIds:
        """Inverse of `flatten`: one sequence → per-level ids (pads dropped, special slots checked).

        Args:
            seq (`torch.LongTensor`): `(B, seq_len)`; code positions in `[0, codebook_size)`.

        Returns:
            [`PyraTokLevelIds`]: one `torch.LongTensor` per level, `(B, *level_shapes[l])`, shallow → deep, remembering
            `is_image` (so `decode_from_ids` of it returns images for an image layout).

        Raises:
            `ValueError` for a wrong shape or length (e.g. a sequence of another clip size), a code position holding
            an id outside `[0, codebook_size)` (such as the mask id) or a special slot holding the wrong id.
        """
        if not isinstance(seq, torch.Tensor) or seq.dtype.is_floating_point or seq.dtype == torch.bool:
            raise ValueError(f"seq must be an integer tensor, got {getattr(seq, 'dtype', type(seq).__name__)}")
        if seq.ndim != 2 or seq.shape[1] != self.seq_len:
            raise ValueError(
                f"seq must be (B, {self.seq_len}) for this layout (level_shapes {list(self.level_shapes)}, "
                f"order={self.order!r}, pad_to_square={self.pad_to_square}), got {tuple(seq.shape)}"
            )
        source, id_positions = self._positions()
        source = source.to(seq.device)
        special = (source < 0) & (source > -1 - len(SPECIAL_TOKENS))
        if special.any():
            expected = self.codebook_size - 1 - source[special]
            if not torch.equal(seq[:, special], expected.expand(seq.shape[0], -1)):
                raise ValueError(
                    f"seq: the <SOI> / <Q-SEP> slots must hold {expected.tolist()}, got "
                    f"{seq[:, special].unique().tolist()}"
                )
        joined = seq[:, id_positions.to(seq.device)].long()
        self._check_values(joined, "seq")
        sizes = [t * h * w for t, h, w in self.level_shapes]
        parts = joined.split(sizes, dim=1)
        return PyraTokLevelIds(
            [part.reshape(seq.shape[0], *shape) for part, shape in zip(parts, self.level_shapes, strict=True)],
            is_image=self.is_image,
        )

    # ---- serialisation ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists, ints, bools, str) for token files and datasets; `from_dict` inverts it."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "level_shapes":
                value = [list(s) for s in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PyraTokTokenLayout:
        """Rebuild a layout from `to_dict`'s output (unknown keys raise `ValueError`)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown PyraTokTokenLayout fields {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


__all__ = [
    "ORDERS",
    "SPECIAL_TOKENS",
    "PyraTokLevelIds",
    "PyraTokTokenLayout",
    "bits_to_ids",
    "factorized_to_ids",
    "ids_to_bits",
    "ids_to_factorized",
]
