# Populate functions for kernel-written test images. Sourced by make_images.sh; each function
# takes the root of a mounted btrfs (kernel mount, read-write) and fills it with the cases the
# compatibility suites compare. The content is random where that matters (incompressible data),
# so two generations differ, but every image is compared only against itself.

# repeat_str STR BYTES: STR repeated, cut at BYTES (no SIGPIPE status under pipefail).
repeat_str() {
	{ yes "$1" || true; } | head -c "$2"
}

# write_text FILE BYTES: compressible text.
write_text() {
	repeat_str "The quick brown fox jumps over the lazy dog; ubtrfs compressible line." "$2" >"$1"
}

# write_rand FILE BYTES: incompressible data.
write_rand() {
	head -c "$2" /dev/urandom >"$1"
}

# write_mixed FILE CHUNKS: alternating 128 KiB chunks of text and random data.
write_mixed() {
	local f=$1 n=$2 i
	: >"$f"
	for ((i = 0; i < n; i++)); do
		if ((i % 2 == 0)); then
			repeat_str "mixed chunk $i of a file with compressible and random parts" 131072 >>"$f"
		else
			head -c 131072 /dev/urandom >>"$f"
		fi
	done
}

# overwrite FILE OFFSET BYTES [text]: write into the middle of existing extents (after making
# sure they are on disk), so the old extent stays partly referenced.
overwrite() {
	local f=$1 off=$2 len=$3
	sync "$f"
	if [[ ${4:-} == text ]]; then
		repeat_str "overwritten text" "$len"
	else
		head -c "$len" /dev/urandom
	fi | dd of="$f" bs=4096 seek="$off" oflag=seek_bytes conv=notrunc status=none
}

# Timestamps with nanoseconds, including one before 1970 and one far in the future.
set_times() {
	local d=$1
	touch -h -m -d '2001-02-03 04:05:06.123456789' "$d/times/t_2001"
	touch -h -m -d '1969-07-20 20:17:40.000000001' "$d/times/t_1969"
	touch -h -m -d '2100-12-31 23:59:59.999999999' "$d/times/t_2100"
	touch -h -m -d '1970-01-01 00:00:00' "$d/times/t_epoch"
	touch -h -m -d '2020-02-29 12:00:00.5' "$d/times/lnk"
	touch -h -m -d '2010-10-10 10:10:10.101010101' "$d/times"
}

