"""The Grain pipeline: exact epochs, padding masks, per-process rows, augmentation."""

import io

import numpy as np
import pytest
from PIL import Image

from configs import default
from ferjax import errors
from ferjax.data import augment, pipeline


class _FakeSource:
  """A random-access source of encoded 8x8 images whose pixel value encodes the index."""

  def __init__(self, n: int):
    self.records = []
    for i in range(n):
      buffer = io.BytesIO()
      Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(buffer, "PNG")
      self.records.append({"image": buffer.getvalue(), "label": i % 7, "id": f"x{i}".encode(),
                           "yaw": np.float32(i), "view": np.asarray([i, -i], np.int32)})

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def _loader(n=10, batch=4, train=True, drop_remainder=False, seed=0, metadata=("yaw",),
            kind="image", **input_fields):
  config = default.get_config()
  config.seed = seed
  config.dataset.kind = kind
  config.input.update(image_size=8, resize_size=8, train_crop="none", hflip=False,
                      **input_fields)
  config.dataset.metadata = metadata
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


def test_an_empty_process_slice_has_the_metadata_dtypes_and_shapes(monkeypatch):
  # 5 eval rows, global batch 4 over 2 processes: batch 1's one real row is process
  # 0's, process 1's slice is all padding but must match process 0's arrays.
  monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
  monkeypatch.setattr(pipeline.jax, "process_index", lambda: 1)
  loader = _loader(n=5, batch=4, train=False, metadata=("yaw", "view"))
  full, empty = loader(0), loader(1)
  assert not empty["mask"].any()
  for name in ("yaw", "view"):
    assert (empty[name].dtype, empty[name].shape) == (full[name].dtype, full[name].shape)
  assert (empty["view"].dtype, empty["view"].shape) == (np.int32, (2, 2))
  # Its padding repeats the batch's one real row (index 4), not blank images.
  assert empty["index"].tolist() == [4, 4]
  np.testing.assert_array_equal(empty["image"][:, 0, 0, 0], [4, 4])


def test_padding_repeats_the_global_batch_evenly(monkeypatch):
  # 7 rows, batch 6 over 2 processes: batch 1 holds one real row (process 0's
  # slot 0); every other slot repeats it. 9 rows, batch 6: batch 1's three real
  # rows are all process 0's, and process 1's slots g = 3, 4, 5 repeat rows
  # g mod 3 = 0, 1, 2 of the global batch: each real row once more.
  monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
  for process, expected_mask in ((0, [True, False, False]), (1, [False, False, False])):
    monkeypatch.setattr(pipeline.jax, "process_index", lambda p=process: p)
    batch = _loader(n=7, batch=6, train=False)(1)
    assert batch["mask"].tolist() == expected_mask
    assert batch["index"].tolist() == [6, 6, 6]
  parts = {}
  for process in (0, 1):
    monkeypatch.setattr(pipeline.jax, "process_index", lambda p=process: p)
    parts[process] = _loader(n=9, batch=6, train=False)(1)
  assert parts[0]["index"].tolist() == parts[1]["index"].tolist() == [6, 7, 8]
  assert parts[0]["mask"].all() and not parts[1]["mask"].any()


def test_loader_rejects_bad_metadata_and_segments():
  with pytest.raises(errors.UserError, match="field 'id' of .* not numeric"):
    _loader(metadata=("id",))
  with pytest.raises(errors.UserError, match="names 'pose', which .* has id, image"):
    _loader(metadata=("pose",))
  with pytest.raises(errors.UserError, match=r"config.input.num_frames=6 must be a positive "
                     r"multiple of config.input.num_segments=4"):
    _loader(kind="clip", num_frames=6, num_segments=4)


class _FakeBuilder:
  """A builder whose generation fails, or is prepared after `download_and_prepare`."""

  def __init__(self, prepared=False, fails=False):
    self.prepared, self.fails, self.generated = prepared, fails, 0

  def is_prepared(self):
    return self.prepared

  def download_and_prepare(self, **unused_kwargs):
    self.generated += 1
    if self.fails:
      raise RuntimeError("disk full")
    self.prepared = True


def _as_process(monkeypatch, index, failed_on_process_0, after_barrier):
  """Runs _prepare_synthetic as process `index` of 2; returns the broadcast flags sent."""
  sent = []

  def broadcast_one_to_all(flag):
    sent.append(int(flag))
    return np.int32(flag if index == 0 else failed_on_process_0)

  monkeypatch.setattr(pipeline.jax, "process_count", lambda: 2)
  monkeypatch.setattr(pipeline.jax, "process_index", lambda: index)
  monkeypatch.setattr(pipeline.multihost_utils, "broadcast_one_to_all", broadcast_one_to_all)
  monkeypatch.setattr(pipeline.tfds, "builder", lambda *args, **kwargs: after_barrier)
  return sent


def test_synthetic_generation_failure_reaches_the_barrier(monkeypatch):
  sent = _as_process(monkeypatch, 0, None, _FakeBuilder())
  with pytest.raises(RuntimeError, match="disk full"):
    pipeline._prepare_synthetic(_FakeBuilder(fails=True), "synthetic_fer/x", "/d")
  assert sent == [1]   # process 0 told the others before raising
  _as_process(monkeypatch, 1, 1, _FakeBuilder())
  with pytest.raises(errors.UserError, match="process 0 failed to generate"):
    pipeline._prepare_synthetic(_FakeBuilder(), "synthetic_fer/x", "/d")


def test_only_process_0_generates_synthetic_data(monkeypatch):
  unprepared = _FakeBuilder()
  _as_process(monkeypatch, 1, 0, unprepared)
  with pytest.raises(errors.UserError, match="does not see .* shared by all hosts .* "
                     "`python -m ferjax.data.prepare synthetic_fer --config=x --data_dir=/d`"):
    pipeline._prepare_synthetic(_FakeBuilder(), "synthetic_fer/x", "/d")
  assert not unprepared.generated
  prepared = _FakeBuilder(prepared=True)
  _as_process(monkeypatch, 1, 0, prepared)
  assert pipeline._prepare_synthetic(_FakeBuilder(), "synthetic_fer/x", "/d") is prepared


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
