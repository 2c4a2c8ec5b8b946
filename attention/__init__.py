"""Attention explained and made usable: multi-head and additive attention in JAX/Flax.

The reusable layers (they know nothing of translation or movies)::

  from attention import (MultiHeadAttention, AdditiveAttention,
                         BahdanauAttention, dot_product_attention,
                         make_causal_mask, make_padding_mask)
"""

from attention.additive import AdditiveAttention
from attention.additive import BahdanauAttention
from attention.additive import LuongAttention
from attention.additive import MultiplicativeAttention
from attention.dot_product import dot_product_attention
from attention.masks import combine_masks
from attention.masks import make_causal_mask
from attention.masks import make_padding_mask
from attention.masks import masked_softmax
from attention.multihead import MultiHeadAttention

__all__ = [
    'AdditiveAttention',
    'BahdanauAttention',
    'LuongAttention',
    'MultiHeadAttention',
    'MultiplicativeAttention',
    'combine_masks',
    'dot_product_attention',
    'make_causal_mask',
    'make_padding_mask',
    'masked_softmax',
]

__version__ = '0.1.0'
