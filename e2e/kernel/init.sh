#!/bin/sh
# The guest's /init: mounts the pseudo file systems, loads the NFS client modules, brings up
# QEMU's user-mode network (the host's loopback is 10.0.2.2), runs /workload.sh and powers
# off. Every line the workload prints goes to the serial console, which the host reads.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=200m tmp /tmp
chmod 1777 /tmp
while read -r m; do
  insmod "/modules/$m" || echo "ZN-FATAL insmod $m"
done < /modules/modules.load
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "ZN-BOOTED $(cut -d' ' -f1 /proc/uptime)"
sh /workload.sh < /dev/null
echo "ZN-DONE $?"
sync
poweroff -f
