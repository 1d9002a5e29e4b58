#!/usr/bin/env bash
# A throwaway PostgreSQL server for the approvals tests (Debian's `postgresql` package).
#
#   scripts/throwaway-postgres.sh start DIR   initdb in DIR, start on a free loopback port, print its URL
#   scripts/throwaway-postgres.sh stop DIR    stop it and remove DIR
#   scripts/throwaway-postgres.sh pause DIR   stop it, keeping DIR (a database outage)
#   scripts/throwaway-postgres.sh resume DIR  start it again on the same port
#
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
# package creates (else `nobody`), which owns DIR. Trust authentication on 127.0.0.1 and a
# socket in DIR only; fsync off: the server and its data live as long as one test run.
set -euo pipefail

cmd=${1:?start or stop}
dir=${2:?a directory}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "throwaway-postgres: no PostgreSQL server (install Debian's postgresql package)" >&2
  exit 3
fi

as_server=()
if [ "$(id -u)" = 0 ]; then
  if id postgres >/dev/null 2>&1; then user=postgres; else user=nobody; fi
  as_server=(runuser -u "$user" --)
fi

serve() {
  "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $1 -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

halt() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ ${#as_server[@]} -gt 0 ]; then chown "$user" "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_server[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    serve "$port"
    # Kept for resume: clients reconnect to the same URL after an outage.
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    halt
    rm -rf "$dir"
    ;;
  pause)
    halt
    ;;
  resume)
    serve "$(cat "$dir/port")"
    ;;
  *)
    echo "usage: $0 start|stop|pause|resume DIR" >&2
    exit 2
    ;;
esac
