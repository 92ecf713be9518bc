#!/bin/sh
#
# deps.sh: install the Debian 12 packages that building and testing Tern
# need, and create the unprivileged `tern` system user and group and the
# `terndrop` group (spool/maildrop's, which ternctl is setgid to).  Run by
# `make deps` (and so by `make check`, `make run`, `make bench`).  As root it
# installs what is missing; as another user it prints the apt-get command to
# run and fails.  It says one line when there is nothing to do.

set -eu

# Build: compilers, libFuzzer (libclang-rt-dev is only a Recommends of clang,
# and we install without recommends), libc headers (a Recommends of gcc), the
# libraries of DESIGN.md "Dependencies", the root trust anchor the resolver
# validates DNSSEC from (dns-root-data), and git for `make banned`.
BUILD_PKGS="gcc make pkg-config clang libclang-rt-dev libc6-dev git
libevent-dev libssl-dev libdb5.3-dev db5.3-util libspf2-dev libunbound-dev
libpsl-dev publicsuffix libpwquality-dev libcrypt-dev libseccomp-dev
cracklib-runtime libidn2-dev dns-root-data"

# Tests: the Python harness and the real peers it talks to.  swaks needs
# Net::SSLeay (only a Recommends) for --tls and --tlsc.
TEST_PKGS="python3 python3-pytest python3-aiosmtpd python3-dnslib python3-dkim python3-authres
python3-spf swaks libnet-ssleay-perl opendkim-tools openssl procps iproute2
gdb"

TERN_USER=tern
TERN_HOME=/var/spool/tern
DROP_GROUP=terndrop
VMAIL_USER=vmail
VMAIL_HOME=/var/mail/vhosts

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
# present) are the fallback for minimal images.  create_user NAME HOME
create_user() {
	if getent passwd "$1" >/dev/null 2>&1; then
		return 0
	fi
	echo "deps: creating system user $1"
	if command -v adduser >/dev/null 2>&1; then
		if getent group "$1" >/dev/null 2>&1; then
			adduser --quiet --system --ingroup "$1" \
			    --home "$2" --no-create-home --disabled-login "$1"
		else
			adduser --quiet --system --group \
			    --home "$2" --no-create-home --disabled-login "$1"
		fi
	else
		getent group "$1" >/dev/null 2>&1 || groupadd --system "$1"
		useradd --system --gid "$1" --home-dir "$2" \
		    --no-create-home --shell /usr/sbin/nologin "$1"
	fi
}

# A system group with no members: only the setgid ternctl acts as it.
create_group() {
	if getent group "$1" >/dev/null 2>&1; then
		return 0
	fi
	echo "deps: creating system group $1"
	if command -v addgroup >/dev/null 2>&1; then
		addgroup --quiet --system "$1"
	else
		groupadd --system "$1"
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

	# tern runs the children; vmail owns the virtual mailboxes, so the
	# network-facing smtp process cannot read or change them.
	for u in "$TERN_USER:$TERN_HOME" "$VMAIL_USER:$VMAIL_HOME"; do
		name=${u%%:*}
		if getent passwd "$name" >/dev/null 2>&1; then
			continue
		fi
		if [ "$uid" -eq 0 ]; then
			create_user "$name" "${u#*:}"
			did=1
		else
			# Not fatal: without root ternd cannot change user either.
			echo "deps: note: system user $name is missing;" \
			    "run rc/deps.sh as root to create it" >&2
		fi
	done

	# sendmail keeps mail in spool/maildrop while ternd is down.
	if ! getent group "$DROP_GROUP" >/dev/null 2>&1; then
		if [ "$uid" -eq 0 ]; then
			create_group "$DROP_GROUP"
			did=1
		else
			echo "deps: note: group $DROP_GROUP is missing;" \
			    "run rc/deps.sh as root to create it" >&2
		fi
	fi

	if [ "$did" -eq 0 ]; then
		echo "deps: all present"
	fi
}

main "$@"

# ---- interop peer -----------------------------------------------------------
#
# regress/integration/test_interop.py delivers to a second, real MTA:
# Postfix (OpenSMTPD 6.8 offers no PIPELINING), which the test runs itself
# as a private instance: its own config, queue and log under a temp dir, on
# a loopback address.  The package conflicts with every other MTA, so it is
# installed only where none is installed: apt would otherwise remove the
# admin's exim or OpenSMTPD to make room.  The system instance is never
# configured ("No configuration") nor started by the install, and is left
# stopped and disabled.  Where the package is missing the interop tests skip.

INTEROP_MTA=postfix
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_SAVED=/usr/sbin/policy-rc.d.tern-deps-saved

# Packages other than ours that provide mail-transport-agent and are
# installed, even half-installed (removed ones with only config files left,
# "rc", do not count).
other_mtas() {
	dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Provides}\n' \
	    2>/dev/null |
	    awk -v us="$INTEROP_MTA" '$1 !~ /^.[nc]/ && $2 != us &&
	        / mail-transport-agent( |,|$)|,mail-transport-agent( |,|$)/ {
	            printf " %s", $2 }'
}

# policy-rc.d exiting 101 tells invoke-rc.d (which the postinst uses) to
# start no service.  An existing one (Docker images have their own) is kept
# aside and put back; one kept aside by a run that was killed is not
# overwritten.
policy_block() {
	if [ ! -e "$POLICY_SAVED" ] && { [ -e "$POLICY_RC" ] ||
	    [ -L "$POLICY_RC" ]; }; then
		mv "$POLICY_RC" "$POLICY_SAVED"
	fi
	printf '#!/bin/sh\n# rc/deps.sh: start no service during an install\nexit 101\n' \
	    >"$POLICY_RC"
	chmod 755 "$POLICY_RC"
}

