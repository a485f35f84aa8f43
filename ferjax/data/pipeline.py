"""Grain input pipelines over TFDS ArrayRecord data sources.

One Grain element is one host-local batch: element k of the training stream is
global batch k (epoch k // steps_per_epoch), built from a per-epoch permutation
of the split seeded by (seed, epoch); each process loads only its rows of the
global batch. This keeps epochs exact (every example once per epoch, as SLM's
label table needs), makes the stream a pure function of the seed (identical on
1 or 8 devices, 1 or 2 processes) and makes the Grain iterator state a single
position that Orbax saves with the model. The last batch of an epoch is padded
with repeats of its real rows, masked out (`mask` False), unless `drop_remainder`.

Host batches hold uint8 pixels (`image` `[b, S, S, 3]` or `frames`
`[b, T, S, S, 3]`), `label` int32, `mask` bool, `index` int32 (the record's
position in its split) and the metadata fields named in the config.
"""

import dataclasses
import functools
import math
import os
import threading
import time

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from ferjax import errors
from ferjax.data import augment, frame_sampling, labels

SYNTHETIC_PREFIX = "synthetic_fer"


def load_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared builder for `name`; the synthetic dataset is generated on first use.

  Raises:
    UserError: when a real dataset has not been prepared (with the command to do it),
      the name, config or version is unknown, or its dataset_info.json is damaged.
  """
  # Importing the builders package registers every builder.
  from ferjax.data.builders import common  # pylint: disable=g-import-not-at-top
  data_dir = common.resolve_data_dir(data_dir)
  folder = _version_folder(name, data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  # Name, config and version are valid: the stored dataset_info.json is not (TFDS
  # raises a protobuf ParseError, a JSON error, a KeyError, ... for it).
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(
        f"dataset {name!r} is damaged: {folder / 'dataset_info.json'} cannot be read "
        f"({_first_line(e)}); {rebuild_hint(name, data_dir)}") from None
  if name.startswith(SYNTHETIC_PREFIX):
    return _prepare_synthetic(builder, name, data_dir)
  if builder.is_prepared():
    return builder
  raise errors.UserError(
      f"dataset {name!r} is not prepared in {data_dir}. Prepare it once from your manual "
      f"download with `{_prepare_command(name)} --manual_dir=DIR --data_dir={data_dir}` "
      "(see docs/datasets.md), or train on the built-in synthetic data with the config's "
      ":synthetic variant (--config=configs/NAME.py:synthetic)")


def _version_folder(name: str, data_dir: str) -> epath.Path:
  """`data_dir/<dataset>/<config>/<version>` of a TFDS name `dataset[/config][:version]`.

  Raises:
    UserError: when the dataset, config or version does not exist (listing those that do).
  """
  dataset_and_config, _, version = name.partition(":")
  dataset, _, config = dataset_and_config.partition("/")
  try:
    cls = tfds.builder_cls(dataset)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.UserError(f"config.dataset.name {name!r} is not a known dataset: no "
                           f"dataset {dataset!r}") from None
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config and config not in configs:
    raise errors.UserError(f"config.dataset.name {name!r}: {dataset} has no config "
                           f"{config!r}; configs: {', '.join(configs) or 'none'}")
  versions = [str(v) for v in [cls.VERSION, *cls.SUPPORTED_VERSIONS]]
  if version and version not in versions:
    raise errors.UserError(f"config.dataset.name {name!r}: {dataset} has no version "
                           f"{version}; versions: {', '.join(versions)}")
  config = config or (cls.DEFAULT_CONFIG_NAME or configs[0] if configs else "")
  return epath.Path(data_dir, dataset, config, version or versions[0])  # local or gs://


def rebuild_hint(name: str, data_dir: str) -> str:
  """How to rebuild the prepared dataset `name` (synthetic data regenerates when deleted)."""
  folder = _version_folder(name, data_dir)
  if name.startswith(SYNTHETIC_PREFIX):
    return f"delete {folder}; the next run regenerates it"
  return (f"delete {folder} and prepare it again with `{_prepare_command(name)} "
          f"--manual_dir=DIR --data_dir={data_dir}`")


def _first_line(error: Exception) -> str:
  """The first line of an error message, at most 200 characters, with its type."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ""
  if text.startswith("Failed to construct dataset"):  # TFDS's wrapper: keep the cause
    text = text.split('": ', 1)[-1]
  return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _prepare_command(name: str) -> str:
  """The `ferjax.data.prepare` command line (without directories) that builds `name`."""
  dataset, _, builder_config = name.split(":")[0].partition("/")
  config_flag = f" --config={builder_config}" if builder_config else ""
  return f"python -m ferjax.data.prepare {dataset}{config_flag}"


