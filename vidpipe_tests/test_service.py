"""Stops and services: one SIGTERM or Ctrl-C stops everything vidpipe started, within 10 s.

The supervisor (``vidpipe-service``, ``vidpipe/service.py``) is tested around a dummy process
tree first. Then the systemd units of ``deploy/systemd/`` are run as systemd runs them: the
code server alone is restarted in the middle of an encode (the daemon must reconnect and
re-run the lost run), then all three are stopped as ``systemctl stop`` does in the middle of
the next encode, and started again they finish that video.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from vidpipe.processes import process_start_time
from vidpipe.service import main
from vidpipe_tests.harness import (
    BIN_DIR,
    ENCODE_TIMEOUT,
    RECOVERY_TIMEOUT,
    REPO_ROOT,
    STARTUP_TIMEOUT,
    DagsterStack,
    code_location_loaded,
    free_port,
    partial_renditions,
    runs_of,
    stop,
    upload,
    wait_until,
)

STOP_LIMIT_SECONDS = 10
CODE_SERVER_DOWN_SECONDS = 7
"""Longer than run monitoring's poll interval (dagster.yaml): the daemon looks at the lost run while nothing answers."""
TEST_GRACE_SECONDS = 1

# The supervised part: records the signal handlers it started with and the pids of its tree,
# then ignores SIGTERM and SIGINT, with a grandchild in a session of its own (as ffmpeg is).
DUMMY_PART = """
import json, os, signal, subprocess, sys, time
started_with = {"SIGINT": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                "SIGTERM": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL}
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
with open(sys.argv[1] + ".tmp", "w") as out:
    json.dump({"defaults": started_with, "pids": [os.getpid(), grandchild.pid]}, out)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
sys.exit(int(sys.argv[2])) if len(sys.argv) > 2 else time.sleep(60)
"""
SUPERVISOR = "import sys; from vidpipe.service import supervise; sys.exit(supervise(sys.argv[1:], grace_seconds={}))"


def start_supervised_dummy(report: Path, *part_args: str, ignore_sigint: bool = False) -> subprocess.Popen:
    """The supervisor around the dummy part, in a process group of its own (a terminal's foreground job).

    ``ignore_sigint`` starts it the way a script starts a background job: with SIGINT ignored. SIGHUP
    is as in a terminal, whatever the suite runs under (``nohup`` would have it ignored, and the
    supervisor rightly keeps running then).
    """
    argv = [sys.executable, "-c", SUPERVISOR.format(TEST_GRACE_SECONDS), sys.executable, "-c", DUMMY_PART]
    inherited_int = signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)
    inherited_hup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        return subprocess.Popen([*argv, str(report), *part_args], start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, inherited_int)
        signal.signal(signal.SIGHUP, inherited_hup)


def dummy_tree(report: Path) -> dict:
    """What the dummy part reported once it is up: its start-up signal handlers and its tree's pids."""
    wait_until(report.exists, 20, "the dummy part to start", lambda: None)
    return json.loads(report.read_text())


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if process_start_time(pid) is not None]


@pytest.mark.parametrize(
    ("stop_signal", "ignore_sigint"),
    [
        pytest.param(signal.SIGTERM, True, id="SIGTERM to a script's background job"),
        pytest.param(signal.SIGINT, False, id="Ctrl-C in a terminal"),
        pytest.param(signal.SIGHUP, False, id="the terminal closed"),
    ],
)
def test_the_supervisor_stops_everything_below_it(tmp_path, stop_signal, ignore_sigint):
    report = tmp_path / "tree.json"
    supervisor = start_supervised_dummy(report, ignore_sigint=ignore_sigint)
    tree = dummy_tree(report)
    assert tree["defaults"] == {"SIGINT": True, "SIGTERM": True}, "the part must start with default handlers"

    started = time.monotonic()
    os.killpg(supervisor.pid, stop_signal)  # a terminal signals its foreground process group
    supervisor.wait(timeout=STOP_LIMIT_SECONDS)
    assert time.monotonic() - started < TEST_GRACE_SECONDS + 3
    assert supervisor.returncode == -stop_signal, "it dies of the signal, as systemd and shells expect"
    assert alive(tree["pids"]) == []


def test_when_the_part_exits_the_supervisor_exits_with_its_status_and_cleans_up(tmp_path):
    report = tmp_path / "tree.json"
    supervisor = start_supervised_dummy(report, "3")
    tree = dummy_tree(report)
    assert supervisor.wait(timeout=STOP_LIMIT_SECONDS) == 3
    assert alive(tree["pids"]) == [], "the grandchild it left behind is killed"


def test_a_bad_port_says_which_variable_is_wrong(monkeypatch, capsys):
    monkeypatch.setenv("VIDPIPE_CODE_SERVER_PORT", "http")
    with pytest.raises(SystemExit):
        main(["code-server"])
    assert "VIDPIPE_CODE_SERVER_PORT must be a port number (1-65535), not 'http'" in capsys.readouterr().err


# --- the systemd units ------------------------------------------------------------------

UNITS = ("vidpipe-code-server", "vidpipe-daemon", "vidpipe-webserver")
INSTALLED_CLONE = "/opt/vidpipe"
STATE_DIRECTORY = "/var/lib/vidpipe"
# What systemd gives a service besides its EnvironmentFile= (with User=, also HOME).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


def read_unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(REPO_ROOT / "deploy" / "systemd" / f"{name}.service")
    return parser["Service"]


