#!/bin/sh
# Renders ari.conf from ARI_USERNAME / ARI_PASSWORD (Asterisk does not read the environment),
# then runs Asterisk in the foreground with the router's configuration. No default password:
# docker-compose.yml passes the lab's, documented in docs/lab.md.
set -eu
conf=/etc/outbound-router
: "${ARI_USERNAME:?set ARI_USERNAME}"
: "${ARI_PASSWORD:?set ARI_PASSWORD}"
case "$ARI_USERNAME" in *[!A-Za-z0-9._-]*) echo "ARI_USERNAME: letters, digits, . _ - only" >&2; exit 2;; esac
case "$ARI_PASSWORD" in *";"*|*"["*|*"]"*) echo "ARI_PASSWORD: no ';', '[' or ']'" >&2; exit 2;; esac
escape() { printf '%s' "$1" | sed -e 's/[\/&|\\]/\\&/g'; }
sed -e "s|@ARI_USERNAME@|$(escape "$ARI_USERNAME")|" \
    -e "s|@ARI_PASSWORD@|$(escape "$ARI_PASSWORD")|" \
    "$conf/ari.conf.template" > "$conf/ari.conf"
chgrp asterisk "$conf/ari.conf"
chmod 0640 "$conf/ari.conf"
exec asterisk -f -C /etc/outbound-router/asterisk.conf
