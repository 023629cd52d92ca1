#!/bin/sh
# shellcheck shell=sh
#
# breadboard installer.
#
#   curl -fsSL https://github.com/breadboard-dev/breadboard/releases/latest/download/install.sh | sh
#   curl -fsSL .../install.sh | sh -s -- --version 0.1.0 --no-modify-path
#   curl -fsSL .../install.sh | env BREADBOARD_INSTALL_DIR=/opt/bin sh
#
# POSIX sh (dash, bash, busybox ash), shellcheck clean. Everything runs inside main(), called on the last line, so a
# truncated download cannot run half a script. `set -u` but not `set -e`: every failure is handled explicitly.
# Layout, environment variables and exit codes: docs/distribution.md.
#
# Sourcing with BREADBOARD_INSTALLER_NO_MAIN=1 defines the functions without running main (used by the tests).

set -u

# The default release location: this repository's GitHub releases. BREADBOARD_RELEASES_URL (a release tree:
# <base>/latest/manifest.json, <base>/<version>/...) or BREADBOARD_DOWNLOAD_URL (one version's directory) override it.
BB_GITHUB_RELEASES="https://github.com/breadboard-dev/breadboard/releases"
# Every target a release may ship (shown when this platform has none).
BB_KNOWN_TARGETS="x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-unknown-linux-gnu x86_64-apple-darwin aarch64-apple-darwin"

# Exit codes (docs/distribution.md).
EX_FAIL=1
EX_USAGE=2
EX_PLATFORM=3
EX_NETWORK=4
EX_NOT_FOUND=5
EX_CHECKSUM=6
EX_VERIFY=7

BB_QUIET=0
BB_TMP=""
BB_LOCK=""
BB_LOCK_TMP=""
BB_LOCK_TIMEOUT=300

say() {
    [ "$BB_QUIET" = 1 ] || printf '%s\n' "$*" >&2
}

err() {
    printf 'breadboard-install: error: %s\n' "$*" >&2
}

die() {
    # die CODE MESSAGE...
    bb_code=$1
    shift
    err "$*"
    exit "$bb_code"
}

usage() {
    cat <<'EOF'
Install breadboard (a native CLI) from a release.

Usage: install.sh [OPTIONS]
       curl -fsSL <url>/install.sh | sh -s -- [OPTIONS]

Options:
  --version V        install version V (default: the latest release)
  --archive FILE     offline install from a local breadboard-<version>-<target>.tar.gz; its checksum comes from
                     FILE.sha256 or a SHA256SUMS in the same directory
  --no-modify-path   do not add the install directory to PATH in shell profiles
  --engine           then run `breadboard engine install`
  -y, --yes          accepted for compatibility: the installer never prompts
  -q, --quiet        print errors only
  -h, --help         print this help

Environment:
  BREADBOARD_INSTALL_DIR    where the binary goes (default ~/.breadboard/bin)
  BREADBOARD_HOME           breadboard's data root, holds the install receipt (default ~/.breadboard)
  BREADBOARD_RELEASES_URL   base of a release tree (<base>/latest/manifest.json, <base>/<version>/...)
  BREADBOARD_DOWNLOAD_URL   one version's directory (wins over BREADBOARD_RELEASES_URL)
  BREADBOARD_NO_MODIFY_PATH=1   same as --no-modify-path
  BREADBOARD_LOCK_TIMEOUT   seconds to wait for another install or upgrade (default 300)
  Plain http:// URLs are accepted only for loopback hosts (127.0.0.1, localhost, [::1]).
EOF
}

# ---------------------------------------------------------------------------------------------------------- helpers

has() {
    command -v "$1" >/dev/null 2>&1
}

# Reject anything but a plain version string: it ends up in URLs and file names.
valid_version() {
    case "$1" in
        "" | *[!0-9A-Za-z.+-]* | [!0-9]*) return 1 ;;
    esac
    return 0
}

# url_refusal URL: why URL is refused (nothing when it is accepted): https anywhere, http only for loopback.
url_refusal() {
    case "$1" in
        https://*) ;;
        http://*@*) echo "plain http with credentials in the URL (they could hide the host)" ;;
        http://127.0.0.1 | http://127.0.0.1[:/]* | http://localhost | http://localhost[:/]* | http://\[::1\] | http://\[::1\][:/]*) ;;
        http://*) echo "plain http is accepted only for loopback hosts (127.0.0.1, localhost, [::1]); use https" ;;
        *) echo "unsupported URL (need https:// or a loopback http://)" ;;
    esac
}

# check_url URL WHERE: refuses (exit 2) a URL taken from WHERE before any request is made.
check_url() {
    bb_why=$(url_refusal "$1")
    [ -z "$bb_why" ] || die "$EX_USAGE" "refusing $1 (from $2): $bb_why; use an https:// URL, or unset $2"
}

json_escape() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

# The top-level "version" of a manifest written by scripts/dist. Splitting on , and { copes with both one key per
# line and compact JSON; artifacts carry no "version" key, and versions/URLs never contain commas.
manifest_version() {
    tr ',{}' '\n' <"$1" | sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*$/\1/p' | head -n 1
}

# ------------------------------------------------------------------------------------------------------- detection

# ldd says which libc the system runs on (musl's ldd prints its name, and exits 1). Only without an answer from ldd
# does a musl loader count: Debian's `musl` package puts /lib/ld-musl-* on glibc systems too.
is_musl() {
    bb_ldd=$(ldd --version 2>&1)
    case "$bb_ldd" in
        *musl*) return 0 ;;
        *GLIBC* | *"GNU libc"* | *"GNU C Library"*) return 1 ;;
    esac
    for bb_f in /lib/ld-musl-*; do
        [ -e "$bb_f" ] && return 0
    done
    return 1
}