def read_environment_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture
def unit_stack(tmp_path, monkeypatch) -> Iterator[DagsterStack]:
    """The three units' ExecStart commands, with the example environment file, on loopback ports under tmp_path.

    The clone is this checkout and ``/var/lib/vidpipe`` is ``tmp_path``.
    """

    def installed_here(value: str) -> str:
        return value.replace(f"{INSTALLED_CLONE}/.venv/bin", str(BIN_DIR)).replace(INSTALLED_CLONE, str(REPO_ROOT))

    def state_here(value: str) -> str:
        return value.replace(STATE_DIRECTORY, str(tmp_path))

    units = {name: read_unit(name) for name in UNITS}
    for unit in units.values():
        assert (unit["KillMode"], unit["TimeoutStopSec"], unit["Restart"]) == ("mixed", "10", "always")
        assert unit["EnvironmentFile"] == "/etc/vidpipe/vidpipe.env"
    settings = {
        name: state_here(installed_here(value))
        for name, value in read_environment_file(REPO_ROOT / "deploy" / "vidpipe.env").items()
    }
    port = free_port()
    settings |= {
        "VIDPIPE_PORT": str(port),
        "VIDPIPE_CODE_SERVER_PORT": str(free_port()),
        "VIDPIPE_SETTLE_SECONDS": "0.5",
    }
    home, inbox, storage = (Path(settings[name]) for name in ("DAGSTER_HOME", "VIDPIPE_INBOX", "VIDPIPE_STORAGE"))
    for folder in (home, inbox, storage):
        folder.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    [working_directory] = {state_here(unit["WorkingDirectory"]) for unit in units.values()}
    # Creating the instance first sets up its storage before three processes race to.
    with DagsterInstance.get() as instance:
        stack = DagsterStack(
            instance,
            inbox,
            storage,
            f"http://127.0.0.1:{port}",
            {},
            {},
            commands={name: shlex.split(installed_here(unit["ExecStart"])) for name, unit in units.items()},
            env={"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(tmp_path), **settings},
            cwd=Path(working_directory),
        )
        for unit in units.values():
            if "ExecStartPre" in unit:
                subprocess.run(
                    shlex.split(installed_here(unit["ExecStartPre"])), env=stack.env, cwd=stack.cwd, check=True
                )
        try:
            stack.start_all()
            yield stack
        finally:
            stop(list(stack.processes.values()))


def systemctl_stop(stack: DagsterStack) -> float:
    """``systemctl stop`` of every unit (KillMode=mixed: SIGTERM to each main process); seconds until all is gone."""
    started = time.monotonic()
    for process in stack.processes.values():
        process.send_signal(signal.SIGTERM)
    for process in stack.processes.values():
        process.wait(timeout=STOP_LIMIT_SECONDS)
    wait_until(lambda: not stack.running_processes(), STOP_LIMIT_SECONDS, "every process to stop", lambda: None)
    return time.monotonic() - started


def test_the_units_recover_a_code_server_restart_and_a_stop_mid_encode(unit_stack, long_clip):
    stack = unit_stack
    with stack.logs_shown_on_failure():
        wait_until(
            lambda: code_location_loaded(stack.url), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive
        )
        upload(long_clip, stack.inbox, long_clip.name)
        wait_until(lambda: partial_renditions(stack.storage), ENCODE_TIMEOUT, "the encode", stack.check_alive)

        # The code server alone stops mid-encode, taking its run with it (a daemon's first run starts
        # through the code server, the later ones from the daemon's warm process), and stays down past
        # a monitoring poll (systemd restarts it after a crash; or a deploy restarts it).
        code_server = stack.processes["vidpipe-code-server"]
        code_server.send_signal(signal.SIGTERM)
        assert code_server.wait(timeout=STOP_LIMIT_SECONDS) == -signal.SIGTERM
        killed_encode = set(partial_renditions(stack.storage))
        time.sleep(CODE_SERVER_DOWN_SECONDS)
        stack.start_one("vidpipe-code-server", log_suffix="-restarted")
        # The daemon reconnects by itself, fails the lost run and re-runs it: a new encode starts.
        wait_until(
            lambda: set(partial_renditions(stack.storage)) - killed_encode,
            RECOVERY_TIMEOUT,
            "the lost run to be re-run",
            stack.check_alive,
        )
        [lost] = runs_of(stack.instance, DagsterRunStatus.FAILURE)

        # systemctl stop of all three units in the middle of that encode (the re-run's worker forked from
        # the daemon's warm process: the daemon's stop takes it).
        stopped_in = systemctl_stop(stack)
        print(f"every unit stopped, with all its processes, {stopped_in:.1f} s after SIGTERM")
        assert stopped_in < STOP_LIMIT_SECONDS
        assert {name: process.returncode for name, process in stack.processes.items()} == dict.fromkeys(
            UNITS, -signal.SIGTERM
        ), "each unit's main process dies of SIGTERM, which systemd counts as a clean stop"
        in_flight = [record.dagster_run for record in runs_of(stack.instance, DagsterRunStatus.STARTED)]
        assert len(in_flight) == 1, "the run must be stopped, not left to finish: it stays STARTED to be re-run"
        assert in_flight[0].parent_run_id == lost.dagster_run.run_id

        stack.start_all(log_suffix="-after-stop")
        [finished] = wait_until(
            lambda: runs_of(stack.instance, DagsterRunStatus.SUCCESS),
            RECOVERY_TIMEOUT,
            "the stopped video to be finished",
            stack.check_alive,
        )
    assert finished.dagster_run.parent_run_id == in_flight[0].run_id
    assert (stack.storage / in_flight[0].tags["dagster/partition"] / "manifest.json").is_file()
    assert partial_renditions(stack.storage) == []
