#!/usr/bin/env bash
# The operator page's browser test drives Debian's Chromium (never a browser downloaded by a tool).
# Install it when missing and we may (root with apt-get); otherwise that test skips with the reason.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the operator-page browser test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq chromium >/dev/null 2>&1 || echo "warning: apt-get install chromium failed; the browser test will skip"
else
  echo "note: chromium is not installed (apt-get install chromium); the operator-page browser test will skip"
fi
exit 0
