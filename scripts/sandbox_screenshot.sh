#!/bin/sh
# Regenerates docs/sandbox-report.png, the README's picture: runs the stuck scenario, then
# screenshots its HTML report with headless Chromium (apt-get install -y chromium).
# Usage: sh scripts/sandbox_screenshot.sh   (from the repository root, after scripts/dev.py setup)
set -eu
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/celery-ecs sandbox --report "$out/report.html" > "$out/run.log"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$out/profile" \
  --hide-scrollbars --screenshot="$PWD/docs/sandbox-report.png" --window-size=1200,800 \
  "file://$out/report.html"
tail -7 "$out/run.log"
