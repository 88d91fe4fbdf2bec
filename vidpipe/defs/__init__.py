"""The Dagster layer: thin definitions over ``vidpipe.media``."""
