"""Helpers that write miniature manual downloads and read built datasets back."""

import io
import pathlib
import zlib

import grain
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds


def color_of(key: str) -> tuple[int, int, int]:
  """A colour derived from `key`, so a decoded image can be traced back to its file."""
  h = zlib.crc32(key.encode())
  return (h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF)


def write_image(path: pathlib.Path, key: str | None = None, size: tuple[int, int] = (8, 8),
                mode: str = "RGB") -> pathlib.Path:
  """A tiny solid image of colour_of(key or path.stem); format from the suffix."""
  path.parent.mkdir(parents=True, exist_ok=True)
  color = color_of(key or path.stem)
  value = color[0] if mode == "L" else color
  fmt = "PNG" if path.suffix.lower() == ".png" else "BMP" if path.suffix == ".bmp" else "JPEG"
  PIL.Image.new(mode, size, value).save(path, format=fmt)
  return path


def write_corrupt(path: pathlib.Path) -> pathlib.Path:
  """A file with an image suffix whose bytes are a truncated JPEG."""
  path.parent.mkdir(parents=True, exist_ok=True)
  out = io.BytesIO()
  PIL.Image.new("RGB", (16, 16), (1, 2, 3)).save(out, format="JPEG")
  path.write_bytes(out.getvalue()[:60])
  return path


def write_text(path: pathlib.Path, lines: list[str], crlf: bool = False) -> pathlib.Path:
  """Lines joined with CRLF or LF, with a final line ending, written as bytes."""
  path.parent.mkdir(parents=True, exist_ok=True)
  eol = "\r\n" if crlf else "\n"
  path.write_bytes((eol.join(lines) + eol).encode())
  return path


def build(builder_cls, tmp_path: pathlib.Path, manual_dir: pathlib.Path, config=None,
          **kwargs) -> tfds.core.DatasetBuilder:
  """Builds `builder_cls` from `manual_dir` into tmp_path/'data' as ArrayRecord."""
  builder = builder_cls(data_dir=str(tmp_path / "data"), config=config,
                        file_format="array_record", **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
  """All records of `split`, in record order, read through Grain."""
  dataset = grain.MapDataset.source(builder.as_data_source(split))
  return [dataset[i] for i in range(len(dataset))]


def size(encoded: bytes) -> tuple[int, int]:
  """(width, height) of an encoded image."""
  return PIL.Image.open(io.BytesIO(encoded)).size


def text(value) -> str:
  """A Text feature value as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


def pixel(encoded: bytes) -> np.ndarray:
  """The centre pixel of an encoded image, as int array (RGB or a single value)."""
  array = np.asarray(PIL.Image.open(io.BytesIO(encoded)))
  return array[array.shape[0] // 2, array.shape[1] // 2].astype(int)


def assert_color(encoded: bytes, key: str, tol: int = 8) -> None:
  """The decoded image is the solid colour that write_image gave `key`."""
  got = pixel(encoded)
  want = np.array(color_of(key))[: got.size] if got.ndim else np.array(color_of(key)[0])
  assert np.all(np.abs(got - want) <= tol), (key, got, want)
