"""Reusable buffers for the big tensors of a training step.

A training step at the paper's sizes (4,096 sequences of 100 steps, |h| = 150, d = 100) makes
a handful of tensors of 50-250 MB each: the input noise, its time-major copy, the hidden
states, their gradient, the Sinkhorn overlap counts. glibc's ``malloc`` serves every block
above 32 MB with a fresh ``mmap`` and returns it to the system on ``free``, so each step
page-faults that memory in again: about a gigabyte per step, a tenth of an optimised step's
time, and most of the eager baseline's (``benchmarks/bench_train_step.py``: its system time;
an allocator that keeps freed memory, such as tcmalloc, removes it). A :class:`Workspace`
owned by one training run allocates each buffer once and hands out views of it, so the step
computes the same numbers in the same memory every time.

    >>> import torch
    >>> ws = Workspace()
    >>> a = ws.take("noise", (2, 3))
    >>> b = ws.take("noise", (1, 3))      # the same memory, a smaller view
    >>> a.data_ptr() == b.data_ptr()
    True

A buffer's content is undefined (as ``torch.empty``'s) and is overwritten by the next
``take`` of the same name: a caller keeps a view only until it takes that name again.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Workspace"]


class Workspace:
    """Named buffers that grow to the largest size asked for and are then reused.

    Buffers are ordinary tensors even when taken inside ``torch.inference_mode`` (validation
    and training share them).
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> torch.Tensor:
        """A contiguous tensor of ``shape`` and ``dtype`` in the buffer ``name`` (content undefined).

        Raises:
            ValueError: a negative dimension.
        """
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"workspace {name!r}: negative dimension in shape {shape}")
        numel = math.prod(shape)
        key = (name, dtype, torch.device(device))
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):
                buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf[:numel].view(shape)

    def nbytes(self) -> int:
        """Bytes held by all buffers."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())
