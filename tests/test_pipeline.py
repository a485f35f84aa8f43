"""The Grain pipeline: exact epochs, padding masks, per-process rows, augmentation."""

import io

import numpy as np
import pytest
from PIL import Image

from configs import default
from ferjax.data import augment, pipeline


class _FakeSource:
  """A random-access source of encoded 8x8 images whose pixel value encodes the index."""

  def __init__(self, n: int):
    self.records = []
    for i in range(n):
      buffer = io.BytesIO()
      Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(buffer, "PNG")
      self.records.append({"image": buffer.getvalue(), "label": i % 7, "id": f"x{i}".encode(),
                           "yaw": np.float32(i)})

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def _loader(n=10, batch=4, train=True, drop_remainder=False, seed=0):
  config = default.get_config()
  config.seed = seed
  config.input.update(image_size=8, resize_size=8, train_crop="none", hflip=False)
  config.dataset.metadata = ("yaw",)
  split = pipeline.SplitSource(_FakeSource(n), np.arange(n), ("a",) * 7, n)
  return pipeline.BatchLoader(split, config, train=train, global_batch_size=batch,
                              drop_remainder=drop_remainder)


def test_every_epoch_is_a_permutation_with_a_masked_last_batch():
  loader = _loader(n=10, batch=4)
  assert loader.steps_per_epoch == 3
  for epoch in range(2):
    batches = [loader(epoch * 3 + k) for k in range(3)]
    seen = np.concatenate([b["index"][b["mask"]] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert batches[-1]["mask"].tolist() == [True, True, False, False]
    for b in batches:  # Pixels and metadata belong to the example named by `index`.
      valid = b["mask"]
      np.testing.assert_array_equal(b["image"][valid][:, 0, 0, 0], b["index"][valid])
      np.testing.assert_array_equal(b["yaw"][valid], b["index"][valid].astype(np.float32))
      np.testing.assert_array_equal(b["label"][valid], b["index"][valid] % 7)
  first = np.concatenate([loader(k)["index"] for k in range(3)])
  second = np.concatenate([loader(3 + k)["index"] for k in range(3)])
  assert first.tolist() != second.tolist()  # reshuffled every epoch


def test_eval_order_is_the_split_order():
  loader = _loader(n=10, batch=4, train=False)
  indices = np.concatenate([loader(k)["index"][loader(k)["mask"]] for k in range(3)])
  assert indices.tolist() == list(range(10))


def test_drop_remainder_and_determinism():
  loader = _loader(n=10, batch=4, drop_remainder=True)
  assert loader.steps_per_epoch == 2
  again = _loader(n=10, batch=4, drop_remainder=True)
  np.testing.assert_array_equal(loader(1)["index"], again(1)["index"])
  other_seed = _loader(n=10, batch=4, drop_remainder=True, seed=1)
  assert loader(0)["index"].tolist() != other_seed(0)["index"].tolist()


def test_processes_get_disjoint_rows_of_the_global_batch(monkeypatch):
  full = _loader(n=12, batch=4)(0)["index"]
  parts = []
  for process in range(2):
    monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
    monkeypatch.setattr(pipeline.jax, "process_index", lambda p=process: p)
    parts.append(_loader(n=12, batch=4)(0)["index"])
  np.testing.assert_array_equal(np.concatenate(parts), full)


def test_transforms():
  pixels = np.arange(12 * 12 * 3, dtype=np.uint8).reshape(12, 12, 3)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "PNG")
  encoded = buffer.getvalue()
  evaluate = augment.ImageTransform(train=False, image_size=8, resize_size=12,
                                    train_crop="random_crop", hflip=True, gaussian_noise_var=0)
  np.testing.assert_array_equal(evaluate.image(encoded, None), pixels[2:10, 2:10])
  train = augment.ImageTransform(train=True, image_size=8, resize_size=12,
                                 train_crop="random_crop", hflip=True, gaussian_noise_var=0)
  crops = {train.image(encoded, np.random.default_rng(s)).tobytes() for s in range(20)}
  assert len(crops) > 5
  clip = train.clip([encoded] * 3, np.random.default_rng(0))
  assert clip.shape == (3, 8, 8, 3) and all((f == clip[0]).all() for f in clip)
  with pytest.raises(ValueError, match="cannot decode image of example 'bad'"):
    evaluate.image(b"not an image", None, "bad")


def test_gaussian_noise_before_resize_half_of_the_time():
  image = Image.fromarray(np.full((4, 4, 3), 100, np.uint8))
  noisy = [not (np.asarray(augment.add_gaussian_noise(image, 30.0, np.random.default_rng(s)))
                == 100).all() for s in range(200)]
  assert 0.35 < np.mean(noisy) < 0.65


def test_random_erasing_box_area_and_probability():
  boxes = [augment.random_erasing_box(100, np.random.default_rng(s), (0.02, 0.25))
           for s in range(300)]
  for top, left, h, w in boxes:
    assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 100
    assert 0.015 * 100 * 100 <= h * w <= 0.26 * 100 * 100   # rounding of h and w
  encoded = io.BytesIO()
  Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(encoded, "PNG")
  transform = augment.ImageTransform(train=True, image_size=16, resize_size=16,
                                     train_crop="none", hflip=False, gaussian_noise_var=0,
                                     erasing_prob=0.5, erasing_fill=(124, 116, 104))
  outputs = [transform.image(encoded.getvalue(), np.random.default_rng(s)) for s in range(200)]
  erased = [(o == (124, 116, 104)).all(-1) for o in outputs]
  assert 0.35 < np.mean([e.any() for e in erased]) < 0.65
  for o, e in zip(outputs, erased):  # one filled rectangle; the rest untouched
    assert (o[~e] == 7).all()
    if e.any():
      rows, cols = np.nonzero(e)
      assert e[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
  clip = transform.clip([encoded.getvalue()] * 3, np.random.default_rng(1))
  assert all((f == clip[0]).all() for f in clip)   # the same box on every frame