# populate_files DIR SYMLINK_MAX: regular-file layouts, small and large.
populate_files() {
	local d=$1/files n
	mkdir -p "$d"
	: >"$d/empty"
	printf x >"$d/one_byte"
	write_rand "$d/inline_rand_100" 100
	write_text "$d/inline_text_2000" 2000   # inline, and compressed inline under compress=
	write_text "$d/text_2049" 2049
	write_rand "$d/rand_3000" 3000
	for n in 4095 4096 4097 65536 131072 131073 200000; do
		write_rand "$d/rand_$n" "$n"
	done
	write_text "$d/text_1m" 1048576
	write_mixed "$d/mixed_4m" 32

	# Preallocated extents: entirely unwritten, partly written, beyond EOF (keep-size).
	fallocate -l 1M "$d/prealloc_full"
	fallocate -l 1M "$d/prealloc_part"
	sync "$d/prealloc_part"
	head -c 8192 /dev/urandom | dd of="$d/prealloc_part" bs=4096 seek=25 conv=notrunc status=none
	printf 'start' | dd of="$d/prealloc_part" bs=1 seek=1000000 conv=notrunc status=none
	write_rand "$d/prealloc_keepsize" 10000
	fallocate -n -o 0 -l 2M "$d/prealloc_keepsize"

	# Punched holes in written data (hole items, or no items with no-holes).
	write_rand "$d/punched" 1048576
	sync "$d/punched"
	fallocate -p -o 256K -l 128K "$d/punched"
	fallocate -p -o 0 -l 4K "$d/punched"
	fallocate -p -o 1020K -l 4K "$d/punched"
	write_text "$d/punched_text" 524288
	sync "$d/punched_text"
	fallocate -p -o 100K -l 200K "$d/punched_text"

	# Sparse files.
	truncate -s 10M "$d/sparse_big"
	printf 'data at 1M' | dd of="$d/sparse_big" bs=4096 seek=256 conv=notrunc status=none
	head -c 4096 /dev/urandom | dd of="$d/sparse_big" bs=4096 seek=1280 conv=notrunc status=none
	write_rand "$d/sparse_tail" 8192
	truncate -s 3M "$d/sparse_tail"
	head -c 4096 /dev/urandom | dd of="$d/sparse_head" bs=4096 seek=512 status=none
	truncate -s 123456789 "$d/sparse_only_hole"
	printf 'tiny then hole' >"$d/inline_then_hole"
	truncate -s 100000 "$d/inline_then_hole"

	# Overwritten in the middle of extents, truncated in the middle of an extent.
	write_rand "$d/ow_rand" 1048576
	overwrite "$d/ow_rand" 307200 4096
	overwrite "$d/ow_rand" 700001 10000
	write_text "$d/ow_text" 1048576
	overwrite "$d/ow_text" 65536 4096
	overwrite "$d/ow_text" 300000 5000 text
	write_rand "$d/trunc_down" 1048576
	sync "$d/trunc_down"
	truncate -s 300001 "$d/trunc_down"
	write_text "$d/append" 100000
	sync "$d/append"
	head -c 50000 /dev/urandom >>"$d/append"

	# Many small extents in one file (each block written and synced on its own).
	python3 - "$d/fragmented" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(400):
    os.pwrite(fd, os.urandom(4096) if i % 3 else bytes([i % 251]) * 4096, i * 8192)
    if i % 8 == 0:
        os.fdatasync(fd)
os.close(fd)
PY

	# Shared extents.
	cp --reflink=always "$d/mixed_4m" "$d/reflink_mixed"
	overwrite "$d/reflink_mixed" 1000000 20000
	cp --reflink=always "$d/ow_rand" "$d/reflink_ow"
	cp --reflink=always "$d/punched" "$d/reflink_punched"
	cp --reflink=always "$d/text_1m" "$d/reflink_text"
	truncate -s 500000 "$d/reflink_text"
}

