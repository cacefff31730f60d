"""Images and their captions, collated into runner's batch dictionary (runner/data/pair_dataset.py).

The source side of a batch is the image itself: ``net_input.src_tokens`` is a float tensor [B, 3, S, S] and
``src_lengths`` is all ones (an image is one source position: the feature the decoder starts from). The target side
is exactly the translation task's: right-padded ``target`` ending in ``</s>``, and ``prev_output_tokens`` with
``</s>`` moved to the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from runner.data.pair_dataset import collate_tokens
from runner.data.text import DataError


def load_image(path: Path, size: int, where: str) -> Tensor:
    """An image file as a [3, size, size] float tensor in [-1, 1]; errors name ``where`` (list file and line)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{where}: image {path} not found")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{where}: cannot read image {path} ({e})") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy())
    return pixels.permute(2, 0, 1).div_(127.5).sub_(1.0)


class ImageCaptionDataset:
    """Examples ``(image, caption ids)``; images are decoded once and shared by the captions that describe them."""

    def __init__(self, images: Sequence[Tensor], image_of: np.ndarray, captions: Sequence[Tensor], pad: int):
        if len(image_of) != len(captions):
            raise ValueError(f"{len(image_of)} image references for {len(captions)} captions")
        self.images = list(images)
        self.image_of = np.asarray(image_of, dtype=np.int64)
        self.captions = list(captions)
        self.pad_idx = pad
        self.tgt_sizes = np.array([len(c) for c in captions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.captions)

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch dictionary for these example indices (in the given order)."""
        idx = [int(i) for i in indices]
        tgt = [self.captions[i] for i in idx]
        return {
            "id": torch.as_tensor(np.asarray(idx, dtype=np.int64)),
            "nsentences": len(idx),
            "ntokens": int(sum(len(t) for t in tgt)),
            "net_input": {
                "src_tokens": torch.stack([self.images[self.image_of[i]] for i in idx]),
                "src_lengths": torch.ones(len(idx), dtype=torch.long),
                "prev_output_tokens": collate_tokens(tgt, self.pad_idx, left_pad=False, move_eos_to_beginning=True),
            },
            "target": collate_tokens(tgt, self.pad_idx, left_pad=False),
        }


class ImageSource:
    """What runner.generate asks a task with non-text sources for: a line of ``{split}.img`` as model input."""

    def __init__(self, images: str, image_size: int):
        self.images = images
        self.image_size = image_size

    def read(self, line: str, data_dir: Path, where: str) -> Tensor:
        """The image named on ``line`` as a [1, 3, S, S] tensor: one source position."""
        name = line.strip()
        if not name:
            raise DataError(f"{where}: empty line where an image file name was expected")
        return load_image(Path(data_dir) / self.images / name, self.image_size, where).unsqueeze(0)

    def collate(self, items: Sequence[Tensor]) -> Tensor:
        """A batch [B, 3, S, S] of images read by :meth:`read`."""
        return torch.cat(list(items))
