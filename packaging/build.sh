#!/bin/bash
# Build the taskserver .deb and/or .rpm from this tree.
#
#   packaging/build.sh [--version UPSTREAM-REVISION] [--out DIR] [--wheels DIR] [--extras FILE] [deb|rpm|all]
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
# The optional parts listed in packaging/extras (or --extras FILE) become packages of their own,
# taskserver-NAME (.deb) and an rpm subpackage of that name, each holding what its part adds to the venv.
#
# --wheels DIR: install only from the wheels in DIR (taskserver and every dependency), no index.
# Without it the wheels are built from this tree and its dependencies fetched with pip's own settings.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
version="" out="$here/out" wheels="" what=all extras_file="$here/extras"
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --extras) extras_file=$2; shift 2 ;;
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

# The optional parts packaged as taskserver-NAME: NAME|REQUIREMENT|DEB DEPENDS|RPM REQUIRES|SUMMARY
mapfile -t extras < <(grep -v -e '^#' -e '^[[:space:]]*$' "$extras_file" || true)
extra_specs=() wheel_reqs=("$repo")
for line in "${extras[@]}"; do
    IFS='|' read -r name requirement _ <<< "$line"
    extra_specs+=("$name=$requirement")
    wheel_reqs+=("${requirement/#taskserver\[/${repo}[}")  # taskserver[x] is this tree with extra x
done

if [ -z "$wheels" ]; then
    # resolve everything here, with the host's pip settings; the venv below installs from these files only
    wheels="$work/wheels"
    "$python" -m venv "$work/buildenv"
    "$work/buildenv/bin/pip" wheel -q --disable-pip-version-check -w "$wheels" "${wheel_reqs[@]}"
fi

# Inside a private mount namespace, /opt is the staging tree's opt/: the venv is built where it will live.
unshare_args=(--mount --propagation private)
[ "$(id -u)" = 0 ] || unshare_args+=(--map-root-user)
unshare "${unshare_args[@]}" /bin/bash "$here/stage-venv.sh" "$python" "$stage" "$work" "$wheels" \
    "${extra_specs[@]}"
if [ "${#extras[@]}" -gt 0 ]; then
    shared=$(for line in "${extras[@]}"; do cat "$work/${line%%|*}.files"; done | sort | uniq -d)
    if [ -n "$shared" ]; then
        echo "build.sh: files in more than one optional part (put their distribution in the base):" >&2
        echo "$shared" >&2
        exit 1
    fi
fi

payloads=("$stage")
for line in "${extras[@]}"; do payloads+=("$work/extra-${line%%|*}"); done
find "${payloads[@]}" -depth -type d -name __pycache__ -exec rm -rf {} +
# as dh_strip does: no debugging symbols in the shipped extension modules
find "${payloads[@]}" -name '*.so' -type f \
    -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
# A library module is imported, never run: its #! line (distro.py has one) goes, as Fedora's guidelines ask
# for site-packages; an empty line takes its place so that tracebacks keep their line numbers.
find "${payloads[@]}" -path '*/site-packages/*' -name '*.py' -type f ! -perm -u+x -exec sed -i '1s/^#!.*$//' {} +

if grep -rIl -- "$work" "${payloads[@]}" >/dev/null; then
    echo "build.sh: the staged venv still names the build directory:" >&2
    grep -rIl -- "$work" "${payloads[@]}" >&2
    exit 1
fi
chmod -R u+rwX,go+rX,go-w "${payloads[@]}"

