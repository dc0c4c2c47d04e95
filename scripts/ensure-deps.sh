#!/usr/bin/env bash
# Installs what the package needs to build and test on Debian 12 / Ubuntu 24.04: liburing-dev,
# and python3-h11 (the oracle of CogenHTTP's differential and fuzz tests).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
UPDATED=0
install() {
  if [ "$UPDATED" = 0 ]; then
    $SUDO apt-get update
    UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "$@"
}
if ! { [ -f /usr/include/liburing.h ] && ldconfig -p 2>/dev/null | grep -q 'liburing\.so'; }; then
  echo "liburing-dev is missing: installing it with apt-get" >&2
  install liburing-dev
fi
# The tests look for h11 in Debian's python3 first (a python3 on PATH, e.g. pyenv's, may not
# see Debian's packages).
if ! { /usr/bin/python3 -c "import h11" 2>/dev/null || python3 -c "import h11" 2>/dev/null; }; then
  echo "python3-h11 is missing: installing it with apt-get" >&2
  install python3-h11
fi
