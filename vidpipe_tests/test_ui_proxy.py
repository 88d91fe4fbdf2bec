"""The documented way to put the UI in front of people: Caddy (deploy/caddy/Caddyfile) before a real
dagster-webserver. The webserver itself accepts mutations from any request, a cross-site GET included;
through the proxy only an authenticated, same-origin JSON POST (or WebSocket) reaches it.
"""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vidpipe_tests.harness import REPO_ROOT, STARTUP_TIMEOUT, catalog_beside, free_port, start, stop, wait_until

CADDY = str(Path(sys.executable).parent / "caddy")
CADDYFILE = REPO_ROOT / "deploy" / "caddy" / "Caddyfile"
PASSWORD = "correct horse battery staple"
# A mutation that changes the instance: it is harmless here, and must never arrive through the proxy.
MUTATION = 'mutation { setConcurrencyLimit(concurrencyKey: "ffmpeg", limit: 9) }'
LIMITS = "{ instance { concurrencyLimits { concurrencyKey slotCount } } }"


def request(url, *, method="GET", body=None, headers=None, password=PASSWORD):
    headers = dict(headers or {})
    if password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"vidpipe:{password}".encode()).decode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError:
        return 0, b"not listening yet"


def graphql(url, query, **kwargs):
    status, body = request(
        f"{url}/graphql",
        method="POST",
        body=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
        **kwargs,
    )
    return status, json.loads(body) if status == 200 else body


@pytest.fixture
def ui_behind_proxy(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    web_port, proxy_port = free_port(), free_port()
    password_hash = subprocess.run(
        [CADDY, "hash-password", "--plaintext", PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VIDPIPE_INBOX": str(tmp_path / "inbox"),
        "VIDPIPE_STORAGE": str(tmp_path / "storage"),
        "VIDPIPE_CATALOG": catalog_beside(tmp_path / "storage").url,
        "VIDPIPE_UI_ADDRESS": f"http://127.0.0.1:{proxy_port}",
        "VIDPIPE_UI_BIND": "127.0.0.1",
        "VIDPIPE_UI_USER": "vidpipe",
        "VIDPIPE_UI_PASSWORD_HASH": password_hash,
        "VIDPIPE_WEBSERVER": f"127.0.0.1:{web_port}",
    }
    webserver_argv = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml"]
    processes = [
        start([*webserver_argv, "-h", "127.0.0.1", "-p", str(web_port)], env, tmp_path / "webserver.log"),
        start([CADDY, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env, tmp_path / "caddy.log"),
    ]
    direct, proxied = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{proxy_port}"

    def alive():
        for process in processes:
            assert process.poll() is None, (tmp_path / "caddy.log").read_text()[-2000:]

    try:
        wait_until(lambda: graphql(proxied, LIMITS)[0] == 200, STARTUP_TIMEOUT, "the UI through the proxy", alive)
        yield direct, proxied
    finally:
        stop(processes)


def changed(direct) -> bool:
    """Whether the mutation reached the webserver: the ffmpeg pool then has 9 slots."""
    limits = graphql(direct, LIMITS, password=None)[1]["data"]["instance"]["concurrencyLimits"]
    return {"concurrencyKey": "ffmpeg", "slotCount": 9} in limits


def test_the_proxy_lets_in_only_authenticated_same_origin_json(ui_behind_proxy):
    direct, proxied = ui_behind_proxy
    assert not changed(direct)
    get_mutation = f"{proxied}/graphql?query={urllib.request.quote(MUTATION)}"

    assert request(f"{proxied}/", password=None)[0] == 401
    assert request(f"{proxied}/", password="guess")[0] == 401
    assert graphql(proxied, MUTATION, password=None)[0] == 401
    assert request(get_mutation)[0] == 405
    assert graphql(proxied, MUTATION, headers={"Origin": "https://evil.example"})[0] == 403
    form = urllib.request.quote(f"query={MUTATION}", safe="=")
    form_post = request(f"{proxied}/graphql", method="POST", body=form.encode(), headers={"Content-Type": "text/plain"})
    assert form_post[0] == 415
    assert not changed(direct), "a refused request reached the webserver"

    status, page = request(f"{proxied}/", headers={"Origin": proxied})
    assert status == 200 and b"<html" in page.lower()
    assert graphql(proxied, MUTATION, headers={"Origin": proxied})[0] == 200
    assert changed(direct)


def test_without_the_proxy_a_cross_site_get_changes_the_instance(ui_behind_proxy):
    """Why the proxy exists: what Dagster's webserver alone accepts (README, Security)."""
    direct, _ = ui_behind_proxy
    mutation = f"{direct}/graphql?query={urllib.request.quote(MUTATION)}"
    assert request(mutation, password=None, headers={"Origin": "https://evil.example"})[0] == 200
    assert changed(direct)
