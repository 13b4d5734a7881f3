"""What the supervisor counts against a phase's disk limit, and how it is called."""

import os
import subprocess
import sys

import pytest

from evo.sandbox.supervise import MAX_DEPTH, Limits, Uncountable, written


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


def _nest(root, levels: int, name: str) -> int:
    """Makes `levels` folders one inside the other under root, by descriptors (the full path may be longer than
    PATH_MAX); returns a descriptor of the deepest."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    return fd


def test_written_counts_files_below_the_path_length_limit(tmp_path):
    fd = _nest(tmp_path, 40, "d" * 200)   # 40 x 201 bytes: a path of over 8,000 bytes, past PATH_MAX (4,096)
    try:
        out = os.open("deep.bin", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(out, os.urandom(2**20))
        os.close(out)
    finally:
        os.close(fd)
    mb, files = written((str(tmp_path),), [], 0)
    assert mb >= 1 and files == 41


def test_written_refuses_to_count_folders_nested_past_its_depth(tmp_path):
    os.close(_nest(tmp_path, MAX_DEPTH + 1, "d"))
    with pytest.raises(Uncountable, match="nested deeper"):
        written((str(tmp_path),), [], 0)


def test_limits_travel_as_one_argument_and_a_bad_call_gets_the_usage_line():
    limits = Limits(memory_mb=100, processes=8, disk_mb=64, files=10, watch=("/a", "/b"))
    assert Limits.parse(limits.text()) == limits
    bad = subprocess.run([sys.executable, "-m", "evo.sandbox.supervise", "marker", "100", "--", "true"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: python -m evo.sandbox.supervise MARKER LIMITS_JSON")
