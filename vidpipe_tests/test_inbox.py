import os
import time

import pytest

from vidpipe.inbox import InboxCursor, name_ref, readable_name, resolve_upload, scan_inbox
from vidpipe.media.errors import UploadError
from vidpipe.media.files import sha256_file

LATER = 10**15  # a "now" far enough ahead that every file has settled


def drop(inbox, name, data=b"video bytes"):
    path = inbox / name
    path.write_bytes(data)
    return path


def test_a_finished_upload_is_found_once(tmp_path):
    path = drop(tmp_path, "clip.mp4")
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2, now_ns=time.time_ns() + LATER)
    assert [(u.name, u.sha256, u.size) for u in scan.uploads] == [(path.name, sha256_file(path), path.stat().st_size)]
    again = scan_inbox(
        tmp_path, InboxCursor.from_json(scan.cursor.to_json()), settle_seconds=2, now_ns=time.time_ns() + LATER
    )
    assert again.uploads == []


def test_a_file_still_being_written_waits_until_it_settles(tmp_path):
    path = drop(tmp_path, "growing.mp4", b"partial")
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2)
    assert scan.uploads == [] and scan.waiting == ["growing.mp4"]
    with open(path, "ab") as handle:
        handle.write(b" and the rest")
    settled = scan_inbox(tmp_path, scan.cursor, settle_seconds=2, now_ns=time.time_ns() + LATER)
    assert [u.sha256 for u in settled.uploads] == [sha256_file(path)]


def test_a_scan_says_when_the_uploads_waiting_to_settle_will_have_settled(tmp_path):
    first = drop(tmp_path, "first.mp4")
    last = drop(tmp_path, "last.mp4")
    while last.stat().st_ctime_ns == first.stat().st_ctime_ns:  # ctime comes from a coarse clock
        last.write_bytes(b"video bytes")
    now = last.stat().st_ctime_ns + 500_000_000
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2, now_ns=now)
    assert sorted(scan.waiting) == ["first.mp4", "last.mp4"]
    assert abs(scan.settled_in_seconds - 1.5) < 1e-6
    assert first.stat().st_ctime_ns < last.stat().st_ctime_ns
    done = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2, now_ns=now + LATER)
    assert done.settled_in_seconds is None and done.waiting == []


def test_a_scan_over_its_hashing_budget_does_not_claim_the_rest_will_settle(tmp_path):
    for i in range(3):
        drop(tmp_path, f"clip-{i}.mp4", bytes([i]) * 1000)
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=0, hash_budget_seconds=0, now_ns=time.time_ns() + LATER)
    assert len(scan.waiting) == 2 and scan.settled_in_seconds is None


def test_files_arriving_while_an_upload_is_in_flight_are_all_found(tmp_path):
    slow = drop(tmp_path, "slow.mp4", b"first part")
    first = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2)
    assert first.waiting == ["slow.mp4"]
    with open(slow, "ab") as handle:
        handle.write(b" second part")
    drop(tmp_path, "quick.mp4", b"quick")
    second = scan_inbox(tmp_path, first.cursor, settle_seconds=2, now_ns=time.time_ns() + LATER)
    assert sorted(u.name for u in second.uploads) == ["quick.mp4", "slow.mp4"]
    assert second.waiting == []


def test_hidden_temporary_and_non_file_entries_are_ignored(tmp_path):
    for name in [".hidden.mp4", "~lock.mp4", "clip.mp4.part", "clip.mp4.crdownload", "clip.tmp"]:
        drop(tmp_path, name)
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "link.mp4").symlink_to(drop(tmp_path, ".target"))
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert scan.uploads == [] and scan.waiting == []


