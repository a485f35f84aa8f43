"""LSTformer (docs/methods/lstpnet.md, 'Model'): NumPy reference, weight tying, global attention, GELU, eps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from ferjax.models.lstformer import LSTformer, gelu

DIM, DEPTH, HEADS, DIM_HEAD, MLP = 16, 2, 2, 4, 32


@pytest.fixture(scope="module")
def model():
  """A small LSTformer with N(0, 0.3^2) parameters (abstract init, NumPy values)."""
  module = nnx.eval_shape(lambda: LSTformer(DIM, DEPTH, HEADS, DIM_HEAD, MLP, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  state = nnx.state(module, nnx.Param)
  nnx.update(module, jax.tree.map(lambda p: jnp.asarray(0.3 * rng.normal(size=p.shape), p.dtype),
                                  state))
  return module


def _tokens(seed, batch, frames):
  return np.random.default_rng(seed).normal(size=(batch, frames, DIM)).astype(np.float32)


def _np(param):
  return np.asarray(param[...], np.float64)


def _layer_norm(x, module):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * _np(module.scale) + _np(module.bias)


def _conv_time(x, conv, depthwise):
  """y[b,t,o] = sum_d K[d,i,o] x[b,t+d-1,i] + bias (zero padded); depthwise: i = o."""
  kernel, padded = _np(conv.kernel), np.pad(x, ((0, 0), (1, 1), (0, 0)))
  frames = x.shape[1]
  y = np.zeros_like(x) + _np(conv.bias)
  for d in range(3):
    window = padded[:, d:d + frames]
    y += window * kernel[d, 0] if depthwise else window @ kernel[d]
  return y


def _exact_gelu(x):
  return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _reference(model, x):
  """The LSTformer in NumPy (float64): returns the tokens and the last attention map."""
  inner = HEADS * DIM_HEAD
  for layer in model.layers:
    x = _layer_norm(x + _conv_time(x, model.temporal_conv, False), model.norm)
    h = _layer_norm(x, layer.attention_norm)
    w_qkv = _np(layer.attention.to_qkv.kernel)
    heads = []
    attention = []
    for head in range(HEADS):
      cols = slice(head * DIM_HEAD, (head + 1) * DIM_HEAD)
      q, k, v = (h @ w_qkv[:, block * inner:(block + 1) * inner][:, cols] for block in range(3))
      logits = q @ k.transpose(0, 2, 1) / np.sqrt(DIM_HEAD)
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      attention.append(weights)
      heads.append(weights @ v)
    out = np.concatenate(heads, -1) @ _np(layer.attention.to_out.kernel)
    x = x + out + _np(layer.attention.to_out.bias)
    ffn = layer.ffn
    h = _layer_norm(x, layer.ffn_norm)
    h = _layer_norm(_exact_gelu(h @ _np(ffn.linear1.kernel) + _np(ffn.linear1.bias)), ffn.norm1)
    h = _layer_norm(_exact_gelu(h + _conv_time(h, ffn.depthwise_conv, True)), ffn.norm2)
    x = x + _layer_norm(h @ _np(ffn.linear2.kernel) + _np(ffn.linear2.bias), ffn.norm_out)
  return x, np.stack(attention, axis=1)


def test_matches_numpy_reference(model):
  x = _tokens(1, 2, 5)
  tokens, attention = model(jnp.asarray(x))
  expected_tokens, expected_attention = _reference(model, x.astype(np.float64))
  assert attention.shape == (2, HEADS, 5, 5)
  np.testing.assert_allclose(np.asarray(attention), expected_attention, atol=1e-5)
  np.testing.assert_allclose(np.asarray(tokens), expected_tokens, rtol=1e-4, atol=1e-4)


def test_one_shared_temporal_conv_and_norm(model):
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
  assert [p for p in paths if "temporal_conv" in p] == ["temporal_conv/bias", "temporal_conv/kernel"]
  assert [p for p in paths if p.startswith("norm/")] == ["norm/bias", "norm/scale"]
  assert not any(p.startswith("layers") and ("temporal_conv" in p or "/norm/" in p) for p in paths)


def test_shared_gradient_is_sum_over_layers(model):
  """Untying TC/LN into per-layer copies: their gradients sum to the tied gradient."""
  x = jnp.asarray(_tokens(2, 1, 6))

  @nnx.jit
  def tied_grads(model):
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x)[0])))(model)
    return grads["temporal_conv"], grads["norm"]

  @nnx.jit
  def untied_grads(tcs, norms, layers):
    def loss(tcs, norms):
      y = x
      for tc, norm, layer in zip(tcs, norms, layers):
        y, _ = layer(norm(y + tc(y)))
      return jnp.sum(jnp.sin(y))
    return nnx.grad(loss, argnums=(0, 1))(tcs, norms)

  tied = tied_grads(model)
  copies = [nnx.clone(model.temporal_conv) for _ in range(DEPTH)]
  norms = [nnx.clone(model.norm) for _ in range(DEPTH)]
  untied = untied_grads(copies, norms, list(model.layers))
  for tied_grad, per_layer in zip(tied, untied):
    per_layer = [nnx.to_pure_dict(g) for g in per_layer]
    assert all(float(jnp.abs(g).max()) > 1e-6 for g in jax.tree.leaves(per_layer))
    summed = jax.tree.map(lambda *g: sum(g), *per_layer)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 nnx.to_pure_dict(tied_grad), summed)


def test_attention_is_global_and_not_causal(model):
  frames = 16  # the convs reach 4 frames over 2 layers; frame 15 reaches frame 0 only by attention
  x = _tokens(3, 1, frames)
  tokens, attention = model(jnp.asarray(x))
  x_changed = x.copy()
  x_changed[:, -1] += 2.0
  tokens_changed, _ = model(jnp.asarray(x_changed))
  assert np.abs(np.asarray(tokens_changed - tokens)[:, 0]).max() > 1e-3
  attention = np.asarray(attention)
  np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
  assert attention[..., np.triu_indices(frames, 1)[0], np.triu_indices(frames, 1)[1]].min() > 0


def test_gelu_is_exact_erf_form():
  x = np.array([-3.0, -1.0, 0.5, 2.0], np.float32)
  np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), _exact_gelu(x.astype(np.float64)),
                             rtol=1e-6, atol=1e-7)
  # The tanh approximation differs at x = -3 by 4e-4: -0.0036375 vs exact -0.0040497.
  np.testing.assert_allclose(float(gelu(jnp.float32(-3.0))), -0.0040497, atol=1e-6)


def test_every_layer_norm_uses_torch_epsilon():
  model = nnx.eval_shape(lambda: LSTformer(rngs=nnx.Rngs(0)))
  norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.LayerNorm)]
  assert len(norms) == 1 + 2 * 5  # shared + per layer (attention, ffn pre-LN, 3 in LeFF)
  assert all(n.epsilon == 1e-5 for n in norms)
