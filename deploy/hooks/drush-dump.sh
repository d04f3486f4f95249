#!/bin/sh
# dbDump hook through drush (Drupal 7 and 8+): drush sql-dump into the migration's dump file, mode 0600.
# Usage: drush-dump.sh @ALIAS DUMP
# Written to DUMP.tmp and renamed into place only when drush succeeded and the dump ends with
# mysqldump's completion trailer: a failed or empty dump fails the hook and leaves no DUMP behind.
set -eu
PROG=drush-dump.sh
die() { echo "$PROG: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: $PROG @ALIAS DUMP"
alias=$1
dump=$2
umask 077
tmp=$dump.tmp
rm -f -- "$tmp"
if ! ${DRUSH:-drush} "$alias" sql-dump --result-file="$tmp"; then
  rm -f -- "$tmp"
  die "drush $alias sql-dump failed"
fi
if ! [ -s "$tmp" ] || ! tail -n 1 -- "$tmp" | grep -q '^-- Dump completed'; then
  rm -f -- "$tmp"
  die "the dump of $alias is empty or incomplete"
fi
chmod 0600 -- "$tmp"
mv -f -- "$tmp" "$dump"
