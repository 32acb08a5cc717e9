#!/usr/bin/env bash
# Installs the Debian packages haven's tests need, only when missing.
# A fresh machine has Go, gcc and PostgreSQL 15; everything else comes from here.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip     || need+=(iproute2)
have ping   || need+=(iputils-ping)
have curl   || need+=(curl)
have pgrep  || need+=(procps)
have nft    || need+=(nftables)
have arping || need+=(iputils-arping)
have dig    || need+=(bind9-dnsutils)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "prereqs: missing ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "prereqs: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