def _prepare_synthetic(builder: tfds.core.DatasetBuilder, name: str,
                       data_dir: str) -> tfds.core.DatasetBuilder:
  """Generates the synthetic dataset where it is missing, in process 0 only.

  With several processes only process 0 writes, so no two processes generate
  into one dir at once; the others wait for it and must then find the dataset
  prepared, i.e. the data dir must be shared by all hosts (NFS, `gs://`) or
  prepared on every host beforehand. Process 0 reaches the barrier whether or
  not generation succeeded and tells the others which, so none waits forever.

  Raises:
    UserError: when process 0 failed to generate the data, or when this process
      does not see the data that process 0 generated.
  """
  if jax.process_count() == 1:
    if not builder.is_prepared():
      builder.download_and_prepare(file_format="array_record")
    return builder
  failure = None
  if jax.process_index() == 0 and not builder.is_prepared():
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as e:  # pylint: disable=broad-except  # re-raised after the barrier
      failure = e
  # A collective, hence a barrier: the other processes wait here until process 0
  # has tried to generate the data, and learn whether it failed.
  failed = multihost_utils.broadcast_one_to_all(np.int32(failure is not None))
  if failure is not None:
    raise failure
  if failed:
    raise errors.UserError(f"process 0 failed to generate the synthetic dataset {name!r} in "
                           f"{data_dir}; its log has the error")
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    raise errors.UserError(
        f"process {jax.process_index()} does not see the synthetic dataset {name!r} that "
        f"process 0 generated in {data_dir}: use a data dir shared by all hosts "
        "(config.dataset.data_dir or $TFDS_DATA_DIR), or prepare it on every host first "
        f"with `{_prepare_command(name)} --data_dir={data_dir}`")
  return builder


class DamagedData(errors.UserError):
  """A prepared dataset's files cannot be read; the message says how to rebuild them."""


@dataclasses.dataclass
class SplitSource:
  """Random access to the examples of one split that the config keeps.

  `positions[j]` is the record position (the stable example index) of the j-th
  kept example; filters: contempt dropped for 7-class configs, DFEW-style
  `test_fold` selection, clips shorter than `min_frames` dropped.
  """
  source: object
  positions: np.ndarray
  class_names: tuple[str, ...]
  num_records: int
  columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  # For error messages: `dataset:split`, and how to rebuild the dataset.
  where: str = "the split"
  rebuild: str = ""

  def __len__(self) -> int:
    return len(self.positions)

  def column(self, name: str) -> np.ndarray:
    """`[num_records]` values of feature `name` by record position, -1 where filtered out.

    Read from the builder's stored columns when present, else from the records.
    """
    values = np.full((self.num_records,), -1, np.int64)
    if name in self.columns:
      values[self.positions] = self.columns[name][self.positions]
    else:
      for position in self.positions:
        values[position] = int(self.read(int(position))[name])
    return values

  def record(self, j: int) -> tuple[int, dict]:
    position = int(self.positions[j])
    return position, self.read(position)

  def read(self, position: int) -> dict:
    """The record at `position`.

    Raises:
      DamagedData: naming the record when its shard cannot be read or parsed.
    """
    try:
      return self.source[position]
    # ArrayRecord raises RuntimeError for a damaged shard, TFDS several types for
    # bytes that do not parse as the dataset's features.
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedData(f"record {position} of {self.where} cannot be read "
                        f"({_first_line(e)}); {self.rebuild}") from None


