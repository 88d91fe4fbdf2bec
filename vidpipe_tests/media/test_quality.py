from vidpipe.media.quality import Timing, keyframe_problems, sync_problems


def timing(name, keyframes=(0.0, 2.0, 4.0), video=(0.0, 5.0), audio=(0.0, 5.0)):
    return Timing(name, tuple(keyframes), video[0], audio[0], video[1], audio[1])


def test_keyframes_every_segment_and_the_same_on_every_rung_pass():
    assert keyframe_problems([timing("a"), timing("b"), timing("audio", keyframes=(), video=(None, None))]) == []


def test_keyframes_off_the_grid_or_apart_between_rungs_are_named():
    assert keyframe_problems([timing("a"), timing("b", keyframes=(0.0, 2.5, 4.0))]) == [
        "b: keyframes at 0, 2.5, 4, not every 2 s",
        "the rungs' keyframes are not at the same times",
    ]
    assert keyframe_problems([timing("a"), timing("b", keyframes=(0.0, 2.0))]) == [
        "the rungs' keyframes are not at the same times"
    ]


def test_sound_starting_late_or_streams_ending_early_are_named():
    assert sync_problems([timing("a")], source_duration=5.0) == []
    assert sync_problems([timing("a", audio=(0.021, 5.01))], source_duration=5.0) == []  # AAC priming, within 50 ms
    assert sync_problems([timing("a", audio=(0.2, 5.0), video=(0.0, 4.5))], source_duration=5.0) == [
        "a: the sound starts +0.200 s from the picture",
        "a: the picture lasts 4.500 s, the source 5.000 s",
    ]