# detect_targets: the target triples this machine can run, best first (a static musl build is preferred on Linux:
# it runs on glibc and musl systems alike). Prints nothing and returns 1 for an unsupported OS/arch.
detect_targets() {
    bb_os=$(uname -s 2>/dev/null || echo unknown)
    bb_arch=$(uname -m 2>/dev/null || echo unknown)
    case "$bb_arch" in
        x86_64 | amd64) bb_arch=x86_64 ;;
        aarch64 | arm64) bb_arch=aarch64 ;;
        *) bb_arch="unsupported:$bb_arch" ;;
    esac
    case "$bb_os" in
        Linux)
            case "$bb_arch" in unsupported:*) return 1 ;; esac
            if is_musl; then
                echo "$bb_arch-unknown-linux-musl"
            else
                echo "$bb_arch-unknown-linux-musl $bb_arch-unknown-linux-gnu"
            fi
            ;;
        Darwin)
            case "$bb_arch" in unsupported:*) return 1 ;; esac
            # An x86_64 shell under Rosetta on Apple silicon: install the native build. Compare the value exactly.
            if [ "$bb_arch" = x86_64 ] && [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || echo 0)" = 1 ]; then
                bb_arch=aarch64
            fi
            echo "$bb_arch-apple-darwin"
            ;;
        *) return 1 ;;
    esac
    return 0
}

platform_name() {
    printf '%s/%s' "$(uname -s 2>/dev/null || echo unknown)" "$(uname -m 2>/dev/null || echo unknown)"
}

# ------------------------------------------------------------------------------------------------------ downloads

pick_downloader() {
    if has curl; then
        case "$(command -v curl)" in
            */snap/*) ;; # snap's curl cannot write outside the snap's confinement (cargo-dist, rustup do the same)
            *) echo curl; return 0 ;;
        esac
    fi
    if has wget; then
        echo wget
        return 0
    fi
    return 1
}

# fetch URL FILE: 0 ok, 2 not found (HTTP 404/410), 3 redirected to a refused URL, 1 any other failure (the reason of
# 1 and 3 in $BB_FETCH_ERROR).
#
# Every hop of a redirect chain must pass url_refusal too. curl: --proto =https applies to every transfer, redirects
# included, so an https download never leaves https; --tlsv1.2 is the minimum TLS version. wget has no such switch (GNU
# wget's --https-only applies to recursive downloads only and a redirect to plain http is followed), so for wget, and
# for curl from a loopback http URL, the headers of every response (curl -D, wget -S) are checked afterwards: a download
# that was redirected to a refused URL is thrown away, and nothing it fetched is used.
fetch() {
    BB_FETCH_ERROR=""
    bb_errf="$BB_TMP/fetch.err"
    bb_hdrf="$BB_TMP/fetch.headers"
    : >"$bb_hdrf"
    case "$1" in https://*) bb_https=1 ;; *) bb_https=0 ;; esac
    if [ "$BB_DL" = curl ]; then
        if [ "$bb_https" = 1 ]; then
            bb_code=$(curl --proto '=https' --tlsv1.2 -sSL --fail --retry 3 --connect-timeout 20 \
                -w '%{http_code}' -D "$bb_hdrf" -o "$2" "$1" 2>"$bb_errf")
        else
            bb_code=$(curl -sSL --fail --retry 3 --connect-timeout 20 -w '%{http_code}' -D "$bb_hdrf" \
                -o "$2" "$1" 2>"$bb_errf")
        fi
        bb_rc=$?
        bb_bad=$(redirect_refusal "$bb_hdrf")
        if [ -n "$bb_bad" ]; then
            rm -f "$2"
            BB_FETCH_ERROR=$bb_bad
            return 3
        fi
        [ "$bb_rc" = 0 ] && return 0
        rm -f "$2"
        case "$bb_code" in
            404 | 410) return 2 ;;
        esac
        BB_FETCH_ERROR="curl exit $bb_rc${bb_code:+, HTTP $bb_code}: $(tail -n 1 "$bb_errf" 2>/dev/null)"
        return 1
    fi
    # GNU wget: -nv still prints the HTTP error (-q would hide the 404), --secure-protocol=TLSv1_2 is a minimum (TLS
    # 1.3 still negotiates). busybox wget prints errors even with -q; it has no TLS options, and whether it checks
    # certificates depends on how it was built (pick_downloader prefers curl whenever there is one).
    if wget --version 2>/dev/null | grep -q 'GNU Wget'; then
        if [ "$bb_https" = 1 ]; then
            wget -nv -S --secure-protocol=TLSv1_2 -O "$2" "$1" 2>"$bb_errf"
        else
            wget -nv -S -O "$2" "$1" 2>"$bb_errf"
        fi
    else
        if [ "$bb_https" = 1 ] && [ -z "${BB_BUSYBOX_NOTED:-}" ]; then
            BB_BUSYBOX_NOTED=1
            say "note: downloading with busybox wget (no curl found): whether it checks TLS certificates depends on how it was built; install curl to be sure"
        fi
        wget -q -S -O "$2" "$1" 2>"$bb_errf"
    fi
    bb_rc=$?
    bb_bad=$(redirect_refusal "$bb_errf")
    if [ -n "$bb_bad" ]; then
        rm -f "$2"
        BB_FETCH_ERROR=$bb_bad
        return 3
    fi
    [ "$bb_rc" = 0 ] && return 0
    rm -f "$2"
    # The status lines only: -S also prints headers, whose values may hold any number.
    if grep -Eq '(HTTP/[0-9.]+|ERROR) (404|410)([^0-9]|$)' "$bb_errf" 2>/dev/null; then
        return 2
    fi
    BB_FETCH_ERROR="wget exit $bb_rc: $(grep -v '^ ' "$bb_errf" | tail -n 1)"
    return 1
}

# redirect_refusal FILE: the first redirect (a Location header in curl -D or wget -S output) to a refused URL, and why.
redirect_refusal() {
    sed -n 's/^[[:space:]]*[Ll][Oo][Cc][Aa][Tt][Ii][Oo][Nn]:[[:space:]]*//p' "$1" 2>/dev/null | tr -d '\r' |
        while IFS= read -r bb_loc; do
            # A relative Location keeps the scheme and host of the URL it came from, which were checked.
            case "$bb_loc" in
                *://*)
                    bb_why=$(url_refusal "$bb_loc")
                    if [ -n "$bb_why" ]; then
                        echo "the server redirected to $bb_loc: $bb_why"
                        break
                    fi
                    ;;
            esac
        done
}

