#!/usr/bin/env bash
# Headless Chromium for tests/http/test_web_view.py: Debian's `chromium` package.
# Nothing to do when it is installed. As root (CI, the dev machines) it is installed with
# apt-get; as anyone else this only says so, and the web-view tests skip with that reason.
# Never fails the build: without a browser those tests skip, they do not break `make test`.
set -u

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
PACKAGES=(chromium fonts-dejavu-core)   # a font, so that screenshots show text

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: $CHROMIUM is missing and we are not root: the web-view tests will skip" \
         "(install it with: sudo apt-get install -y chromium)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and there is no apt-get: the web-view tests will skip" >&2
    exit 0
fi
echo "ensure-chromium: installing ${PACKAGES[*]} (Debian packages) for the web-view tests" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >&2; then
    echo "ensure-chromium: apt-get could not install chromium: the web-view tests will skip" >&2
fi
exit 0
