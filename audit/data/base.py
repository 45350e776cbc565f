"""What every data source hands the engine: batches of pixels with ids, labels and masks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class DataBatch:
    images: torch.Tensor  # (B, C, S, S) pixel space [0, 1]; C = the model's channels
    labels: torch.Tensor  # (B,) int64, -1 unknown
    ids: tuple[int, ...]
    masks: torch.Tensor | None = None  # (B, S, S) bool
    # (B, K) int64 classes accepted as correct for each image, padded with -1 (ImageNet-ReaL
    # style multi-label ground truth); None: the label is the only correct class
    accepted: torch.Tensor | None = None


class Dataset:
    """A fixed, ordered selection of ``n`` samples."""

    class_names: tuple[str, ...] = ()
    single_label: bool = True  # False: images hold several classes and carry no label
    has_masks: bool = False
    description: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, positions: range) -> DataBatch:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[DataBatch]:
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(len(self), start + batch_size)))

    def digest(self) -> str:
        """sha256 over what identifies the selection (cheap: no decoding needed)."""
        raise NotImplementedError