# fetch_or_die URL FILE WHAT: a 404 means WHAT does not exist.
fetch_or_die() {
    fetch "$1" "$2"
    case $? in
        0) return 0 ;;
        2) die "$EX_NOT_FOUND" "$3 does not exist: $1 returned 404 Not Found" ;;
        3) die "$EX_NETWORK" "refusing the download of $1: $BB_FETCH_ERROR (nothing it fetched is used)" ;;
        *) die "$EX_NETWORK" "network error while downloading $1 ($BB_FETCH_ERROR)" ;;
    esac
}

sha256_of() {
    if has sha256sum; then
        sha256sum "$1" | awk '{print $1}'
    elif has shasum; then
        shasum -a 256 "$1" | awk '{print $1}'
    elif has openssl; then
        openssl dgst -sha256 "$1" | awk '{print $NF}'
    else
        return 1
    fi
}

# expected_sha SUMSFILE NAME
expected_sha() {
    awk -v n="$2" '$2 == n || $2 == ("*" n) { print $1; exit }' "$1"
}

verify_sha256() {
    # verify_sha256 FILE EXPECTED NAME
    if [ -z "$2" ]; then
        die "$EX_CHECKSUM" "no checksum is known for $3: refusing to install an unverified binary"
    fi
    bb_actual=$(sha256_of "$1") || die "$EX_CHECKSUM" "no sha256 tool found (sha256sum, shasum or openssl): cannot verify $3"
    if [ "$bb_actual" != "$2" ]; then
        die "$EX_CHECKSUM" "checksum mismatch for $3: expected sha256 $2, got $bb_actual; nothing was installed"
    fi
    say "verified sha256 of $3"
}

# --------------------------------------------------------------------------------------------- locking, cleanup

cleanup() {
    [ -n "$BB_TMP" ] && rm -rf "$BB_TMP"
    [ -n "$BB_LOCK_TMP" ] && rm -rf "$BB_LOCK_TMP"
    release_lock
    BB_TMP=""
    BB_LOCK_TMP=""
}

# The install lock, shared with `breadboard upgrade` (src/selfupdate/install_lock.rs implements the same protocol):
# $BREADBOARD_HOME/install.lock is a directory holding its holder's pid in the file `pid`.
# - Taking it: a complete lock is made under a temp name (install.lock.tmp.<pid>) and renamed into place; rename(2)
#   replaces no non-empty directory, so it fails while another lock is there, and a lock never exists without its pid.
# - Releasing it: only by the process whose pid it holds, by renaming it aside (install.lock.old.<pid>), then removing
#   that.
# - Stale locks: one whose holder is gone is claimed by renaming its `pid` to `pid.taken.<taker's pid>` inside it: only
#   one waiter's rename of that file succeeds, and a waiter whose claimed pid file turns out to be a live holder's (the
#   lock changed after it looked) puts it back. The claimant then renames the whole lock aside and removes it. A lock
#   without a pid file is stale once it is BB_LOCK_STALE_AFTER seconds old (younger, it may be mid-claim): a claim
#   left by a dead claimant is taken over the same way, an empty one is removed with rmdir (which fails once anything
#   is in it), anything else is renamed aside and checked. Nothing is ever removed by name and recreated, so two
#   waiters that both see a stale lock never both hold the lock.
BB_LOCK_STALE_AFTER=5

# alive PID: whether a process with this pid exists (kill -0 fails for another user's process too: /proc tells).
alive() {
    kill -0 "$1" 2>/dev/null || [ -d "/proc/$1" ]
}

# pid_in FILE: the pid FILE holds, or nothing (no file, or not a pid).
pid_in() {
    bb_p=$(cat "$1" 2>/dev/null) || return 0
    case "$bb_p" in "" | *[!0-9]* | 0*) ;; *) printf '%s' "$bb_p" ;; esac
}

lock_pid() {
    pid_in "$1/pid"
}

# lock_taker LOCK: the pid of the waiter whose claim (pid.taken.<pid>) is in LOCK, or nothing.
lock_taker() {
    for bb_t in "$1"/pid.taken.*; do
        bb_t=${bb_t##*/pid.taken.}
        case "$bb_t" in "" | *[!0-9]* | 0*) ;; *) printf '%s' "$bb_t"; return 0 ;; esac
    done
}

# age_of PATH: seconds since PATH was modified, or nothing when this system cannot tell (stat and date +%s are not
# POSIX; GNU, BSD/macOS and busybox have them).
age_of() {
    bb_now=$(date +%s 2>/dev/null) || return 0
    bb_m=$(stat -c %Y "$1" 2>/dev/null || stat -f %m "$1" 2>/dev/null) || return 0
    case "$bb_now$bb_m" in "" | *[!0-9]*) return 0 ;; esac
    echo $((bb_now - bb_m))
}

