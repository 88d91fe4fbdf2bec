import re

import pytest

from vidpipe.media.keys import content_hash_of, is_partition_key, partition_key, slugify

SHA = "ab" * 32


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Holiday Clip (1).MOV", "holiday-clip-1-abababababab"),
        ("../../etc/passwd", "passwd-abababababab"),
        ("x|y,z[1] .mp4", "x-y-z-1-abababababab"),
        ("Été à Paris.mp4", "ete-a-paris-abababababab"),
        ("名前.mov", "abababababab"),
        ("-rf --help.mp4", "rf-help-abababababab"),
    ],
)
def test_partition_keys_are_readable_and_safe(name, expected):
    key = partition_key(name, SHA)
    assert key == expected
    assert re.fullmatch(r"[a-z0-9._-]+", key)
    assert is_partition_key(key)
    assert content_hash_of(key) == SHA[:12]


def test_partition_keys_are_bounded_in_length():
    key = partition_key("a very long name " * 30 + ".mp4", SHA)
    assert len(key) <= 61 and is_partition_key(key)
    assert slugify("x" * 500) == "x" * 48


def test_keys_that_could_escape_a_folder_are_not_partition_keys():
    for bad in ["../abababababab", "a/b-abababababab", "", "UPPER-abababababab", "x-nothex"]:
        assert not is_partition_key(bad)
