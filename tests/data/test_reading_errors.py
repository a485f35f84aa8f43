"""Reading prepared data: damaged files, wrong configs and loader-process failures.

Each failure is one line (a UserError) naming the file or record and saying how
to rebuild; Grain loader processes die with their parent.
"""

import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from absl import flags
import numpy as np
from PIL import Image
import pytest

from configs import default
from ferjax import errors
from ferjax.data import pipeline

NAME = "synthetic_fer/images_small"
REPO = pathlib.Path(__file__).resolve().parents[2]


def _dataset_config(data_dir, **fields):
  config = default.get_config().dataset
  config.update({"name": NAME, "data_dir": str(data_dir), "kind": "image", **fields})
  return config


@pytest.fixture
def damaged_copy(tfds_data_dir, tmp_path):
  """A private copy of the tiny synthetic dataset (its version folder) to damage."""
  shutil.copytree(pathlib.Path(tfds_data_dir, NAME), tmp_path / NAME)
  return tmp_path, tmp_path / NAME / "1.0.0"


def _truncate(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _random_bytes(path):
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


@pytest.mark.parametrize("damage, file_name", [
    (_truncate, "synthetic_fer-test.array_record-00000-of-00001"),
    (_random_bytes, "synthetic_fer-test.array_record-00000-of-00001"),
    (pathlib.Path.unlink, "synthetic_fer-test.array_record-00000-of-00001"),
    (lambda path: path.write_text("{not json"), "dataset_info.json"),
])
def test_damaged_dataset_is_one_line_naming_the_file(damaged_copy, damage, file_name):
  data_dir, folder = damaged_copy
  damage(folder / file_name)
  with pytest.raises(errors.UserError) as error:
    pipeline.open_split(_dataset_config(data_dir), "test", train=False)
  message = str(error.value)
  assert "\n" not in message and str(folder / file_name) in message, message
  assert message.endswith(f"delete {folder}; the next run regenerates it")


def test_real_dataset_hint_is_the_prepare_command():
  assert pipeline.rebuild_hint("dfew/lstpnet", "/d") == (
      "delete /d/dfew/lstpnet/1.0.0 and prepare it again with `python -m ferjax.data.prepare "
      "dfew --config=lstpnet --manual_dir=DIR --data_dir=/d`")


@pytest.mark.parametrize("fields, expected", [
    ({"name": f"{NAME}:9.9.9"}, f"'{NAME}:9.9.9': synthetic_fer has no version 9.9.9; "
                                 "versions: 1.0.0"),
    ({"name": "synthetic_fer/huge"}, "synthetic_fer has no config 'huge'; configs: images, "),
    ({"name": "celeba"}, "'celeba' is not a known dataset: no dataset 'celeba'"),
    ({"label_key": "mood"}, f"config.dataset.label_key='mood': {NAME} has no such feature; "
                            "it has clean_label, id, identity, image, intensity, label, "),
    ({"kind": "clip"}, "config.dataset.kind='clip' reads the 'frames' feature, which "
                       f"{NAME} does not have (it has clean_label, "),
])
def test_config_mismatches_list_what_exists(tfds_data_dir, fields, expected):
  with pytest.raises(errors.UserError) as error:
    pipeline.open_split(_dataset_config(tfds_data_dir, **fields), "test", train=False)
  assert expected in str(error.value) and "\n" not in str(error.value)


class _Source:
  """Ten 8x8 PNG records; record 3 holds bytes that are not an image, record 4 fails."""

  def __init__(self):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    self.png = buffer.getvalue()

  def __len__(self):
    return 10

  def __getitem__(self, i):
    if i == 4:
      raise RuntimeError("Corrupted Riegeli/records file")
    return {"image": b"garbage" if i == 3 else self.png, "label": 0, "id": f"x{i}".encode()}


def _loader(positions):
  config = default.get_config()
  config.dataset.kind = "image"
  config.dataset.metadata = ()
  config.input.update(image_size=8, resize_size=8, train_crop="none", hflip=False)
  split = pipeline.SplitSource(_Source(), np.asarray(positions), ("a",) * 7, 10,
                               where="fake:test", rebuild="rebuild it")
  return pipeline.BatchLoader(split, config, train=False, global_batch_size=2,
                              drop_remainder=False)


def test_unreadable_record_is_named():
  with pytest.raises(pipeline.DamagedData, match=r"^record 4 of fake:test cannot be read "
                     r"\(RuntimeError: Corrupted Riegeli/records file\); rebuild it$"):
    _loader([4, 5])(0)


def test_a_record_that_fails_in_a_loader_process_is_one_line():
  if not flags.FLAGS.is_parsed():  # Grain reads its flags in the loader processes
    flags.FLAGS.mark_as_parsed()
  loader = _loader([0, 1, 2, 3, 5])
  dataset = pipeline.make_dataset(loader, loader.steps_per_epoch, worker_count=1, prefetch=1)
  with pytest.raises(pipeline.DamagedData) as error:
    list(dataset)
  assert str(error.value) == ("record 3 of fake:test: cannot decode image of example 'x3': "
                              "not an image format PIL knows; rebuild it")


_PARENT = """
import time
import numpy as np
from absl import flags
flags.FLAGS.mark_as_parsed()
from ferjax.data import pipeline
def load(batch_number):
  time.sleep(0.01)
  return np.zeros(4)
batches = iter(pipeline.make_dataset(load, 10**6, worker_count=2, prefetch=2))
next(batches)
print("ready", flush=True)
while True:
  next(batches)
"""


def _children(pid: int) -> list[int]:
  """Live (not zombie) processes whose parent is `pid`, from /proc."""
  found = []
  for entry in os.listdir("/proc"):
    try:
      stat = pathlib.Path("/proc", entry, "stat").read_text()
    except (OSError, ValueError):
      continue
    state, parent = stat.rsplit(")", 1)[1].split()[:2]
    if entry.isdigit() and int(parent) == pid and state != "Z":
      found.append(int(entry))
  return found


def _alive(pid: int) -> bool:
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_loader_processes_exit_when_the_parent_is_killed():
  parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
  try:
    assert parent.stdout.readline().strip() == "ready"
    children = _children(parent.pid)
    assert len(children) >= 2  # two loader processes (and the resource tracker)
  finally:
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
  deadline = time.monotonic() + 5
  while any(map(_alive, children)) and time.monotonic() < deadline:
    time.sleep(0.1)
  left = [pid for pid in children if _alive(pid)]
  for pid in left:  # do not leave them to the next test
    os.kill(pid, signal.SIGKILL)
  assert not left, f"processes {left} outlived their killed parent by 5 s"