# The SPDX license expression of the payload: taskserver's and every bundled distribution's license, from
# packaging/licenses; a distribution missing there fails the build.
venv_license() {  # PAYLOAD_DIR
    local info name spdx
    for info in "$1"/opt/taskserver/lib/python*/site-packages/*.dist-info; do
        name=$(sed -n 's/^Name: //p' "$info/METADATA" | head -n1 | tr 'A-Z_.' 'a-z--')
        spdx=$(awk -v n="$name" '$1 == n { $1 = ""; print substr($0, 2) }' "$here/licenses")
        if [ -z "$spdx" ]; then
            echo "build.sh: $name is in the payload but not in packaging/licenses: add its SPDX license" >&2
            return 1
        fi
        echo "${spdx// AND /$'\n'}"
    done | LC_ALL=C sort -u | paste -sd '\n' | sed ':a;N;$!ba;s/\n/ AND /g'
}
license=$(venv_license "$stage")
for line in "${extras[@]}"; do
    venv_license "$work/extra-${line%%|*}" > "$work/${line%%|*}.license"
done

# What an optional part adds to the venv, as top-level entries: a directory that the base does not have (taken
# whole), or a file in one of the base's directories. Paths relative to the venv.
extra_entries() {  # NAME
    awk -F/ 'NR == FNR { p = ""; for (i = 1; i < NF; i++) { p = p (i > 1 ? "/" : "") $i; base[p] = 1 }; next }
             { p = ""; for (i = 1; i <= NF; i++) { p = p (i > 1 ? "/" : "") $i; if (!(p in base)) { print p; break } } }' \
        "$work/base.files" "$work/$1.files" | LC_ALL=C sort -u
}

# The libraries the payload's extension modules link, as dpkg-shlibdeps computes them for a .deb.
shlib_depends() {  # PACKAGE PAYLOAD_DIR
    local dir="$work/shlibdeps-$1" files
    mkdir -p "$dir/debian"
    printf 'Source: taskserver\n\nPackage: %s\nArchitecture: any\n' "$1" > "$dir/debian/control"
    ln -s "$2" "$dir/debian/$1"  # where dpkg-shlibdeps expects a package's files
    mapfile -t files < <(cd "$dir" && find "debian/$1/" -name '*.so*' -type f)
    [ "${#files[@]}" -gt 0 ] || return 0
    # (its hints about the staging path and about upstream's link flags are no news for this build)
    (cd "$dir" && dpkg-shlibdeps -O "${files[@]}" 2>"$dir/warnings") | sed -n 's/^shlibs:Depends=//p'
    grep -v -e 'should already be installed in' -e 'could avoid a useless dependency' "$dir/warnings" >&2 || true
}

# The parts every .deb has: payload, copyright, changelog, lintian overrides.
deb_tree() {  # PACKAGE PAYLOAD_DIR TREE
    local doc="$3/usr/share/doc/$1"
    mkdir -p "$3/DEBIAN" "$doc" "$3/usr/share/lintian/overrides"
    cp -a "$2/opt" "$3/"
    # taskserver's own paragraphs plus one per distribution bundled in this payload (packaging/copyright.py)
    "$python" "$here/copyright.py" "$here/debian/copyright" "$here/licenses" "$2" > "$doc/copyright"
    chmod 0644 "$doc/copyright"
    sed "s/@PACKAGE@/$1/; s/@VERSION@/$version/; s/@DATE@/$(date -R -d @"$epoch")/" \
        "$here/debian/changelog.in" | gzip -9n > "$doc/changelog.Debian.gz"
    chmod 0644 "$doc/changelog.Debian.gz"
    sed -e '/^#/d' -e "s/^taskserver:/$1:/" "$here/debian/lintian-overrides" \
        > "$3/usr/share/lintian/overrides/$1"
    chmod 0644 "$3/usr/share/lintian/overrides/$1"
}

# DEBIAN/control (from TEMPLATE, with the given Depends and extra sed expressions), md5sums, the .deb.
deb_finish() {  # PACKAGE TREE TEMPLATE DEPENDS [SED-EXPRESSION...]
    local name=$1 tree=$2 template=$3 depends=$4 arch
    shift 4
    arch=$(dpkg --print-architecture)
    # pure Python (no extension module): one package for every architecture
    [ -n "$(find "$tree/opt" -name '*.so*' -type f -print -quit)" ] || arch=all
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s|@URL@|$url|" \
        -e "s/@MAINTAINER@/$packager/" -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$tree" | cut -f1)/" \
        "$@" "$template" > "$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
        > "$tree/DEBIAN/md5sums"
    chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$out/${name}_${version}_${arch}.deb" >/dev/null
    echo "$out/${name}_${version}_${arch}.deb"
}

build_deb() {
    local tree="$work/deb" shlibs
    deb_tree taskserver "$stage" "$tree"
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
    shlibs=$(shlib_depends taskserver "$stage")
    deb_finish taskserver "$tree" "$here/debian/control.in" \
        "python3 (>= $pyver), python3 (<< $pynext)${shlibs:+, $shlibs}"
}

# prerm of an optional part: the bytecode of its own modules goes (postinst.opt compiled it with the rest).
extra_prerm() {  # NAME
    local entry path
    printf '#!/bin/sh\nset -e\n\n# bytecode of this package'"'"'s modules (compiled by postinst, as dh_python3 does) goes with them\n'
    while read -r entry; do
        path="\"\$DPKG_ROOT\"$(printf '%q' "/opt/taskserver/$entry")"
        case "$entry" in
            *.py) printf 'rm -f -- %s/__pycache__/%s.*.pyc\n' "${path%/*}" "$(basename "$entry" .py)" ;;
            *) [ -d "$work/extra-$1/opt/taskserver/$entry" ] \
                && printf '[ ! -d %s ] || find %s -depth -type d -name __pycache__ -exec rm -rf {} +\n' "$path" "$path" ;;
        esac
    done < <(extra_entries "$1")
    printf '\nexit 0\n'
}

build_deb_extra() {  # NAME DEB-DEPENDS SUMMARY
    local name=taskserver-$1 tree="$work/deb-$1" shlibs
    deb_tree "$name" "$work/extra-$1" "$tree"
    { printf '#!/bin/sh\nset -e\n'; cat "$here/debian/postinst.opt"; printf '\nexit 0\n'; } > "$tree/DEBIAN/postinst"
    extra_prerm "$1" > "$tree/DEBIAN/prerm"
    chmod 0755 "$tree/DEBIAN/postinst" "$tree/DEBIAN/prerm"
    shlibs=$(shlib_depends "$name" "$work/extra-$1")
    deb_finish "$name" "$tree" "$here/debian/control-extra.in" \
        "taskserver (= $version)${shlibs:+, $shlibs}${2:+, $2}" -e "s/@NAME@/$1/g" -e "s/@SUMMARY@/$3/"
}

elf_requires() {  # PAYLOAD_DIR: rpm's own ELF dependency generator (the spec turns the automatic scan off)
    find "$1" -name '*.so*' -type f | /usr/lib/rpm/elfdeps --requires | sort -u | paste -sd ' '
}

# A subpackage of the spec per optional part; the main package excludes what they hold.
rpm_extras() {
    local line name rpm_requires summary entry reqs
    for line in "${extras[@]}"; do
        IFS='|' read -r name _ _ rpm_requires summary <<< "$line"
        reqs=$(elf_requires "$work/extra-$name")
        printf '\n%%package -n taskserver-%s\nSummary: %s\nLicense: %s\n' "$name" "$summary" \
            "$(cat "$work/$name.license")"
        printf 'AutoReqProv: no\nRequires: taskserver = %%{version}-%%{release}\n'
        [ -z "$reqs$rpm_requires" ] || printf 'Requires: %s\n' "$reqs${rpm_requires:+ $rpm_requires}"
        [ -n "$reqs" ] || printf 'BuildArch: noarch\n'  # pure Python: one package for every architecture
        printf '\n%%description -n taskserver-%s\n' "$name"
        printf 'This package adds an optional part of taskserver, the pip extra\ntaskserver[%s], to the' "$name"
        printf ' installation under /opt/taskserver.\n\n%%files -n taskserver-%s\n' "$name"
        printf '%%license LICENSE\n%%doc README.md\n'
        # a module in one of the base's directories has its bytecode in the base's __pycache__: it is the part's
        while read -r entry; do
            case "$entry" in
                */*.py) printf '/opt/taskserver/%s\n/opt/taskserver/%s/__pycache__/%s.cpython-%s.pyc\n' "$entry" \
                    "${entry%/*}" "$(basename "$entry" .py)" "${pyver/./}" ;;
                *) printf '/opt/taskserver/%s\n' "$entry" ;;
            esac
        done < <(extra_entries "$name") | tee -a "$work/rpm.excludes.$name"
        sed 's/^/%exclude /' "$work/rpm.excludes.$name" >> "$work/rpm.excludes"
    done
}

