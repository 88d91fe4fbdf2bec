#!/usr/bin/env bash
# vidpipe's two commands:
#   ./dev.sh run    set everything up, then start the Dagster UI + daemon with the upload sensor on,
#                   and the player pages (vidpipe serve)
#   ./dev.sh test   set everything up, lint, then run the whole test suite (extra args go to pytest)
#   ./dev.sh lint   ruff check, ruff format --check and mypy (what ./dev.sh test runs first)
#   ./dev.sh cluster  the many-machine deployment on this machine: PostgreSQL, Redis, an S3 server,
#                     the UI and daemon, two Celery workers (README, "Running on many machines")
set -euo pipefail
cd "$(dirname "$0")"
PROJECT_DIR=$(pwd)

install_system_packages() {  # with "cluster": also what the cluster needs; with "test": that and a browser
  local missing=()
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
  command -v python3 >/dev/null || missing+=(python3)
  command -v setpriv >/dev/null || missing+=(util-linux)  # runs ffmpeg with a parent-death signal
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ "${1:-}" = test ]; then  # the browser the player page is tested in
    command -v chromium >/dev/null || missing+=(chromium)
  fi
  if [ "${1:-}" = cluster ] || [ "${1:-}" = test ]; then  # Dagster's instance and Celery's broker
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v redis-server >/dev/null || missing+=(redis-server)
  fi
  [ ${#missing[@]} -eq 0 ] && return
  install_missing "${missing[@]}"
}

install_missing() {  # Debian packages
  echo "installing system packages: $*"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}

install_player_library() {  # shaka-player from the npm registry, for vidpipe serve's player page
  command -v npm >/dev/null || install_missing npm
  local stamp=web/node_modules/.vidpipe-installed
  local wanted
  wanted=$(sha256sum web/package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    npm ci --prefix web --no-audit --no-fund --loglevel=error
    echo "$wanted" > "$stamp"
  fi
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
  .venv/bin/vidpipe catalog migrate  # the catalog (data/catalog.sqlite) made or brought up to date
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
    install_player_library
    prepare_dagster_home
    export VIDPIPE_HOST=${VIDPIPE_HOST:-127.0.0.1}
    export VIDPIPE_PORT=${VIDPIPE_PORT:-3000}
    export VIDPIPE_PLAYER_PORT=${VIDPIPE_PLAYER_PORT:-3001}
    echo "vidpipe UI:     http://$VIDPIPE_HOST:$VIDPIPE_PORT"
    echo "player:         http://$VIDPIPE_HOST:$VIDPIPE_PLAYER_PORT   (the processed videos, playing)"
    echo "upload inbox:   $VIDPIPE_INBOX   (drop videos here, or: .venv/bin/vidpipe upload FILE)"
    echo "outputs:        $VIDPIPE_STORAGE"
    # `dagster dev` under vidpipe's supervisor (vidpipe/service.py), so that one SIGTERM or
    # Ctrl-C stops it with every run worker and ffmpeg it started, even from a script.
    exec "$PROJECT_DIR/.venv/bin/vidpipe-service" dev
    ;;
  test)
    shift
    install_system_packages test
    install_python_packages
    install_player_library
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
