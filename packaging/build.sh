#!/bin/bash
# Build the taskserver .deb and/or .rpm from this tree.
#
#   packaging/build.sh [--version UPSTREAM-REVISION] [--out DIR] [--wheels DIR] [deb|rpm|all]
#
# The payload is /opt/taskserver: a venv (interpreter link -> /usr/bin/python3) with taskserver and its
# dependencies installed from wheels. The venv is created at its real path inside a private mount namespace
# (a bind mount puts the staging directory at /opt), so every #! line and pyvenv.cfg names /opt/taskserver
# and nothing is rewritten afterwards. It runs on the target only when the target's /usr/bin/python3 is the
# same minor version as the build host's (Debian 12 bookworm: 3.11); the package depends on that version.
# The boot files are not in the package: its maintainer scripts generate them at install time with
# `taskserver-install --maintscript`, and the scripts themselves are the tool's --emit-maintscripts output.
#
# --wheels DIR: install only from the wheels in DIR (taskserver and every dependency), no index.
# Without it the wheels are built from this tree and its dependencies fetched with pip's own settings.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
version="" out="$here/out" wheels="" what=all
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        deb|rpm|all) what=$1; shift ;;
        *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n1)
version=${version:-$upstream-1}
case "$version" in
    "$upstream"-[0-9]*) revision=${version#"$upstream"-} ;;
    *) echo "build.sh: --version must be $upstream-REVISION (the tree's version is $upstream)" >&2; exit 2 ;;
esac
python=/usr/bin/python3
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d /var/tmp/taskserver-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
mkdir -p "$stage/opt/taskserver" "$work/wheels"

if [ -z "$wheels" ]; then
    # resolve everything here, with the host's pip settings; the venv below installs from these files only
    wheels="$work/wheels"
    "$python" -m venv "$work/buildenv"
    "$work/buildenv/bin/pip" wheel -q --disable-pip-version-check -w "$wheels" "$repo"
fi

# Inside a private mount namespace, /opt is the staging tree's opt/: the venv is built where it will live.
unshare_args=(--mount --propagation private)
[ "$(id -u)" = 0 ] || unshare_args+=(--map-root-user)
# shellcheck disable=SC2016 # the inner script gets its values as arguments, never by expansion here
unshare "${unshare_args[@]}" /bin/bash -euo pipefail -c '
    python=$1 stage=$2 work=$3 wheels=$4
    mount --bind "$stage/opt" /opt
    "$python" -m venv /opt/taskserver
    /opt/taskserver/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        --no-compile --no-index --find-links "$wheels" taskserver
    /opt/taskserver/bin/python -m pip uninstall -q -y --root-user-action=ignore pip setuptools
    rm -f /opt/taskserver/bin/activate* /opt/taskserver/bin/Activate.ps1
    /opt/taskserver/bin/python3 -B -m taskserver.installer.cli --emit-maintscripts deb > "$work/deb.snippets"
    /opt/taskserver/bin/python3 -B -m taskserver.installer.cli --emit-maintscripts rpm > "$work/rpm.snippets"
' build "$python" "$stage" "$work" "$wheels"
find "$stage" -depth -type d -name __pycache__ -exec rm -rf {} +
# as dh_strip does: no debugging symbols in the shipped extension modules
find "$stage" -name '*.so' -type f -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
if grep -rIl -- "$work" "$stage" >/dev/null; then
    echo "build.sh: the staged venv still names the build directory:" >&2
    grep -rIl -- "$work" "$stage" >&2
    exit 1
fi
chmod -R u+rwX,go+rX,go-w "$stage"

build_deb() {
    local tree="$work/deb" arch
    arch=$(dpkg --print-architecture)
    mkdir -p "$tree/DEBIAN" "$tree/usr/share/doc/taskserver" "$tree/usr/share/lintian/overrides"
    cp -a "$stage/opt" "$tree/"
    install -m 0644 "$here/debian/copyright" "$tree/usr/share/doc/taskserver/copyright"
    sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
        "$here/debian/changelog.in" | gzip -9n > "$tree/usr/share/doc/taskserver/changelog.Debian.gz"
    chmod 0644 "$tree/usr/share/doc/taskserver/changelog.Debian.gz"
    sed '/^#/d' "$here/debian/lintian-overrides" > "$tree/usr/share/lintian/overrides/taskserver"
    chmod 0644 "$tree/usr/share/lintian/overrides/taskserver"
    for script in postinst prerm postrm; do
        {
            printf '#!/bin/sh\nset -e\n\n'
            awk -v want="# --- $script ---" '
                /^# --- [a-z]+ ---$/ { on = ($0 == want); next } on' "$work/deb.snippets"
            if [ "$script" = postrm ]; then cat "$here/debian/postrm.opt"; fi
            printf '\nexit 0\n'
        } > "$tree/DEBIAN/$script"
        chmod 0755 "$tree/DEBIAN/$script"
    done
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@PYVER@/$pyver/" \
        -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$tree" | cut -f1)/" "$here/debian/control.in" > "$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
        > "$tree/DEBIAN/md5sums"
    chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$out/taskserver_${version}_${arch}.deb" >/dev/null
    echo "$out/taskserver_${version}_${arch}.deb"
}

build_rpm() {
    local top="$work/rpm" spec="$work/taskserver.spec"
    mkdir -p "$top"
    cat "$here/rpm/taskserver.spec.in" "$work/rpm.snippets" > "$spec"
    rpmbuild -bb --quiet --define "_topdir $top" --define "stage $stage" --define "pkg_version $upstream" \
        --define "pkg_release $revision" --define "pyver $pyver" "$spec" >/dev/null
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -printf "$out/%f\n"
}

case "$what" in
    deb) build_deb ;;
    rpm) build_rpm ;;
    all) build_deb; build_rpm ;;
esac
