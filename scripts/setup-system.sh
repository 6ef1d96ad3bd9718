#!/usr/bin/env bash
# Install the Debian packages the tests, the demo and the benchmarks need, each only if it is
# missing, so that a second run does nothing (and does not even run apt-get update).
#
#   scripts/setup-system.sh              everything in NEEDS below
#   scripts/setup-system.sh PKG...       just these packages, if not installed
set -euo pipefail

# "path that proves it is installed:Debian package"
NEEDS=(
    "/usr/lib/postgresql/15/bin/postgres:postgresql-15"
    "/usr/bin/psql:postgresql-client-15"
    "/usr/bin/openssl:openssl"
    "/usr/sbin/mariadbd:mariadb-server"
    # Spark's JVM for the reader matrix (tests/reader_matrix.rs; pyspark is in requirements-dev.txt)
    "/usr/bin/java:openjdk-17-jre-headless"
)

missing=()
if [ $# -gt 0 ]; then
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
else
    for need in "${NEEDS[@]}"; do
        [ -e "${need%%:*}" ] || missing+=("${need#*:}")
    done
fi

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup-system: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