def open_split(dataset_config: ml_collections.ConfigDict, split: str, *,
               train: bool) -> SplitSource:
  """Opens `split` of the configured dataset and applies the config's filters."""
  name = dataset_config.name
  builder = load_builder(name, dataset_config.data_dir)
  rebuild = rebuild_hint(name, str(builder.data_dir_root))
  if split not in builder.info.splits:
    raise errors.UserError(f"dataset {name!r} has no split {split!r}; it has "
                           f"{', '.join(sorted(builder.info.splits)) or f'none ({rebuild})'}")
  features = builder.info.features
  _check_features(dataset_config, features)
  source = _open_shards(builder, split, rebuild)
  label_feature = features[dataset_config.label_key]
  stored_classes = tuple(getattr(label_feature, "names", ()) or ())
  num_classes = dataset_config.num_classes
  if stored_classes and len(stored_classes) < num_classes:
    raise errors.UserError(f"config.dataset.num_classes={num_classes} but "
                           f"{dataset_config.name} has {len(stored_classes)} classes")
  class_names = (stored_classes[:num_classes] if stored_classes
                 else labels.class_names(num_classes))
  metadata = builder.info.metadata or {}
  columns = {name: np.asarray(per_split[split]) for name, per_split in metadata.items()
             if isinstance(per_split, dict) and split in per_split}
  split_source = SplitSource(source, np.arange(len(source)), class_names, len(source),
                             columns, where=f"{name}:{split}", rebuild=rebuild)
  split_source.positions = _kept_positions(split_source, dataset_config, features,
                                           train=train)
  if not len(split_source):
    raise errors.UserError(f"no examples left in {name}:{split} after "
                           "the config's filters (num_classes, fold, min_frames)")
  return split_source


def _check_features(dataset_config: ml_collections.ConfigDict, features) -> None:
  """Fails with one line when the config reads features the dataset does not have."""
  have = ", ".join(sorted(features))
  if dataset_config.label_key not in features:
    raise errors.UserError(f"config.dataset.label_key={dataset_config.label_key!r}: "
                           f"{dataset_config.name} has no such feature; it has {have}")
  pixels = "frames" if dataset_config.kind == "clip" else "image"
  if pixels not in features:
    other = "image" if dataset_config.kind == "clip" else "clip"
    raise errors.UserError(
        f"config.dataset.kind={dataset_config.kind!r} reads the {pixels!r} feature, which "
        f"{dataset_config.name} does not have (it has {have}); is it an {other} dataset "
        f"(config.dataset.kind={other!r})?")


def _open_shards(builder: tfds.core.DatasetBuilder, split: str, rebuild: str):
  """The split's data source, after reading the first record of every shard.

  A missing, truncated or overwritten shard fails here, naming its file, instead
  of in a training step or a loader process.

  Raises:
    DamagedData: naming the shard file and how to rebuild the dataset.
  """
  info = builder.info.splits[split]
  start = 0
  try:
    source = builder.as_data_source(split)
    for path, length in zip(info.filepaths, info.shard_lengths):
      try:
        source[start]
      except Exception as e:  # pylint: disable=broad-except  # see SplitSource.read
        raise DamagedData(f"dataset {builder.info.full_name}: shard {path} cannot be read "
                          f"({_first_line(e)}); {rebuild}") from None
      start += length
  except DamagedData:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedData(f"dataset {builder.info.full_name}: split {split} in {builder.data_dir} "
                      f"cannot be opened ({_first_line(e)}); {rebuild}") from None
  return source


def _filter_checks(dataset_config, features, *, train: bool) -> dict:
  """{feature name: vectorised predicate over that feature's values} for the config."""
  checks = {}
  label_key = dataset_config.label_key
  if len(getattr(features[label_key], "names", ()) or ()) > dataset_config.num_classes:
    checks[label_key] = lambda labels: labels < dataset_config.num_classes
  if dataset_config.fold:
    if "test_fold" not in features:
      raise errors.UserError(f"config.dataset.fold is set but {dataset_config.name} has no "
                             "test_fold feature")
    fold = dataset_config.fold
    checks["test_fold"] = (lambda folds: folds != fold) if train else (
        lambda folds: folds == fold)
  if dataset_config.min_frames:
    checks["num_frames"] = np.vectorize(
        lambda n: frame_sampling.keep_clip(int(n), dataset_config.min_frames), otypes=[bool])
  return checks


