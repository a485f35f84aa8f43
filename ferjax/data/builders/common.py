"""Machinery shared by ferjax's manual-download TFDS builders.

A builder lists, per split, the examples to write (`Entry`: a key and a loader)
in record order; `ManualBuilder` writes them in that order to ArrayRecord
shards (TFDS `ShardBasedBuilder`, so nothing is reordered by key hash and the
position of a record in its split is a stable example index), loads and
decode-checks the files in a thread pool, and keeps a `BuildReport`: examples
per split and class, every skipped item with its reason, examples excluded by
the dataset's protocol (counted per reason) and the build throughput. The
report is saved next to the dataset as `build_report.json`.
"""

import abc
import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import pathlib
import time
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import PIL.Image
import tensorflow_datasets as tfds

from ferjax import errors
from ferjax.data import labels

REPORT_FILE = "build_report.json"

# Emotion words used as folder/column names by SFEW, FERV39k, AFEW (and the
# Former-DFER AFEW_Face variants), lower-cased, -> canonical class name.
_EMOTION_WORDS = {
    "neutral": "neutral", "happy": "happy", "happiness": "happy", "sad": "sad",
    "sadness": "sad", "surprise": "surprise", "fear": "fear", "disgust": "disgust",
    "angry": "anger", "anger": "anger", "contempt": "contempt",
}


class LayoutError(errors.UserError, FileNotFoundError):
  """The manual download is missing or not in the layout the builder expects."""


class AnnotationError(errors.UserError, ValueError):
  """An annotation file cannot be used as a whole (bad header, unresolved keys)."""


class SkipItem(Exception):
  """One item cannot be used; it is skipped and listed in the build report."""


