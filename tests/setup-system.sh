#!/usr/bin/env bash
# System packages the tests need: Chromium (the report renders in a headless browser) and its
# driver (selenium drives the serve page through it), and Slurm with accounting (the cluster
# tests). Installed only when missing, and only as root
# on a Debian-like system; elsewhere the tests that need them skip with a reason.
set -euo pipefail
packages=(chromium chromium-driver slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "setup-system: not root or no apt-get; missing ${missing[*]} (their tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
