"""A local GCS emulator (gcp-storage-emulator) for the gs:// tests, and the settings
that point each storage library of a run at it.

gcp-storage-emulator answers a media download without the `x-goog-generation`
header that GCS sends; TensorStore's OCDBT store (Orbax's checkpoint arrays)
keeps that generation to re-read its manifest, and fails with "Malformed
StorageGeneration" on the second write of a checkpoint without it. Run as a
script, this module serves the emulator with the header added.
"""

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


def environment(url: str) -> dict[str, str]:
  """The environment variables that send a run's storage traffic to the emulator at `url`.

  gcsfs (etils.epath with EPATH_USE_TF=false: workdir files, TFDS metadata;
  without its zonal/hierarchical bucket probe, a gRPC API the emulator lacks),
  TensorStore (Orbax's arrays) and google-cloud-cpp (ArrayRecord reads).
  """
  return {"STORAGE_EMULATOR_HOST": url, "EPATH_USE_TF": "false",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "CLOUD_STORAGE_EMULATOR_ENDPOINT": url}


@contextlib.contextmanager
def serve(bucket: str) -> Iterator[str]:
  """Runs the emulator on a free port of 127.0.0.1 with an empty `bucket`; yields its URL."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, __file__, "start", "--host=127.0.0.1",
                             f"--port={port}", "--in-memory", "-q",
                             f"--default-bucket={bucket}"], stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        assert time.time() < deadline and server.poll() is None, "emulator did not start"
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
  finally:
    server.terminate()
    server.wait(timeout=30)


def _main() -> None:
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # pylint: disable=broad-except  # Not found: answered by `download`.
      return
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]

  # Replaced before the server module, which binds the handlers, is imported.
  objects.download = download_with_generation
  from gcp_storage_emulator import __main__ as emulator  # pylint: disable=g-import-not-at-top
  emulator.main(sys.argv[1:])


if __name__ == "__main__":
  _main()