# try_lock LOCK: 0 when this process now holds LOCK, 1 when another lock is in the way, 2 when nothing can be created.
try_lock() {
    BB_LOCK_TMP="$1.tmp.$$"
    rm -rf "$BB_LOCK_TMP"
    if ! mkdir "$BB_LOCK_TMP" 2>/dev/null || ! echo "$$" >"$BB_LOCK_TMP/pid"; then
        rm -rf "$BB_LOCK_TMP"
        BB_LOCK_TMP=""
        return 2
    fi
    # mv has no "fail if it exists": over an existing directory it moves ours inside it (which is taken back out), so
    # it is not tried while a lock is there: that would also make an old lock look new.
    if { [ ! -e "$1" ] && [ ! -L "$1" ]; } && mv "$BB_LOCK_TMP" "$1" 2>/dev/null; then
        if [ -d "$1/${BB_LOCK_TMP##*/}" ]; then
            rm -rf "${1:?}/${BB_LOCK_TMP##*/}"
        elif [ "$(lock_pid "$1")" = "$$" ]; then
            BB_LOCK=$1
            BB_LOCK_TMP=""
            return 0
        fi
    fi
    rm -rf "$BB_LOCK_TMP"
    BB_LOCK_TMP=""
    return 1
}

# remove_claimed LOCK: removes a lock this process has claimed (nobody else can change it now): aside, then away. A
# second rm: another installer's mv may have just put its temp lock inside (see try_lock).
remove_claimed() {
    rm -rf "$1.old.$$"
    mv "$1" "$1.old.$$" 2>/dev/null || return 0
    rm -rf "$1.old.$$" 2>/dev/null || rm -rf "$1.old.$$"
}

# take_over LOCK: takes the stale LOCK away; fails when another waiter got there first or LOCK changed meanwhile.
take_over() {
    bb_claim="$1/pid.taken.$$"
    bb_holder=$(lock_pid "$1")
    if [ -n "$bb_holder" ]; then
        alive "$bb_holder" && return 1
        mv "$1/pid" "$bb_claim" 2>/dev/null || return 1
        if [ "$(pid_in "$bb_claim")" != "$bb_holder" ]; then
            mv -f "$bb_claim" "$1/pid" 2>/dev/null # a live lock taken in between: its pid goes back
            return 1
        fi
        remove_claimed "$1"
        BB_TOOK="pid $bb_holder, which held $1, is no longer running"
        return 0
    fi
    bb_taker=$(lock_taker "$1")
    if [ -n "$bb_taker" ]; then
        alive "$bb_taker" && return 1
        mv "$1/pid.taken.$bb_taker" "$bb_claim" 2>/dev/null || return 1
        remove_claimed "$1"
        BB_TOOK="pid $bb_taker was killed while taking over $1"
        return 0
    fi
    # No pid file: stale only once old enough. Without stat or date +%s, the seconds this installer has seen it.
    bb_age=$(age_of "$1")
    bb_age=${bb_age:-$bb_pidless}
    [ "$bb_age" -ge "$BB_LOCK_STALE_AFTER" ] || return 1
    BB_TOOK="$1 had no pid file and was $bb_age s old"
    rmdir "$1" 2>/dev/null && return 0
    rm -rf "$1.old.$$"
    mv "$1" "$1.old.$$" 2>/dev/null || return 1
    if [ -z "$(lock_pid "$1.old.$$")$(lock_taker "$1.old.$$")" ]; then
        rm -rf "$1.old.$$"
        return 0
    fi
    [ -e "$1" ] || mv "$1.old.$$" "$1" 2>/dev/null || rm -rf "$1.old.$$" # a live lock: put back
    return 1
}

# release_lock: removes the lock if this process still holds it (its pid is ours).
release_lock() {
    bb_try=0
    while [ -n "$BB_LOCK" ] && [ "$bb_try" -lt 5 ]; do
        bb_try=$((bb_try + 1))
        if [ "$(lock_pid "$BB_LOCK")" = "$$" ]; then
            remove_claimed "$BB_LOCK"
            break
        fi
        # Not ours for the moment? A waiter that took this lock for a stale one holds its pid file, then puts it back
        # (maybe already: then the next look finds it).
        if [ "$(pid_in "$BB_LOCK/pid.taken.$(lock_taker "$BB_LOCK")")" = "$$" ]; then
            sleep 1
        fi
    done
    BB_LOCK=""
}

# take_lock HOME: waits for the install lock, up to BB_LOCK_TIMEOUT seconds.
take_lock() {
    bb_lock="$1/install.lock"
    bb_waited=0
    bb_pidless=0
    while :; do
        try_lock "$bb_lock"
        case $? in
            0) return 0 ;;
            2) die "$EX_FAIL" "cannot create $bb_lock.tmp.$$ (is $1 writable?)" ;;
        esac
        if [ -d "$bb_lock" ] && [ ! -L "$bb_lock" ]; then
            if take_over "$bb_lock"; then
                say "removed a stale install lock: $BB_TOOK"
                continue
            fi
        elif [ -e "$bb_lock" ] || [ -L "$bb_lock" ]; then
            die "$EX_FAIL" "$bb_lock is not a lock directory; if no breadboard install or upgrade is running, remove it: rm -f $(sh_quote "$bb_lock")"
        else
            continue # released in between: try again at once
        fi
        bb_holder=$(lock_pid "$bb_lock")
        [ -n "$bb_holder" ] && bb_pidless=0 || bb_pidless=$((bb_pidless + 1))
        if [ "$bb_waited" = 0 ]; then
            say "waiting for another breadboard install or upgrade to finish (lock $bb_lock${bb_holder:+, pid $bb_holder})"
        fi
        if [ "$bb_waited" -ge "$BB_LOCK_TIMEOUT" ]; then
            if [ -n "$bb_holder" ]; then
                die "$EX_FAIL" "another breadboard install or upgrade (pid $bb_holder) still holds $bb_lock after $BB_LOCK_TIMEOUT s; wait for it, or if pid $bb_holder is not a breadboard install or upgrade (check: ps -p $bb_holder), remove the lock: rm -rf $(sh_quote "$bb_lock")"
            fi
            die "$EX_FAIL" "$bb_lock (no pid in it) is still there after $BB_LOCK_TIMEOUT s; if no breadboard install or upgrade is running, remove it: rm -rf $(sh_quote "$bb_lock")"
        fi
        bb_waited=$((bb_waited + 1))
        sleep 1
    done
}