def resolve_data_dir(data_dir: str | None) -> str:
  """`data_dir` (user folder expanded), else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


def scalar(dtype) -> tfds.features.Tensor:
  """A scalar numeric feature."""
  return tfds.features.Tensor(shape=(), dtype=dtype)


def canonical_ids(native_names: Sequence[str]) -> tuple[int, ...]:
  """Canonical ids of a dataset's classes listed in its native id order.

  Example: RAF-DB's native order (surprise, fear, disgust, happy, sad, anger,
  neutral) gives (3, 4, 5, 1, 2, 6, 0).
  """
  return tuple(labels.CLASS_NAMES_8.index(name) for name in native_names)


def emotion_word_id(word: str) -> int | None:
  """Canonical id of an emotion folder/column name ('Angry', 'Happiness', ...), or None."""
  name = _EMOTION_WORDS.get(word.strip().lower())
  return None if name is None else labels.CLASS_NAMES_8.index(name)


def find_root(manual_dir: pathlib.Path, marker: str) -> pathlib.Path:
  """The directory D, `manual_dir` itself or one of its sub-folders, where D/marker exists.

  Raises:
    LayoutError: naming the expected path when no such directory exists.
  """
  candidates = [manual_dir]
  if manual_dir.is_dir():
    candidates += sorted(p for p in manual_dir.iterdir() if p.is_dir())
  for candidate in candidates:
    if (candidate / marker).exists():
      return candidate
  raise LayoutError(f"expected {manual_dir / marker} (or {marker} one folder deeper); "
                    "see docs/datasets.md")


def require(path: pathlib.Path, what: str = "") -> pathlib.Path:
  """`path` if it exists, else a LayoutError naming it."""
  if not path.exists():
    raise LayoutError(f"expected {what + ' ' if what else ''}{path}; see docs/datasets.md")
  return path


@contextlib.contextmanager
def open_text(path: pathlib.Path) -> Iterator[Iterator[str]]:
  """The lines of a UTF-8 annotation file, for a loop or `csv.reader` (line endings kept).

  LF, CRLF and CR line endings alike; a byte-order mark is dropped.

  Raises:
    AnnotationError: naming the file and line when the file is not UTF-8, holds a NUL
      byte (a UTF-16 or binary file; a NUL would also make paths unusable), or a csv
      reader over the lines fails.
  """
  line = 0

  def checked(f):
    nonlocal line
    for line, text in enumerate(f, 1):
      # surrogateescape turns undecodable bytes into lone surrogates, which do not
      # encode back: the line of the bad byte is then known exactly.
      if not text.isascii():
        try:
          text.encode()
        except UnicodeEncodeError:
          raise AnnotationError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8"
                                ) from None
      if "\0" in text:
        raise AnnotationError(f"{path}:{line}: NUL byte (a UTF-16 or binary file?); save "
                              "the file as UTF-8 text")
      yield text

  try:
    f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
  except IsADirectoryError:
    raise AnnotationError(f"{path} is a folder, not an annotation file") from None
  except OSError as e:
    raise AnnotationError(f"cannot read {path}: {e.strerror or e}") from None
  with f:
    try:
      yield checked(f)
    except csv.Error as e:
      raise AnnotationError(f"{path}:{line}: {e}") from None


def read_lines(path: pathlib.Path) -> list[tuple[int, str]]:
  """(1-based line number, stripped text) of the non-blank lines of a UTF-8 text file.

  Raises:
    AnnotationError: see `open_text`.
  """
  with open_text(path) as lines:
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def sorted_files(folder: pathlib.Path, suffixes: Sequence[str] | None = None) -> list[pathlib.Path]:
  """The files of a folder in lexicographic file-name order (hidden files ignored).

  Args:
    folder: a clip's frame folder or a class folder of images.
    suffixes: keep only these lower-case suffixes (e.g. ('.jpg',)); None keeps all.
  """
  names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
  if suffixes is not None:
    names = [name for name in names if os.path.splitext(name)[1].lower() in suffixes]
  return [folder / name for name in names if (folder / name).is_file()]


def decode(data: bytes, what: str) -> PIL.Image.Image:
  """The fully decoded image; SkipItem naming `what` when the bytes are not a whole image."""
  if not data:
    raise SkipItem(f"empty image file {what} (0 bytes)")
  try:
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
  except PIL.UnidentifiedImageError:
    # PIL's message names the in-memory buffer, not the file.
    raise SkipItem(f"undecodable image {what}: not an image format PIL knows") from None
  # PIL's decoders raise many types for corrupt data (OSError, struct.error,
  # EOFError, IndexError, zlib.error, ...).
  except Exception as e:  # pylint: disable=broad-except
    raise SkipItem(f"undecodable image {what}: {type(e).__name__}: {e}") from None
  return image


def read_file(path: pathlib.Path) -> bytes:
  """The bytes of `path`; SkipItem when it is missing or unreadable."""
  try:
    return path.read_bytes()
  except FileNotFoundError:
    raise SkipItem(f"missing file {path}") from None
  except OSError as e:
    raise SkipItem(f"unreadable file {path}: {e}") from None


def read_image(path: pathlib.Path) -> bytes:
  """The encoded bytes of an image file as shipped, after checking that they decode."""
  data = read_file(path)
  decode(data, str(path))
  return data


def read_clip(folder: pathlib.Path, suffixes: Sequence[str] | None = None,
              num_frames: int | None = None) -> list[bytes]:
  """The encoded frames of a clip folder in lexicographic order, each checked to decode.

  Args:
    folder: the clip's frame folder.
    suffixes: frame file suffixes to keep (None: every file).
    num_frames: keep only the first `num_frames` frames (a list file's count);
      the folder must hold at least that many.
  """
  if not folder.is_dir():
    raise SkipItem(f"missing frame folder {folder}")
  frames = sorted_files(folder, suffixes)
  if num_frames is not None:
    if len(frames) < num_frames:
      raise SkipItem(f"{folder} has {len(frames)} frames, the list file says {num_frames}")
    frames = frames[:num_frames]
  if not frames:
    raise SkipItem(f"no frames in {folder}")
  return [read_image(path) for path in frames]


def encode(image: PIL.Image.Image, image_format: str) -> bytes:
  """`image` encoded as PNG, or as JPEG (quality 95) for any other `image_format`."""
  out = io.BytesIO()
  if image_format == "PNG":
    image.save(out, format="PNG")
  else:
    if image.mode not in ("L", "RGB"):
      image = image.convert("RGB")
    image.save(out, format="JPEG", quality=95)
  return out.getvalue()


@dataclasses.dataclass(frozen=True)
class Entry:
  """One example to write: a unique key (used in the report) and its loader.

  `load()` returns the example dict or raises SkipItem.
  """
  key: str
  load: Callable[[], dict[str, Any]]


def entry(key: str, load: Callable[..., dict[str, Any]], *args, **kwargs) -> Entry:
  """An Entry whose loader is `load(*args, **kwargs)`."""
  return Entry(key, functools.partial(load, *args, **kwargs))


@dataclasses.dataclass
class BuildReport:
  """What a build wrote and what it left out.

  Attributes:
    class_names: names of the `label` classes, in id order.
    counts: split -> per-class example counts.
    skipped: (split, item, reason) for every unusable item (dirty data).
    excluded: split -> reason -> count of examples the protocol leaves out.
    notes: other facts about the build (e.g. which optional splits were built).
    images: images written (a clip counts its frames).
    seconds: wall time of the build.
  """
  class_names: tuple[str, ...] = ()
  counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)
  skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
  excluded: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  images: int = 0
  seconds: float = 0.0
  progress: Callable[[int], Any] | None = dataclasses.field(default=None, repr=False,
                                                             compare=False)

  def count(self, split: str, label: int, images: int = 1) -> None:
    per_class = self.counts.setdefault(split, [0] * len(self.class_names))
    per_class[label] += 1
    self.images += images
    if self.progress is not None:
      self.progress(images)

  def skip(self, split: str, item: str, reason: str) -> None:
    self.skipped.append((split, item, reason))

  def exclude(self, split: str, reason: str, n: int = 1) -> None:
    per_reason = self.excluded.setdefault(split, {})
    per_reason[reason] = per_reason.get(reason, 0) + n

  def to_json(self) -> str:
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
              if f.name != "progress"}
    return json.dumps(fields, indent=1)

  @classmethod
  def from_json(cls, text: str) -> "BuildReport":
    fields = json.loads(text)
    fields["class_names"] = tuple(fields["class_names"])
    fields["skipped"] = [tuple(s) for s in fields["skipped"]]
    return cls(**fields)

  def summary(self) -> list[str]:
    """Human-readable lines: per split and class counts, skipped items, throughput."""
    lines = []
    for split, per_class in self.counts.items():
      lines.append(f"{split}: {sum(per_class):,} examples")
      lines.append("  " + ", ".join(f"{name} {n:,}" for name, n in zip(self.class_names,
                                                                        per_class)))
    for split, per_reason in self.excluded.items():
      for reason, n in sorted(per_reason.items()):
        lines.append(f"excluded by protocol: {split}: {reason}: {n:,}")
    lines.append(f"skipped: {len(self.skipped)} item(s)")
    lines += [f"  {split} {item}: {reason}" for split, item, reason in self.skipped]
    lines += [f"note: {note}" for note in self.notes]
    rate = self.images / self.seconds if self.seconds else 0.0
    lines.append(f"throughput: {self.images:,} images in {self.seconds:.1f} s "
                 f"= {rate:,.1f} images/s")
    return lines


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any],
                workers: int) -> Iterator[tuple[Any, concurrent.futures.Future]]:
  """(item, future of fn(item)) in input order, with at most 4 * workers in flight."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append((item, pool.submit(fn, item)))
      if len(pending) >= 4 * workers:
        yield pending.popleft()
    while pending:
      yield pending.popleft()


class ManualBuilder(tfds.core.ShardBasedBuilder):
  """Base of ferjax's builders that read a user's manual download.

  Subclasses implement `_info` and `_entries`. Records are written in the
  order `_entries` lists them (never shuffled by key hash).
  """
  disable_shuffling = True
  # TFDS's shard writer holds a whole shard's examples in memory until the shard
  # is written: builders size shards to a few hundred MB.
  EXAMPLES_PER_SHARD: ClassVar[int] = 10_000
  # Features whose per-record values are also stored in `info.metadata[name][split]`
  # so that readers can select records (e.g. a fold) without reading them.
  INDEX_FEATURES: ClassVar[tuple[str, ...]] = ("label",)

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.report = BuildReport()
    self.progress: Callable[[int], Any] | None = None
    self._index_values: dict[str, dict[str, list]] = {}

  @abc.abstractmethod
  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[Entry]]:
    """Per split, the examples to write, in record order.

    Raises:
      LayoutError / AnnotationError for problems that make the build impossible;
      item-level problems go to `self.report.skip` / `self.report.exclude`.
    """

  def _dataset_info(self, features: dict[str, Any], **kwargs) -> tfds.core.DatasetInfo:
    """DatasetInfo with the given features, ordered records and a metadata dict."""
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), disable_shuffling=True,
        metadata=tfds.core.MetadataDict(), **kwargs)

  def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    try:
      return pathlib.Path(os.fspath(dl_manager.manual_dir))
    except AssertionError as e:
      raise LayoutError(str(e).splitlines()[0]) from None

  def _shard_iterators_per_split(self, dl_manager):
    self.report = BuildReport(tuple(self.info.features["label"].names), progress=self.progress)
    self._index_values = {name: {} for name in self.INDEX_FEATURES}
    per_split = self._entries(self._manual_dir(dl_manager))
    shards = {}
    for split, entries in per_split.items():
      entries = self._unique(split, entries)
      if not entries:
        self.report.notes.append(f"split {split} has no examples and was not written")
        continue
      for values in self._index_values.values():
        values[split] = []
      n = self.EXAMPLES_PER_SHARD
      shards[split] = [functools.partial(self._write_shard, split, entries[i:i + n])
                       for i in range(0, len(entries), n)]
    if not shards:
      # TFDS would mark a dataset without splits as prepared; training would then
      # find no split at all.
      first = (f"; the first skipped item, {self.report.skipped[0][1]}: "
               f"{self.report.skipped[0][2]}" if self.report.skipped else "")
      raise LayoutError(f"{self.info.full_name}: the annotation files list no usable item"
                        f"{first}; see docs/datasets.md")
    return shards

  def _unique(self, split: str, entries: list[Entry]) -> list[Entry]:
    seen = set()
    unique = []
    for e in entries:
      if e.key in seen:
        self.report.skip(split, e.key, "duplicate key; the first occurrence is kept")
      else:
        seen.add(e.key)
        unique.append(e)
    return unique

  def _check_written(self) -> None:
    """Fails the build (before TFDS marks it prepared) if a split lost every item.

    A split whose items were all skipped would otherwise be written empty, and a
    later training run would blame its config.

    Raises:
      LayoutError: naming the split and its first skipped item with the reason.
    """
    for split in self.info.splits:
      if not self.info.splits[split].num_examples:
        skipped = [(item, reason) for s, item, reason in self.report.skipped if s == split]
        if not skipped:
          raise LayoutError(f"split {split} lists no items; see docs/datasets.md")
        item, reason = skipped[0]
        raise LayoutError(f"no item of split {split} could be loaded, the first ({item}) "
                          f"for: {reason}; see docs/datasets.md")

  def _write_shard(self, split: str, entries: Sequence[Entry]):
    workers = min(16, os.cpu_count() or 1)
    for e, future in ordered_map(lambda item: item.load(), entries, workers):
      try:
        example = future.result()
      except SkipItem as skip:
        self.report.skip(split, e.key, str(skip))
        continue
      except Exception as error:
        # Not dirty data (that is a SkipItem) but a bug or a system error: fail, and
        # say on which item, which the thread pool's traceback does not.
        error.add_note(f"while loading item {e.key} of split {split}")
        raise
      images = len(example["frames"]) if "frames" in example else 1
      self.report.count(split, int(example["label"]), images)
      for name, values in self._index_values.items():
        values[split].append(int(example[name]))
      yield e.key, example

  def _download_and_prepare(self, dl_manager, download_config=None):
    start = time.perf_counter()
    super()._download_and_prepare(dl_manager, download_config)
    self._check_written()
    self.report.seconds = time.perf_counter() - start
    for name, values in self._index_values.items():
      self.info.metadata[name] = values
    (self.data_path / REPORT_FILE).write_text(self.report.to_json())
