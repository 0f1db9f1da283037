#!/bin/bash
# Build the taskserver .deb and/or .rpm from this tree.
#
#   packaging/build.sh [--version UPSTREAM-REVISION] [--out DIR] [--wheels DIR] [deb|rpm|all]
#
# The payload is /opt/taskserver: a venv (interpreter link -> /usr/bin/python3) with taskserver and its
# dependencies installed from wheels. The venv is created at its real path inside a private mount namespace
# (a bind mount puts the staging directory at /opt), so every #! line and pyvenv.cfg names /opt/taskserver
# and nothing is rewritten afterwards. It runs on the target only when the target's /usr/bin/python3 is
# the same minor version as the build host's (Debian 12 bookworm: 3.11): the .deb depends on python3 within
# that minor version, the .rpm on python(abi) of it, both on the libraries its extension modules link.
# The boot files are not in the package: its maintainer scripts generate them at install time with
# `taskserver-install --maintscript`, and the scripts themselves are the tool's --emit-maintscripts output.
# Bytecode: the .deb compiles it in postinst and removes it in prerm (as dh_python3); the .rpm ships it.
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
pynext=$("$python" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
url="https://example.org/taskserver"  # the project's placeholder home, like the maintainer address
packager="taskserver developers <taskserver@example.org>"
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d /var/tmp/taskserver-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
venv="$stage/opt/taskserver"
mkdir -p "$venv" "$work/wheels"

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
# A library module is imported, never run: its #! line (distro.py has one) goes, as Fedora's guidelines ask
# for site-packages; an empty line takes its place so that tracebacks keep their line numbers.
find "$venv/lib" -name '*.py' -type f ! -perm -u+x -exec sed -i '1s/^#!.*$//' {} +

if grep -rIl -- "$work" "$stage" >/dev/null; then
    echo "build.sh: the staged venv still names the build directory:" >&2
    grep -rIl -- "$work" "$stage" >&2
    exit 1
fi
chmod -R u+rwX,go+rX,go-w "$stage"

# The SPDX license expression of the payload: taskserver's and every bundled distribution's license, from
# packaging/licenses; a distribution missing there fails the build.
venv_license() {
    local info name spdx
    for info in "$venv"/lib/python*/site-packages/*.dist-info; do
        name=$(sed -n 's/^Name: //p' "$info/METADATA" | head -n1 | tr 'A-Z_.' 'a-z--')
        spdx=$(awk -v n="$name" '$1 == n { print $2 }' "$here/licenses")
        if [ -z "$spdx" ]; then
            echo "build.sh: $name is in the payload but not in packaging/licenses: add its SPDX license" >&2
            return 1
        fi
        echo "$spdx"
    done | awk '!seen[$0]++' | paste -sd '\n' | sed ':a;N;$!ba;s/\n/ AND /g'
}
license=$(venv_license)

# The libraries the payload's extension modules link, as dpkg-shlibdeps computes them for a .deb.
shlib_depends() {
    local dir="$work/shlibdeps" files
    mkdir -p "$dir/debian"
    printf 'Source: taskserver\n\nPackage: taskserver\nArchitecture: any\n' > "$dir/debian/control"
    ln -s "$stage" "$dir/debian/taskserver"  # where dpkg-shlibdeps expects a package's files
    mapfile -t files < <(cd "$dir" && find debian/taskserver/ -name '*.so*' -type f)
    [ "${#files[@]}" -gt 0 ] || return 0
    # (its hints about the staging path and about upstream's link flags are no news for this build)
    (cd "$dir" && dpkg-shlibdeps -O "${files[@]}" 2>"$dir/warnings") | sed -n 's/^shlibs:Depends=//p'
    grep -v -e 'should already be installed in' -e 'could avoid a useless dependency' "$dir/warnings" >&2 || true
}

build_deb() {
    local tree="$work/deb" arch depends shlibs
    arch=$(dpkg --print-architecture)
    mkdir -p "$tree/DEBIAN" "$tree/usr/share/doc/taskserver" "$tree/usr/share/lintian/overrides"
    cp -a "$stage/opt" "$tree/"
    install -m 0644 "$here/debian/copyright" "$tree/usr/share/doc/taskserver/copyright"
    sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -d @"$epoch")/" \
        "$here/debian/changelog.in" | gzip -9n > "$tree/usr/share/doc/taskserver/changelog.Debian.gz"
    chmod 0644 "$tree/usr/share/doc/taskserver/changelog.Debian.gz"
    sed '/^#/d' "$here/debian/lintian-overrides" > "$tree/usr/share/lintian/overrides/taskserver"
    chmod 0644 "$tree/usr/share/lintian/overrides/taskserver"
    for script in postinst prerm postrm; do
        {
            printf '#!/bin/sh\nset -e\n\n'
            awk -v want="# --- $script ---" '
                /^# --- [a-z]+ ---$/ { on = ($0 == want); next } on' "$work/deb.snippets"
            if [ -f "$here/debian/$script.opt" ]; then cat "$here/debian/$script.opt"; fi
            printf '\nexit 0\n'
        } > "$tree/DEBIAN/$script"
        chmod 0755 "$tree/DEBIAN/$script"
    done
    shlibs=$(shlib_depends)
    depends="python3 (>= $pyver), python3 (<< $pynext)${shlibs:+, $shlibs}"
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s|@URL@|$url|" \
        -e "s/@MAINTAINER@/$packager/" -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$tree" | cut -f1)/" \
        "$here/debian/control.in" > "$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
        > "$tree/DEBIAN/md5sums"
    chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$out/taskserver_${version}_${arch}.deb" >/dev/null
    echo "$out/taskserver_${version}_${arch}.deb"
}

build_rpm() {
    local top="$work/rpm" spec="$work/taskserver.spec" elf_requires
    mkdir -p "$top"
    cat "$here/rpm/taskserver.spec.in" "$work/rpm.snippets" > "$spec"
    # rpm's own ELF dependency generator on the extension modules (the spec turns the automatic scan off)
    elf_requires=$(find "$stage" -name '*.so*' -type f | /usr/lib/rpm/elfdeps --requires | sort -u | paste -sd ' ')
    rpmbuild -bb --quiet --define "_topdir $top" --define "stage $stage" --define "pkg_version $upstream" \
        --define "pkg_release $revision" --define "pyver $pyver" --define "python3 $python" \
        --define "pkg_license $license" --define "pkg_url $url" --define "pkg_packager $packager" \
        --define "license_file $here/debian/copyright" --define "readme_file $repo/README.md" \
        --define "changelog_date $(LC_ALL=C date -u -d @"$epoch" '+%a %b %d %Y')" \
        ${elf_requires:+--define "elf_requires $elf_requires"} "$spec" >/dev/null
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -printf "$out/%f\n"
}

case "$what" in
    deb) build_deb ;;
    rpm) build_rpm ;;
    all) build_deb; build_rpm ;;
esac
