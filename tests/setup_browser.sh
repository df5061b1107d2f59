#!/usr/bin/env bash
# Installs what tests/integration/test_dashboard.py needs: Debian's chromium,
# driven headless from the test. Without it that test skips and says why.
# About 115 MB to download and under a minute on a Debian machine (root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
chromium --version
