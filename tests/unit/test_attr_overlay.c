/*
 * test_attr_overlay.c — attributes returned while written data is still on its way to the tree:
 * every call that returns a stat (getattr, lookup, link) must report the size and times of the
 * cached writes, never the inode item's older ones. A FUSE reply carrying an old size makes the
 * kernel shrink its i_size and cut the next read short (seen as a rare one-byte-short read after
 * write + link when the ordered extent finished late). The hook "write.finish.before" holds the
 * ordered extent before it reaches the tree, so the window is forced, not hoped for.
 * Also: a file created after deleting a cached one (whose clean pages the cache keeps for reads)
 * must not get its number, nor see its size and pages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>

#include <cmocka.h>

#include <ubtrfs.h>

#include "util/hooks.h"

static char dir[64], img[128];

static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

struct flusher {
	ubt_file *f;
	int ret;
};

static void *flush_thread(void *arg)
{
	struct flusher *fl = arg;

	fl->ret = ubt_flush(fl->f);
	return NULL;
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec != b->tv_sec ? a->tv_sec < b->tv_sec : a->tv_nsec < b->tv_nsec;
}

static void test_link_during_writeback(void **state)
{
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE, .count = 1 };
	struct ubt_mount_opts o = { 0 };
	struct stat st, st_link, st_lookup;
	struct flusher fl = { 0 };
	pthread_t th;
	ubt_ino ino, ino2;
	ubt_file *f;
	ubt_fs *fs;
	char buf[16];

	(void)state;
	sh("rm -f %s && truncate -s 256M %s && mkfs.btrfs -q -f %s >/dev/null 2>&1", img, img, img);
	assert_int_equal(ubt_mount(img, &o, &fs), 0);
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "f", S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	assert_int_equal(ubt_pwrite(f, "abc", 3, 0), 3);
	assert_int_equal(ubt_fsync(f, 0), 0); /* "abc" is in the tree */

	/* One more byte, held between its I/O and the tree. */
	assert_int_equal(ubt_hook_arm("write.finish.before", &pause), 0);
	assert_int_equal(ubt_pwrite(f, "d", 1, 3), 1);
	fl.f = f;
	assert_int_equal(pthread_create(&th, NULL, flush_thread, &fl), 0);
	assert_int_equal(ubt_hook_wait_paused("write.finish.before", 1, 10000), 0);

	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, 4);
	sleep(1); /* a later ctime for the link, by a whole second */
	assert_int_equal(ubt_link(fs, ino, UBT_ROOT_INO, "g", &st_link), 0);
	assert_int_equal(st_link.st_size, 4);
	assert_int_equal(st_link.st_nlink, 2);
	assert_true(ts_before(&st.st_ctim, &st_link.st_ctim)); /* the link's ctime, not the write's */
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "g", &ino2, &st_lookup), 0);
	assert_int_equal(st_lookup.st_size, 4);
	ubt_forget(fs, ino2, 1);

	ubt_hook_release("write.finish.before");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(fl.ret, 0);
	ubt_hook_disarm_all();

	/* After the ordered extent is in: the size stays, and the link's ctime is not undone. */
	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, 4);
	assert_false(ts_before(&st.st_ctim, &st_link.st_ctim));
	assert_int_equal(ubt_pread(f, buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "abcd", 4);
	ubt_close(f);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);

	/* And on disk. */
	assert_int_equal(ubt_mount(img, &o, &fs), 0);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "f", &ino, &st), 0);
	assert_int_equal(st.st_size, 4);
	assert_false(ts_before(&st.st_ctim, &st_link.st_ctim));
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);
	sh("btrfs check --readonly %s >%s/check.log 2>&1 || { cat %s/check.log; exit 1; }", img, dir, dir);
}

static void test_new_file_after_delete(void **state)
{
	struct ubt_mount_opts o = { 0 };
	const size_t len = 256 * 1024;
	unsigned char *data = malloc(len), *got = malloc(len);
	ubt_ino ino, ino2;
	struct stat st;
	ubt_file *f;
	ubt_fs *fs;

	(void)state;
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 13 + 1);
	sh("rm -f %s && truncate -s 256M %s && mkfs.btrfs -q -f %s >/dev/null 2>&1", img, img, img);
	assert_int_equal(ubt_mount(img, &o, &fs), 0);
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "old", S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	assert_int_equal(ubt_pwrite(f, data, len, 0), (ssize_t)len);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);

	/* A new mount: read the file (its pages stay cached), delete it, create another — first
	 * create of the mount, when an allocator counting from the tree's highest would reuse it. */
	assert_int_equal(ubt_mount(img, &o, &fs), 0);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "old", &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDONLY, &f), 0);
	assert_int_equal(ubt_pread(f, got, len, 0), (ssize_t)len);
	assert_memory_equal(got, data, len);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "old"), 0);
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "new", S_IFREG | 0644, 0, 0, 0, &ino2, &st), 0);
	assert_true(ino2 != ino); /* numbers count up from the mount's highest, as in btrfs */
	assert_int_equal(st.st_size, 0);
	assert_int_equal(ubt_getattr(fs, ino2, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(ubt_open(fs, ino2, O_RDWR, &f), 0);
	assert_int_equal(ubt_pread(f, got, len, 0), 0);
	assert_int_equal(ubt_pwrite(f, "new", 3, 0), 3);
	assert_int_equal(ubt_getattr(fs, ino2, &st), 0);
	assert_int_equal(st.st_size, 3);
	assert_int_equal(ubt_pread(f, got, len, 0), 3);
	assert_memory_equal(got, "new", 3);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino2, 1);
	assert_int_equal(ubt_unmount(fs), 0);
	sh("btrfs check --readonly %s >%s/check.log 2>&1 || { cat %s/check.log; exit 1; }", img, dir, dir);
	free(data);
	free(got);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ubt-attr-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(img, sizeof(img), "%s/img", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_link_during_writeback),
					    cmocka_unit_test(test_new_file_after_delete) };

	if (getuid() != 0) {
		printf("SKIP: needs root (mkfs.btrfs and btrfs check on a scratch image)\n");
		return 0;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
