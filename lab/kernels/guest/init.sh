#!/bin/busybox sh
# PID 1 of the guest's initramfs (busybox-static). It only has to reach the
# real root: load the few modules the cloud kernel builds as modules, mount
# the host's root (virtiofs tag kmroot, read-only) under a tmpfs overlay so
# the guest can write without touching the host, bind the guest kernel's own
# module tree over /lib/modules/<release>, and switch_root into it. The job
# (tag kmjob) is the host's writable run directory: job.env and run.sh in,
# result files out.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
  echo "KMATRIX-INIT-FAILED $*" > /dev/console
  # No userspace left to do anything: power off so qemu exits at once.
  poweroff -f
}

# Listed by the host in dependency order; built-in ones are not listed.
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/modules/$m" || fail "insmod $m"
done < /modules.list

mkdir -p /lower /rw /newroot /job
mount -t virtiofs kmroot /lower -o ro || fail "mount virtiofs kmroot"
mount -t virtiofs kmjob /job || fail "mount virtiofs kmjob"
. /job/job.env
mount -t tmpfs -o "mode=0755,size=${KMATRIX_OVERLAY_SIZE:-1536m}" rw /rw
mkdir -p /rw/upper /rw/work
# xino/index off: the lower (FUSE) gives no stable file handles.
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,index=off,xino=off /newroot \
  || mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "mount overlay"

# The guest kernel's modules, extracted by the host into its cache (which the
# root share shows at the same path): modprobe in the guest (bridge, veth,
# nf_tables...) needs them at /lib/modules/$(uname -r).
mkdir -p "/newroot/usr/lib/modules/$KMATRIX_KVER"
mount --bind "/newroot$KMATRIX_MODULES" "/newroot/usr/lib/modules/$KMATRIX_KVER" || fail "bind modules"

mkdir -p /newroot/kmatrix
mount --move /job /newroot/kmatrix
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
# switch_root (not chroot): it frees the initramfs and makes the overlay "/"
# for good, so pivot_root/mount namespaces in the tests behave as on a host.
exec switch_root /newroot /bin/bash /kmatrix/run.sh
