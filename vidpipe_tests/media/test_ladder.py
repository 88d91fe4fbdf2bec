from dataclasses import replace
from fractions import Fraction

from vidpipe.media.ladder import DEFAULT_LADDER, plan_ladder
from vidpipe_tests.clips import video_info


def sizes(plan):
    return {p.rung.name: (p.width, p.height) for p in plan.renditions}


def test_landscape_1080p_gets_the_full_ladder():
    plan = plan_ladder(video_info(1920, 1080))
    assert sizes(plan) == {
        "h264_1080p": (1920, 1080),
        "h264_720p": (1280, 720),
        "h264_480p": (854, 480),
        "h264_360p": (640, 360),
        "h264_240p": (426, 240),
        "vp9_720p": (1280, 720),
        "vp9_360p": (640, 360),
    }
    assert set(plan.skipped) == {"aac_128k", "opus_96k"}


def test_portrait_video_gets_portrait_renditions_chosen_by_its_short_side():
    plan = plan_ladder(video_info(1080, 1920))
    assert sizes(plan)["h264_1080p"] == (1080, 1920)
    assert sizes(plan)["h264_720p"] == (720, 1280)
    assert sizes(plan)["h264_240p"] == (240, 426)


def test_rotation_metadata_turns_the_ladder_upright():
    for rotation in (90, 270):
        plan = plan_ladder(video_info(1920, 1080, rotation=rotation))
        assert sizes(plan)["h264_1080p"] == (1080, 1920)
        assert sizes(plan)["vp9_360p"] == (360, 640)
    assert sizes(plan_ladder(video_info(1920, 1080, rotation=180)))["h264_720p"] == (1280, 720)


def test_odd_dimensions_give_even_sizes_never_larger_than_the_source():
    plan = plan_ladder(video_info(641, 363))
    assert sizes(plan) == {"h264_360p": (636, 360), "h264_240p": (424, 240), "vp9_360p": (636, 360)}
    for p in plan.renditions:
        assert p.width % 2 == 0 and p.height % 2 == 0
        assert p.width <= 641 and p.height <= 363


def test_never_upscales_and_says_why_a_rung_was_skipped():
    plan = plan_ladder(video_info(854, 480))
    assert set(sizes(plan)) == {"h264_480p", "h264_360p", "h264_240p", "vp9_360p"}
    assert "needs 720" in plan.skipped["h264_720p"] and "never upscales" in plan.skipped["h264_720p"]
    assert set(plan.skipped) == {"h264_1080p", "h264_720p", "vp9_720p", "aac_128k", "opus_96k"}


def test_source_below_the_lowest_rung_gets_one_rendition_per_format_at_its_own_size():
    plan = plan_ladder(video_info(201, 113))
    assert sizes(plan) == {"h264_240p": (200, 112), "vp9_360p": (200, 112)}


def test_4k_source_tops_out_at_1080p():
    plan = plan_ladder(video_info(3840, 2160))
    assert sizes(plan)["h264_1080p"] == (1920, 1080)
    assert len(plan.renditions) == len([r for r in DEFAULT_LADDER if not r.is_audio_only])


def test_non_square_pixels_become_square():
    # PAL widescreen DVD: 720x576 stored, 16:9 shown.
    plan = plan_ladder(video_info(720, 576, sar=Fraction(64, 45)))
    assert sizes(plan)["h264_480p"] == (854, 480)
    assert sizes(plan)["h264_240p"] == (426, 240)


def test_frame_rate_is_kept_capped_at_60_with_a_two_second_keyframe_interval():
    plan = plan_ladder(video_info(1280, 720, fps=Fraction(30000, 1001)))
    assert plan.renditions[0].frame_rate == Fraction(30000, 1001)
    assert plan.renditions[0].keyframe_interval_frames == 60
    fast = plan_ladder(video_info(1280, 720, fps=Fraction(120)))
    assert {p.frame_rate for p in fast.renditions} == {Fraction(60)}
    assert {p.keyframe_interval_frames for p in fast.renditions} == {120}


def test_sources_without_audio_plan_renditions_without_audio():
    assert not any(p.has_audio for p in plan_ladder(video_info(1280, 720, audio=False)).renditions)
    assert all(p.has_audio for p in plan_ladder(video_info(1280, 720)).renditions)


def test_editing_one_rung_changes_only_its_code_version():
    edited = tuple(replace(r, crf=r.crf + 1) if r.name == "h264_480p" else r for r in DEFAULT_LADDER)
    changed = {a.name for a, b in zip(DEFAULT_LADDER, edited, strict=True) if a.code_version != b.code_version}
    assert changed == {"h264_480p"}
    assert len({r.code_version for r in DEFAULT_LADDER}) == len(DEFAULT_LADDER)
    assert len({r.name for r in DEFAULT_LADDER}) == len(DEFAULT_LADDER)


def test_frame_rates_snap_to_the_nearest_standard_rate():
    def rate(fps):
        return plan_ladder(video_info(1280, 720, fps=fps)).renditions[0].frame_rate

    assert rate(Fraction(30)) == Fraction(30)
    assert rate(Fraction(2997, 100)) == Fraction(30000, 1001)
    assert rate(Fraction(2995, 100)) == Fraction(30000, 1001)
    assert rate(Fraction(25)) == Fraction(25)
    assert rate(Fraction(45, 2)) == Fraction(45, 2)
