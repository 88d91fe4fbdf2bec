"""The gallery and ``/api/videos`` over HTTP on a catalog of synthetic rows: pages from a cursor, the total,
search and state filters, and what one page costs in catalog queries at 10 and at 3,000 videos."""

import json
import re
import urllib.error
import urllib.request
from html import unescape

import pytest

from vidpipe.catalog import migrate, open_catalog
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.web.app import build_app
from vidpipe_tests.catalogs import counted_queries, served, synthetic_videos


@pytest.fixture
def gallery(tmp_path):
    """(base URL, catalog) of ``vidpipe serve``'s app on an empty catalog."""
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    migrate(url)
    catalog = open_catalog(url)
    app = build_app(LocalVideoStorage(root=str(tmp_path / "storage")), catalog, tmp_path)
    with served(app) as base:
        yield base, catalog


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def listed(html: str) -> list[str]:
    return re.findall(r'data-key="([^"]+)"', html)


def test_the_gallery_pages_newest_first_with_the_total_and_a_link_to_the_next_page(gallery):
    base, catalog = gallery
    catalog.replace_all(synthetic_videos(60))
    newest_first = [f"clip-{i}-{i:012x}" for i in reversed(range(60))]
    html = get(base + "/")
    assert 'data-total="60"' in html and "60 videos" in html
    seen = listed(html)
    while (found := re.search(r'<a class="next" rel="next" href="([^"]+)"', html)) is not None:
        html = get(base + unescape(found[1]))
        seen += listed(html)
    assert seen == newest_first and len(listed(get(base + "/"))) == 24


def test_search_and_state_filters_keep_to_every_page(gallery):
    base, catalog = gallery
    catalog.replace_all(synthetic_videos(200))
    beach = json.loads(get(base + "/api/videos?q=beach&limit=20"))
    assert beach["total"] == 50 and len(beach["videos"]) == 20
    rest = json.loads(get(base + beach["next"]))
    assert (
        len(rest["videos"]) == 20
        and "q=beach" in beach["next"]
        and all("Beach" in v["name"] for v in beach["videos"] + rest["videos"])
    )
    refused = json.loads(get(base + "/api/videos?state=rejected"))
    assert refused["total"] == 50 and {v["state"] for v in refused["videos"]} == {"rejected"}
    assert all(v["reason"] == "not a video" and v["thumbnail"] is None for v in refused["videos"])
    ready = json.loads(get(base + "/api/videos?state=ready&limit=1"))["videos"][0]
    assert ready["thumbnail"] == f"/media/{ready['key']}/thumbnails/first_frame_320w.jpg"
    html = get(base + "/?q=beach+199")  # no such video: 199 is not a beach trip
    assert listed(html) == [] and "No video matches." in html
    assert listed(get(base + "/?q=beach+197")) == [f"clip-197-{197:012x}"]
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(base + "/api/videos?state=lost")
    assert bad.value.code == 400


@pytest.mark.parametrize("size", [10, 3000])
def test_a_page_costs_the_same_catalog_queries_at_any_size(gallery, size):
    base, catalog = gallery
    catalog.replace_all(synthetic_videos(size))
    with counted_queries(catalog.engine) as queries:
        get(base + "/")
        get(base + "/api/videos?state=ready")
        get(base + "/?q=beach")
    assert len(queries) == 6, queries  # the page's rows and its total, each
