#!/bin/bash
# Install everything the tests need on a fresh Debian machine (system packages when run as root, a venv with
# the project and its test extras) and run the whole test suite. CI runs exactly this, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    debootstrap systemd-container   # boot tests: build Debian roots, boot them under systemd-nspawn
    shellcheck dash                 # checkers for the rendered SysV scripts
    libsystemd-dev pkg-config       # build pystemd
    lintian rpm dpkg-dev fakeroot   # build and check the .deb and .rpm packages
    piuparts adequate rpmlint       # Debian's package tester (with adequate) and RPM's linter on them
    python3-venv python3-dev binutils  # packaging/build.sh builds the payload venv with /usr/bin/python3
    linux-libc-dev                  # linux/capability.h: the capability names the daemon logs are checked against it
    zstd                            # cache of the built boot roots
    procps                          # ps/pgrep for system tests
    cron                            # the real crontab binary for the cron backend tests
    faketime                        # tests/security runs the real cron daemon from 2 s before a minute
    tzdata                          # real time zones for the schedule/DST tests
    faketime libfaketime            # stepped clocks for daemon tests; start instants for systemd-analyze calendar
    chromium                        # the dashboard's browser test (driven by Playwright, no download)
    postgresql                      # server binaries for the shared-store tests (tests/pglab.py runs its own)
)
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
# Four workers on two cores: boot, package and daemon tests spend most of their time waiting on containers,
# dpkg and sleeping jobs. A test file stays on one worker (its module fixtures are built once).
exec .venv/bin/python -m pytest -n 4 --dist loadfile "$@"
