"""What the supervisor counts against a phase's disk limit, and how it is called."""

import os
import subprocess
import sys

from evo.supervise import Limits, written


def test_written_counts_blocks_held_not_sizes_claimed_nor_files_elsewhere(tmp_path):
    folder, elsewhere = tmp_path / "scratch", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    (folder / "sub").mkdir()
    (folder / "sub" / "real.bin").write_bytes(os.urandom(3 * 2**20))
    with open(folder / "sparse.bin", "wb") as f:       # claims 1 GiB, holds nothing
        f.truncate(2**30)
    (elsewhere / "big.bin").write_bytes(os.urandom(5 * 2**20))
    (folder / "link").symlink_to(elsewhere / "big.bin")  # a link is not followed
    mb, files = written((str(folder),), [], 0)
    assert 3 <= mb < 3.5 and files == 4


def test_written_stops_counting_past_the_file_cap(tmp_path):
    for n in range(50):
        (tmp_path / str(n)).touch()
    assert written((str(tmp_path),), [], 10)[1] == 11
    assert written((str(tmp_path),), [], 0)[1] == 50


def test_limits_travel_as_one_argument_and_a_bad_call_gets_the_usage_line():
    limits = Limits(memory_mb=100, processes=8, disk_mb=64, files=10, watch=("/a", "/b"))
    assert Limits.parse(limits.text()) == limits
    bad = subprocess.run([sys.executable, "-m", "evo.supervise", "marker", "100", "--", "true"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: python -m evo.supervise MARKER LIMITS_JSON")