def _kept_positions(split: SplitSource, dataset_config, features, *,
                    train: bool) -> np.ndarray:
  """Record positions passing the config's filters.

  Uses the per-record `columns` that ferjax's builders store in
  `info.metadata[feature][split]` when they cover every filtered feature, so
  that e.g. a DFEW fold is selected without reading any video; otherwise reads
  the records once.
  """
  checks = _filter_checks(dataset_config, features, train=train)
  if not checks:
    return np.arange(split.num_records)
  if all(name in split.columns for name in checks):
    values = {name: split.columns[name] for name in checks}
  else:
    records = [split.read(i) for i in range(split.num_records)]
    values = {name: np.asarray([r[name] for r in records]) for name in checks}
  keep = np.ones(split.num_records, bool)
  for name, check in checks.items():
    keep &= check(values[name])
  return np.flatnonzero(keep)


def steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool,
                    accumulate_steps: int = 1) -> int:
  """Number of global batches in one epoch.

  With gradient accumulation an epoch holds whole updates of `accumulate_steps`
  batches: the rows that one batch of accumulate_steps x global_batch_size would
  drop are dropped, so the micro-batches carry exactly that batch's examples.
  """
  update_size = accumulate_steps * global_batch_size
  if drop_remainder:
    return max(num_examples // update_size, 1) * accumulate_steps
  return math.ceil(num_examples / update_size) * accumulate_steps


def _metadata_templates(split: SplitSource,
                        dataset_config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """{field: its value in the split's first record} for each config.dataset.metadata field.

  Raises:
    UserError: when a field is missing or not numeric (batches hold numeric arrays).
  """
  if not dataset_config.metadata:
    return {}
  _, record = split.record(0)
  templates = {}
  for name in dataset_config.metadata:
    if name not in record:
      raise errors.UserError(f"config.dataset.metadata names {name!r}, which "
                             f"{dataset_config.name} does not have; it has "
                             f"{', '.join(sorted(record))}")
    templates[name] = np.asarray(record[name])
    if templates[name].dtype.kind not in "biuf":
      raise errors.UserError(f"config.dataset.metadata field {name!r} of "
                             f"{dataset_config.name} is {templates[name].dtype}, not numeric; "
                             "only numeric fields can be batched")
  return templates


def make_transform(input_config: ml_collections.ConfigDict, *,
                   train: bool) -> augment.ImageTransform:
  """The train or eval `ImageTransform` that `config.input` describes."""
  return augment.ImageTransform(
      train=train, image_size=input_config.image_size,
      resize_size=input_config.resize_size, train_crop=input_config.train_crop,
      hflip=input_config.hflip, gaussian_noise_var=input_config.gaussian_noise_var,
      erasing_prob=input_config.random_erasing, erasing_scale=input_config.erasing_scale,
      erasing_fill=tuple(int(round(255 * m)) for m in input_config.mean))


class BatchLoader:
  """Maps a global batch number to this process's rows of that batch (picklable)."""

  def __init__(self, split: SplitSource, config: ml_collections.ConfigDict, *, train: bool,
               global_batch_size: int, drop_remainder: bool):
    if global_batch_size % jax.process_count():
      raise errors.UserError(f"batch size {global_batch_size} is not divisible by the "
                             f"{jax.process_count()} processes")
    num_frames, num_segments = config.input.num_frames, config.input.num_segments
    if config.dataset.kind == "clip" and not (0 < num_segments <= num_frames and
                                              num_frames % num_segments == 0):
      raise errors.UserError(f"config.input.num_frames={num_frames} must be a positive "
                             f"multiple of config.input.num_segments={num_segments}")
    self.split = split
    self.train = train
    self.kind = config.dataset.kind
    self.label_key = config.dataset.label_key
    self.metadata = _metadata_templates(split, config.dataset)
    self.seed = config.seed
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // jax.process_count()
    self.process_index = jax.process_index()
    self.steps_per_epoch = steps_per_epoch(
        len(split), global_batch_size, drop_remainder,
        config.optimizer.accumulate_steps if train else 1)
    self.num_frames = num_frames
    self.num_segments = num_segments
    self.image_size = config.input.image_size
    self.transform = make_transform(config.input, train=train)

  @functools.lru_cache(maxsize=2)
  def _order(self, epoch: int) -> np.ndarray:
    if not self.train:
      return np.arange(len(self.split))
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.split))

  def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
    epoch, position = divmod(int(batch_number), self.steps_per_epoch)
    rows = self._order(epoch)[position * self.global_batch_size:
                              (position + 1) * self.global_batch_size]
    start = self.process_index * self.local_batch_size
    # Slots past the real rows of a partial last batch repeat real rows of the
    # whole global batch (slot g takes row g mod n), so every process, even one
    # whose slice holds no real row, feeds train-mode BatchNorm real images, and
    # the repeats spread evenly; `mask` keeps them out of losses and metrics.
    slots = [int(rows[g % len(rows)]) for g in range(start, start + self.local_batch_size)]
    loaded = {j: self._load(j, epoch) for j in dict.fromkeys(slots)}
    return self._collate([loaded[j] for j in slots],
                         num_real=min(max(len(rows) - start, 0), self.local_batch_size))

  def _load(self, j: int, epoch: int) -> dict:
    position, record = self.split.record(j)
    rng = np.random.default_rng([self.seed, epoch, position]) if self.train else None
    key = record.get("id", position)
    key = key.decode() if isinstance(key, bytes) else str(key)
    try:
      if self.kind == "clip":
        available = int(record.get("num_frames", len(record["frames"])))
        chosen = frame_sampling.segment_indices(
            available, self.num_segments, self.num_frames // self.num_segments,
            train=self.train, rng=rng)
        pixels = self.transform.clip([record["frames"][i] for i in chosen], rng, key)
      else:
        pixels = self.transform.image(record["image"], rng, key)
    except augment.UndecodableImage as e:
      # Raised in a loader process, Grain re-raises it in the training process.
      raise DamagedData(f"record {position} of {self.split.where}: {e}; "
                        f"{self.split.rebuild}") from None
    example = {"pixels": pixels, "label": int(record[self.label_key]), "index": position}
    for name in self.metadata:
      example[name] = np.asarray(record[name])
    return example

  def _collate(self, examples: list[dict], num_real: int) -> dict[str, np.ndarray]:
    """Stacks one example per slot; the first `num_real` are real, the rest padding."""
    b = self.local_batch_size
    size = self.image_size
    shape = (self.num_frames, size, size, 3) if self.kind == "clip" else (size, size, 3)
    batch = {
        "frames" if self.kind == "clip" else "image": np.zeros((b, *shape), np.uint8),
        "label": np.zeros((b,), np.int32),
        "index": np.zeros((b,), np.int32),
        "mask": np.zeros((b,), bool),
    }
    pixels = batch["frames" if self.kind == "clip" else "image"]
    # Shapes and dtypes from the loader's templates, not from the rows: every
    # process must build the same arrays, or the global batch cannot be assembled.
    for name, template in self.metadata.items():
      batch[name] = np.zeros((b, *template.shape), template.dtype)
    for i, example in enumerate(examples):
      pixels[i] = example["pixels"]
      batch["label"][i] = example["label"]
      batch["index"][i] = example["index"]
      for name in self.metadata:
        batch[name][i] = example[name]
    batch["mask"][:num_real] = True
    return batch


