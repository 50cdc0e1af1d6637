"""A KV cache with room to grow: transformers' DynamicCache copies every layer's whole cache on each
decode step (torch.cat). At 128 rows and a few hundred positions that copy is the size of the
cache itself, every step; here a step writes its one new column into spare room instead.

`keys` and `values` stay ordinary views of the buffers, so every DynamicLayer method (select rows,
repeat, crop) keeps working: after one of them replaces the tensors, the next update moves them
into a new buffer with room again (one copy, as often as rows change, not every step).
"""

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

