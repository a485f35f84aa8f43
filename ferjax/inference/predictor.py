"""`Predictor`: a trained ferjax model applied to face crops or clips, with the run's eval preprocessing.

  predictor = Predictor.from_workdir("/tmp/ferjax_quickstart", checkpoint="best")
  probabilities = predictor.predict_faces(crops)   # uint8 [H, W, 3] crops or [B, H, W, 3]
  probabilities = predictor.predict_clips(frames)  # clip models: [T, H, W, 3] or a list

Preprocessing is the run's evaluation transform (`pipeline.make_transform(...,
train=False)`: resize to `input.resize_size`, center crop `input.image_size`)
on the host and `model_inputs.forward`'s normalisation on the device; clips
are first sampled to `input.num_frames` frames with the eval segment sampling
(`frame_sampling.segment_indices(train=False)`), exactly as evaluation reads a
clip record. The forward pass is jit-compiled once per batch size (powers of
two up to `batch_size`, padded) and split over every device JAX has.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from PIL import Image

from ferjax import errors, model_inputs, sharding
from ferjax.data import frame_sampling, pipeline
from ferjax.inference import restore


def _as_images(pixels) -> list[np.ndarray]:
  """uint8 `[H, W, 3]`, a batch `[B, H, W, 3]` or a list of `[H, W, 3]` -> list of arrays."""
  if isinstance(pixels, np.ndarray) and pixels.ndim == 3:
    return [pixels]
  images = list(pixels)
  for image in images:
    if np.asarray(image).ndim != 3 or np.asarray(image).shape[-1] != 3:
      raise ValueError(f"expected RGB images [H, W, 3], got shape {np.asarray(image).shape}")
  return [np.asarray(image) for image in images]


def _as_clips(frames) -> list[np.ndarray]:
  """One clip `[T, H, W, 3]`, a batch `[B, T, H, W, 3]` or a list of clips -> list of clips."""
  if isinstance(frames, np.ndarray) and frames.ndim == 4:
    return [frames]
  clips = [np.asarray(clip) for clip in frames]
  for clip in clips:
    if clip.ndim != 4 or clip.shape[-1] != 3:
      raise ValueError(f"expected clips [T, H, W, 3], got shape {clip.shape}")
  return clips


def _pil(pixels: np.ndarray) -> Image.Image:
  if pixels.dtype != np.uint8:
    raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
  return Image.fromarray(pixels, "RGB")


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax `[N, K]` in float64, returned as float32."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=-1, keepdims=True))
  return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


class Predictor:
  """A trained model with the run's evaluation preprocessing, jitted and batched."""

  def __init__(self, trained: restore.TrainedModel, *, batch_size: int = 32):
    config = trained.config
    objective = config.objective
    if "ccl" in objective and objective.ccl.get("predict_with") == "centers":
      raise errors.UserError(f"{trained.workdir}: the run predicts with the center cosine "
                             "loss's centers (objective.ccl.predict_with='centers'); the "
                             "Predictor uses the model's logits only")
    self.config = config
    self.class_names = trained.class_names
    self.step = trained.step
    self.workdir = trained.workdir
    self.kind = config.dataset.kind
    self.image_size = config.input.image_size
    self.num_frames = config.input.num_frames
    self.num_segments = config.input.num_segments
    self.transform = pipeline.make_transform(config.input, train=False)
    model = trained.model
    if hasattr(model, "set_eval_mode"):
      _prepare_aea(model, trained)
    self.model = model
    self.mesh = sharding.make_mesh()
    self.num_devices = jax.device_count()
    self.batch_size = max(self.num_devices,
                          -(-batch_size // self.num_devices) * self.num_devices)
    graphdef, state = nnx.split(model)
    self.graphdef = graphdef
    self.state = jax.device_put(state, sharding.replicated(self.mesh))
    input_config = config.input

    def logits_fn(state, pixels):
      model = nnx.merge(graphdef, state)
      batch = {"image": pixels, "mask": jnp.ones(pixels.shape[:1], bool)}
      return model_inputs.forward(model, batch, input_config, train=False)["logits"].astype(
          jnp.float32)

    self._logits_fn = logits_fn
    self._jitted = jax.jit(logits_fn, in_shardings=(sharding.replicated(self.mesh),
                                                    sharding.batch_sharding(self.mesh)),
                           out_shardings=sharding.replicated(self.mesh))

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str | int = "latest", *,
                   batch_size: int = 32, ema: bool = False) -> "Predictor":
    """The model of run `workdir` at `checkpoint` ('latest' | 'best' | a step number);
    with `ema`, its weight moving average (runs with `config.ema.decay` > 0)."""
    return cls(restore.load_trained_model(workdir, checkpoint, ema=ema), batch_size=batch_size)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The preprocessed model input of one example: `[S, S, 3]` or `[T, S, S, 3]`."""
    size = self.image_size
    return (self.num_frames, size, size, 3) if self.kind == "clip" else (size, size, 3)

  def preprocess_face(self, face: np.ndarray) -> np.ndarray:
    """uint8 face crop `[H, W, 3]` -> uint8 `[S, S, 3]` (eval resize + center crop)."""
    return self.transform.decoded_image(_pil(face), None)

  def preprocess_clip(self, frames: np.ndarray) -> np.ndarray:
    """uint8 frames `[n, H, W, 3]` -> `[T, S, S, 3]`: eval segment sampling, then the transform."""
    chosen = frame_sampling.segment_indices(
        len(frames), self.num_segments, self.num_frames // self.num_segments, train=False)
    return self.transform.decoded_clip([_pil(frames[i]) for i in chosen], None)

  def logits(self, pixels: np.ndarray) -> np.ndarray:
    """Preprocessed uint8 inputs `[N, *input_shape]` -> logits float32 `[N, K]`.

    Runs in chunks of `batch_size`; a short chunk is padded (with copies of its
    first row) to the next power of two times the device count, so a few shapes
    are compiled, each once.
    """
    pixels = np.asarray(pixels, np.uint8)
    if pixels.shape[1:] != self.input_shape:
      raise ValueError(f"expected preprocessed inputs [N, {', '.join(map(str, self.input_shape))}]"
                       f", got {pixels.shape}")
    chunks = []
    for start in range(0, len(pixels), self.batch_size):
      chunk = pixels[start:start + self.batch_size]
      size = self.num_devices
      while size < len(chunk):
        size *= 2
      size = min(size, self.batch_size)
      padded = np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), axis=0)])
      chunks.append(np.asarray(self._jitted(self.state, padded))[:len(chunk)])
    if not chunks:
      return np.zeros((0, len(self.class_names)), np.float32)
    return np.concatenate(chunks)

  def face_logits(self, faces) -> np.ndarray:
    """uint8 crops (`[H, W, 3]`, `[B, H, W, 3]` or a list of sizes) -> logits `[B, K]`."""
    self._require("image", "predict_faces")
    return self.logits(np.stack([self.preprocess_face(f) for f in _as_images(faces)]))

  def clip_logits(self, clips) -> np.ndarray:
    """uint8 clips (`[T, H, W, 3]`, `[B, T, H, W, 3]` or a list) -> logits `[B, K]`."""
    self._require("clip", "predict_clips")
    return self.logits(np.stack([self.preprocess_clip(c) for c in _as_clips(clips)]))

  def predict_faces(self, faces) -> np.ndarray:
    """Class probabilities `[B, K]` (order: `class_names`) of face crops."""
    return softmax(self.face_logits(faces))

  def predict_clips(self, clips) -> np.ndarray:
    """Class probabilities `[B, K]` of clips of face crops (clip models)."""
    return softmax(self.clip_logits(clips))

  def _require(self, kind: str, method: str) -> None:
    if self.kind != kind:
      other = "predict_clips" if kind == "image" else "predict_faces"
      raise ValueError(f"{method} needs an {kind} model; run {self.workdir} trains a "
                       f"{self.kind} model: use {other}")


def _prepare_aea(model: nnx.Module, trained: restore.TrainedModel) -> None:
  """Puts an AEA model in its per-image (`batch_independent`) eval mode.

  That mode anchors on the train-set mean of the pooled features, which the
  `aea` evaluator stores in the model state before each evaluation's save.
  """
  if not bool(jnp.any(model.aea.mean[...] != 0)):
    raise errors.UserError(
        f"{trained.workdir}: checkpoint {trained.step} holds no AEA feature mean (it was "
        "saved before the run's first evaluation); use a later one, e.g. --checkpoint=best")
  model.set_eval_mode("batch_independent")