# populate_meta DIR SYMLINK_LEN: names, links, special files, xattrs, ACLs, owners, modes, times.
populate_meta() {
	local d=$1/meta long=$2 i
	mkdir -p "$d" "$d/sub1/sub2" "$d/times" "$d/perm"

	# Symlinks: short, absolute, dangling, long.
	ln -s target_does_not_exist "$d/dangling"
	ln -s ../files/text_1m "$d/rel_link"
	ln -s /etc/hostname "$d/abs_link"
	ln -s "$(printf 'L%.0s' $(seq 1 "$long"))" "$d/long_link"
	ln -s sub1 "$d/dir_link"

	# Hard links, inside a directory and across directories.
	printf 'hard link content\n' >"$d/hl_a"
	ln "$d/hl_a" "$d/hl_b"
	ln "$d/hl_a" "$d/sub1/sub2/hl_c"

	# Special files.
	mkfifo "$d/fifo"
	mknod "$d/chr_null" c 1 3
	mknod "$d/blk_loop" b 7 0
	mknod "$d/chr_big" c 300 70000
	if command -v python3 >/dev/null; then
		python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$d/sock"
	fi

	# Names.
	: >"$d/with space"
	: >"$d/$(printf 'tab\there')"
	: >"$d/$(printf 'new\nline')"
	: >"$d/ünïcödé ✓"
	: >"$d/-dash"
	: >"$d/$(printf 'n%.0s' $(seq 1 255))"

	# Extended attributes and ACLs.
	printf 'xattrs\n' >"$d/xa"
	setfattr -n user.a -v hello "$d/xa"
	setfattr -n user.empty "$d/xa"
	setfattr -n user.bin -v 0xdeadbeef00ff "$d/xa"
	setfattr -n user.big -v "$(printf 'B%.0s' $(seq 1 1000))" "$d/xa"
	setfattr -n trusted.t -v trusted_value "$d/xa"
	setfattr -n security.s -v security_value "$d/xa"
	: >"$d/xa_many"
	for i in $(seq 1 40); do
		setfattr -n "user.attr_$i" -v "value $i" "$d/xa_many"
	done
	setfattr -n user.dir -v on_a_dir "$d/sub1"
	setfattr -h -n trusted.on_link -v yes "$d/dangling"
	mkfifo "$d/xa_fifo"
	setfattr -n user.f -v fifo "$d/xa_fifo" 2>/dev/null || setfattr -n trusted.f -v fifo "$d/xa_fifo"
	printf 'acl\n' >"$d/acl_file"
	setfacl -m u:1234:rwx,g:4321:r-x,m:rwx "$d/acl_file"
	mkdir "$d/acl_dir"
	setfacl -m u:1234:rx "$d/acl_dir"
	setfacl -d -m u:1234:rx,g:99:rwx "$d/acl_dir"
	printf 'inherits\n' >"$d/acl_dir/inherited"
	mkdir "$d/acl_dir/subdir"

	# Owners and modes (chown before chmod, chown clears set-id bits).
	local spec name own gid mode
	for spec in "o_root:0:0:644" "o_user:1000:1000:640" "o_nobody:65534:65534:600" \
		"o_bigid:4000000000:3000000000:444" "m_suid:0:0:4755" "m_sgid:0:100:2750" \
		"m_none:0:0:000" "m_all:0:0:777" "m_exec:1:1:711"; do
		IFS=: read -r name own gid mode <<<"$spec"
		printf '%s\n' "$name" >"$d/perm/$name"
		chown "$own:$gid" "$d/perm/$name"
		chmod "$mode" "$d/perm/$name"
	done
	mkdir "$d/perm/sticky" "$d/perm/dir_user"
	chmod 1777 "$d/perm/sticky"
	chown 1000:1000 "$d/perm/dir_user"
	chmod 2770 "$d/perm/dir_user"
	ln -s somewhere "$d/perm/link_user"
	chown -h 1000:1001 "$d/perm/link_user"

	# Times (last, as creating entries changes directory times).
	: >"$d/times/t_2001"
	: >"$d/times/t_1969"
	: >"$d/times/t_2100"
	: >"$d/times/t_epoch"
	ln -s t_2001 "$d/times/lnk"
	set_times "$d"
}

# populate_many DIR COUNT: one directory with COUNT entries, some with data.
populate_many() {
	local d=$1/many n=$2 i
	mkdir -p "$d"
	(cd "$d" && seq -f 'file_%05g' 1 "$n" | xargs touch)
	for ((i = 1; i <= n; i += n / 10)); do
		printf 'content of %d\n' "$i" >"$d/$(printf 'file_%05d' "$i")"
	done
	mkdir "$d/zz_subdir"
}

# populate_deep DIR LEVELS
populate_deep() {
	local p=$1/deep i
	for ((i = 1; i <= $2; i++)); do
		p=$p/level_$i
	done
	mkdir -p "$p"
	printf 'at the bottom\n' >"$p/leaf"
	ln -s ../../../level_1 "$p/up"
}

