"""``vidpipe serve``: the gallery of processed videos and a player page per video (``app.py``)."""
