"""The batched KV state every decode in forkcode steps, and the cache under it.

`Rows` is a left-padded batch of token rows: their KV cache, a mask of each row's real positions
and each row's next position id. HFPolicy.sample_many's refilled batch and the search frontier of
beam and tree (engine/batch.py) both step one: prefill prefixes side by side, advance one token per
row, keep or copy rows (a branch), merge batches.

`GrowingCache` is a KV cache with room to grow: transformers' DynamicCache copies every layer's
whole cache on each decode step (torch.cat). At 128 rows and a few hundred positions that copy is
the size of the cache itself, every step; here a step writes its one new column into spare room.

`keys` and `values` stay ordinary views of the buffers, so every DynamicLayer method (select rows,
repeat, crop) keeps working: after one of them replaces the tensors, the next update moves them
into a new buffer with room again (one copy, as often as rows change, not every step).
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

ROOM = 256  # spare positions added when a buffer is (re)made: one copy per ROOM decode steps at most


class GrowingLayer(DynamicLayer):
    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        self._buffers = None   # (keys, values) with room; self.keys/values are views of their [start, end)
        self._end = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        owned = self._buffers is not None and self.keys is self._views[0] and self.values is self._views[1]
        if not owned or self._end + n > self._buffers[0].shape[-2] or key_states.shape[0] != self._buffers[0].shape[0]:
            self._rebuffer(key_states, n)
        kb, vb = self._buffers
        kb[:, :, self._end:self._end + n] = key_states
        vb[:, :, self._end:self._end + n] = value_states
        self._end += n
        self._views = (kb[:, :, self._start:self._end], vb[:, :, self._start:self._end])
        self.keys, self.values = self._views
        return self.keys, self.values

    def _rebuffer(self, key_states, n):
        """Copy the current keys/values to the front of new buffers with ROOM spare positions."""
        old = self.get_seq_length()
        b, h, _, d = key_states.shape
        shape = (b, h, old + n + ROOM, d)
        kb = key_states.new_empty(shape)
        vb = key_states.new_empty(shape)
        if old:
            kb[:, :, :old] = self.keys
            vb[:, :, :old] = self.values
        self._buffers, self._start, self._end = (kb, vb), 0, old

    def drop_front(self, n):
        """Forget the first n positions of every row (a view change, no copy)."""
        if n and self.get_seq_length():
            owned = self._buffers is not None and self.keys is self._views[0]
            self.keys, self.values = self.keys[:, :, n:], self.values[:, :, n:]
            if owned:
                self._start += n
                self._views = (self.keys, self.values)


class GrowingCache(DynamicCache):
    """DynamicCache of GrowingLayers (see the module docstring)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)

    def drop_front(self, n):
        for layer in self.layers:
            layer.drop_front(n)



def _pad_left(t, width):
    return torch.nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) if t.shape[2] < width else t


