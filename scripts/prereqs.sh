#!/usr/bin/env bash
# Installs the Debian packages haven's tests need, only when missing. In CI
# (CI=true) a test whose prerequisite is missing fails instead of skipping
# (internal/testenv), so everything a test runs must come from here.
# A fresh machine has Go and gcc; everything else comes from here: Debian
# packages, and a few programs built from the Go module proxy.
#
# Usage: prereqs.sh [test|demo]. demo installs only what the demo plays its
# acts with (not the benchmarks' peers), and as a user other than root it
# only says what is missing: the demo's first act needs none of it.
set -euo pipefail
for_what=${1:-test}

need=()
have() { command -v "$1" >/dev/null 2>&1; }
# Namespace hosts, the floating address, its fence, the probes.
have ip      || need+=(iproute2)
have nft     || need+=(nftables)
have ping    || need+=(iputils-ping)
have arping  || need+=(iputils-arping)
have curl    || need+=(curl)
have pgrep   || need+=(procps)
have dig     || need+=(bind9-dnsutils)
have runuser || need+=(util-linux)
# PostgreSQL: the server (its package also makes the postgres user), found
# through PATH or pg_config --bindir (libpq-dev's pg_config names the
# server's directory).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
have postgres || have pg_config || need+=(libpq-dev)
# The replicated file volume (internal/volume, TestVolume, the demo's act
# 6): glusterd, the brick server and the self-heal daemon, and the FUSE
# client (the daemon is not started: haven runs its own).
have glusterd  || need+=(glusterfs-server)
have glusterfs || need+=(glusterfs-client)
# The peers whose configuration files the benchmarks' tests check:
# bench/lb (HAProxy, nginx with its stream module, Caddy), bench/pg
# (HAProxy), bench/vip (keepalived).
if [ "$for_what" = test ]; then
  have haproxy    || need+=(haproxy)
  have nginx      || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  have caddy      || need+=(caddy)
  have keepalived || need+=(keepalived)
  # The Galera engine (internal/galera, TestGalera): MariaDB's server, the
  # galera-4 provider and mariabackup for state transfers (the daemon is
  # not started: haven runs its own).
  [ -x /usr/sbin/mariadbd ]                 || need+=(mariadb-server)
  [ -e /usr/lib/galera/libgalera_smm.so ]   || need+=(galera-4)
  have mariabackup || need+=(mariadb-backup)
  # The drill's HTML report is opened in a browser (internal/drill/report):
  # Debian's headless-capable Chromium, driven over the DevTools protocol.
  have chromium   || need+=(chromium)
  # The alert rules (deploy/prometheus) are checked and unit-tested with
  # promtool, from Debian's prometheus package (its daemon is not started).
  have promtool   || need+=(prometheus)
  # The .deb's test (deploy/) installs it into a scratch root with
  # dpkg-deb and verifies its unit with systemd-analyze.
  have dpkg-deb        || need+=(dpkg)
  have systemd-analyze || need+=(systemd)
fi

# Programs built from the Go module proxy (GOPROXY), into /usr/local/bin:
# the S3 server the backup repository's tests run against (versitygw, its
# posix backend serving a directory).
gobuild=()
if [ "$for_what" = test ]; then
  have versitygw || gobuild+=(github.com/versity/versitygw/cmd/versitygw@v1.8.0)
  # nfpm builds the .deb (make package, and the test of deploy/).
  have nfpm      || gobuild+=(github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0)
fi
if [ ${#gobuild[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "prereqs: missing ${gobuild[*]}; run as root or build them: GOBIN=/usr/local/bin go install ${gobuild[*]}" >&2
    exit 1
  fi
  for m in "${gobuild[@]}"; do
    echo "prereqs: building $m (a few minutes the first time)"
    GOBIN=/usr/local/bin GOFLAGS=-buildvcs=false go install "$m"
  done
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "prereqs: missing ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
    [ "$for_what" = demo ] && exit 0
    exit 1
  fi
  echo "prereqs: installing ${need[*]}"
  # The daemons among them (nginx, haproxy, caddy, keepalived, mariadb, glusterd) must not
  # start: the tests run their own. Debian asks policy-rc.d first.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