# clean_leftovers HOME DIR: what a killed install or upgrade left behind (lock temp dirs in HOME, staged binaries in
# DIR). Each name carries the pid that made it; only a dead pid's are removed. Call while holding the lock.
clean_leftovers() {
    for bb_f in "$1"/install.lock.tmp.* "$1"/install.lock.old.* "$2"/.breadboard.new.* "$2"/.breadboard.previous.* \
        "$2"/.breadboard-upgrade.*; do
        [ -e "$bb_f" ] || [ -L "$bb_f" ] || continue
        bb_p=${bb_f##*/}
        bb_p=${bb_p#install.lock.tmp.}
        bb_p=${bb_p#install.lock.old.}
        bb_p=${bb_p#.breadboard.new.}
        bb_p=${bb_p#.breadboard.previous.}
        bb_p=${bb_p#.breadboard-upgrade.}
        bb_p=${bb_p%%.*}
        case "$bb_p" in "" | *[!0-9]*) continue ;; esac
        [ "$bb_p" = "$$" ] || alive "$bb_p" || rm -rf "$bb_f"
    done
}

# ------------------------------------------------------------------------------------------------------ PATH edits

BB_MARK_BEGIN="# >>> breadboard >>>"
BB_MARK_END="# <<< breadboard <<<"

sh_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# write_block FILE BLOCKFILE: put the marker block in FILE, replacing an existing one in place. Prints "added",
# "updated" or "unchanged". The file is written through (cat >), so a symlinked dotfile and its mode survive.
write_block() {
    bb_file=$1
    bb_new="$BB_TMP/rc.new"
    if [ -f "$bb_file" ] && grep -qxF "$BB_MARK_BEGIN" "$bb_file"; then
        awk -v b="$BB_MARK_BEGIN" -v e="$BB_MARK_END" -v blk="$2" '
            $0 == b { while ((getline line < blk) > 0) print line; skip = 1; next }
            skip && $0 == e { skip = 0; next }
            !skip { print }' "$bb_file" >"$bb_new" || return 1
        if cmp -s "$bb_new" "$bb_file"; then
            echo unchanged
            return 0
        fi
        cat "$bb_new" >"$bb_file" || return 1
        echo updated
        return 0
    fi
    mkdir -p "$(dirname "$bb_file")" || return 1
    : >"$bb_new"
    if [ -s "$bb_file" ]; then
        # Keep a separating newline, and never glue our marker onto an unterminated last line.
        [ "$(tail -c 1 "$bb_file" | od -An -c | tr -d ' ')" = '\n' ] || echo >>"$bb_new"
        echo >>"$bb_new"
    fi
    cat "$2" >>"$bb_new" || return 1
    cat "$bb_new" >>"$bb_file" || return 1
    echo added
}

modify_path() {
    # modify_path DIR: sets BB_RC_FILES (a JSON list body) and reports each change.
    bb_dir=$1
    bb_q=$(sh_quote "$bb_dir")
    bb_shblk="$BB_TMP/block.sh"
    {
        echo "$BB_MARK_BEGIN"
        echo "# Added by the breadboard installer; remove this block to undo."
        echo "case \":\${PATH}:\" in *:$bb_q:*) ;; *) export PATH=$bb_q\":\${PATH}\" ;; esac"
        echo "$BB_MARK_END"
    } >"$bb_shblk"
    bb_fishblk="$BB_TMP/block.fish"
    {
        echo "$BB_MARK_BEGIN"
        echo "# Added by the breadboard installer; delete this file to undo."
        echo "if not contains -- $bb_q \$PATH"
        echo "    set -gx PATH $bb_q \$PATH"
        echo "end"
        echo "$BB_MARK_END"
    } >"$bb_fishblk"

    bb_zdot=${ZDOTDIR:-$HOME}
    bb_fishdir="${XDG_CONFIG_HOME:-$HOME/.config}/fish"
    # .profile always (sh, dash, and bash login shells without .bash_profile); bash and zsh rc files when the shell
    # is installed or the file exists; .bash_profile only if it exists (it shadows .profile for bash login shells);
    # fish through its own conf.d file.
    bb_targets="$HOME/.profile"
    if [ -f "$HOME/.bashrc" ] || has bash; then bb_targets="$bb_targets
$HOME/.bashrc"; fi
    if [ -f "$HOME/.bash_profile" ]; then bb_targets="$bb_targets
$HOME/.bash_profile"; fi
    if [ -f "$bb_zdot/.zshrc" ] || has zsh; then bb_targets="$bb_targets
$bb_zdot/.zshrc"; fi
    if [ -d "$bb_fishdir" ] || has fish; then bb_targets="$bb_targets
$bb_fishdir/conf.d/breadboard.fish"; fi

    BB_RC_FILES=""
    BB_CHANGED=""
    BB_UNCHANGED=""
    bb_oldifs=$IFS
    IFS='
'
    for bb_rc in $bb_targets; do
        IFS=$bb_oldifs
        case "$bb_rc" in
            *.fish) bb_blk=$bb_fishblk ;;
            *) bb_blk=$bb_shblk ;;
        esac
        if bb_res=$(write_block "$bb_rc" "$bb_blk"); then
            [ -n "$BB_RC_FILES" ] && BB_RC_FILES="$BB_RC_FILES, "
            BB_RC_FILES="$BB_RC_FILES\"$(json_escape "$bb_rc")\""
            case "$bb_res" in
                added) BB_CHANGED="${BB_CHANGED}  added PATH block to $bb_rc
" ;;
                updated) BB_CHANGED="${BB_CHANGED}  updated PATH block in $bb_rc
" ;;
                *) BB_UNCHANGED="$BB_UNCHANGED $bb_rc" ;;
            esac
        else
            err "could not update $bb_rc (continuing)"
        fi
    done
    IFS=$bb_oldifs
}