class Rows:
    """A left-padded batch of rows: KV cache, mask (1 at each row's real positions) and next position
    ids. `forward(ids, cache, mask, position_ids)` -> (output, cache) runs the model on new tokens;
    mask and position ids are None where no row is padded."""

    def __init__(self, cache=None, mask=None, pos=None):
        self.cache, self.mask, self.pos = cache, mask, pos

    @classmethod
    def prefill(cls, forward, prefixes, device):
        """Rows holding these prefixes, prefilled side by side in one left-padded forward; returns
        (rows, the forward's output for them)."""
        width = max(len(p) for p in prefixes)
        pad = [width - len(p) for p in prefixes]
        ids = torch.tensor([[0] * n + list(p) for n, p in zip(pad, prefixes)], device=device)
        mask = torch.tensor([[0] * n + [1] * (width - n) for n in pad], device=device)
        padded = any(pad)
        out, cache = forward(ids, GrowingCache(), mask if padded else None,
                             (mask.cumsum(1) - 1).clamp(min=0) if padded else None)
        return cls(cache, mask, torch.tensor([len(p) for p in prefixes], device=device)), out

    def __len__(self):
        return 0 if self.mask is None else self.mask.shape[0]

    def advance(self, forward, tokens):
        """Feed one token per row (a list or a tensor, in row order); returns the forward's output.
        Columns that are padding in every row (their rows have left, or were freed) are dropped
        first: a view change, no copy."""
        ids = torch.as_tensor(tokens, device=self.mask.device).reshape(-1, 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], dim=1)
        self._trim()
        out, self.cache = forward(ids, self.cache, self.mask, self.pos[:, None])
        self.pos = self.pos + 1
        return out

    def take(self, rows):
        """New rows holding these rows (indices, in this order; an index may repeat: the copies then
        go on apart); this batch is left as it is. Columns that are padding in every taken row are
        dropped (rows that left took their length with them)."""
        if not rows:
            return Rows()
        idx = torch.as_tensor(rows, device=self.mask.device)
        mask = self.mask[idx]
        start = int(mask.argmax(dim=1).min())
        cache = GrowingCache()
        for layer_idx, layer in enumerate(self.cache.layers):
            cache.update(layer.keys[idx, :, start:], layer.values[idx, :, start:], layer_idx)
        return Rows(cache, mask[:, start:], self.pos[idx])

    def keep(self, rows):
        """Keep only these rows, in place (no copy of the cache's room)."""
        if not rows:
            self.cache = self.mask = self.pos = None
            return
        idx = torch.as_tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.pos = self.mask[idx], self.pos[idx]
        self._trim()

    def _trim(self):
        """Drop the leading columns that are padding in every row (a view change, no copy)."""
        start = int(self.mask.argmax(dim=1).min())
        if start > 0:
            self.mask = self.mask[:, start:]
            self.cache.drop_front(start)

    def free(self, row):
        """Row `row` no longer holds anything: its positions are masked out, so they keep no column
        alive. It stays in the batch (fed whatever token, read by nobody) until `place` refills it:
        retiring it would copy every other row's cache."""
        self.mask[row] = 0

    def place(self, row, source, j):
        """Row j of `source` (its real positions) into row `row`, right-aligned with the other rows
        (it continues from their next column); the row's earlier contents are masked out. Copies
        only that row's positions, unless the batch must first grow wider on the left to hold them."""
        n = int(source.mask[j].sum())
        if n > self.mask.shape[1]:
            self._widen(n)
        width = self.mask.shape[1]
        for mine, theirs in zip(self.cache.layers, source.cache.layers):
            mine.keys[row, :, width - n:] = theirs.keys[j, :, theirs.keys.shape[2] - n:]
            mine.values[row, :, width - n:] = theirs.values[j, :, theirs.values.shape[2] - n:]
        self.mask[row] = 0
        self.mask[row, width - n:] = 1
        self.pos[row] = source.pos[j]

    def _widen(self, width):
        cache = GrowingCache()
        for layer_idx, layer in enumerate(self.cache.layers):
            cache.update(_pad_left(layer.keys, width), _pad_left(layer.values, width), layer_idx)
        self.cache = cache
        self.mask = torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0))

    @classmethod
    def merge(cls, parts):
        """One batch of all rows of `parts` (in order), left-padded so every row's last cached
        position lines up."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else Rows()
        width = max(p.mask.shape[1] for p in parts)
        cache = GrowingCache()
        for layer_idx in range(len(parts[0].cache.layers)):
            keys = torch.cat([_pad_left(p.cache.layers[layer_idx].keys, width) for p in parts])
            values = torch.cat([_pad_left(p.cache.layers[layer_idx].values, width) for p in parts])
            cache.update(keys, values, layer_idx)
        mask = torch.cat([torch.nn.functional.pad(p.mask, (width - p.mask.shape[1], 0)) for p in parts])
        return cls(cache, mask, torch.cat([p.pos for p in parts]))
