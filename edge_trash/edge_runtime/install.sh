#!/bin/sh
# Install the edge-trash sort service on a Coral Dev Board (Mendel Linux). Run as root from an
# exported bundle directory:   sudo sh edge_trash/edge_runtime/install.sh [BUNDLE_DIR]
set -eu

BUNDLE=${1:-$(pwd)}
PREFIX=/opt/edge-trash
UNIT=/etc/systemd/system/edge-trash.service

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root: sudo sh $0 $BUNDLE" >&2
    exit 1
fi
if [ ! -f "$BUNDLE/manifest.json" ] || [ ! -d "$BUNDLE/edge_trash/edge_runtime" ]; then
    echo "install.sh: $BUNDLE is not an exported bundle (needs manifest.json and edge_trash/edge_runtime)" >&2
    exit 1
fi

missing=""
python3 -c "import numpy" 2>/dev/null || missing="$missing python3-numpy"
python3 -c "import tflite_runtime.interpreter" 2>/dev/null || python3 -c "import ai_edge_litert.interpreter" 2>/dev/null \
    || missing="$missing python3-pycoral"
[ -e /usr/lib/aarch64-linux-gnu/libedgetpu.so.1 ] || [ -e /usr/lib/libedgetpu.so.1 ] || missing="$missing libedgetpu1-std"
if [ -n "$missing" ]; then
    echo "install.sh: missing packages:$missing" >&2
    echo "install.sh: install them first: sudo apt-get update && sudo apt-get install$missing" >&2
    exit 1
fi
python3 -c "import yaml" 2>/dev/null || echo "install.sh: note: PyYAML is absent; sort.yaml must stay in JSON syntax (sudo apt-get install python3-yaml to lift that)"

# The new bundle, and the sort.yaml a previous install left in /etc, checked before the running service is touched.
kept=""
[ -f /etc/edge-trash/sort.yaml ] && kept=/etc/edge-trash/sort.yaml
PYTHONPATH="$BUNDLE" python3 -m edge_trash.edge_runtime.install_check "$BUNDLE" $kept

id edge-trash >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin edge-trash
for group in video plugdev gpio dialout apex; do  # the unit's SupplementaryGroups
    getent group "$group" >/dev/null 2>&1 || groupadd --system "$group"
done

mkdir -p "$PREFIX" /etc/edge-trash /var/lib/edge-trash
rm -rf "$PREFIX/bundle.new"
cp -r "$BUNDLE" "$PREFIX/bundle.new"
rm -rf "$PREFIX/bundle.old"
[ -d "$PREFIX/bundle" ] && mv "$PREFIX/bundle" "$PREFIX/bundle.old"
mv "$PREFIX/bundle.new" "$PREFIX/bundle"
rm -rf "$PREFIX/edge_trash"
cp -r "$PREFIX/bundle/edge_trash" "$PREFIX/edge_trash"
[ -f /etc/edge-trash/sort.yaml ] || cp "$PREFIX/bundle/sort.yaml" /etc/edge-trash/sort.yaml
# The service runs as edge-trash: whatever modes the copy brought (a umask of 077 where it was exported,
# an scp), it must read the bundle, its code and the config.
chmod -R a+rX "$PREFIX/bundle" "$PREFIX/edge_trash"
# readable by the service's group, not every user: it may hold health.token
chgrp edge-trash /etc/edge-trash/sort.yaml
chmod 640 /etc/edge-trash/sort.yaml
chown -R edge-trash:edge-trash /var/lib/edge-trash

# Check the installed copy (hashes, labels) before enabling the unit.
PYTHONPATH="$PREFIX" python3 -c "from edge_trash.edge_runtime.manifest import verify_bundle; verify_bundle('$PREFIX/bundle')"

install -m 0644 "$PREFIX/edge_trash/edge_runtime/edge-trash.service" "$UNIT"
systemctl daemon-reload
systemctl enable edge-trash.service
systemctl restart edge-trash.service
echo "install.sh: edge-trash is running. Status: systemctl status edge-trash; health: curl http://127.0.0.1:8321/health"
