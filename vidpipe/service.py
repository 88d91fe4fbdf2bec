"""``vidpipe-service PART``: run one part of vidpipe so that one SIGTERM or Ctrl-C stops everything it started.

Parts: ``dev`` (``dagster dev``: UI, daemon and code server in one, with ``vidpipe serve``, the
player pages, beside it: what ``./dev.sh run`` starts), and for a service manager the three
separately: ``code-server``, ``daemon``, ``webserver`` (``deploy/systemd/``); ``player``
(``vidpipe serve`` alone); and ``worker``, a Celery worker of a cluster
(``dagster-celery worker start``, the broker from ``VIDPIPE_CELERY_BROKER``). Addresses and files come from the environment
(``vidpipe/settings.py``); the part runs in ``DAGSTER_HOME`` when that is set.

Left to themselves the Dagster commands do not stop reliably. A shell starts background jobs
with SIGINT ignored; Python then installs no KeyboardInterrupt handler and Dagster maps
SIGTERM onto that ignored handler, so ``dagster dev`` started from a script ignored SIGTERM.
And a run worker holds an interrupt back until its current step ends, while ffmpeg runs in
a session of its own, so an encode went on after Ctrl-C.

So the supervisor is a child subreaper (processes orphaned below it stay its descendants)
and starts the part in its own process group with SIGINT and SIGTERM at their defaults. On
SIGTERM, SIGINT or SIGHUP (a closed terminal) it sends SIGTERM to that group, gives it ``GRACE_SECONDS`` to exit, then
freezes and kills every process still below it (run workers, step processes, ffmpeg), and
dies of the signal it received. If the part exits on its own, the supervisor kills what it
left behind and exits with its status, so a service manager restarts it.

A run killed this way stays STARTED. Once vidpipe runs again, run monitoring finds its worker
gone, marks it failed and frees its pool slots, and run retries re-run it (``dagster.yaml``,
``vidpipe/defs/run_launcher.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from vidpipe import settings
from vidpipe.processes import descendants

PARTS = ("dev", "code-server", "daemon", "webserver", "worker", "player")
GRACE_SECONDS = 5.0
"""How long the part may take to stop after SIGTERM before everything below the supervisor is killed."""
KILL_SECONDS = 2.0
POLL_SECONDS = 0.05
MAX_WAIT_SECONDS = 60.0
"""``sigtimedwait`` needs a finite timeout; waiting forever is waiting this long, again and again."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WATCHED_SIGNALS = {signal.SIGCHLD, *STOP_SIGNALS}
CODE_SERVER_HOST = "127.0.0.1"
# Python ignores SIGPIPE and SIGXFSZ for itself; a child gets them back at their defaults, as subprocess does.
DEFAULT_IN_CHILD = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ)
_PR_SET_CHILD_SUBREAPER = 36


def part_command(part: str) -> list[str]:
    """The command that runs ``part``, from the settings in the environment."""
    bin_dir = os.path.dirname(sys.executable)
    match part:
        case "dev":
            # Warnings and errors of the daemon and webserver; runs print their own progress and outcome.
            dev = [f"{bin_dir}/dagster", "dev", "--log-level", "warning"]
            return [*dev, "-w", str(settings.workspace_file()), *_ui_address()]
        case "code-server":
            return [
                f"{bin_dir}/dagster",
                "api",
                "grpc",
                "-m",
                "vidpipe.definitions",
                "--location-name",
                "vidpipe",
                "-h",
                CODE_SERVER_HOST,
                "-p",
                str(settings.code_server_port()),
            ]
        case "daemon":
            return [f"{bin_dir}/dagster-daemon", "run", "-w", str(settings.workspace_file())]
        case "webserver":
            return [f"{bin_dir}/dagster-webserver", "-w", str(settings.workspace_file()), *_ui_address()]
        case "player":
            return [f"{bin_dir}/vidpipe", "serve"]
        case "worker":
            # One -q with every queue: dagster-celery turns each -q into a -Q, and celery keeps the last.
            queues = ",".join(settings.worker_queues())
            return [
                f"{bin_dir}/dagster-celery", "worker", "start", "-A", "dagster_celery.app",
                "-y", str(celery_config_file()), "-n", settings.worker_name(), "-q", queues,
                # One step at a time per worker: an encode already uses every core.
                "--", "--concurrency", "1",
            ]  # fmt: skip
    raise ValueError(f"unknown part {part!r}; one of {', '.join(PARTS)}")


def celery_config_file() -> Path:
    """The worker's config for ``dagster-celery worker start -y``: the broker, from the environment, and the
    Celery settings a run expects of its workers."""
    return settings.dagster_home() / "celery.yaml"


