"""RNNencdec (Cho et al., 2014): RNNsearch without attention, the paper's baseline.

The bidirectional GRU encoder's final states are squeezed into one fixed
summary c = tanh(W [→h_S; ←h_1]) that the decoder reads at every step, in place
of RNNsearch's attended context c_i. Config fields: those of
attention.models.rnnsearch except ``attention_dim`` and ``score``, which are
unused here. ``query='conditional'`` still adds the conditional GRU's first
step (a GRU over the previous word) before the decoder cell, which then reads
the summary where RNNsearch reads the attended context; ``'previous_state'``
is the paper's decoder.
"""

from attention.models import rnnsearch


class Model(rnnsearch.Model):
  """RNNsearch's decoder fed a fixed source summary; ``aux`` is empty."""
  use_attention: bool = False