# populate_subvols DIR: a subvolume and snapshots, both sides changed after the snapshot, and a
# nested subvolume created after the snapshots (a snapshot of a subvolume with nested ones
# shows an empty placeholder whose times the kernel makes up at lookup).
populate_subvols() {
	local d=$1
	btrfs -q subvolume create "$d/sub"
	mkdir "$d/sub/dir"
	write_mixed "$d/sub/dir/mixed" 4
	write_text "$d/sub/inline" 1000
	write_rand "$d/sub/changed" 262144
	printf 'to be removed\n' >"$d/sub/removed"
	ln -s dir/mixed "$d/sub/link"
	setfattr -n user.in_sub -v yes "$d/sub/dir"
	sync -f "$d"
	btrfs -q subvolume snapshot "$d/sub" "$d/snap"
	btrfs -q subvolume snapshot -r "$d/sub" "$d/snap_ro"
	# Changes in the source after the snapshot...
	overwrite "$d/sub/changed" 4096 8192
	rm "$d/sub/removed"
	printf 'new in sub\n' >"$d/sub/after_snapshot"
	btrfs -q subvolume create "$d/sub/nested"
	printf 'nested\n' >"$d/sub/nested/file"
	# ... and in the snapshot.
	overwrite "$d/snap/changed" 100000 30000
	printf 'new in snap\n' >"$d/snap/only_in_snap"
	rm "$d/snap/link"
	mkdir "$d/snap/newdir"
	touch -m -d '2005-05-05 05:05:05.555555555' "$d/snap/newdir"
}

# populate_rich DIR: everything, for the images of each compression setting.
populate_rich() {
	populate_files "$1"
	populate_meta "$1" 4000
	populate_many "$1" 10000
	populate_deep "$1" 60
	populate_subvols "$1"
}

# populate_small DIR [MANY]: a smaller set for the checksum/nodesize matrix (nodesize 4096
# limits inline data, so long symlinks are shorter there).
populate_small() {
	local d=$1 many=${2:-600}
	mkdir "$d/files"
	write_text "$d/files/inline" 1500
	write_rand "$d/files/rand_70000" 70000
	write_mixed "$d/files/mixed" 8
	fallocate -l 256K "$d/files/prealloc"
	truncate -s 5M "$d/files/sparse"
	printf 'middle' | dd of="$d/files/sparse" bs=4096 seek=600 conv=notrunc status=none
	write_rand "$d/files/ow" 262144
	overwrite "$d/files/ow" 10000 5000
	cp --reflink=always "$d/files/ow" "$d/files/ow_reflink"
	populate_meta "$d" 1000
	populate_many "$d" "$many"
	populate_deep "$d" 20
	populate_subvols "$d"
}

# populate_small_big DIR: populate_small with enough entries for a 3-level fs tree at 4 KiB nodes.
populate_small_big() {
	populate_small "$1" 8000
}

# populate_crash DIR: a committed state, then changes that are only fsync'd (in the log tree).
# make_images.sh copies the image while it is still mounted, as a crash would leave it; mount
# with commit=300 so no transaction commits in between.
populate_crash() {
	local d=$1
	mkdir "$d/committed"
	write_text "$d/committed/text" 10000
	write_rand "$d/committed/rand" 200000
	printf 'before the crash\n' >"$d/changed"
	printf 'will be renamed\n' >"$d/committed/old_name"
	printf 'will be removed\n' >"$d/committed/removed"
	ln -s text "$d/committed/link"
	sync -f "$d"
	write_rand "$d/fsynced_new" 300000
	mkdir "$d/new_dir"
	printf 'new file in a new dir\n' >"$d/new_dir/f"
	printf 'appended after the commit\n' >>"$d/changed"
	setfattr -n user.logged -v yes "$d/changed"
	mv "$d/committed/old_name" "$d/committed/new_name"
	rm "$d/committed/removed"
	head -c 8192 /dev/urandom | dd of="$d/committed/rand" bs=4096 seek=10 conv=notrunc status=none
	python3 - "$d" <<'PY'
import os, sys
d = sys.argv[1]
for p in ["fsynced_new", "new_dir/f", "new_dir", "changed", "committed/new_name", "committed",
          "committed/rand", "."]:
    fd = os.open(os.path.join(d, p), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
PY
}
