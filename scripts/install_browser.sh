#!/usr/bin/env bash
# Installs headless Chromium for the browser tests (Debian bookworm, root).
# Idempotent: only runs apt-get when chromium or the fonts are missing, and only runs
# `apt-get update` when the package lists do not know the packages.
# Usage: scripts/install_browser.sh
set -euo pipefail

pkgs=(chromium fonts-dejavu-core)

missing=()
command -v chromium >/dev/null || missing+=(chromium)
[[ -d /usr/share/fonts/truetype/dejavu ]] || missing+=(fonts-dejavu-core)

if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || { echo "install_browser.sh: must run as root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
    echo "[install_browser] apt-get update" >&2
    apt-get update -qq
  fi
  echo "[install_browser] apt-get install ${missing[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

chromium --version
