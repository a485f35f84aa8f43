"""Mixup and CutMix of the global train batch, on the device, inside the jitted step.

Semantics of timm's `Mixup` in batch mode: one decision per step for the whole
global batch. With probability `mix_prob` the batch is mixed, else it is left
as is; when both `mixup_alpha` and `cutmix_alpha` are positive, CutMix is
chosen with probability `mix_switch_prob`, else Mixup. Every example i is
mixed with its partner B-1-i (the batch reversed):

  Mixup:  x_i <- lam x_i + (1 - lam) x_{B-1-i},  lam ~ Beta(mixup_alpha, mixup_alpha)
  CutMix: x_i <- x_i outside a box, x_{B-1-i} inside it; lam ~ Beta(cutmix_alpha,
          cutmix_alpha) sets the box (sides sqrt(1 - lam) times the image's, centre
          uniform, clipped to the image), then lam <- 1 - (clipped box area) / (H W)

and the target is t_i = lam onehot(y_i) + (1 - lam) onehot(y_{B-1-i}) `[B, K]`,
put in the batch as `soft_target`. Objectives apply their label smoothing to
it; smoothing is affine and lam + (1 - lam) = 1, so that equals timm's mix of
smoothed one-hots. A clip `[B, T, H, W, C]` gets one lam and one box for all
of its frames. The draws come from (seed, step) alone, so a resumed run mixes
exactly as an uninterrupted one.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ferjax import errors

# Folded into the run's seed so the mix draws are not the model-initialisation draws.
_MIX_STREAM = 0x6D6978


def enabled(input_config: ml_collections.ConfigDict) -> bool:
  return input_config.mixup_alpha > 0 or input_config.cutmix_alpha > 0


def check_config(input_config: ml_collections.ConfigDict, objective,
                 objective_name: str) -> None:
  """Raises errors.UserError for out-of-range settings or an objective that needs hard labels.

  An objective declares `needs_hard_labels = True` when its math is defined
  on one class per example (a per-example label table, class centers).
  """
  for name in ("mixup_alpha", "cutmix_alpha"):
    if input_config[name] < 0:
      raise errors.UserError(f"config.input.{name} must be >= 0, got {input_config[name]}")
  for name in ("mix_prob", "mix_switch_prob"):
    if not 0.0 <= input_config[name] <= 1.0:
      raise errors.UserError(f"config.input.{name} must lie in [0, 1], got {input_config[name]}")
  if enabled(input_config) and getattr(objective, "needs_hard_labels", False):
    raise errors.UserError(
        f"config.input.mixup_alpha/cutmix_alpha: the objective {objective_name!r} trains on "
        "one hard label per example and cannot take mixed targets; set both to 0")


def mixed_targets(labels: jax.Array, lam: jax.Array, num_classes: int) -> jax.Array:
  """lam onehot(y_i) + (1 - lam) onehot(y_{B-1-i}) `[B, K]` float32 from labels `[B]`."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return lam * onehot + (1.0 - lam) * jnp.flip(onehot, axis=0)


def cutmix_keep(height: int, width: int, lam: jax.Array, centre: jax.Array) -> jax.Array:
  """1 outside the CutMix box and 0 inside `[H, W]` float32.

  The box has sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)) halved on each
  side of `centre` = (row, column) and clipped to the image.
  """
  ratio = jnp.sqrt(1.0 - lam)
  half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = ((rows >= centre[0] - half_h) & (rows < centre[0] + half_h)
            & (cols >= centre[1] - half_w) & (cols < centre[1] + half_w))
  return 1.0 - inside.astype(jnp.float32)


def draw_keep(key: jax.Array, height: int, width: int,
              input_config: ml_collections.ConfigDict) -> jax.Array:
  """This step's per-pixel weight of the example itself `[H, W]` float32.

  Mixup: lam everywhere; CutMix: `cutmix_keep`; not mixed: 1. The target's lam
  is its mean over the pixels (CutMix's lam corrected for clipping).
  """
  apply_key, switch_key, mixup_key, cutmix_key, centre_key = jax.random.split(key, 5)
  mixup_alpha, cutmix_alpha = input_config.mixup_alpha, input_config.cutmix_alpha
  keep = jnp.ones((height, width), jnp.float32)
  if mixup_alpha > 0:
    lam = jax.random.beta(mixup_key, mixup_alpha, mixup_alpha)
    mixup_keep = jnp.full((height, width), lam, jnp.float32)
  if cutmix_alpha > 0:
    lam = jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha)
    centre = jax.random.randint(centre_key, (2,), 0, jnp.asarray((height, width)))
    box_keep = cutmix_keep(height, width, lam, centre)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(switch_key) < input_config.mix_switch_prob
    keep = jnp.where(use_cutmix, box_keep, mixup_keep)
  elif mixup_alpha > 0:
    keep = mixup_keep
  elif cutmix_alpha > 0:
    keep = box_keep
  apply = jax.random.uniform(apply_key) < input_config.mix_prob
  return jnp.where(apply, keep, 1.0)


def mix_pixels(pixels: jax.Array, keep: jax.Array) -> jax.Array:
  """keep x_i + (1 - keep) x_{B-1-i} in float32, for `[B, H, W, C]` or `[B, T, H, W, C]`.

  `keep` `[H, W]` is shared by every example and every frame.
  """
  x = pixels.astype(jnp.float32)
  weight = keep[:, :, None]
  return weight * x + (1.0 - weight) * jnp.flip(x, axis=0)


def make_mixer(input_config: ml_collections.ConfigDict, num_classes: int,
               seed: int) -> Callable[[dict, jax.Array], dict] | None:
  """`mix(batch, step) -> batch` with mixed pixels and `soft_target`, or None when off.

  The pixels stay on their uint8 scale (as float32): normalisation is affine
  per channel, so mixing before it equals mixing after it.
  """
  if not enabled(input_config):
    return None
  base_key = jax.random.fold_in(jax.random.key(seed), _MIX_STREAM)

  def mix(batch: dict, step: jax.Array) -> dict:
    pixel_key = "frames" if "frames" in batch else "image"
    height, width = batch[pixel_key].shape[-3:-1]
    keep = draw_keep(jax.random.fold_in(base_key, step), height, width, input_config)
    lam = jnp.mean(keep)
    return {**batch, pixel_key: mix_pixels(batch[pixel_key], keep),
            "soft_target": mixed_targets(batch["label"], lam, num_classes)}

  return mix
