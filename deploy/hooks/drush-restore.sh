#!/bin/sh
# dbRestore hook through drush (Drupal 7 and 8+): drush sql-cli < DUMP. Hooks run without a shell,
# so the redirection lives here. The database is emptied first (sql-drop), so that tables made by
# updatedb after the dump do not survive the restore. A missing, empty or incomplete dump is refused
# before anything is dropped.
# Usage: drush-restore.sh @ALIAS DUMP
set -eu
PROG=drush-restore.sh
die() { echo "$PROG: $*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: $PROG @ALIAS DUMP"
alias=$1
dump=$2
[ -f "$dump" ] && [ -s "$dump" ] || die "no dump to restore: $dump is missing or empty"
tail -n 1 -- "$dump" | grep -q '^-- Dump completed' || die "$dump is incomplete (no completion trailer): not restored"
${DRUSH:-drush} "$alias" sql-drop -y || die "drush $alias sql-drop failed"
${DRUSH:-drush} "$alias" sql-cli <"$dump" || die "drush $alias sql-cli < $dump failed"
