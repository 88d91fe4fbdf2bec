"""Files that appear whole or not at all (``vidpipe.media.files``)."""

import errno
import subprocess
import sys
import threading

from vidpipe.media.files import write_atomically

WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import resource
import sys
from pathlib import Path
from vidpipe.media.files import write_atomically
final, size, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# Past ``limit`` bytes a write fails with EFBIG, as one fails when the disk fills (Python ignores SIGXFSZ).
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    write_atomically(final, b"new." * (size // 4))
except OSError as err:
    print(err.errno)
"""


def test_a_write_that_fails_halfway_leaves_the_previous_version_whole_and_no_partial_file(tmp_path):
    final = tmp_path / "manifest.json"
    final.write_bytes(b"previous version\n")
    writer = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_A_FILE_SIZE_LIMIT, str(final), str(4 << 20), str(1 << 20)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert writer.stdout.strip() == str(errno.EFBIG), writer  # the write failed after its first MiB
    assert final.read_bytes() == b"previous version\n"
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]


def test_a_reader_finds_each_version_whole_or_none_at_all_while_it_is_written(tmp_path):
    final = tmp_path / "thumbnails" / "thumb_1280.jpg"
    versions = [bytes([letter]) * (8 << 20) for letter in b"ABCDEF"]
    failures: list[BaseException] = []

    def write_every_version():
        try:
            for version in versions:
                write_atomically(final, version)
        except BaseException as err:
            failures.append(err)

    writer = threading.Thread(target=write_every_version)
    seen = set()
    writer.start()
    try:
        while writer.is_alive():
            try:
                data = final.read_bytes()
            except FileNotFoundError:
                seen.add("absent")
                continue
            seen.add(f"version {versions.index(data)}" if data in versions else f"{len(data)} bytes of {data[:1]!r}")
    finally:
        writer.join()
    assert not failures
    assert seen <= {"absent", *(f"version {n}" for n in range(len(versions)))}, seen
    assert final.read_bytes() == versions[-1]
    assert [path.name for path in final.parent.iterdir()] == ["thumb_1280.jpg"]