# ------------------------------------------------------------------------------------------------------------- main

main() {
    bb_version=""
    bb_archive=""
    bb_modify_path=1
    bb_engine=0
    case "${BREADBOARD_NO_MODIFY_PATH:-}" in 1 | true | yes) bb_modify_path=0 ;; esac

    while [ $# -gt 0 ]; do
        case "$1" in
            --version) [ $# -ge 2 ] || die "$EX_USAGE" "--version needs a value"; bb_version=$2; shift ;;
            --version=*) bb_version=${1#--version=} ;;
            --archive) [ $# -ge 2 ] || die "$EX_USAGE" "--archive needs a file"; bb_archive=$2; shift ;;
            --archive=*) bb_archive=${1#--archive=} ;;
            --no-modify-path) bb_modify_path=0 ;;
            --engine) bb_engine=1 ;;
            -y | --yes) ;;
            -q | --quiet) BB_QUIET=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "$EX_USAGE" "unknown option: $1" ;;
        esac
        shift
    done
    if [ -n "$bb_version" ]; then
        bb_version=${bb_version#v}
        valid_version "$bb_version" || die "$EX_USAGE" "not a valid version: $bb_version"
    fi

    case "${BREADBOARD_LOCK_TIMEOUT:-}" in
        "") ;;
        *[!0-9.]* | *.*.* | .*) die "$EX_USAGE" "BREADBOARD_LOCK_TIMEOUT=$BREADBOARD_LOCK_TIMEOUT is not a number of seconds (unset it, or set e.g. 300)" ;;
        *) BB_LOCK_TIMEOUT=${BREADBOARD_LOCK_TIMEOUT%%.*} ;;
    esac

    if [ -z "${HOME:-}" ]; then
        HOME=$(getent passwd "$(id -un 2>/dev/null)" 2>/dev/null | cut -d: -f6)
        [ -n "$HOME" ] || die "$EX_FAIL" "HOME is not set and could not be found; set HOME or BREADBOARD_INSTALL_DIR"
        export HOME
    fi
    bb_home=${BREADBOARD_HOME:-$HOME/.breadboard}
    bb_dir=${BREADBOARD_INSTALL_DIR:-$bb_home/bin}
    case "$bb_dir" in /*) ;; *) bb_dir="$(pwd)/$bb_dir" ;; esac
    case "$bb_home" in /*) ;; *) bb_home="$(pwd)/$bb_home" ;; esac

    # Where releases come from: checked (loopback-only http) before any request.
    bb_releases=${BREADBOARD_RELEASES_URL:-}
    bb_download=${BREADBOARD_DOWNLOAD_URL:-}
    [ -n "$bb_releases" ] && check_url "$bb_releases" BREADBOARD_RELEASES_URL
    [ -n "$bb_download" ] && check_url "$bb_download" BREADBOARD_DOWNLOAD_URL
    bb_releases=${bb_releases%/}
    bb_download=${bb_download%/}
    bb_receipt_releases=${bb_releases:-$BB_GITHUB_RELEASES}

    # Platform first: an unsupported one fails before any download.
    bb_targets=$(detect_targets) ||
        die "$EX_PLATFORM" "unsupported platform: $(platform_name); breadboard is built for: $BB_KNOWN_TARGETS"

    # The home holds session data, logs and the engine's token: private to this user (0700), whatever the umask.
    # Only the home itself: its parents are created as usual.
    if [ ! -d "$bb_home" ]; then
        mkdir -p "$(dirname "$bb_home")" && mkdir -m 700 "$bb_home" 2>/dev/null || [ -d "$bb_home" ] ||
            die "$EX_FAIL" "cannot create $bb_home"
    fi
    mkdir -p "$bb_dir" || die "$EX_FAIL" "cannot create the install directory $bb_dir"
    [ -w "$bb_dir" ] || die "$EX_FAIL" "the install directory $bb_dir is not writable (set BREADBOARD_INSTALL_DIR)"

    trap cleanup EXIT
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap 'cleanup; exit 129' HUP
    BB_TMP=$(mktemp -d "$bb_home/.install-tmp.XXXXXX") || die "$EX_FAIL" "cannot create a temporary directory in $bb_home"

    if [ -n "$bb_archive" ]; then
        # ---- offline: a local tarball; its checksum from FILE.sha256 or a SHA256SUMS beside it.
        [ -f "$bb_archive" ] || die "$EX_FAIL" "no such archive: $bb_archive"
        bb_name=$(basename "$bb_archive")
        bb_rest=${bb_name#breadboard-}
        bb_rest=${bb_rest%.tar.gz}
        bb_target=""
        for bb_t in $BB_KNOWN_TARGETS; do
            case "$bb_rest" in *-"$bb_t") bb_target=$bb_t; bb_aver=${bb_rest%-"$bb_t"} ;; esac
        done
        if [ -z "$bb_target" ] || ! valid_version "$bb_aver"; then
            die "$EX_USAGE" "cannot tell version and target from $bb_name (expected breadboard-<version>-<target>.tar.gz)"
        fi
        case " $bb_targets " in
            *" $bb_target "*) ;;
            *) die "$EX_PLATFORM" "$bb_name is built for $bb_target, which does not run on $(platform_name) (need one of: $bb_targets)" ;;
        esac
        if [ -n "$bb_version" ] && [ "$bb_version" != "$bb_aver" ]; then
            die "$EX_USAGE" "--version $bb_version does not match the archive ($bb_aver)"
        fi
        bb_version=$bb_aver
        bb_expected=""
        if [ -f "$bb_archive.sha256" ]; then
            bb_expected=$(awk 'NR == 1 { print $1 }' "$bb_archive.sha256")
        elif [ -f "$(dirname "$bb_archive")/SHA256SUMS" ]; then
            bb_expected=$(expected_sha "$(dirname "$bb_archive")/SHA256SUMS" "$bb_name")
        fi
        [ -n "$bb_expected" ] ||
            die "$EX_CHECKSUM" "no checksum for $bb_name: put its sha256 in $bb_archive.sha256 or a SHA256SUMS beside it"
        bb_tarball=$bb_archive
        say "installing breadboard $bb_version ($bb_target) from $bb_archive"
    else
        # ---- online
        BB_DL=$(pick_downloader) || die "$EX_NETWORK" "neither curl nor wget is installed; install one, or use --archive FILE"
        if [ -z "$bb_version" ]; then
            if [ -n "$bb_download" ]; then
                bb_murl="$bb_download/manifest.json"
            elif [ -n "$bb_releases" ]; then
                bb_murl="$bb_releases/latest/manifest.json"
            else
                bb_murl="$BB_GITHUB_RELEASES/latest/download/manifest.json"
            fi
            fetch_or_die "$bb_murl" "$BB_TMP/manifest.json" "the release manifest"
            bb_version=$(manifest_version "$BB_TMP/manifest.json")
            valid_version "$bb_version" || die "$EX_FAIL" "$bb_murl names no valid version (got '$bb_version')"
        fi
        if [ -n "$bb_download" ]; then
            bb_base=$bb_download
        elif [ -n "$bb_releases" ]; then
            bb_base="$bb_releases/$bb_version"
        else
            bb_base="$BB_GITHUB_RELEASES/download/v$bb_version"
        fi
        say "installing breadboard $bb_version from $bb_base"
        fetch_or_die "$bb_base/SHA256SUMS" "$BB_TMP/SHA256SUMS" "breadboard version $bb_version"
        bb_target=""
        for bb_t in $bb_targets; do
            if [ -n "$(expected_sha "$BB_TMP/SHA256SUMS" "breadboard-$bb_version-$bb_t.tar.gz")" ]; then
                bb_target=$bb_t
                break
            fi
        done
        if [ -z "$bb_target" ]; then
            bb_have=$(sed -n "s/^[0-9a-fA-F]*[[:space:]]*\\*\\{0,1\\}breadboard-$bb_version-\\(.*\\)\\.tar\\.gz\$/\\1/p" \
                "$BB_TMP/SHA256SUMS" | tr '\n' ' ')
            die "$EX_PLATFORM" "unsupported platform: release $bb_version has no build for $(platform_name) (looked for: $bb_targets); it ships: ${bb_have:-nothing}"
        fi
        bb_name="breadboard-$bb_version-$bb_target.tar.gz"
        bb_expected=$(expected_sha "$BB_TMP/SHA256SUMS" "$bb_name")
        bb_tarball="$BB_TMP/$bb_name"
        fetch_or_die "$bb_base/$bb_name" "$bb_tarball" "the artifact $bb_name"
    fi

    verify_sha256 "$bb_tarball" "$bb_expected" "$bb_name"
    mkdir "$BB_TMP/x" || die "$EX_FAIL" "cannot create $BB_TMP/x"
    tar -xzf "$bb_tarball" -C "$BB_TMP/x" 2>"$BB_TMP/tar.err" ||
        die "$EX_FAIL" "cannot unpack $bb_name: $(tail -n 1 "$BB_TMP/tar.err")"
    [ -f "$BB_TMP/x/breadboard" ] || die "$EX_FAIL" "$bb_name has no breadboard binary at its root"

    take_lock "$bb_home"
    clean_leftovers "$bb_home" "$bb_dir"

    # Stage inside the install dir (same filesystem, so the final mv is an atomic rename: a running breadboard and
    # the old file stay intact until then), check it runs and reports the expected version, then swap it in.
    bb_stage="$bb_dir/.breadboard.new.$$"
    if ! cp "$BB_TMP/x/breadboard" "$bb_stage" || ! chmod 755 "$bb_stage"; then
        rm -f "$bb_stage"
        die "$EX_FAIL" "cannot write to $bb_dir"
    fi
    bb_out=$("$bb_stage" --version 2>&1)
    if [ "$bb_out" != "breadboard $bb_version" ]; then
        rm -f "$bb_stage"
        die "$EX_VERIFY" "the downloaded binary does not run here or reports the wrong version (expected 'breadboard $bb_version', got: ${bb_out:-nothing}); nothing was installed"
    fi
    # The binary being replaced is linked (or copied) to a temp name first: put back if anything below fails, and
    # only then renamed to breadboard.previous, so the old breadboard.previous is kept until the new binary works.
    bb_bin="$bb_dir/breadboard"
    bb_keep=""
    bb_kept=""
    bb_old=""
    if [ -f "$bb_bin" ]; then
        bb_keep="$bb_dir/.breadboard.previous.$$"
        rm -f "$bb_keep"
        if ! { ln "$bb_bin" "$bb_keep" 2>/dev/null || cp -p "$bb_bin" "$bb_keep" 2>/dev/null; }; then
            rm -f "$bb_stage" "$bb_keep"
            die "$EX_FAIL" "cannot keep a copy of $bb_bin in $bb_dir (it would be put back should the install fail); nothing was installed"
        fi
        bb_old=$("$bb_bin" --version 2>/dev/null || true)
    fi
    if ! mv -f "$bb_stage" "$bb_bin"; then
        rm -f "$bb_stage" "$bb_keep"
        die "$EX_FAIL" "cannot move the new binary into place at $bb_bin; nothing was installed"
    fi
    bb_out=$("$bb_bin" --version 2>&1)
    if [ "$bb_out" != "breadboard $bb_version" ]; then
        bb_undone="nothing was installed"
        if [ -z "$bb_keep" ]; then
            rm -f "$bb_bin"
        elif mv -f "$bb_keep" "$bb_bin"; then
            bb_undone="the binary it replaced was put back"
        else
            bb_undone="the binary it replaced could not be put back; it is $bb_keep: mv -f $(sh_quote "$bb_keep") $(sh_quote "$bb_bin")"
        fi
        die "$EX_VERIFY" "the installed $bb_bin does not run or reports the wrong version (expected 'breadboard $bb_version', got: ${bb_out:-nothing}); $bb_undone"
    fi
    if [ -n "$bb_keep" ]; then
        # Keep the replaced binary for a later `breadboard upgrade --rollback` (not when reinstalling the same one).
        if [ "$bb_old" = "breadboard $bb_version" ]; then
            rm -f "$bb_keep"
        elif mv -f "$bb_keep" "$bb_dir/breadboard.previous"; then
            bb_kept="${bb_old:-the previous binary}"
        else
            rm -f "$bb_keep"
            err "could not keep the replaced binary as $bb_dir/breadboard.previous (continuing)"
        fi
    fi

    BB_RC_FILES=""
    BB_CHANGED=""
    BB_UNCHANGED=""
    if [ "$bb_modify_path" = 1 ]; then
        modify_path "$bb_dir"
    fi

    # The receipt tells `breadboard upgrade` how this copy was installed (so it may replace itself).
    bb_canon="$(cd "$bb_dir" && pwd -P)/breadboard"
    bb_mp=false
    [ "$bb_modify_path" = 1 ] && bb_mp=true
    bb_receipt="$bb_home/install-receipt.json"
    {
        echo "{"
        echo "  \"schema\": 1,"
        echo "  \"method\": \"install.sh\","
        echo "  \"version\": \"$bb_version\","
        echo "  \"target\": \"$bb_target\","
        echo "  \"binary_path\": \"$(json_escape "$bb_canon")\","
        echo "  \"install_dir\": \"$(json_escape "$bb_dir")\","
        echo "  \"modify_path\": $bb_mp,"
        echo "  \"rc_files\": [$BB_RC_FILES],"
        echo "  \"releases_url\": \"$(json_escape "$bb_receipt_releases")\","
        echo "  \"installed_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
        echo "}"
    } >"$bb_receipt.tmp.$$"
    if ! mv -f "$bb_receipt.tmp.$$" "$bb_receipt"; then
        rm -f "$bb_receipt.tmp.$$"
        err "could not write $bb_receipt (breadboard upgrade will not self-update)"
    fi

    cleanup

    say ""
    say "installed breadboard $bb_version ($bb_target) to $bb_bin"
    say "changed:"
    say "  installed $bb_bin"
    [ -n "$bb_kept" ] && say "  kept $bb_kept as $bb_dir/breadboard.previous"
    [ "$BB_QUIET" = 1 ] || printf '%s' "$BB_CHANGED" >&2
    say "  wrote $bb_receipt"
    [ -n "$BB_UNCHANGED" ] && say "already set up (unchanged):$BB_UNCHANGED"
    if [ "$bb_modify_path" = 1 ]; then
        case ":${PATH:-}:" in
            *:"$bb_dir":*) ;;
            *)
                say ""
                say "New shells find breadboard on PATH. To use it in this shell now, run:"
                case "${SHELL:-}" in
                    */fish) say "  set -gx PATH $(sh_quote "$bb_dir") \$PATH" ;;
                    *) say "  export PATH=$(sh_quote "$bb_dir"):\"\$PATH\"" ;;
                esac
                ;;
        esac
    else
        say "PATH was not modified (--no-modify-path); run it as $bb_bin or add $bb_dir to PATH yourself"
    fi

    # Another breadboard earlier on PATH would shadow this one (e.g. an npm global install): say whose it is.
    bb_other=$(command -v breadboard 2>/dev/null || true)
    if [ -n "$bb_other" ] && [ "$bb_other" != "$bb_bin" ] && [ "$bb_other" != "$bb_canon" ]; then
        bb_owner=""
        case "$bb_other $(readlink "$bb_other" 2>/dev/null || true)" in
            *node_modules*) bb_owner=" (installed with npm: remove it with 'npm uninstall -g breadboard-cli')" ;;
            */Cellar/* | */homebrew/*) bb_owner=" (installed with Homebrew)" ;;
        esac
        say ""
        say "warning: $bb_other comes first on PATH and is not this install$bb_owner; put $bb_dir before it or remove it"
    fi

    if [ "$bb_engine" = 1 ]; then
        say ""
        say "running: breadboard engine install"
        "$bb_bin" engine install
        bb_rc=$?
        if [ "$bb_rc" != 0 ]; then
            err "breadboard $bb_version is installed, but 'breadboard engine install' failed (exit $bb_rc); run it again once the cause is fixed"
            exit "$bb_rc"
        fi
    fi
    return 0
}

[ -n "${BREADBOARD_INSTALLER_NO_MAIN:-}" ] || main "$@"
