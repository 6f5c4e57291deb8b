#!/usr/bin/env bash
# Validates Kubernetes manifests against the API's own schemas with
# kubernetes-validate (PyPI, pinned; installed once into a venv under
# target/, as tools/vm does for virtme-ng), strictly: an unknown or
# misplaced field is an error, not ignored as kubectl's client would.
#
#   tools/kubernetes-validate.sh FILE...
#
# Each file is checked against the oldest and the newest Kubernetes the
# validator has the schemas of.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/kubernetes-validate
version=1.37.0
versions=(1.25.0 1.37.0)

if [[ $(cat "$venv/.installed" 2>/dev/null) != "$version" ]]; then
  echo "kubernetes-validate: installing $version into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
  echo "$version" > "$venv/.installed"
fi
for kubernetes in "${versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes" "$@"
done
