"""Per-example decoding and augmentation on the host (NumPy + PIL).

Runs inside Grain workers. Every random choice comes from a
`np.random.Generator` seeded by (seed, epoch, example index), so the data a
step sees does not depend on the number of processes, devices or workers.
Images stay uint8 here; normalisation happens on the device in the train step.
"""

import io
import math

import numpy as np
from PIL import Image


class UndecodableImage(ValueError):
  """A stored image's bytes do not decode."""


def decode(encoded: bytes, key: str = "") -> Image.Image:
  """JPEG/PNG bytes -> RGB PIL image (grayscale is replicated to 3 channels)."""
  try:
    image = Image.open(io.BytesIO(encoded))
    return image.convert("RGB")
  except Image.UnidentifiedImageError:
    # PIL's message names the in-memory buffer, which says nothing.
    raise UndecodableImage(f"cannot decode image of example {key!r}: not an image "
                           "format PIL knows") from None
  except Exception as e:  # PIL raises several types for corrupt data.
    raise UndecodableImage(f"cannot decode image of example {key!r}: {e}") from None


def add_gaussian_noise(image: Image.Image, variance: float,
                       rng: np.random.Generator) -> Image.Image:
  """With p=0.5 adds N(0, variance) noise per pixel/channel, clipped and truncated to uint8."""
  if variance <= 0 or rng.random() >= 0.5:
    return image
  pixels = np.asarray(image, np.float64)
  noisy = pixels + rng.normal(0.0, math.sqrt(variance), pixels.shape)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _rectangle_tries(area: int, rng: np.random.Generator, scale: tuple[float, float],
                     ratio: tuple[float, float]):
  """torchvision's 10 tries of a random rectangle: yields (round(sqrt(a*r)), round(sqrt(a/r)))

  for a = area * U(scale) and log r ~ U(log ratio). Lazy, so a caller that
  stops at a fitting try draws nothing more from `rng`.
  """
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    yield (int(round(math.sqrt(target_area * aspect))),
           int(round(math.sqrt(target_area / aspect))))


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop box (left, top, right, bottom); center crop fallback."""
  for w, h in _rectangle_tries(width * height, rng, scale, ratio):
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return left, top, left + w, top + h
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  return left, top, left + side, top + side


def random_erasing_box(size: int, rng: np.random.Generator, scale: tuple[float, float],
                       ratio=(0.3, 3.3)) -> tuple[int, int, int, int] | None:
  """torchvision RandomErasing's rectangle (top, left, height, width) in a `size`^2 image.

  Area ~ U(scale) * size^2 and log aspect (h/w) ~ U(log ratio), 10 tries; None
  when no try fits (torchvision then leaves the image unchanged).
  """
  for h, w in _rectangle_tries(size * size, rng, scale, ratio):
    if 0 < h < size and 0 < w < size:
      return int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1)), h, w
  return None


class ImageTransform:
  """Train or eval transform of one image or one clip (same parameters for all frames).

  Train: [noise] -> resize to `resize_size` -> random crop `image_size`
  (or random resized crop from the original) -> [horizontal flip] ->
  [random erasing with probability `erasing_prob`: a rectangle of
  `erasing_scale` of the area filled with `erasing_fill`, the uint8 image of
  the normalisation mean, i.e. torchvision's value 0 after normalising].
  Eval: resize to `resize_size` -> center crop `image_size`.
  Output: uint8 `[image_size, image_size, 3]` (or `[T, ...]` for clips).
  """

  def __init__(self, *, train: bool, image_size: int, resize_size: int, train_crop: str,
               hflip: bool, gaussian_noise_var: float, erasing_prob: float = 0.0,
               erasing_scale: tuple[float, float] = (0.02, 0.25),
               erasing_fill: tuple[int, int, int] = (0, 0, 0)):
    if train_crop not in ("random_crop", "random_resized_crop", "none"):
      raise ValueError(f"config.input.train_crop must be random_crop, random_resized_crop "
                       f"or none, got {train_crop!r}")
    if resize_size < image_size:
      raise ValueError(f"config.input.resize_size ({resize_size}) must be >= "
                       f"config.input.image_size ({image_size})")
    self.train = train
    self.image_size = image_size
    self.resize_size = resize_size
    self.train_crop = train_crop
    self.hflip = hflip
    self.noise_var = gaussian_noise_var
    self.erasing_prob = erasing_prob
    self.erasing_scale = tuple(erasing_scale)
    self.erasing_fill = np.asarray(erasing_fill, np.uint8)

  def _plan(self, width: int, height: int, rng: np.random.Generator | None) -> dict:
    """Draws the random parameters once, so every frame of a clip shares them."""
    size, resize = self.image_size, self.resize_size
    offset = (resize - size) // 2
    plan = {"box": None, "resize": resize, "crop": (offset, offset), "flip": False,
            "erase": None}
    if not self.train:
      return plan
    if self.train_crop == "random_resized_crop":
      plan.update(box=random_resized_crop_box(width, height, rng), resize=size, crop=(0, 0))
    elif self.train_crop == "random_crop":
      plan["crop"] = (int(rng.integers(0, resize - size + 1)),
                      int(rng.integers(0, resize - size + 1)))
    else:
      plan.update(resize=size, crop=(0, 0))
    plan["flip"] = self.hflip and bool(rng.random() < 0.5)
    if self.erasing_prob > 0 and rng.random() < self.erasing_prob:
      plan["erase"] = random_erasing_box(size, rng, self.erasing_scale)
    return plan

  def _apply(self, image: Image.Image, plan: dict) -> np.ndarray:
    if plan["box"] is not None:
      image = image.crop(plan["box"])
    if image.size != (plan["resize"], plan["resize"]):
      image = image.resize((plan["resize"], plan["resize"]), Image.BILINEAR)
    left, top = plan["crop"]
    pixels = np.asarray(image, np.uint8)[top:top + self.image_size, left:left + self.image_size]
    pixels = pixels[:, ::-1] if plan["flip"] else pixels
    if plan["erase"] is not None:
      top, left, h, w = plan["erase"]
      pixels = pixels.copy()
      pixels[top:top + h, left:left + w] = self.erasing_fill
    return pixels

  def image(self, encoded: bytes, rng: np.random.Generator | None, key: str = "") -> np.ndarray:
    """Encoded image -> uint8 `[S, S, 3]`."""
    return self.decoded_image(decode(encoded, key), rng)

  def decoded_image(self, image: Image.Image, rng: np.random.Generator | None) -> np.ndarray:
    """RGB PIL image -> uint8 `[S, S, 3]` (`image` after decoding)."""
    if self.train:
      image = add_gaussian_noise(image, self.noise_var, rng)
    return self._apply(image, self._plan(*image.size, rng))

  def clip(self, encoded_frames: list[bytes], rng: np.random.Generator | None,
           key: str = "") -> np.ndarray:
    """Encoded frames -> uint8 `[T, S, S, 3]` with clip-consistent augmentation."""
    return self.decoded_clip([decode(f, key) for f in encoded_frames], rng)

  def decoded_clip(self, frames: list[Image.Image],
                   rng: np.random.Generator | None) -> np.ndarray:
    """RGB PIL frames (one size) -> uint8 `[T, S, S, 3]` (`clip` after decoding)."""
    plan = self._plan(*frames[0].size, rng)
    return np.stack([self._apply(f, plan) for f in frames])
