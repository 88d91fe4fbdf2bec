"""vidpipe: turn uploaded videos into web-ready rendition ladders and thumbnails."""
