"""Batches of token sequences for prior training: a seeded, sharded, resumable stream over a token dataset.

The rows come from `pyratok tokenize-dataset` (`pyratok.token_datasets.load_token_dataset`). Each epoch visits every
row once in a permutation seeded by `(seed, epoch)`; process `rank` of `world_size` takes every `world_size`-th
position of it, so processes see disjoint rows. `state_dict()` is the (epoch, position) pair: a resumed run draws
exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


class TokenBatchStream(Iterator[dict]):
    """An endless iterator of batches `{"input_ids": LongTensor (B, N), "captions": list[str], "keys": list[str]}`.

    Args:
        input_ids: `(R, N)` integer tensor, one row per clip.
        captions, keys: `R` strings each.
        batch_size: rows per batch (an epoch's last, short batch is completed from the next epoch).
        seed, shuffle: the per-epoch permutation (`shuffle=False`: row order, every epoch).
        rank, world_size: this process's share.
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        captions: Sequence[str],
        keys: Sequence[str],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if input_ids.ndim != 2 or input_ids.shape[0] != len(captions) or len(captions) != len(keys):
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)}, {len(captions)} captions and {len(keys)} keys must describe "
                "the same rows"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside world_size={world_size}")
        if input_ids.shape[0] < world_size:
            raise ValueError(f"{input_ids.shape[0]} rows cannot be shared by {world_size} processes")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.input_ids = input_ids.long()
        self.captions = list(captions)
        self.keys = list(keys)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self.stats: dict[str, int] = {"rows": int(input_ids.shape[0]), "epochs_started": 1}
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        rows = self.input_ids.shape[0]
        if self.shuffle:
            order = torch.randperm(rows, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        else:
            order = torch.arange(rows)
        return order[self.rank :: self.world_size]

    def _next_row(self) -> int:
        if self.position >= len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._epoch_order(self.epoch)
            self.stats["epochs_started"] += 1
        row = int(self._order[self.position])
        self.position += 1
        return row

    def __next__(self) -> dict:
        rows = [self._next_row() for _ in range(self.batch_size)]
        return {
            "input_ids": self.input_ids[rows],
            "captions": [self.captions[r] for r in rows],
            "keys": [self.keys[r] for r in rows],
        }

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state.get("rank"), state.get("world_size")) != (self.rank, self.world_size):
            raise ValueError(
                f"token stream state is of rank {state.get('rank')} of {state.get('world_size')}, this process is "
                f"rank {self.rank} of {self.world_size}: resume with the same number of processes"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._epoch_order(self.epoch)
        self.stats["epochs_started"] = self.epoch + 1


__all__ = ["TokenBatchStream"]
