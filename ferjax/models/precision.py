"""Parameter gradients in the parameters' dtype (float32) when a model computes in bfloat16.

A Flax layer computing in bfloat16 casts its float32 parameters to bfloat16.
Autodiff then produces a kernel gradient as the bfloat16 result of the
weight-gradient convolution or matmul: a partial sum over this device's share
of the batch, which the data-parallel program all-reduces in bfloat16 before
the cast's transpose widens it to float32. A bias broadcast over the batch is
transposed into a bfloat16 sum; BatchNorm and LayerNorm normalise in float32
but from scale and bias rounded to bfloat16, so the transpose of that rounding
narrows their float32 gradients (and XLA moves the all-reduce after it).

The layers here (`Conv`, `Linear`, `BatchNorm`, `LayerNorm`: subclasses with
the same arguments and parameters) and the helpers for parameters used by
hand (`apply_mixed`, `add_param_term`) compute the same forward pass, with the
same roundings, but every parameter gradient is a float32 result of the op
that sums over the batch, so the partial sums and their all-reduce are
float32. (A compiled program may skip a rounding to bfloat16 between two ops,
XLA's excess precision, in these layers as in Flax's.)

`config.model.grad_dtype` chooses: "float32" (these gradients) or "compute"
(gradients in the computation dtype, as plain Flax layers give them). The
choice is read when a layer is built (`gradient_dtype`, set by
`ferjax.models.registry.build_model`), so no constructor takes an argument
for it. Float32 layers are the plain Flax layers either way.
"""
import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as flax_dtypes
from jax import lax

GRADIENT_DTYPES = ("float32", "compute")
_GRADIENT_DTYPE = contextvars.ContextVar("ferjax_gradient_dtype", default="float32")


@contextlib.contextmanager
def gradient_dtype(name: str) -> Iterator[None]:
  """Layers built inside take their parameter gradients in `name` (see GRADIENT_DTYPES)."""
  if name not in GRADIENT_DTYPES:
    raise ValueError(f"config.model.grad_dtype must be one of {GRADIENT_DTYPES}, got {name!r}")
  token = _GRADIENT_DTYPE.set(name)
  try:
    yield
  finally:
    _GRADIENT_DTYPE.reset(token)


def float32_gradients() -> bool:
  """Whether layers built now take float32 parameter gradients (the policy in effect)."""
  return _GRADIENT_DTYPE.get() == "float32"


def param_dtype_gradients(dtype: Any, param_dtype: Any = jnp.float32) -> bool:
  """Whether a layer built now, computing in `dtype`, takes its parameter gradients in
  `param_dtype`: the policy is "float32" and the two dtypes differ."""
  return (float32_gradients() and dtype is not None
          and jnp.dtype(dtype) != jnp.dtype(param_dtype))


