#!/usr/bin/env bash
# The programs some tests drive, from Debian packages: headless Chromium (the web view),
# openssl (certificates for the HTTPS tests), curl (HTTPS as a client sees it), node (the
# web view's token script), systemd-analyze (the units). Nothing to do when all are there.
# As root (CI, the dev machines) the missing ones are installed with apt-get; as anyone else
# this only says which, and the tests that need them skip with that reason.
# Never fails the build: a missing tool makes its tests skip, it does not break `make test`.
set -u

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
# program -> Debian packages (chromium with a font, so that screenshots show text)
declare -A NEEDS=(
    ["$CHROMIUM"]="chromium fonts-dejavu-core"
    [openssl]="openssl"
    [curl]="curl"
    [node]="nodejs"
    [systemd-analyze]="systemd"
)

missing=()
for program in "${!NEEDS[@]}"; do
    command -v "$program" >/dev/null 2>&1 || missing+=(${NEEDS[$program]})
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-tools: missing ${missing[*]} (Debian packages) and cannot apt-get as" \
         "root: the tests that need them will skip" >&2
    exit 0
fi
echo "ensure-test-tools: installing ${missing[*]} (Debian packages) for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
    echo "ensure-test-tools: apt-get could not install ${missing[*]}: the tests that need them will skip" >&2
fi
exit 0
