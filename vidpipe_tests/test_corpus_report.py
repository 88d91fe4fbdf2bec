"""Every file of the odd-file corpus through ``vidpipe process``, as issue 9's "done when" asks.

Each is processed, or refused with a reason in plain words (no memory address, no raw ffmpeg
line), leaving nothing visible beside the refusal but the original and ``rejection.json``
(``source.json`` and ``encode.json`` are private records). ``pytest -s`` prints the report.
"""

import inspect
import re

from vidpipe.cli import UserFacingError, process_file
from vidpipe_tests import corpus

UPLOADS = {
    name: make
    for name, make in vars(corpus).items()
    if inspect.isfunction(make) and make.__module__ == corpus.__name__ and not name.startswith("_")
}
del UPLOADS["secret_file"]  # what the playlists point at, not an upload
REFUSED = {
    "hls_playlist", "concat_list", "y4m_bomb", "truncated_mp4", "mp4_without_moov", "flipped_bytes", "zero_bytes",
    "text_as_mov", "png_as_mp4", "subtitles_only", "truncated_mkv", "truncated_audiobook", "vvc_mp4",
}  # fmt: skip
NOT_PLAIN = re.compile(r"0x[0-9a-f]{4,}|ffmpeg failed|\[[\w,]+ @ |Traceback|Stack Trace|errno", re.IGNORECASE)
RECORDS = {"source.json", "rejection.json", "encode.json"}


def test_every_odd_file_is_processed_or_refused_in_plain_words_leaving_only_the_original(tmp_path):
    report, outcomes = [], {}
    for name, make in sorted(UPLOADS.items()):
        folder = tmp_path / name
        folder.mkdir()
        made = make(folder)
        upload = made[-1] if isinstance(made, tuple) else made
        out = tmp_path / "out" / name
        try:
            manifest = process_file(upload, out)
        except UserFacingError as err:
            reason = str(err).removeprefix(f"{upload.name}: ")
            [video_dir] = list(out.iterdir()) if out.exists() else [None]
            left = sorted(p.name for p in video_dir.iterdir()) if video_dir else []
            originals = [n for n in left if n.startswith("source.") and n != "source.json"]
            assert not NOT_PLAIN.search(reason), (name, reason)
            assert set(left) - RECORDS == set(originals) and len(originals) <= 1, (name, left)
            outcomes[name] = "refused"
            report.append(f"{name:<38} refused    {reason}")
        else:
            outcomes[name] = "processed"
            report.append(f"{name:<38} processed  {len(manifest['renditions'])} renditions")
    print("\n".join(["", *report]))
    assert {name for name, outcome in outcomes.items() if outcome == "refused"} == REFUSED