def _cast(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(lambda a: a.astype(dtype), tree)


def _dtype_of(tree: Any) -> jnp.dtype:
  return jax.tree.leaves(tree)[0].dtype


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def apply_mixed(f: Callable[[Any, Any], jax.Array], inputs: Any, params: Any) -> jax.Array:
  """f(inputs, params cast to the inputs' dtype), with the params' gradients in their dtype.

  `inputs`: arrays of the computation dtype (activations); `params`: arrays of
  the parameter dtype. The forward pass and the inputs' gradients are exactly
  those of `f(inputs, params.astype(compute))`. The params' gradients are the
  VJP of `f` at (inputs, params) both in the parameter dtype, with the output
  cotangent widened too: for a convolution or matmul the weight-gradient op
  then outputs float32. (Compiled for TPU, XLA folds the widening of its
  bfloat16 operands into the op: bfloat16 operands, float32 result.)
  """
  return f(inputs, _cast(params, _dtype_of(inputs)))


def _apply_mixed_fwd(f, inputs, params):
  return apply_mixed(f, inputs, params), (inputs, params)


def _apply_mixed_bwd(f, residuals, cotangent):
  inputs, params = residuals
  compute, wide = _dtype_of(inputs), _dtype_of(params)
  _, inputs_vjp = jax.vjp(lambda i: f(i, _cast(params, compute)), inputs)
  _, params_vjp = jax.vjp(lambda p: f(_cast(inputs, wide), p), params)
  return inputs_vjp(cotangent)[0], params_vjp(_cast(cotangent, wide))[0]


apply_mixed.defvjp(_apply_mixed_fwd, _apply_mixed_bwd)


def rounded(x: jax.Array, dtype: Any) -> jax.Array:
  """x rounded to `dtype`'s precision but kept in x's dtype; the gradient passes unchanged.

  x + (round(x) - x) is exactly round(x): the difference is exact in x's dtype.
  """
  return x + lax.stop_gradient(x.astype(dtype).astype(x.dtype) - x)


def add_param_term(x: jax.Array, term: jax.Array, *, mixed: bool) -> jax.Array:
  """x + term.astype(x.dtype), with `term` (computed from parameters) broadcast over x's
  leading axes, e.g. the batch.

  With `mixed`, the sum is formed in term's dtype from `term` rounded to x's dtype and
  rounded once to x's dtype: the same values (the sum of two bfloat16 numbers rounded
  once is their bfloat16 sum), but the gradient of `term`, a sum over the broadcast
  axes, is taken in term's dtype.
  """
  if not mixed or x.dtype == term.dtype:
    return x + term.astype(x.dtype)
  return (x.astype(term.dtype) + rounded(term, x.dtype)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class _KernelOp:
  """A Flax `conv_general_dilated` / `dot_general` hook: `op(x, kernel, ...)` through
  `apply_mixed`, so the float32 kernel's gradient is a float32 op result."""

  op: Callable[..., jax.Array]

  def __call__(self, x: jax.Array, kernel: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    return apply_mixed(lambda a, w: self.op(a, w, *args, **kwargs), x, kernel)


def _promote_inputs(args: tuple, *, dtype: Any) -> tuple:
  """Flax `promote_dtype` hook of Conv / Linear: the inputs go to `dtype`; the kernel stays
  in the parameter dtype (`_KernelOp` casts it); the bias keeps its dtype, holding values
  rounded to `dtype`, so Flax adds it as `add_param_term` does and the layer rounds the
  sum to `dtype`."""
  inputs, kernel, bias = args
  return inputs.astype(dtype), kernel, None if bias is None else rounded(bias, dtype)


# BatchNorm's promote_dtype hook cannot tell a call with batch statistics from one with
# the running averages; BatchNorm.__call__ says which here.
_RUNNING_AVERAGE = contextvars.ContextVar("ferjax_running_average", default=False)


def _promote_norm(args: tuple, *, dtype: Any) -> tuple:
  """Flax `promote_dtype` hook of BatchNorm / LayerNorm, args (x, [mean, var,] scale, bias).

  Normalising with statistics of the input, Flax computes in float32 (its statistics
  are float32) from scale and bias rounded to `dtype`; here they stay float32 holding
  the rounded values: the same forward pass, but their gradients are not narrowed to
  `dtype` (nor all-reduced in it). With BatchNorm's running averages Flax computes in
  `dtype`: its own promotion then.
  """
  if _RUNNING_AVERAGE.get():
    return flax_dtypes.promote_dtype(args, dtype=dtype)
  *rest, scale, bias = args
  return (*(a.astype(dtype) for a in rest),
          *(None if p is None else rounded(p, dtype) for p in (scale, bias)))


class _Mixed:
  """Mixin of the layers below: sets `self.mixed` (float32 parameter gradients, module
  doc) and passes Flax the hook arguments `self._hooks(kwargs)` returns, having taken
  its own arguments out of the constructor's keyword arguments."""

  _hooks: Callable[[dict[str, Any]], dict[str, Any]]

  def __init__(self, *args: Any, dtype: Any = None, param_dtype: Any = jnp.float32,
               **kwargs: Any):
    self.mixed = param_dtype_gradients(dtype, param_dtype)
    hooks = self._hooks(kwargs)
    super().__init__(*args, dtype=dtype, param_dtype=param_dtype, **hooks, **kwargs)


class _KernelLayer(_Mixed):
  """Conv / Linear: their inner op (the Flax argument named `_op_name`) runs through
  `_KernelOp`, and `_promote_inputs` leaves the kernel in the parameter dtype."""

  _op_name: str
  _default_op: Callable[..., jax.Array]

  def _hooks(self, kwargs: dict[str, Any]) -> dict[str, Any]:
    op = kwargs.pop(self._op_name, self._default_op)
    if not self.mixed:
      return {self._op_name: op}
    return {self._op_name: _KernelOp(op), "promote_dtype": _promote_inputs}

  def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
    y = super().__call__(inputs, out_sharding)
    # Flax added the float32 bias: round the sum once to the computation dtype.
    return y.astype(self.dtype) if self.mixed else y


class Conv(_KernelLayer, nnx.Conv):
  """`nnx.Conv` (same arguments, parameters `kernel` and `bias`) whose parameter gradients
  are float32 when it computes in another dtype (module doc); `conv_general_dilated` is the
  inner op. Output in `dtype`, with `nnx.Conv`'s roundings (bitwise equal op by op)."""

  _op_name = "conv_general_dilated"
  _default_op = staticmethod(lax.conv_general_dilated)


class Linear(_KernelLayer, nnx.Linear):
  """`nnx.Linear` (same arguments and parameters) with float32 parameter gradients when
  it computes in another dtype, as `Conv`; `dot_general` is the inner op."""

  _op_name = "dot_general"
  _default_op = staticmethod(lax.dot_general)


class _NormLayer(_Mixed):
  """BatchNorm / LayerNorm: `_promote_norm` keeps scale and bias float32."""

  def _hooks(self, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"promote_dtype": _promote_norm} if self.mixed else {}


class BatchNorm(_NormLayer, nnx.BatchNorm):
  """`nnx.BatchNorm` (same arguments and variables) whose scale and bias gradients are
  float32 when it computes in another dtype (`_promote_norm`); same outputs."""

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None) -> jax.Array:
    if not self.mixed:
      return super().__call__(x, use_running_average, mask=mask)
    running = self.use_running_average if use_running_average is None else use_running_average
    token = _RUNNING_AVERAGE.set(bool(running))
    try:
      return super().__call__(x, use_running_average, mask=mask)
    finally:
      _RUNNING_AVERAGE.reset(token)


class LayerNorm(_NormLayer, nnx.LayerNorm):
  """`nnx.LayerNorm` (same arguments and parameters) whose scale and bias gradients are
  float32 when it computes in another dtype (`_promote_norm`); same outputs."""
