"""Exports a run's model for serving without ferjax: StableHLO, TF SavedModel, ONNX.

The exported function takes uint8 face crops (or clips) already resized to the
run's `input.resize_size` square, `[B, R, R, 3]` (clips `[B, T, R, R, 3]`,
T = `input.num_frames` sampled frames), with a free batch size B, and returns
(logits `[B, K]`, probabilities `[B, K]`) in float32. Inside: the eval center
crop to `input.image_size`, the run's normalisation and the model. The resize
stays outside because PIL's antialiased bilinear resize (what evaluation uses)
has no exact XLA counterpart; `signature.json` says how to do it.
"""

import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from ferjax import errors, model_inputs
from ferjax.inference.predictor import Predictor

FORMATS = ("stablehlo", "savedmodel", "onnx")
STABLEHLO_FILE = "model.stablehlo"
ONNX_FILE = "model.onnx"


def serving_fn(predictor: Predictor):
  """`pixels uint8 [B, (T,) R, R, 3] -> (logits, probabilities) [B, K]`, weights as constants."""
  graphdef, state = nnx.split(predictor.model)
  state = jax.device_get(state)
  input_config = predictor.config.input
  size, resize = input_config.image_size, input_config.resize_size
  offset = (resize - size) // 2  # The eval transform's center crop.

  def fn(pixels):
    pixels = pixels[..., offset:offset + size, offset:offset + size, :]
    model = nnx.merge(graphdef, state)
    batch = {"image": pixels, "mask": jnp.ones(pixels.shape[:1], bool)}
    logits = model_inputs.forward(model, batch, input_config, train=False)["logits"]
    logits = logits.astype(jnp.float32)
    return logits, jax.nn.softmax(logits, axis=-1)

  return fn


def input_shape(predictor: Predictor) -> tuple[int, ...]:
  """One example's exported input: `[R, R, 3]` or `[T, R, R, 3]`."""
  resize = predictor.config.input.resize_size
  frames = (predictor.num_frames,) if predictor.kind == "clip" else ()
  return (*frames, resize, resize, 3)


def signature(predictor: Predictor, export_format: str, files: list[str]) -> dict:
  """What `signature.json` holds: input/output shapes, dtypes, ranges and the class names."""
  config = predictor.config
  shape = ["batch", *input_shape(predictor)]
  return {
      "format": export_format,
      "files": files,
      "workdir": predictor.workdir,
      "step": predictor.step,
      "model": config.model.name,
      "kind": predictor.kind,
      "input": {
          "name": "pixels", "shape": shape, "dtype": "uint8", "range": [0, 255],
          "layout": "RGB, channels last",
          "preprocessing": (
              f"face crop (docs/inference.md) resized to {config.input.resize_size}x"
              f"{config.input.resize_size} with PIL bilinear resize; center crop to "
              f"{config.input.image_size} and normalisation (mean {list(config.input.mean)}, "
              f"std {list(config.input.std)} on [0, 1] pixels) happen inside" +
              (f"; clips: {predictor.num_frames} frames chosen by segment sampling "
               f"({predictor.num_segments} segments)" if predictor.kind == "clip" else "")),
      },
      "outputs": [
          {"name": "logits", "shape": ["batch", len(predictor.class_names)], "dtype": "float32"},
          {"name": "probabilities", "shape": ["batch", len(predictor.class_names)],
           "dtype": "float32", "range": [0, 1]},
      ],
      "class_names": list(predictor.class_names),
  }


def export_stablehlo(predictor: Predictor, out_dir: str, platforms=("cpu",)) -> list[str]:
  """`jax.export` serialisation with a symbolic batch dimension -> `model.stablehlo`.

  Load it without ferjax: `jax.export.deserialize(bytearray(open(f, "rb").read())).call(x)`.
  """
  batch = jax.export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct((*batch, *input_shape(predictor)), jnp.uint8)
  exported = jax.export.export(jax.jit(serving_fn(predictor)), platforms=platforms)(spec)
  with open(os.path.join(out_dir, STABLEHLO_FILE), "wb") as f:
    f.write(exported.serialize())
  return [STABLEHLO_FILE]


def export_savedmodel(predictor: Predictor, out_dir: str) -> list[str]:
  """TF SavedModel through `jax2tf`: signature `serving_default(pixels) -> logits, probabilities`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  shape = input_shape(predictor)
  converted = jax2tf.convert(serving_fn(predictor), with_gradient=False,
                             polymorphic_shapes=["(b, " + ", ".join(map(str, shape)) + ")"])

  @tf.function(autograph=False,
               input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name="pixels")])
  def serve(pixels):
    logits, probabilities = converted(pixels)
    return {"logits": logits, "probabilities": probabilities}

  module = tf.Module()
  module.serve = serve
  tf.saved_model.save(module, out_dir, signatures={"serving_default": serve})
  return ["saved_model.pb", "variables/"]


def export_onnx(predictor: Predictor, out_dir: str) -> list[str]:
  """ONNX through `jax2onnx` (opset 23), dynamic batch `B`; inputs `pixels`, outputs as above.

  jax2onnx 0.17 cannot convert ferjax's models (docs/inference.md, "ONNX"): its
  `nnx.max_pool` replacement accepts only string padding, and ResNet's stem pools
  with torchvision's explicit ((1, 1), (1, 1)). The conversion is attempted so
  that a jax2onnx release that handles it works without a change here.

  Raises:
    UserError: jax2onnx is not installed or fails on the model.
  """
  try:
    from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError("--format=onnx needs jax2onnx (pip install jax2onnx; see "
                           "docs/inference.md for its conflict with orbax-checkpoint)") from None
  try:
    to_onnx(serving_fn(predictor), [("B", *input_shape(predictor))], model_name="ferjax",
            return_mode="file", output_path=os.path.join(out_dir, ONNX_FILE),
            input_names=["pixels"], output_names=["logits", "probabilities"])
  except Exception as e:  # pylint: disable=broad-except  # any conversion failure
    raise errors.UserError(f"jax2onnx cannot convert model {predictor.config.model.name!r} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); see "
                           "docs/inference.md, ONNX") from None
  return [ONNX_FILE]


def export(predictor: Predictor, export_format: str, out_dir: str, *,
           platforms=("cpu",)) -> dict:
  """Writes `export_format` of the predictor's model and `signature.json` to `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  if export_format == "stablehlo":
    files = export_stablehlo(predictor, out_dir, tuple(platforms))
  elif export_format == "savedmodel":
    files = export_savedmodel(predictor, out_dir)
  elif export_format == "onnx":
    files = export_onnx(predictor, out_dir)
  else:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {export_format!r}")
  sig = signature(predictor, export_format, files)
  with open(os.path.join(out_dir, "signature.json"), "w") as f:
    json.dump(sig, f, indent=2)
  return sig

