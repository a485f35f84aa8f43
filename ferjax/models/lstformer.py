"""LSTformer: LSTPNet's long short-term temporal transformer.

Tokens are the T frame features of a clip `[B, T, D]`, with no class token and
no positional embedding; temporal order enters only through temporal convs
(docs/methods/lstpnet.md, 'Model'). Each of the `depth` layers computes

  x <- LN_shared(x + TC_shared(x))          short-term: dense conv over time, k=3
  x <- x + MHSA(LN_a(x))                    long-term: global attention over all T
  x <- x + LeFF(LN_f(x))

where ONE temporal conv and ONE LayerNorm are shared by all layers (weight
tying = one submodule called once per layer) and the locally-enhanced FFN is

  h = LN_h1(GELU(x W1 + b1));  h = h + DWConv_time(h);  h = LN_h2(GELU(h))
  LeFF(x) = LN_o(h W2 + b2).

GELU is the exact erf form and every LayerNorm uses epsilon 1e-5 (PyTorch).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ferjax.models.torch_layers import conv1d, layer_norm, linear


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU x Phi(x) (torch.nn.GELU()), not the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


class Attention(nnx.Module):
  """Multi-head self-attention with a bias-free fused qkv projection.

  `to_qkv` kernel `[D, 3*H*Dh]`: q, k, v are the column blocks [0, HDh),
  [HDh, 2HDh), [2HDh, 3HDh) and head h uses columns h*Dh..h*Dh+Dh-1 of each,
  the layout of the PyTorch `to_qkv` weight (transposed), so it converts 1:1.
  """

  def __init__(self, dim: int, heads: int, dim_head: int, *, dtype: Any, rngs: nnx.Rngs):
    self.heads = heads
    self.dim_head = dim_head
    self.to_qkv = linear(dim, 3 * heads * dim_head, use_bias=False, dtype=dtype, rngs=rngs)
    self.to_out = linear(heads * dim_head, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x `[B, T, D]` -> (output `[B, T, D]`, attention `[B, heads, T, T]`)."""
    b, t, _ = x.shape
    qkv = self.to_qkv(x).reshape(b, t, 3, self.heads, self.dim_head)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]              # [B, T, H, Dh] each
    logits = jnp.einsum("bihd,bjhd->bhij", q, k) * self.dim_head ** -0.5
    attention = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
    out = jnp.einsum("bhij,bjhd->bihd", attention, v).reshape(b, t, self.heads * self.dim_head)
    return self.to_out(out), attention


class LocallyEnhancedFeedForward(nnx.Module):
  """LeFF(x) = LN_o(W2 LN_h2(GELU(h + DWConv_time(h))) + b2), h = LN_h1(GELU(W1 x + b1))."""

  def __init__(self, dim: int, hidden: int, *, dtype: Any, rngs: nnx.Rngs):
    self.linear1 = linear(dim, hidden, dtype=dtype, rngs=rngs)
    self.norm1 = layer_norm(hidden, dtype=dtype, rngs=rngs)
    self.depthwise_conv = conv1d(hidden, hidden, 3, groups=hidden, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(hidden, dtype=dtype, rngs=rngs)
    self.linear2 = linear(hidden, dim, dtype=dtype, rngs=rngs)
    self.norm_out = layer_norm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x `[B, T, D]` -> `[B, T, D]`; only the depthwise conv mixes frames."""
    h = self.norm1(gelu(self.linear1(x)))
    h = self.norm2(gelu(h + self.depthwise_conv(h)))
    return self.norm_out(self.linear2(h))


class LSTformerLayer(nnx.Module):
  """The untied part of a layer: pre-LN attention and pre-LN LeFF, both residual."""

  def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, *, dtype: Any,
               rngs: nnx.Rngs):
    self.attention_norm = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attention = Attention(dim, heads, dim_head, dtype=dtype, rngs=rngs)
    self.ffn_norm = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.ffn = LocallyEnhancedFeedForward(dim, mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    update, attention = self.attention(self.attention_norm(x))
    x = x + update
    return x + self.ffn(self.ffn_norm(x)), attention


class LSTformer(nnx.Module):
  """`depth` LSTformer layers sharing one temporal conv and one LayerNorm."""

  def __init__(self, dim: int = 512, depth: int = 2, heads: int = 8, dim_head: int = 64,
               mlp_dim: int = 4096, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if depth < 1:
      raise ValueError(f"LSTformer depth must be >= 1, got {depth}")
    self.temporal_conv = conv1d(dim, dim, 3, dtype=dtype, rngs=rngs)
    self.norm = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([LSTformerLayer(dim, heads, dim_head, mlp_dim, dtype=dtype, rngs=rngs)
                            for _ in range(depth)])

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Tokens `[B, T, D]` -> (tokens `[B, T, D]`, last layer's attention `[B, heads, T, T]`)."""
    attention = None
    for layer in self.layers:
      x = self.norm(x + self.temporal_conv(x))
      x, attention = layer(x)
    return x, attention
