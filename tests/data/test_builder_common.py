"""Builder machinery shared by all datasets: annotation readers, decoding, empty splits."""

import csv
import struct

import pytest

from ferjax.data.builders import common, folds
from ferjax.data.builders.bu3dfe import Bu3dfe

from . import mock_data

HEADER = "path,subject,expression,intensity,yaw,pitch"


def test_annotation_files_that_are_not_utf8_text_name_file_and_line(tmp_path):
  path = tmp_path / "list.txt"
  path.write_bytes(b"\xef\xbb\xbfa 1\r\nb 2\rc 3\n\nd \xe9t\xe9 4\n")   # BOM, CRLF, CR, Latin-1
  with pytest.raises(common.AnnotationError, match=r"list.txt:5: not UTF-8 text"):
    common.read_lines(path)
  path.write_bytes("a 1\nb 2\n".encode("utf-16-le"))   # no BOM: ASCII with NULs between
  with pytest.raises(common.AnnotationError, match=r"list.txt:1: NUL byte"):
    common.read_lines(path)
  path.write_bytes(b"\xef\xbb\xbfa 1\r\nb 2\rc 3\n\nd \xc3\xa9 4\n")
  assert common.read_lines(path) == [(1, "a 1"), (2, "b 2"), (3, "c 3"), (5, "d \xe9 4")]


def test_csv_errors_name_file_and_line(tmp_path):
  path = mock_data.write_text(tmp_path / "index.csv", ["a,b", "c," + "x" * 100])
  limit = csv.field_size_limit(50)
  try:
    with pytest.raises(common.AnnotationError, match=r"index.csv:2: field larger than"):
      with common.open_text(path) as lines:
        list(csv.reader(lines))
  finally:
    csv.field_size_limit(limit)


def test_builders_read_annotation_files_through_the_checks(tmp_path):
  mock_data.write_text(tmp_path / "manual/index.csv", [HEADER, "r/a.png,M0001,HA,1,0,0"])
  (tmp_path / "manual/index.csv").write_bytes(
      (tmp_path / "manual/index.csv").read_bytes().replace(b"M0001", b"M\xd60001"))
  with pytest.raises(common.AnnotationError, match=r"index.csv:2: not UTF-8"):
    mock_data.build(Bu3dfe, tmp_path, tmp_path / "manual")


def test_any_decoder_failure_is_a_skipped_item(monkeypatch):
  def open_corrupt(unused_file):
    raise struct.error("unpack requires a buffer of 4 bytes")

  monkeypatch.setattr(common.PIL.Image, "open", open_corrupt)
  with pytest.raises(common.SkipItem, match="undecodable image x.png: error: unpack"):
    common.decode(b"\x89PNG", "x.png")


def test_empty_and_unknown_image_files_are_named(tmp_path):
  empty = tmp_path / "empty.jpg"
  empty.write_bytes(b"")
  with pytest.raises(common.SkipItem) as skip:
    common.read_image(empty)
  assert str(skip.value) == f"empty image file {empty} (0 bytes)"
  (tmp_path / "text.png").write_bytes(b"hello")
  with pytest.raises(common.SkipItem) as skip:
    common.read_image(tmp_path / "text.png")
  assert str(skip.value) == (f"undecodable image {tmp_path / 'text.png'}: not an image "
                             "format PIL knows")
  assert "BytesIO" not in str(skip.value)


def test_annotation_file_that_is_a_folder(tmp_path):
  with pytest.raises(common.AnnotationError, match=f"{tmp_path} is a folder, not an"):
    common.read_lines(tmp_path)


def test_unexpected_loader_errors_name_the_item(tmp_path):
  def load():
    raise KeyError("label")

  builder = Bu3dfe(data_dir=str(tmp_path))
  with pytest.raises(KeyError) as raised:
    list(builder._write_shard(folds.SPLIT, [common.Entry("F0001_HA01", load)]))
  assert raised.value.__notes__ == [f"while loading item F0001_HA01 of split {folds.SPLIT}"]


def test_a_split_whose_items_are_all_skipped_fails_the_build(tmp_path):
  rows = [f"render/{name}.png,M0001,HA,1,0,0" for name in ("a", "b")]
  mock_data.write_text(tmp_path / "manual/index.csv", [HEADER] + rows)
  with pytest.raises(common.LayoutError, match=(
      rf"no item of split {folds.SPLIT} could be loaded, the first \(render/a\) for: "
      r"missing file .*render/a.png")):
    mock_data.build(Bu3dfe, tmp_path, tmp_path / "manual")
  assert not Bu3dfe(data_dir=str(tmp_path / "data")).is_prepared()
