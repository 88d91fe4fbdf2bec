#!/usr/bin/env bash
# vidpipe's two commands:
#   ./dev.sh run    set everything up, then start the Dagster UI + daemon with the upload sensor on
#   ./dev.sh test   set everything up, lint, then run the whole test suite (extra args go to pytest)
#   ./dev.sh lint   ruff check, ruff format --check and mypy (what ./dev.sh test runs first)
#   ./dev.sh cluster  the many-machine deployment on this machine: PostgreSQL, Redis, an S3 server,
#                     the UI and daemon, two Celery workers (README, "Running on many machines")
set -euo pipefail
cd "$(dirname "$0")"
PROJECT_DIR=$(pwd)

install_system_packages() {  # with "cluster": also what the cluster and its tests need
  local missing=()
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
  command -v python3 >/dev/null || missing+=(python3)
  command -v setpriv >/dev/null || missing+=(util-linux)  # runs ffmpeg with a parent-death signal
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ "${1:-}" = cluster ]; then  # Dagster's instance and Celery's broker
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v redis-server >/dev/null || missing+=(redis-server)
  fi
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing system packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  local stamp=.venv/.vidpipe-installed
  local wanted
  wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$wanted" > "$stamp"
  fi
}

prepare_dagster_home() {
  export DAGSTER_HOME=${DAGSTER_HOME:-$PROJECT_DIR/data/dagster_home}
  export VIDPIPE_INBOX=${VIDPIPE_INBOX:-$PROJECT_DIR/data/inbox}
  export VIDPIPE_STORAGE=${VIDPIPE_STORAGE:-$PROJECT_DIR/data/storage}
  mkdir -p "$DAGSTER_HOME" "$VIDPIPE_INBOX" "$VIDPIPE_STORAGE"
  [ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$PROJECT_DIR/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
}

lint() {
  .venv/bin/ruff check vidpipe vidpipe_tests benchmarks
  .venv/bin/ruff format --check vidpipe vidpipe_tests benchmarks
  .venv/bin/mypy
}

case "${1:-}" in
  run)
    install_system_packages
    install_python_packages
    prepare_dagster_home
    export VIDPIPE_HOST=${VIDPIPE_HOST:-127.0.0.1}
    export VIDPIPE_PORT=${VIDPIPE_PORT:-3000}
    echo "vidpipe UI:     http://$VIDPIPE_HOST:$VIDPIPE_PORT"
    echo "upload inbox:   $VIDPIPE_INBOX   (drop videos here, or: .venv/bin/vidpipe upload FILE)"
    echo "outputs:        $VIDPIPE_STORAGE"
    # `dagster dev` under vidpipe's supervisor (vidpipe/service.py), so that one SIGTERM or
    # Ctrl-C stops it with every run worker and ffmpeg it started, even from a script.
    exec "$PROJECT_DIR/.venv/bin/vidpipe-service" dev
    ;;
  test)
    shift
    install_system_packages cluster
    install_python_packages
    lint
    exec .venv/bin/python -m pytest "$@"
    ;;
  lint)
    install_python_packages
    lint
    ;;
  cluster)
    install_system_packages cluster
    install_python_packages
    exec "$PROJECT_DIR/.venv/bin/vidpipe-cluster"
    ;;
  *)
    echo "usage: ./dev.sh run | ./dev.sh test [pytest args] | ./dev.sh lint | ./dev.sh cluster" >&2
    exit 2
    ;;
esac
