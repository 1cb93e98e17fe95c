#!/bin/sh
# Build jrs_<version>_amd64.deb and jrs_<version>_arm64.deb from dist/jrs.pyz with
# dpkg-deb (no debhelper needed). The two differ only in their Architecture: the
# .pyz carries native code (PyNaCl, cffi) for x86_64 and aarch64 and nothing else,
# so an _all package would install where it cannot run.
#
#   ./build-deb.sh [--version V] [--pyz FILE] [--out DIR]
#
# The version defaults to jrs.__version__. Needs python3, dpkg-deb, gzip.
set -eu
cd "$(dirname "$0")"
PYZ=dist/jrs.pyz
OUT=dist
VERSION=
while [ $# -gt 0 ]; do
    case "$1" in
        --version) VERSION=$2; shift 2 ;;
        --pyz) PYZ=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--version V] [--pyz FILE] [--out DIR]" >&2; exit 2 ;;
    esac
done
[ -f "$PYZ" ] || python3 build_zipapp.py --output "$PYZ" >/dev/null
[ -n "$VERSION" ] || VERSION=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import jrs; print(jrs.__version__)' "$PYZ")
case "$VERSION" in
    [0-9]*) ;;
    *) echo "build-deb.sh: bad version $VERSION (must start with a digit)" >&2; exit 2 ;;
esac
# reproducible: every timestamp is the last commit's (or SOURCE_DATE_EPOCH)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

root=$work/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/init.d" "$root/etc/default" \
    "$root/etc/logrotate.d" "$root/etc/jrs" "$root/lib/systemd/system" \
    "$root/usr/share/man/man1" "$root/usr/share/doc/jrs" "$root/usr/share/lintian/overrides"
install -m 0755 "$PYZ" "$root/usr/bin/jrs"
install -m 0755 init.d/jrs-daemon "$root/etc/init.d/jrs-daemon"
install -m 0644 debian/default "$root/etc/default/jrs"
install -m 0644 debian/logrotate "$root/etc/logrotate.d/jrs"
install -m 0644 examples/etc-jrs/node.master examples/etc-jrs/node.list "$root/etc/jrs/"
install -m 0644 systemd/*.service "$root/lib/systemd/system/"
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
python3 debian/mkman.py --pyz "$PYZ" --date "$date" | gzip -9n >"$root/usr/share/man/man1/jrs.1.gz"
install -m 0644 debian/copyright "$root/usr/share/doc/jrs/copyright"
{
    echo "jrs ($VERSION) unstable; urgency=medium"
    echo
    echo "  * Built from the JRS source tree by build-deb.sh; see README.md."
    echo
    echo " -- JRS maintainers <jrs@example.org>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/jrs/changelog.gz"
install -m 0644 debian/lintian-overrides "$root/usr/share/lintian/overrides/jrs"
install -m 0755 debian/postinst debian/prerm debian/postrm "$root/DEBIAN/"
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
(cd "$root" && find . -type f ! -path './DEBIAN/*' | sed 's|^\./||' | sort | xargs md5sum) \
    >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

for arch in amd64 arm64; do
    cat >"$root/DEBIAN/control" <<CONTROL
Package: jrs
Version: $VERSION
Architecture: $arch
Maintainer: JRS maintainers <jrs@example.org>
Installed-Size: $size
Depends: python3 (>= 3.9)
Section: utils
Priority: optional
Description: batch system that runs HTCondor submit files across machines
 JRS, the Job-Running System, runs command-line jobs across a handful to a
 few thousand Linux machines from HTCondor submit files. A pool is a master
 and nodes sharing one small configuration directory (/etc/jrs) and a
 secret; jobs survive restarts and upgrades of the daemons.
 .
 This package installs the jrs command (a self-contained Python zipapp),
 an init script and systemd units that start the master and the node where
 /etc/jrs names this host, and the jrs(1) manual page.
CONTROL
    touch -d "@$SOURCE_DATE_EPOCH" "$root/DEBIAN/control"
    # gzip: the .pyz inside is deflated already; xz saves 3% and takes ten times longer
    dpkg-deb --root-owner-group -Zgzip --build "$root" "$OUT/jrs_${VERSION}_$arch.deb" >/dev/null
    echo "$OUT/jrs_${VERSION}_$arch.deb"
done
