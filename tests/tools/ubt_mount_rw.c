/*
 * ubt_mount_rw — mount a btrfs image read-write through libubtrfs and unmount it at once: what a
 * read-write mount does on its own (log tree replay, orphan cleanup, the final commit) and nothing
 * else. Used by tests/compat/test_log_replay.sh.
 *
 *   ubt_mount_rw IMAGE [--nologreplay]
 *
 * Exit status 0 when both the mount and the unmount succeeded; the library's error otherwise.
 */
#include <stdio.h>
#include <string.h>

#include <ubtrfs.h>

int main(int argc, char **argv)
{
	struct ubt_mount_opts opts = { 0 };
	ubt_fs *fs;
	int ret;

	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--nologreplay"))) {
		fprintf(stderr, "usage: ubt_mount_rw IMAGE [--nologreplay]\n");
		return 2;
	}
	if (argc == 3)
		opts.flags |= UBT_MOUNT_NOLOGREPLAY;
	ret = ubt_mount(argv[1], &opts, &fs);
	if (ret) {
		fprintf(stderr, "ubt_mount_rw: mount %s: %s\n", argv[1], ubt_strerror(ret));
		return 1;
	}
	ret = ubt_unmount(fs);
	if (ret) {
		fprintf(stderr, "ubt_mount_rw: unmount %s: %s\n", argv[1], ubt_strerror(ret));
		return 1;
	}
	return 0;
}
