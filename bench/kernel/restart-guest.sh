#!/bin/sh
# Guest side of access-restart.sh, run by shared/tools/kernel-client inside
# the VM (busybox sh) with the export mounted on $MNT by the Linux kernel's
# NFSv3 client. Writes a file, keeps it open and its directory as the
# working directory, tells the host it is ready (file `ready`), waits for
# the host to restart the access server (file `restarted` appears), then
# uses every handle it held: the open file, the working directory, a
# path lookup, a write with fsync, a create. Any error (ESTALE shows as
# "Stale file handle") fails the check.
set -u
MNT=${MNT:-/mnt}
D=$MNT/restart-check
FAILED=""
fail() { echo "   FAILED: $1"; FAILED="$FAILED|$1"; }

mkdir -p "$D" || exit 1
dd if=/dev/urandom of=/tmp/a.bin bs=1M count=8 2>/dev/null || exit 1
dd if=/tmp/a.bin of="$D/a.bin" bs=1M conv=fsync 2>/dev/null || exit 1
want=$(md5sum < /tmp/a.bin | cut -d' ' -f1)
cd "$D" || exit 1
exec 3< "$D/a.bin"
: > "$D/ready" || exit 1
echo "@@ READY wrote 8 MiB, md5 $want; waiting for the access server restart"

i=0
until ls "$D" 2>/dev/null | grep -q '^restarted$'; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "@@ RESTART never seen"; exit 1; fi
    sleep 1
done
echo "@@ RESTARTED seen after ${i}s of polling"

# Drop the page cache so the reads below go to the server with old handles.
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "   (could not drop caches)"
got=$(md5sum <&3 | cut -d' ' -f1) || fail "read through the open descriptor"
[ "$got" = "$want" ] || fail "md5 through the open descriptor: $got"
got=$(md5sum < a.bin | cut -d' ' -f1) || fail "read by relative path"
[ "$got" = "$want" ] || fail "md5 by relative path: $got"
stat a.bin > /dev/null || fail "stat in the working directory"
ls -l . > /tmp/ls.txt || fail "ls -l of the working directory"
grep -q ' a.bin$' /tmp/ls.txt || fail "a.bin missing from ls -l"
dd if=/dev/zero of=a.bin bs=4k seek=3 count=1 conv=notrunc,fsync 2>/dev/null || fail "overwrite with fsync"
echo after > b.txt || fail "create in the working directory"
[ "$(cat b.txt)" = after ] || fail "read back the new file"
dd if=/dev/zero of=/tmp/a.bin bs=4k seek=3 count=1 conv=notrunc 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
[ "$(md5sum < a.bin | cut -d' ' -f1)" = "$(md5sum < /tmp/a.bin | cut -d' ' -f1)" ] || fail "md5 after the overwrite"
if dmesg | grep -i 'stale'; then fail "the kernel logged a stale handle"; fi
exec 3<&-
cd / && rm -rf "$D" || fail "rm -rf"

if [ -n "$FAILED" ]; then echo "@@ STEP restart-under-mount FAILED"; exit 1; fi
echo "@@ STEP restart-under-mount OK"