build_rpm() {
    local top="$work/rpm" spec="$work/taskserver.spec" line base_requires
    mkdir -p "$top"
    base_requires=$(elf_requires "$stage")
    "$python" "$here/copyright.py" "$here/debian/copyright" "$here/licenses" "$stage" > "$work/copyright"
    : > "$work/rpm.excludes"
    rpm_extras > "$work/rpm.extras"
    # the spec ends with the main package's %files: the excludes belong there
    { cat "$here/rpm/taskserver.spec.in" "$work/rpm.excludes" "$work/rpm.extras"; echo; cat "$work/rpm.snippets"; } \
        > "$spec"
    for line in "${extras[@]}"; do
        cp -a "$work/extra-${line%%|*}/opt/." "$stage/opt/"  # one buildroot; %files tell the packages apart
    done
    rpmbuild -bb --quiet --define "_topdir $top" --define "stage $stage" --define "pkg_version $upstream" \
        --define "pkg_release $revision" --define "pyver $pyver" --define "python3 $python" \
        --define "pkg_license $license" --define "pkg_url $url" --define "pkg_packager $packager" \
        --define "license_file $work/copyright" --define "readme_file $repo/README.md" \
        --define "changelog_date $(LC_ALL=C date -u -d @"$epoch" '+%a %b %d %Y')" \
        ${base_requires:+--define "elf_requires $base_requires"} "$spec" >/dev/null
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -printf "$out/%f\n"
}

build_debs() {
    local line name deb_depends summary
    build_deb
    for line in "${extras[@]}"; do
        IFS='|' read -r name _ deb_depends _ summary <<< "$line"
        build_deb_extra "$name" "$deb_depends" "$summary"
    done
}

case "$what" in
    deb) build_debs ;;
    rpm) build_rpm ;;
    all) build_debs; build_rpm ;;
esac
