#!/bin/busybox sh
# PID 1 of a `cargo xtask vmtest` guest (busybox): pure cgroup v2, a disk-backed /var/tmp, then
# the integration test binaries listed in $VMTEST_LIST (this kernel's list, "NAME EXE ARGS..."
# per line). The last
# line on the console is the marker the host parses (made by tally.sh, which counts skipped
# tests apart from the passes):
#   MEMSTALL-VMTEST-RESULT: passed=N skipped=S failed=M exit=E
# A test binary that does not finish within VMTEST_BINARY_TIMEOUT seconds is killed and counts
# as one failure. Nothing here may end PID 1 early: the host only trusts the marker.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
/bin/busybox mkdir -p /proc /sys /dev /tmp /var/tmp /root /usr/bin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "vmtest: init on $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"

fail() {
	echo "vmtest: $*"
	echo "MEMSTALL-VMTEST-RESULT: passed=0 skipped=0 failed=0 exit=125"
	poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 60
}

mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "no memory controller on cgroup2"

# Modules and their order were resolved on the host (modprobe --show-depends), decompressed.
while read -r module; do
	insmod "/lib/modules/$module" 2>/dev/null || echo "vmtest: insmod $module failed"
done </lib/modules/load-order
for _ in $(seq 100); do
	[ -b /dev/vda ] && break
	sleep 0.1
done
# Reclaimable page cache needs a real filesystem: ext4 on the virtio disk the host formatted.
mount -t ext4 /dev/vda /var/tmp || fail "cannot mount /dev/vda on /var/tmp"
chmod 1777 /var/tmp

# Like the development host and most production kernels: THP only where madvise()d (Debian's
# kernels default to "always", which turns the tests' 4 KiB faults into 2 MiB ones).
echo madvise >/sys/kernel/mm/transparent_hugepage/enabled
# Which hooks attach on this kernel, for the log.
/memstall/memstall --json - --duration 1 2>&1 | tail -n 2

# Quiet kernel console from here: test output and the marker must not interleave with printk.
# The kernel log stays in /dev/kmsg for the tests and is dumped at the end.
dmesg -n 1
ulimit -c 0
ip link set lo up
# These kernels allow BPF trampolines: tests/tests/fentry.rs must see the hooks attach.
# QEMU's TCG: tests widen their per-event time bounds (memstall_tests::emulated).
export MEMSTALL_BIN=/memstall/memstall MEMSTALL_EXPECT_FENTRY=1 MEMSTALL_EMULATED=1 RUST_BACKTRACE=1
timeout_secs=${VMTEST_BINARY_TIMEOUT:-900}
list=${VMTEST_LIST:-/memstall/tests.0}
echo "vmtest: tests start"
while read -r name exe args; do
	[ -n "$name" ] || continue
	echo "vmtest: running $name"
	started=$(cut -d' ' -f1 /proc/uptime)
	# shellcheck disable=SC2086 # args are split on purpose
	{
		MEMSTALL_SKIP_LOG="/tmp/skips.$name" timeout "$timeout_secs" "/memstall/deps/$exe" --test-threads=1 $args
		echo $? >"/tmp/rc.$name"
	} 2>&1 | tee "/tmp/out.$name"
	echo "vmtest: $name exit $(cat "/tmp/rc.$name") ($(awk -v s="$started" '{printf "%.0f", $1 - s}' /proc/uptime) s)"
done <"$list"

echo "==== kernel log ===="
dmesg
echo "==== end of kernel log ===="
sync
sh /memstall/tally.sh "$list" /tmp
poweroff -f
echo o >/proc/sysrq-trigger
sleep 60
