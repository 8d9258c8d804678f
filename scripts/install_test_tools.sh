#!/usr/bin/env bash
# Installs the command-line tools tests check our files with (Debian bookworm, root):
# genometools (`gt gff3validator -typecheck so` validates the GFF3 that detect and scan write).
# Idempotent: apt-get runs only when a tool is missing, `apt-get update` only when the package
# lists do not know the package.
# Usage: scripts/install_test_tools.sh
set -euo pipefail

pkgs=(genometools)

if ! command -v gt >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "install_test_tools.sh: must run as root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
    echo "[install_test_tools] apt-get update" >&2
    apt-get update -qq
  fi
  echo "[install_test_tools] apt-get install ${pkgs[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

gt -version | head -1
