#!/usr/bin/env bash
# Installs what the package needs to build on Debian 12 / Ubuntu 24.04: liburing-dev.
set -euo pipefail
if [ -f /usr/include/liburing.h ] && ldconfig -p 2>/dev/null | grep -q 'liburing\.so'; then
  exit 0
fi
echo "liburing-dev is missing: installing it with apt-get" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y liburing-dev
