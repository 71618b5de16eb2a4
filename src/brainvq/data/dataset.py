"""PyTorch dataset view of a :class:`SliceSet`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from brainvq.data.slices import SliceSet


class SliceDataset(Dataset):
    """Items: ``image`` (1,H,W) float in [0,1], ``position``, ``case_id``, ``slice_index``, ``index``."""

    def __init__(self, data: SliceSet, *, flip: bool = False) -> None:
        self.data = data
        self.flip = flip  # random left-right flip (brains are roughly symmetric)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = np.array(self.data.images[i])  # copy: the cache is a read-only memmap
        if self.flip and torch.rand(()) < 0.5:
            img = img[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)[None]
        return {
            "image": image,
            "position": torch.tensor(float(self.data.positions[i])),
            "case_id": torch.tensor(int(self.data.case_ids[i])),
            "slice_index": torch.tensor(int(self.data.slice_indices[i])),
            "index": torch.tensor(i),
        }


def as_tensor(data: SliceSet, index: np.ndarray | None = None) -> torch.Tensor:
    """All images (or those at ``index``) as one (N,1,H,W) float tensor in [0,1]."""
    images = np.array(data.images if index is None else data.images[index])  # copy: memmaps are read-only
    return torch.from_numpy(images).float().div_(255.0)[:, None]