def write_celery_config() -> None:
    broker = settings.celery_broker()
    if broker is None:
        raise SystemExit("vidpipe-service worker: set VIDPIPE_CELERY_BROKER to the Redis URL of the cluster")
    celery_config_file().parent.mkdir(parents=True, exist_ok=True)
    from vidpipe.defs.executor import celery_app_config

    celery_config_file().write_text(json.dumps({"execution": {"config": celery_app_config(broker)}}))


def _ui_address() -> list[str]:
    return ["-h", settings.ui_host(), "-p", str(settings.ui_port())]


def become_subreaper() -> None:
    """Orphans below this process are re-parented to it instead of to init (Linux only)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _send(pid: int, sig: signal.Signals, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, sig)


def _reap(child: int | None = None) -> int | None:
    """Collect every exited child (orphans included); the exit code of ``child`` if it was among them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child:
            code = os.waitstatus_to_exitcode(status)


def _wait(child: int, deadline: float, stop_signals: set[signal.Signals]) -> tuple[int | None, int | None]:
    """Wait until ``child`` exits (its exit code, None) or one of ``stop_signals`` arrives (None, the signal).

    (None, None) at ``deadline``. The signals are blocked and taken with ``sigtimedwait``, so
    none is lost between two checks.
    """
    while (code := _reap(child)) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None
        info = signal.sigtimedwait(WATCHED_SIGNALS, min(remaining, MAX_WAIT_SECONDS))
        if info is not None and info.si_signo in stop_signals:
            return None, info.si_signo
    return code, None


def kill_descendants() -> None:
    """Kill every process below this one.

    All are stopped (SIGSTOP) before any is killed, so none of them sees another die and
    reacts, such as a run worker recording that its ffmpeg was killed.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_SECONDS
    while (remaining := descendants(os.getpid())) and time.monotonic() < deadline:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in remaining:
                _send(pid, sig)
        killed.update(remaining)
        time.sleep(POLL_SECONDS)
        _reap()
    if killed:
        print(f"vidpipe-service: killed {len(killed)} process(es) left running", file=sys.stderr, flush=True)


def _stop(child: int, signum: int, grace_seconds: float) -> NoReturn:
    """SIGTERM the part's process group, kill whatever is left after the grace period, die of ``signum``."""
    _send(child, signal.SIGTERM, group=True)
    _wait(child, time.monotonic() + grace_seconds, stop_signals=set())
    kill_descendants()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})  # the signal ends the process here
    sys.exit(128 + signum)


def supervise(argv: list[str], grace_seconds: float = GRACE_SECONDS, companions: tuple[list[str], ...] = ()) -> int:
    """Run ``argv`` as the module docstring says; return its exit status when it exits on its own.

    ``companions`` run beside it in its process group: they get its signals and stop with it, and one
    that exits on its own stops nothing."""
    become_subreaper()
    # SIGTERM is always honoured; SIGINT and SIGHUP not where they are ignored (a script's
    # background job, nohup): ignored signals are discarded even while blocked.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stop_signals = {sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED_SIGNALS)
    child = os.posix_spawn(argv[0], argv, os.environ, setpgroup=0, setsigdef=DEFAULT_IN_CHILD, setsigmask=())
    for companion in companions:
        os.posix_spawn(companion[0], companion, os.environ, setpgroup=child, setsigdef=DEFAULT_IN_CHILD, setsigmask=())
    code, received = _wait(child, math.inf, stop_signals)
    if received is not None:
        _stop(child, received, grace_seconds)
    kill_descendants()
    assert code is not None  # _wait only returns neither at a deadline
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vidpipe-service", description="Run one part of vidpipe, supervised.")
    parser.add_argument("part", choices=PARTS)
    args = parser.parse_args(argv)
    try:
        command = part_command(args.part)  # before changing folder: the workspace path may be relative
    except ValueError as err:
        parser.error(str(err))
    if args.part == "worker":
        write_celery_config()
        from vidpipe.defs.storage import sweep_scratch

        for folder in sweep_scratch(settings.scratch_dir()):
            print(f"vidpipe-service worker: removed {folder}, left by a worker that was killed", file=sys.stderr)
        # dagster-celery starts the worker by running ``celery``, found on PATH.
        os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    if os.environ.get("DAGSTER_HOME"):
        # Dagster warns about a dagster.yaml in the working folder that is not the instance's own.
        os.chdir(os.environ["DAGSTER_HOME"])
    sys.exit(supervise(command, companions=(part_command("player"),) if args.part == "dev" else ()))
