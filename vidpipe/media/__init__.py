"""Pure media logic: probing, ladder planning, ffmpeg command building, image work.

Nothing in this package imports Dagster; the orchestration layer in ``vidpipe.defs`` sits on top.
"""