def test_a_changed_file_is_looked_at_again(tmp_path):
    path = drop(tmp_path, "clip.mp4", b"one")
    first = scan_inbox(tmp_path, InboxCursor(), settle_seconds=0, now_ns=time.time_ns() + LATER)
    seen = path.stat().st_ctime_ns
    while path.stat().st_ctime_ns == seen:  # the kernel stamps ctime with a coarse clock (a few ms)
        path.write_bytes(b"two")
    second = scan_inbox(tmp_path, first.cursor, settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert [u.sha256 for u in second.uploads] == [sha256_file(path)]


def test_cursor_size_does_not_grow_with_the_number_of_files_seen(tmp_path):
    sizes = []
    cursor = InboxCursor()
    for batch in range(3):
        for i in range(100):
            drop(tmp_path, f"clip-{batch}-{i}.mp4", f"{batch}-{i}".encode())
        scan = scan_inbox(tmp_path, cursor, settle_seconds=0, now_ns=time.time_ns() + LATER)
        assert len(scan.uploads) == 100
        cursor = InboxCursor.from_json(scan.cursor.to_json())
        sizes.append(len(scan.cursor.to_json()))
    assert max(sizes) < 200, sizes


def test_hashing_stops_at_its_budget_and_the_rest_waits(tmp_path):
    for i in range(5):
        drop(tmp_path, f"clip-{i}.mp4", bytes([i]) * 1000)
    first = scan_inbox(tmp_path, InboxCursor(), settle_seconds=0, hash_budget_seconds=0, now_ns=time.time_ns() + LATER)
    assert len(first.uploads) == 1 and len(first.waiting) == 4
    rest = scan_inbox(tmp_path, first.cursor, settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert sorted(u.name for u in first.uploads + rest.uploads) == [f"clip-{i}.mp4" for i in range(5)]


def test_an_empty_file_is_not_an_upload_until_it_has_stayed_empty_much_longer(tmp_path):
    """Uploaders often create the file, then write it: an empty file is not refused after the usual 2 s."""
    empty = drop(tmp_path, "coming soon.mp4", b"")
    seconds = 10**9
    early = scan_inbox(
        tmp_path,
        InboxCursor(),
        settle_seconds=2,
        empty_settle_seconds=60,
        now_ns=empty.stat().st_ctime_ns + 30 * seconds,
    )
    assert early.uploads == [] and early.waiting == ["coming soon.mp4"] and early.settled_in_seconds is None
    late = scan_inbox(
        tmp_path,
        early.cursor,
        settle_seconds=2,
        empty_settle_seconds=60,
        now_ns=empty.stat().st_ctime_ns + 61 * seconds,
    )
    assert [u.size for u in late.uploads] == [0]


def test_an_empty_file_that_is_written_later_is_taken_once_it_settles(tmp_path):
    path = drop(tmp_path, "coming soon.mp4", b"")
    first = scan_inbox(
        tmp_path, InboxCursor(), settle_seconds=2, empty_settle_seconds=60, now_ns=time.time_ns() + 5 * 10**9
    )
    path.write_bytes(b"the video")
    later = scan_inbox(
        tmp_path, first.cursor, settle_seconds=2, empty_settle_seconds=60, now_ns=time.time_ns() + 5 * 10**9
    )
    assert [u.sha256 for u in later.uploads] == [sha256_file(path)]


def test_a_run_takes_only_regular_files_directly_inside_the_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "secret.key"
    secret.write_text("root only")
    (inbox / "link.mp4").symlink_to(secret)
    (inbox / "folder.mp4").mkdir()
    good = drop(inbox, "good clip.mp4")
    assert resolve_upload(inbox, name_ref(good.name)) == good
    refusals = {
        str(secret): f"'{secret}' is not the name of a file in the upload inbox",
        "../secret.key": "'../secret.key' is not the name of a file in the upload inbox",
        "%2E%2E%2Fsecret.key": "'../secret.key' is not the name of a file in the upload inbox",
        "..": "'..' is not the name of a file in the upload inbox",
        "link.mp4": "'link.mp4' in the upload inbox is not a regular file",
        "folder.mp4": "'folder.mp4' in the upload inbox is not a regular file",
        "gone.mp4": "the upload 'gone.mp4' is no longer in the inbox",
    }
    for ref, message in refusals.items():
        with pytest.raises(UploadError) as err:
            resolve_upload(inbox, ref)
        assert err.value.message == message


def test_any_name_survives_the_trip_through_a_run_tag(tmp_path):
    for raw in [b"plain.mp4", b"My Holiday (1).mp4", b"caf\xc3\xa9.mov", b"not utf-8 \xff.mp4", b"new\nline%20.mp4"]:
        name = os.fsdecode(raw)
        ref = name_ref(name)
        assert ref.isascii() and ref.isprintable()
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb"):
            pass
        assert os.fsencode(resolve_upload(tmp_path, ref).name) == raw
    assert name_ref("My Holiday (1).mp4") == "My Holiday (1).mp4"
    assert readable_name(os.fsdecode(b"bad \xff\nname.mp4")) == "bad \\xff\\nname.mp4"
    assert readable_name("x" * 300).endswith("…") and len(readable_name("x" * 300)) == 200


def test_a_scan_waits_for_an_upload_about_to_settle_and_takes_it(tmp_path):
    path = drop(tmp_path, "almost.mp4")
    seen = path.stat().st_ctime_ns + 2 * 10**8
    # Seen 0.2 s after its last change with a 1 s settle time: it settles 0.8 s later, within the wait.
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=1, wait_for_settling_seconds=5, now_ns=seen)
    assert [u.name for u in scan.uploads] == [path.name] and scan.waiting == []
    # Without the wait, the same look finds it still settling.
    alone = scan_inbox(tmp_path, InboxCursor(), settle_seconds=1, now_ns=seen)
    assert alone.uploads == [] and alone.waiting == ["almost.mp4"]


def test_settling_is_judged_by_ctime_so_a_copy_that_keeps_an_old_mtime_still_waits(tmp_path):
    """``cp -p`` and ``rsync -t`` set a finished-looking mtime on a file they are still writing;
    any change to the inode (contents, rename, chmod) moves its ctime, which is what counts."""
    path = drop(tmp_path, "kept-times.mp4")
    os.utime(path, (1_000_000_000, 1_000_000_000))  # mtime in 2001; the ctime is now
    changed = path.stat().st_ctime_ns
    assert path.stat().st_mtime_ns < changed
    scan = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2, now_ns=changed + 10**9)
    assert scan.uploads == [] and scan.waiting == ["kept-times.mp4"]
    taken = scan_inbox(tmp_path, InboxCursor(), settle_seconds=2, now_ns=changed + 2 * 10**9)
    assert [u.name for u in taken.uploads] == [path.name]
