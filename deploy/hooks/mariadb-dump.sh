#!/bin/sh
# dbDump hook without drush: mariadb-dump of one site's database into the migration's dump file.
# Usage: mariadb-dump.sh OPTION-FILE DUMP
# OPTION-FILE is a MySQL option file (mode 0600, one per site): [client] user, password, socket or host
# (and port), and the database under [quick-migrate]. The password reaches mariadb-dump through that file
# only (--defaults-extra-file), never through argv or the environment, where ps would show it.
# The dump is written to DUMP.tmp with mode 0600 and renamed into place only when mariadb-dump succeeded
# and wrote its completion trailer: a failed or empty dump fails the hook and leaves no DUMP behind.
set -eu
PROG=mariadb-dump.sh
die() { echo "$PROG: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: $PROG OPTION-FILE DUMP"
cnf=$1
dump=$2
[ -f "$cnf" ] && [ -r "$cnf" ] || die "cannot read the option file $cnf"
# database= in the [quick-migrate] group (mariadb-dump would refuse an unknown key in its own groups)
db=$(sed -n '/^[[:space:]]*\[quick-migrate\]/,/^[[:space:]]*\[/s/^[[:space:]]*database[[:space:]]*=[[:space:]]*\([^[:space:]]*\)[[:space:]]*$/\1/p' "$cnf" | head -n 1)
[ -n "$db" ] || die "$cnf: no database= under [quick-migrate]"

umask 077
tmp=$dump.tmp
rm -f -- "$tmp"
if ! mariadb-dump --defaults-extra-file="$cnf" --single-transaction --quick --skip-dump-date -- "$db" >"$tmp"; then
  rm -f -- "$tmp"
  die "mariadb-dump of $db failed"
fi
# mariadb-dump ends a complete dump with this line; an empty or cut-off file lacks it
if ! tail -n 1 -- "$tmp" | grep -q '^-- Dump completed'; then
  rm -f -- "$tmp"
  die "the dump of $db is empty or incomplete"
fi
chmod 0600 -- "$tmp"
mv -f -- "$tmp" "$dump"
echo "$PROG: dumped $db to $dump"