def make_dataset(loader: BatchLoader, num_batches: int, *,
                 worker_count: int, prefetch: int) -> grain.IterDataset:
  """The stream of host batches 0..num_batches-1, loaded by `worker_count` processes."""
  # An element is a whole host batch: bound Grain's read-ahead (500 by default) by
  # `prefetch`, or it holds hundreds of batches in host memory.
  read_options = grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=prefetch)
  dataset = grain.MapDataset.range(num_batches).map(loader).to_iter_dataset(read_options)
  if worker_count > 0:
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=prefetch),
        worker_init_fn=functools.partial(exit_with_parent, os.getpid()))
  return dataset


def exit_with_parent(parent_pid: int, worker_index: int = 0, num_workers: int = 1,
                     poll_seconds: float = 0.5) -> None:
  """Grain worker init: the worker exits within `poll_seconds` of its parent's death.

  A parent killed by SIGKILL cannot stop its loader processes, which would then
  run on (reparented to init) until their buffers fill. A daemon thread watches
  the parent id instead of PR_SET_PDEATHSIG, which fires when the parent *thread*
  that started the worker exits, and Grain starts workers from helper threads.
  """
  del worker_index, num_workers  # Grain's worker_init_fn arguments

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(poll_seconds)
    os._exit(1)  # pylint: disable=protected-access  # no cleanup: the parent is gone

  threading.Thread(target=watch, daemon=True, name="ferjax-exit-with-parent").start()
