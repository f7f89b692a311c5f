#!/usr/bin/env bash
# Builds the native backend (native/build/Release/topiary_native.node) with node-gyp, offline:
# Node's own headers ship with Debian/NodeSource packages under <prefix>/include/node, so node-gyp
# is pointed there and never tries to download them.
set -euo pipefail
cd "$(dirname "$0")/.."
nodedir="$(dirname "$(dirname "$(command -v node)")")"
[ -f "$nodedir/include/node/node_api.h" ] || nodedir="$(npm config get nodedir)"
npx node-gyp rebuild --directory native --nodedir="$nodedir" --loglevel=error >&2
