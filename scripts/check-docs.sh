#!/usr/bin/env bash
# Builds a module's DocC catalog with the toolchain's `docc` (no docc plugin dependency) and
# fails on any warning: a symbol link that does not resolve, a topic that names nothing.
# Usage: scripts/check-docs.sh [Module]   (default: CogenHTTP; needs a debug build of it)
# Exit status: 0 when the catalog builds without warnings, 1 otherwise (warnings printed).
# Links from a doc comment to another module's symbol (``TimeoutError`` from CogenUring in
# CogenHTTP) cannot resolve in a one-module build: those are listed but not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
module="${1:-CogenHTTP}"
catalog="Sources/$module/$module.docc"
[[ -d "$catalog" ]] || { echo "check-docs: no catalog $catalog" >&2; exit 1; }
swift build --target "$module" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=$(swift build --show-bin-path)
triple_dir=$(dirname "$(readlink -f "$bin")")/$(basename "$bin")
mkdir -p "$work/symbols"
swift-symbolgraph-extract -module-name "$module" -I "$bin/Modules" \
    -Xcc -fmodule-map-file="$triple_dir/CURing.build/module.modulemap" \
    -target "$(uname -m)-unknown-linux-gnu" -output-dir "$work/symbols" -minimum-access-level public
docc convert "$catalog" --additional-symbol-graph-dir "$work/symbols" \
    --fallback-display-name "$module" --fallback-bundle-identifier "cogen.$module" \
    --output-path "$work/out" >"$work/log" 2>&1 || true
others=$(grep -ohE "^(public )?(final )?(class|struct|enum|protocol) [A-Za-z]+" Sources/CogenUring/*.swift Sources/CogenUring/*/*.swift \
    | awk '{print $NF}' | sort -u | paste -sd'|')
grep -E "^warning|^error" "$work/log" | sort -u > "$work/all" || true
grep -vE "^warning: '($others)' doesn't exist" "$work/all" > "$work/own" || true
if [[ -s "$work/all" ]]; then cat "$work/all"; fi
count=$(wc -l < "$work/own")
echo "check-docs: $module: $count warning(s) of its own, $(( $(wc -l < "$work/all") - count )) cross-module link(s)"
[[ "$count" -eq 0 ]]
