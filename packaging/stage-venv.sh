#!/bin/bash
# Called by build.sh inside a private mount namespace: builds the payload venv at its real path.
#
#   stage-venv.sh PYTHON STAGE WORK WHEELS [EXTRA=REQUIREMENT ...]
#
# /opt is the staging tree's opt/ here, so every #! line and pyvenv.cfg names /opt/taskserver. The base venv
# holds taskserver and its dependencies. Each EXTRA (an optional part, packaged as taskserver-EXTRA) is then
# installed on top of a copy of the base: the files that appear are that package's payload, copied to
# WORK/extra-EXTRA/, and the base is put back. An extra that changes a file of the base (a dependency
# upgraded by it) fails the build: the two packages would fight over that file.
set -euo pipefail
python=$1 stage=$2 work=$3 wheels=$4
shift 4
venv=/opt/taskserver

mount --bind "$stage/opt" /opt
pip_install() {
    "$venv/bin/python" -B -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        --no-cache-dir --no-compile --no-index --find-links "$wheels" "$@"
}
files() {
    (cd "$venv" && find . ! -type d ! -path '*/__pycache__/*' -printf '%P\n' | LC_ALL=C sort)
}

"$python" -m venv "$venv"
pip_install taskserver
"$venv/bin/python3" -B -m taskserver.installer.cli --emit-maintscripts deb > "$work/deb.snippets"
"$venv/bin/python3" -B -m taskserver.installer.cli --emit-maintscripts rpm > "$work/rpm.snippets"

if [ $# -gt 0 ]; then
    cp -a "$venv" "$work/base-venv"
    files > "$work/base.files"
    (cd "$venv" && find . -type f ! -path '*/__pycache__/*' -exec md5sum {} + | LC_ALL=C sort -k2) \
        > "$work/base.md5sums"
    for spec in "$@"; do
        extra=${spec%%=*}
        pip_install "${spec#*=}"
        files | LC_ALL=C comm -13 "$work/base.files" - > "$work/$extra.files"
        if ! (cd "$venv" && md5sum --quiet -c "$work/base.md5sums" >&2); then
            echo "build.sh: ${spec#*=} changes files of the base venv (above): put that dependency in the base" >&2
            exit 1
        fi
        mkdir -p "$work/extra-$extra/opt/taskserver"
        (cd "$venv" && tar -cf - --no-recursion -T "$work/$extra.files") | tar -xf - -C "$work/extra-$extra/opt/taskserver"
        find "$venv" -mindepth 1 -delete
        cp -a "$work/base-venv/." "$venv/"
    done
    rm -rf "$work/base-venv"
fi
"$venv/bin/python" -B -m pip uninstall -q -y --root-user-action=ignore pip setuptools
rm -f "$venv"/bin/activate* "$venv/bin/Activate.ps1"
