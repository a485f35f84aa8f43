"""Reading the CLI's inputs: image files, video files (PyAV), folders and globs.

Every reader raises `BadInput` with a one-line reason for a file it cannot
use, so the caller reports it and goes on with the other inputs.
"""

import glob
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class BadInput(Exception):
  """An input that cannot be read; the message names why (the caller names the file)."""


def is_video(path: str) -> bool:
  return path.lower().endswith(VIDEO_SUFFIXES)


def expand_inputs(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Files, folders (their images and videos, sorted, recursively) and globs -> files.

  Returns (files in order, without repeats; [(pattern, reason)] for patterns that match nothing).
  """
  files, missing = [], []
  for pattern in patterns:
    if os.path.isdir(pattern):
      found = sorted(os.path.join(root, name) for root, _, names in os.walk(pattern)
                     for name in names if name.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES))
      if not found:
        missing.append((pattern, "folder without images or videos"))
    elif os.path.exists(pattern):
      found = [pattern]
    else:
      found = sorted(glob.glob(pattern, recursive=True))
      if not found:
        missing.append((pattern, "no such file"))
    files.extend(found)
  return list(dict.fromkeys(files)), missing


def read_image(path: str) -> np.ndarray:
  """An image file -> uint8 RGB `[H, W, 3]` (grayscale replicated, alpha dropped)."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except Exception as e:  # PIL raises several types for corrupt or foreign files.
    raise BadInput(f"not a readable image ({type(e).__name__}: "
                   f"{str(e).splitlines()[0] if str(e) else ''})") from None


def video_frames(path: str) -> Iterator[tuple[int, float, np.ndarray]]:
  """Decodes a video's first video stream: (frame index, time in s, uint8 RGB `[H, W, 3]`)."""
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(path)
  except Exception as e:  # PyAV raises FFmpeg errors of many types.
    raise BadInput(f"not a readable video ({type(e).__name__}: "
                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
  with container:
    if not container.streams.video:
      raise BadInput("no video stream")
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    index = 0
    try:
      for frame in container.decode(stream):
        time = float(frame.time) if frame.time is not None else index / rate
        yield index, time, frame.to_ndarray(format="rgb24")
        index += 1
    except av.error.FFmpegError as e:
      raise BadInput(f"video cannot be decoded at frame {index} ({type(e).__name__})") from None


def video_rate(path: str) -> float:
  """Frames per second of a readable video (25 when the file does not say)."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path) as container:
    stream = container.streams.video[0]
    return float(stream.average_rate or stream.guessed_rate or 25)


def write_video(path: str, frames: list[np.ndarray], rate: float, *,
                codec: str = "libx264", pixel_format: str = "yuv420p") -> None:
  """uint8 RGB frames `[H, W, 3]` -> a video file (odd sizes padded by one black pixel)."""
  import av  # pylint: disable=g-import-not-at-top
  height, width = frames[0].shape[:2]
  even = pixel_format == "yuv420p"
  out_h, out_w = (height + height % 2, width + width % 2) if even else (height, width)
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=round(rate) or 25)
    stream.width, stream.height, stream.pix_fmt = out_w, out_h, pixel_format
    for pixels in frames:
      if (out_h, out_w) != pixels.shape[:2]:
        pixels = np.pad(pixels, ((0, out_h - height), (0, out_w - width), (0, 0)))
      for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
