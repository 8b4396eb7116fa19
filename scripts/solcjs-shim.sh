#!/usr/bin/env bash
# Presents solcjs (npm `solc`) to py-solc-x as a native `solc-v<version>` binary.
# Installed by the Makefile as build/solc/solc-v<version>; no native solc can be
# downloaded on our machines, and solcjs needs a few adjustments to pass for one.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
solcjs="$root/node_modules/.bin/solcjs"

args=()
have_base_path=0
while (($#)); do
  case "$1" in
    --version)
      # py-solc-x reads the version from a "Version: X.Y.Z+commit..." line.
      echo "solc, the solidity compiler commandline interface"
      echo "Version: $("$solcjs" --version)"
      exit 0 ;;
    --allow-paths) shift 2; continue ;;   # solcjs has no such flag
    --allow-paths=*) shift; continue ;;
    --base-path|--base-path=*) have_base_path=1 ;;
  esac
  args+=("$1")
  shift
done
# Without a base path solcjs installs no import callback, so remapped imports
# (OpenZeppelin under node_modules) cannot be read.
((have_base_path)) || args+=(--base-path "$root")

# solcjs output piped is cut at 64 KiB: go through a file. It also prints a
# ">>> Cannot retry compilation..." line before its JSON on some inputs.
# Its input goes through a file too: solcjs reads stdin with readFileSync, which
# fails with EAGAIN (intermittently) when the pipe it is handed is non-blocking.
in="$(mktemp)"
out="$(mktemp)"
trap 'rm -f "$in" "$out"' EXIT
if [[ " ${args[*]} " == *" --standard-json "* ]]; then cat >"$in"; else exec </dev/null; fi
status=0
"$solcjs" "${args[@]}" <"$in" >"$out" || status=$?
grep -v '^>>>' "$out" || true
exit "$status"
