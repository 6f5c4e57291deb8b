#!/usr/bin/env bash
# Builds bpfsnap's Debian package from a built binary:
#
#   tools/deb.sh BINARY OUTDIR     (prints the path of OUTDIR/bpfsnap_VERSION_ARCH.deb)
#
# `make deb` runs it on the release build, tests/package.rs on the test
# build. It uses dpkg-deb rather than cargo-deb: Debian's own tools (dpkg-dev)
# do what a Debian build's debhelper would, so nothing has to be compiled or
# fetched from crates.io for it: dpkg-shlibdeps computes Depends from the
# libraries the binary links (${shlibs:Depends}), dpkg-gencontrol writes the
# control file, dpkg-deb builds the archive. What goes in the package is
# plain files under packaging/ (control, maintainer scripts, systemd units,
# /etc/default files), the man pages and the completions.
#
# DEB_COMPRESS: dpkg-deb's compressor (default xz; the tests use gzip, much
# quicker on an unoptimised binary). DEB_REVISION: the Debian revision
# (default 1).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
out=$2
[[ -x $binary ]] || { echo "deb: $binary: no such executable" >&2; exit 1; }

upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
version=$upstream-${DEB_REVISION:-1}
# File dates from the last commit, so that rebuilding a commit gives the same package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}

mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# dh's layout: dpkg-shlibdeps expects the binary under debian/PACKAGE.
pkg=$work/debian/bpfsnap

# The binary, stripped of what only a debugger reads (as dh_strip does);
# its dynamic symbols stay (post_attach_mark is found through them).
install -D -m 0755 "$binary" "$pkg/usr/bin/bpfsnap"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/bpfsnap"

install -d "$pkg/usr/share/man/man1"
for page in "$root"/man/*.1; do
  gzip -9n < "$page" > "$pkg/usr/share/man/man1/$(basename "$page").gz"
done
# Debian's zsh reads vendor-completions, not site-functions.
install -D -m 0644 "$root/completions/bpfsnap.bash" "$pkg/usr/share/bash-completion/completions/bpfsnap"
install -D -m 0644 "$root/completions/_bpfsnap" "$pkg/usr/share/zsh/vendor-completions/_bpfsnap"
install -D -m 0644 "$root/completions/bpfsnap.fish" "$pkg/usr/share/fish/vendor_completions.d/bpfsnap.fish"

# bookworm's packages put units in /lib/systemd/system (trixie's in /usr/lib).
install -d "$pkg/lib/systemd/system" "$pkg/etc/default"
install -m 0644 "$root"/packaging/systemd/*.service "$root"/packaging/systemd/*.timer "$pkg/lib/systemd/system/"
install -m 0644 "$root"/packaging/default/* "$pkg/etc/default/"
# The textfile directory, as prometheus-node-exporter ships it (root's,
# 0755): the timer's output has a place without node_exporter installed.
install -d -m 0755 "$pkg/var/lib/prometheus/node-exporter"

doc=$pkg/usr/share/doc/bpfsnap
install -D -m 0644 "$root/packaging/deb/copyright" "$doc/copyright"
install -D -m 0644 "$root/monitoring/rules/bpfsnap.yml" "$doc/examples/bpfsnap.rules.yml"
install -D -m 0644 "$root/monitoring/dashboards/bpfsnap.json" "$doc/examples/grafana-dashboard.json"
install -D -m 0644 "$root/examples/deploy/web-config.yml" "$doc/examples/web-config.yml"
install -D -m 0644 "$root/packaging/deb/lintian-overrides" "$pkg/usr/share/lintian/overrides/bpfsnap"

# A Debian source tree's debian/ for dpkg-shlibdeps and dpkg-gencontrol,
# with a changelog saying what this package was built from.
mkdir -p "$work/debian"  # (beside pkg)
cp "$root/packaging/deb/control" "$work/debian/control"
maintainer=$(sed -n 's/^Maintainer: //p' "$root/packaging/deb/control")
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat > "$work/debian/changelog" <<EOF
bpfsnap ($version) unstable; urgency=medium

  * Built from the bpfsnap source tree at commit $commit.

 -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
EOF
gzip -9n < "$work/debian/changelog" > "$doc/changelog.Debian.gz"

install -d "$pkg/DEBIAN"
install -m 0755 "$root"/packaging/deb/{postinst,prerm,postrm} "$pkg/DEBIAN/"
# Every file under /etc is a conffile (as dh_installdeb makes them).
(cd "$pkg" && find etc -type f -printf '/%p\n' | sort) > "$pkg/DEBIAN/conffiles"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"

# The file dates, as dpkg-deb would clamp them.
find "$pkg" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +

(
  cd "$work"
  dpkg-shlibdeps -Tdebian/substvars -edebian/bpfsnap/usr/bin/bpfsnap
  dpkg-gencontrol -pbpfsnap -Pdebian/bpfsnap -v"$version"
)
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$pkg" "$out" >/dev/null
deb=$out/bpfsnap_${version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb
[[ -f $deb ]] || { echo "deb: dpkg-deb did not write $deb" >&2; exit 1; }
echo "$deb"
