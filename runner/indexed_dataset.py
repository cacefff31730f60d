"""fairseq's memory-mapped indexed dataset (``MMIDIDX``): a ``.bin`` of concatenated token ids and an ``.idx``.

Kept byte-compatible with fairseq so that data binarized by either tool can be read by the other.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def best_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies that fit (as fairseq chooses), int32 otherwise."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def write_indexed_dataset(prefix: str | os.PathLike[str], items: Iterable[np.ndarray], dtype: np.dtype) -> None:
    """Write ``prefix.bin`` and ``prefix.idx`` from a sequence of 1-D id arrays."""
    prefix = str(prefix)
    sizes: list[int] = []
    with open(prefix + ".bin", "wb") as f:
        for arr in items:
            f.write(np.asarray(arr, dtype=dtype).tobytes(order="C"))
            sizes.append(len(arr))
    size_arr = np.asarray(sizes, dtype=np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(size_arr[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    with open(prefix + ".idx", "wb") as f:
        f.write(_MAGIC)
        f.write(struct.pack("<Q", _VERSION))
        f.write(struct.pack("<B", _CODES[dtype]))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(size_arr.tobytes(order="C"))
        f.write(pointers.tobytes(order="C"))


class IndexedDataset:
    """Random access to the token ids of example ``i`` without loading the file into memory."""

    def __init__(self, prefix: str | os.PathLike[str]):
        prefix = str(prefix)
        idx_path = Path(prefix + ".idx")
        with idx_path.open("rb") as f:
            magic = f.read(len(_MAGIC))
            if magic != _MAGIC:
                raise ValueError(f"{idx_path}: not an MMIDIDX index (bad magic {magic!r})")
            (version,) = struct.unpack("<Q", f.read(8))
            if version != _VERSION:
                raise ValueError(f"{idx_path}: unsupported index version {version}")
            (code,) = struct.unpack("<B", f.read(1))
            (n,) = struct.unpack("<Q", f.read(8))
            offset = f.tell()
        self.dtype = np.dtype(_DTYPES[code])
        index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(index, dtype=np.int32, count=n, offset=offset)
        self.pointers = np.frombuffer(index, dtype=np.int64, count=n, offset=offset + 4 * n)
        bin_path = Path(prefix + ".bin")
        self._data = np.memmap(bin_path, mode="r", dtype=self.dtype) if bin_path.stat().st_size else np.zeros(0)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> torch.Tensor:
        start = int(self.pointers[i]) // self.dtype.itemsize
        arr = np.asarray(self._data[start : start + int(self.sizes[i])], dtype=np.int64)
        return torch.from_numpy(arr)
