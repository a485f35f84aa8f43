"""`python -m ferjax.data.prepare`: summary, reuse, and one-line user errors."""

from ferjax.data import prepare

from . import mock_data
from .test_builder_dfew import write_dfew
from .test_builder_rafdb import write_rafdb


def run(capsys, *args):
  code = prepare.main(["prepare", *args])
  out, err = capsys.readouterr()
  return code, out, err


def test_builds_and_summarises(tmp_path, capsys):
  manual = write_rafdb(tmp_path / "manual")
  args = ["rafdb", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'data'}"]
  code, out, err = run(capsys, *args)
  assert code == 0, err
  lines = out.splitlines()
  start = [i for i, l in enumerate(lines) if l.startswith("rafdb/1.0.0 prepared in ")]
  assert len(start) == 1
  lines = lines[start[0]:]  # after TFDS's own "Downloading and preparing" lines
  assert "train: 5 examples" in lines
  assert ("  neutral 1, happy 1, sad 2, surprise 1, fear 0, disgust 0, anger 0" in lines)
  assert "test: 4 examples" in lines
  assert "skipped: 4 item(s)" in lines
  assert any(l.startswith("  test test_0005: undecodable image") for l in lines)
  assert lines[-1].startswith("throughput: 9 images in ") and lines[-1].endswith("images/s")
  assert " images" in err  # the progress bar
  # A second call reuses the dataset and prints the stored build report.
  code, again, _ = run(capsys, *args)
  assert code == 0 and again.splitlines()[-len(lines) + 1:] == lines[1:]


def test_wrong_layout_is_one_line(tmp_path, capsys):
  manual = tmp_path / "manual"
  mock_data.write_image(manual / "aligned/train_00001_aligned.jpg")
  code, out, err = run(capsys, "rafdb", f"--manual_dir={manual}",
                       f"--data_dir={tmp_path / 'data'}")
  assert code == 2
  assert err.count("\n") == 1 and "Traceback" not in err
  assert err.startswith("ferjax-prepare: error: expected ")
  assert str(manual / "basic/EmoLabel/list_patition_label.txt") in err


def test_user_errors(tmp_path, capsys):
  data = f"--data_dir={tmp_path / 'data'}"
  code, _, err = run(capsys, "celeba", f"--manual_dir={tmp_path}", data)
  assert code == 2 and "unknown dataset 'celeba'" in err and "rafdb" in err
  code, _, err = run(capsys, "rafdb", data)
  assert code == 2 and "--manual_dir" in err
  code, _, err = run(capsys, "rafdb", f"--manual_dir={tmp_path / 'nowhere'}", data)
  assert code == 2 and "nowhere is not a folder" in err
  code, _, err = run(capsys, "rafdb", f"--manual_dir={tmp_path}", "--cropped_dir=x", data)
  assert code == 2 and "--cropped_dir is not used by rafdb" in err
  code, _, err = run(capsys, "ferplus", f"--manual_dir={tmp_path}", "--config=vote", data)
  assert code == 2 and "label_csv_majority" in err
  code, _, err = run(capsys, "rafdb", "--bogus=1")
  assert code == 2 and "bogus" in err


def test_builder_flags_are_forwarded(tmp_path, capsys):
  manual = write_dfew(tmp_path / "manual")
  mock_data.write_text(tmp_path / "DFEW_set_2_test.txt", ["/x/clip_224x224/00002 1 6"])
  code, out, err = run(capsys, "dfew", "--config=former_dfer", f"--manual_dir={manual}",
                       f"--data_dir={tmp_path / 'data'}",
                       f"--list_file={tmp_path / 'DFEW_set_2_test.txt'}")
  assert code == 0, err
  assert "all_folds: 1 examples" in out.splitlines()
  assert "  neutral 0, happy 0, sad 0, surprise 0, fear 1, disgust 0, anger 0" in out


def test_failed_build_removes_only_its_folders(tmp_path, capsys):
  manual = write_dfew(tmp_path / "manual")
  data = tmp_path / "data"
  (data / "keep").mkdir(parents=True)
  empty = mock_data.write_text(tmp_path / "DFEW_set_1_test.txt", [])
  code, _, err = run(capsys, "dfew", "--config=lstpnet", f"--manual_dir={manual}",
                     f"--data_dir={data}", f"--list_file={empty}")
  assert code == 2 and err.count("\n") == 1, err
  assert f"list file {empty} is empty" in err
  assert sorted(p.name for p in data.iterdir()) == ["keep"]  # no empty dfew/lstpnet/


def test_list_file_that_lists_nothing_usable(tmp_path, capsys):
  manual = write_dfew(tmp_path / "manual")
  broken = mock_data.write_text(tmp_path / "DFEW_set_1_test.txt", ["not a clip line"])
  code, _, err = run(capsys, "dfew", "--config=lstpnet", f"--manual_dir={manual}",
                     f"--data_dir={tmp_path / 'data'}", f"--list_file={broken}")
  assert code == 2 and err.count("\n") == 1, err
  assert "list no usable item; the first skipped item, DFEW_set_1_test.txt:1: malformed" in err
  assert not (tmp_path / "data").exists()


def test_bad_data_dir_and_list_file_are_one_line(tmp_path, capsys, monkeypatch):
  manual = write_dfew(tmp_path / "manual")
  (tmp_path / "DFEW_set_1_test.txt").mkdir()
  args = ["dfew", "--config=lstpnet", f"--manual_dir={manual}"]
  code, _, err = run(capsys, *args, f"--data_dir={tmp_path / 'data'}",
                     f"--list_file={tmp_path / 'DFEW_set_1_test.txt'}")
  assert code == 2 and err.count("\n") == 1, err
  assert f"list file {tmp_path / 'DFEW_set_1_test.txt'} is not a file" in err
  regular = mock_data.write_text(tmp_path / "file", ["x"])
  code, _, err = run(capsys, *args, f"--data_dir={regular / 'sub'}")
  assert code == 2 and err.count("\n") == 1, err
  assert f"--data_dir {regular / 'sub'}: {regular} is not a folder" in err
  # Read-only folders: permission bits do not bind root (tests may run as root).
  monkeypatch.setattr(prepare.os, "access", lambda path, mode: False)
  code, _, err = run(capsys, *args, f"--data_dir={tmp_path / 'ro'}")
  assert code == 2 and f"--data_dir {tmp_path / 'ro'}: {tmp_path} is not writable" in err