policy_restore() {
	rm -f "$POLICY_RC"
	if [ -e "$POLICY_SAVED" ] || [ -L "$POLICY_SAVED" ]; then
		mv "$POLICY_SAVED" "$POLICY_RC"
	fi
}

# --no-remove: if apt still wanted to remove a package (a conflict we did
# not foresee) it aborts instead.
interop_apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends --no-remove "$INTEROP_MTA"
}

# The service is for the admin to set up, not for the tests: disable it for
# sysvinit and systemd, and stop the system instance if something started
# it anyway (the tests' instances have pidfiles of their own).
# deb-systemd-helper only runs for maintainer scripts; naming the package as
# one does also records "disabled" for the package's later upgrades.
interop_service_off() {
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		for unit in postfix.service postfix@-.service; do
			DPKG_MAINTSCRIPT_PACKAGE=$INTEROP_MTA \
			    deb-systemd-helper disable "$unit" \
			    >/dev/null 2>&1 || true
		done
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d "$INTEROP_MTA" disable >/dev/null 2>&1 || true
	fi
	pidfile=/var/spool/postfix/pid/master.pid
	if start-stop-daemon --status --pidfile "$pidfile" \
	    --exec /usr/lib/postfix/sbin/master >/dev/null 2>&1; then
		echo "deps: stopping the $INTEROP_MTA system instance"
		start-stop-daemon --stop --retry 10 --pidfile "$pidfile" \
		    --exec /usr/lib/postfix/sbin/master >/dev/null 2>&1 || true
	fi
}

install_interop_mta() {
	if is_installed "$INTEROP_MTA"; then
		return 0
	fi
	others=$(other_mtas)
	if [ -n "$others" ]; then
		echo "deps: note: not installing $INTEROP_MTA for the interop" \
		    "tests: another MTA is installed (${others# });" \
		    "those tests will skip" >&2
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: note: $INTEROP_MTA is missing, so the interop tests" \
		    "will skip; as root, run rc/deps.sh to install it" >&2
		return 0
	fi
	echo "deps: installing $INTEROP_MTA for the interop tests" \
	    "(unconfigured, its service stays off)"
	echo "postfix postfix/main_mailer_type select No configuration" |
	    debconf-set-selections
	trap policy_restore EXIT
	trap 'exit 1' HUP INT TERM
	policy_block
	if ! interop_apt_install; then
		echo "deps: install failed; running apt-get update and retrying"
		apt-get update
		interop_apt_install
	fi
	policy_restore
	trap - EXIT HUP INT TERM
	interop_service_off
	if ! is_installed "$INTEROP_MTA"; then
		echo "deps: still missing after install: $INTEROP_MTA" >&2
		exit 1
	fi
}

install_interop_mta

# ---- LMTP peers -------------------------------------------------------------
#
# regress/integration/test_lmtp_peers.py runs a private Dovecot LMTP server
# and a private GNU Mailman 3 core (its own config, state and mail under a
# temp dir, on loopback ports).  As with Postfix above, the packages' system
# services are never started by the install and are left stopped and
# disabled.  mailman3 wants an MTA: install it after the interop Postfix, and
# never let apt remove one for it (--no-remove).

LMTP_PKGS="dovecot-core dovecot-lmtpd mailman3"

lmtp_apt_install() {
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends --no-remove $LMTP_PKGS
}

lmtp_service_off() {
	for svc in dovecot mailman3; do
		if command -v deb-systemd-helper >/dev/null 2>&1; then
			pkg=$svc
			[ "$svc" = dovecot ] && pkg=dovecot-core
			DPKG_MAINTSCRIPT_PACKAGE=$pkg \
			    deb-systemd-helper disable "$svc.service" \
			    >/dev/null 2>&1 || true
		fi
		if command -v update-rc.d >/dev/null 2>&1; then
			update-rc.d "$svc" disable >/dev/null 2>&1 || true
		fi
	done
	if [ -f /run/dovecot/master.pid ] && start-stop-daemon --status \
	    --pidfile /run/dovecot/master.pid --exec /usr/sbin/dovecot \
	    >/dev/null 2>&1; then
		echo "deps: stopping the dovecot system instance"
		start-stop-daemon --stop --retry 10 --pidfile \
		    /run/dovecot/master.pid --exec /usr/sbin/dovecot \
		    >/dev/null 2>&1 || true
	fi
	if [ -f /run/mailman3/master.pid ]; then
		echo "deps: stopping the mailman3 system instance"
		start-stop-daemon --stop --retry 30 --pidfile \
		    /run/mailman3/master.pid >/dev/null 2>&1 || true
	fi
}

install_lmtp_peers() {
	missing=""
	for p in $LMTP_PKGS; do
		is_installed "$p" || missing="$missing $p"
	done
	if [ -z "$missing" ]; then
		# Installed before (or by hand): keep the services off anyway.
		if [ "$(id -u)" -eq 0 ]; then
			lmtp_service_off
		fi
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: note:${missing} missing, so the Dovecot and" \
		    "Mailman tests will skip; as root, run rc/deps.sh" >&2
		return 0
	fi
	echo "deps: installing${missing} for the LMTP tests" \
	    "(their services stay off)"
	trap policy_restore EXIT
	trap 'exit 1' HUP INT TERM
	policy_block
	if ! lmtp_apt_install; then
		echo "deps: install failed; running apt-get update and retrying"
		apt-get update
		lmtp_apt_install
	fi
	policy_restore
	trap - EXIT HUP INT TERM
	lmtp_service_off
	for p in $LMTP_PKGS; do
		if ! is_installed "$p"; then
			echo "deps: still missing after install: $p" >&2
			exit 1
		fi
	done
}

install_lmtp_peers
