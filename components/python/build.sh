#!/usr/bin/env bash
# Builds the Python components of this folder with componentize-py.
#
#   components/python/build.sh [NAME...]   build NAME (default: every component folder)
#   components/python/build.sh bindings    write type stubs per world to .bindings/WORLD/
#   components/python/build.sh list        print the component names
#
# A component is a folder with `app.py` (the module componentize-py wraps) and `world` (one
# line: `http-handler`, `http-handler-outbound`, `queue-processor`, `monitor` or
# `processor-and-monitor`, worlds of ../../wit). The .py files of lib/ are copied beside
# app.py. Output: components/target/python/NAME.wasm. A component whose sources, lib/, WIT,
# toolchain and this script are all older than its .wasm is skipped (a build takes ~12 s).
#
# The toolchain (requirements.txt) is installed once into .venv; after that builds are
# offline. Set PYTHON to pick the interpreter (default python3, >= 3.10).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "$here/../../wit" && pwd)
out_dir=$here/../target/python
venv=$here/.venv
python=${PYTHON:-python3}

die() {
    echo "error: $*" >&2
    exit 1
}

components() {
    local dir
    for dir in "$here"/*/; do
        [[ -f $dir/app.py && -f $dir/world ]] && basename "$dir"
    done
}

# The venv with componentize-py, (re)created when requirements.txt or the Python changed.
ensure_toolchain() {
    command -v "$python" >/dev/null ||
        die "$python not found: install Python >= 3.10 (Debian: apt-get install python3 python3-venv)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$python is Python $("$python" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo "(unknown version)"); componentize-py needs Python >= 3.10"
    "$python" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$python has no venv support (Debian: apt-get install python3-venv)"

    local stamp=$venv/.llmchat-stamp wanted
    wanted="$("$python" -V 2>&1) $(command -v "$python")
$(cat "$here/requirements.txt")"
    if [[ -x $venv/bin/componentize-py && -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
        return
    fi
    echo "python: installing the toolchain into ${venv#"$PWD"/} (requirements.txt)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "could not create the venv $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --no-deps -r "$here/requirements.txt" ||
        die "could not install requirements.txt (needs the package registry once)"
    printf '%s' "$wanted" >"$stamp"
}

# The world of a `world` file, and the world it is intersected with (componentize -i), if any.
target_world() {
    case $1 in
    http-handler) echo "llmchat:runtime/http-handler" ;;
    http-handler-outbound) echo "llmchat:runtime/http-handler" ;;
    queue-processor | monitor | processor-and-monitor) echo "llmchat:runtime/$1" ;;
    *) return 1 ;;
    esac
}
intersect_flags() {
    # Without outbound HTTP: see wit/python.wit.
    [[ $1 == http-handler ]] && echo "-i llmchat:python/http-handler-no-outbound"
    return 0
}

# Newest-input check: prints something when a file under the inputs is newer than $1.
newer_input() {
    find "$2" "$here/lib" "$here/wit" "$wit" "$here/build.sh" "$here/requirements.txt" \
        -name __pycache__ -prune -o -newer "$1" -print -quit
}

build_one() {
    local name=$1 dir=$here/$1 world target out stage started size
    [[ -f $dir/app.py && -f $dir/world ]] || die "no component \`$name\` (a folder with app.py and world)"
    world=$(tr -d '[:space:]' <"$dir/world")
    target=$(target_world "$world") || die "$name/world: unknown world \`$world\`"
    out=$out_dir/$name.wasm
    if [[ -f $out && -z $(newer_input "$out" "$dir") ]]; then
        echo "python: $name is up to date"
        return
    fi

    # Build from a copy, so that the interpreter's __pycache__ lands in target/, not here.
    stage=$out_dir/src/$name
    rm -rf "$stage"
    mkdir -p "$stage"
    cp -R "$dir/." "$here/lib/." "$stage/"
    rm -rf "$stage/__pycache__"

    started=$(date +%s.%N)
    # shellcheck disable=SC2046  # intersect_flags prints a list of words
    if ! (cd "$stage" && VIRTUAL_ENV=$venv "$venv/bin/componentize-py" --quiet \
        -d "$wit" -d "$here/wit" -w "$target" componentize $(intersect_flags "$world") \
        -p . app -o "$out.tmp"); then
        rm -f "$out.tmp"
        die "componentize-py failed for \`$name\`"
    fi
    mv -f "$out.tmp" "$out"
    size=$(wc -c <"$out")
    awk -v n="$name" -v w="$world" -v s="$size" -v t0="$started" -v t1="$(date +%s.%N)" \
        'BEGIN { printf "python: built %s (%s) %.1f MB in %.1f s\n", n, w, s / 1e6, t1 - t0 }'
}

bindings() {
    local world
    for world in http-handler queue-processor monitor; do
        rm -rf "$here/.bindings/$world"
        "$venv/bin/componentize-py" --quiet -d "$wit" -d "$here/wit" \
            -w "$(target_world "$world")" bindings "$here/.bindings/$world"
        echo "python: stubs for $world in ${here#"$PWD"/}/.bindings/$world (with lib/ on your editor's path)"
    done
}

case ${1:-} in
list)
    components
    exit
    ;;
bindings)
    ensure_toolchain
    bindings
    exit
    ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit
    ;;
esac

ensure_toolchain
mkdir -p "$out_dir"
if (($# == 0)); then
    mapfile -t names < <(components)
else
    names=("$@")
fi
for name in "${names[@]}"; do
    build_one "$name"
done
