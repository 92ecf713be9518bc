#!/bin/sh
#
# deps.sh: install the Debian 12 packages that building and testing Tern
# need, and create the unprivileged `tern` system user and group.  Run by
# `make deps` (and so by `make check`, `make run`, `make bench`).  As root it
# installs what is missing; as another user it prints the apt-get command to
# run and fails.  It says one line when there is nothing to do.

set -eu

# Build: compilers, libFuzzer (libclang-rt-dev is only a Recommends of clang,
# and we install without recommends), libc headers (a Recommends of gcc), the
# libraries of DESIGN.md "Dependencies", and git for `make banned`.
BUILD_PKGS="gcc make pkg-config clang libclang-rt-dev libc6-dev git
libevent-dev libssl-dev libdb5.3-dev db5.3-util libspf2-dev libpsl-dev
publicsuffix libpwquality-dev libcrypt-dev"

# Tests: the Python harness and the real peers it talks to.
TEST_PKGS="python3 python3-pytest python3-aiosmtpd python3-dnslib python3-dkim
python3-spf swaks opendkim-tools openssl procps iproute2"

TERN_USER=tern
TERN_HOME=/var/spool/tern

is_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null |
	    grep -q 'install ok installed'
}

missing_packages() {
	for p in $BUILD_PKGS $TEST_PKGS; do
		is_installed "$p" || printf ' %s' "$p"
	done
}

apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends "$@"
}

# Try without `apt-get update` first: the package lists are often fresh
# enough, and an update is slow.  On a fresh image they are empty, the
# install fails, and we update and retry once.
install_packages() {
	echo "deps: installing: $*"
	if apt_install "$@"; then
		return 0
	fi
	echo "deps: install failed; running apt-get update and retrying"
	apt-get update
	apt_install "$@"
}

# adduser is Debian's tool; useradd/groupadd (package passwd, always
# present) are the fallback for minimal images.
create_user() {
	if getent passwd "$TERN_USER" >/dev/null 2>&1; then
		return 0
	fi
	echo "deps: creating system user $TERN_USER"
	if command -v adduser >/dev/null 2>&1; then
		if getent group "$TERN_USER" >/dev/null 2>&1; then
			adduser --quiet --system --ingroup "$TERN_USER" \
			    --home "$TERN_HOME" --no-create-home \
			    --disabled-login "$TERN_USER"
		else
			adduser --quiet --system --group \
			    --home "$TERN_HOME" --no-create-home \
			    --disabled-login "$TERN_USER"
		fi
	else
		getent group "$TERN_USER" >/dev/null 2>&1 ||
		    groupadd --system "$TERN_USER"
		useradd --system --gid "$TERN_USER" --home-dir "$TERN_HOME" \
		    --no-create-home --shell /usr/sbin/nologin "$TERN_USER"
	fi
}

main() {
	missing=$(missing_packages)
	missing=${missing# }
	uid=$(id -u)
	did=0

	if [ -n "$missing" ]; then
		if [ "$uid" -ne 0 ]; then
			echo "deps: missing packages: $missing" >&2
			echo "deps: as root, run:" >&2
			echo "  apt-get update && DEBIAN_FRONTEND=noninteractive" \
			    "apt-get install -y --no-install-recommends $missing" >&2
			exit 1
		fi
		# Word splitting of $missing is wanted: one argument a package.
		# shellcheck disable=SC2086
		install_packages $missing
		did=1
		missing=$(missing_packages)
		missing=${missing# }
		if [ -n "$missing" ]; then
			echo "deps: still missing after install: $missing" >&2
			exit 1
		fi
	fi

	if ! getent passwd "$TERN_USER" >/dev/null 2>&1; then
		if [ "$uid" -eq 0 ]; then
			create_user
			did=1
		else
			# Not fatal: without root ternd cannot change user either.
			echo "deps: note: system user $TERN_USER is missing;" \
			    "run rc/deps.sh as root to create it" >&2
		fi
	fi

	if [ "$did" -eq 0 ]; then
		echo "deps: all present"
	fi
}

main "$@"
