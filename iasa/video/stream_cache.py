"""A stream's key/value cache, preallocated: every DiT layer's keys and values in one buffer of fixed capacity,
written in place by index and read as views, so that a chunk copies its own tokens only (no concatenation of the
whole cache, no re-indexing at an eviction: the new frame overwrites the evicted frame's slot).

Token positions of the buffer (capacity = chunk area + slots * slot_tokens):
- the chunk area, C * N positions (C = the stream's chunk_latent_frames, N = tokens per frame): the current
  chunk's tokens, frame by frame (a shorter last chunk at the end of the area), each frame's tokens ordered
  region by region (stable within a region), so that a frame's region tokens are the last run of its N
  positions;
- slots 0..S-1 of slot_tokens positions each (S = frame 0 + cache_frames): one cached frame each, its cached
  tokens region by region (each region one contiguous run: the flex kernel's tiles then see few classes), the
  rest of the slot unused.
Unused positions hold zeros from the allocation or the tokens of an evicted frame: finite numbers that the
attention layout marks as padding (iasa.attention.chunk_layout), so they get zero weight and add nothing. A
dense stream caches every token (slot_tokens = N) and fills slots in order, so the keys of a chunk are a prefix
of the buffer: the chunk area, then the filled slots.

The keys are stored RMS-normed but not rotated (each chunk rotates them to its RoPE positions for them, which
slide past the trained length); `rotated` is the scratch one layer's rotated keys are written to (the layers run
one after another, so one buffer serves them all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class StreamCache:
    """keys, values (layers, b, capacity, dim) in the model dtype; rotated (b, capacity, dim) scratch; the
    geometry: chunk_frames C, frame_tokens N, slots S, slot_tokens (positions per slot)."""

    keys: torch.Tensor
    values: torch.Tensor
    rotated: torch.Tensor
    chunk_frames: int
    frame_tokens: int
    slots: int
    slot_tokens: int

    @classmethod
    def allocate(
        cls,
        layers: int,
        batch: int,
        dim: int,
        chunk_frames: int,
        frame_tokens: int,
        slots: int,
        slot_tokens: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> "StreamCache":
        capacity = chunk_frames * frame_tokens + slots * slot_tokens
        # Zeros, not empty memory: unused positions get zero attention weight, and 0 * NaN would still be NaN.
        keys = torch.zeros(layers, batch, capacity, dim, device=device, dtype=dtype)
        return cls(
            keys, torch.zeros_like(keys), torch.zeros_like(keys[0]), chunk_frames, frame_tokens, slots, slot_tokens
        )

    @property
    def chunk_tokens(self) -> int:
        """Positions of the chunk area."""
        return self.chunk_frames * self.frame_tokens

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def slot_start(self, slot: int) -> int:
        return self.chunk_tokens + slot * self.slot_tokens

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.rotated))

    def store(self, slot: int, source: int, count: int) -> None:
        """Cache `count` positions of the chunk area from `source` on (a frame's cached tokens) in `slot`, every
        layer at once."""
        target = self.slot_start(slot)
        for buffer in (self.keys, self.values):
            buffer[:, :, target : target + count] = buffer[:, :, source : source + count]

    def with_slot_tokens(self, slot_tokens: int) -> "StreamCache":
        """A larger cache holding this one's chunk area and slots (a frame with more cached tokens than a slot
        holds arrived):
        one copy, rare when the slot size is chosen from the stream's poses (StreamState.slot_tokens)."""
        grown = StreamCache.allocate(
            self.keys.shape[0], self.keys.shape[1], self.keys.shape[3], self.chunk_frames, self.frame_tokens,
            self.slots, slot_tokens, self.keys.device, self.keys.dtype,
        )  # fmt: skip
        runs = [(0, 0, self.chunk_tokens)]  # the chunk area (the chunk being stored), then every slot
        runs += [(self.slot_start(slot), grown.slot_start(slot), self.slot_tokens) for slot in range(self.slots)]
        for old, new, count in runs:
            for source, target in ((self.keys, grown.keys), (self.values, grown.values)):
                target[:, :, new : new + count] = source[:, :, old : old + count]
        return grown
