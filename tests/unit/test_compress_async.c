/*
 * test_compress_async.c — seed 002: async compressed writeback. A compressed delalloc range of
 * three 512 KiB chunks where the chunk owning the page writeback started from (the first) is
 * compressed, submitted and releases its pages while the later chunks are held at a hook, and
 * the last chunk (random data) falls back to a plain extent. Then: data correct (cache, remount,
 * kernel), no phantom dirty or locked page, NOCOMPRESS marked as btrfs marks it, btrfs check clean.
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

#include "fs/fs.h"
#include "util/hooks.h"
#include "write/write-internal.h"

#include "unit_fs.h"

#define CHUNK (512 * 1024)
#define FILE_SIZE (3 * CHUNK)

struct fsync_arg {
	ubt_file *f;
	int ret;
};

static void *fsync_thread(void *arg)
{
	struct fsync_arg *a = arg;

	a->ret = ubt_fsync(a->f, 0);
	return NULL;
}

static void test_seed_002(void **state)
{
	struct ubt_mount_opts o = { .compress = "zstd" };
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE };
	struct ubt_inode_state *st;
	struct fsync_arg fa;
	pthread_t t;
	u8 *data = malloc(FILE_SIZE), *got = malloc(FILE_SIZE + 1);
	ubt_fs *fs;
	ubt_file *f;
	ubt_ino ino;
	struct stat stt;
	unsigned flags = 0;

	(void)state;
	/* Chunks 0 and 1 compress well; chunk 2 is random and must fall back. */
	for (size_t i = 0; i < 2 * CHUNK; i++)
		data[i] = "ubtrfs compresses this text "[i % 28];
	srand(7);
	for (size_t i = 2 * CHUNK; i < FILE_SIZE; i++)
		data[i] = (u8)rand();

	ufs_fresh_image("512M", NULL);
	fs = ufs_mount(&o);
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "file", S_IFREG | 0644, 0, 0, 0, &ino, &stt), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	/*
	 * Hold every chunk but the one owning the first page before it compresses, whichever chunk
	 * a worker picks first, and whoever starts the writeback (this fsync, or the flusher if the
	 * machine is slow): armed before the write.
	 */
	assert_int_equal(ubt_hook_arm("compress.chunk.later.before_compress", &pause), 0);
	assert_int_equal(ubt_pwrite(f, data, FILE_SIZE, 0), FILE_SIZE);
	fa.f = f;
	assert_int_equal(pthread_create(&t, NULL, fsync_thread, &fa), 0);
	assert_int_equal(ubt_hook_wait_paused("compress.chunk.later.before_compress", 2, 10000), 0);

	/* The first chunk finishes alone: its pages, the first page among them, are released. */
	st = ubt_inode_state_find(fs->fs_info, f->root, f->objectid);
	assert_non_null(st);
	for (int spin = 0; spin < 1000; spin++) {
		struct ubt_page *p0 = ubt_find_get_page(st->mapping, 0);
		bool done = p0 && !PageLocked(p0) && !PageWriteback(p0);

		if (p0)
			ubt_put_page(p0);
		if (done)
			break;
		usleep(2000);
	}
	for (u64 idx = 0; idx < FILE_SIZE / UBT_PAGE_SIZE; idx++) {
		struct ubt_page *p = ubt_find_get_page(st->mapping, idx);

		assert_non_null(p);
		if (idx < CHUNK / UBT_PAGE_SIZE) {
			assert_false(PageLocked(p)); /* released by its own chunk */
			assert_false(PageDirty(p));
		} else {
			assert_true(PageLocked(p)); /* still owned by their held chunks, untouched */
		}
		ubt_put_page(p);
	}
	ubt_hook_release("compress.chunk.later.before_compress");
	ubt_hook_disarm("compress.chunk.later.before_compress");
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(fa.ret, 0);

	/* No phantom dirty page, nothing left locked or under writeback. */
	assert_int_equal(ubt_mapping_nr_dirty(st->mapping), 0);
	for (u64 idx = 0; idx < FILE_SIZE / UBT_PAGE_SIZE; idx++) {
		struct ubt_page *p = ubt_find_get_page(st->mapping, idx);

		if (!p)
			continue;
		assert_false(PageLocked(p));
		assert_false(PageWriteback(p));
		assert_false(PageDirty(p));
		ubt_put_page(p);
	}
	ubt_inode_state_put(st);
	assert_int_equal(ubt_pread(f, got, FILE_SIZE + 1, 0), FILE_SIZE);
	assert_memory_equal(got, data, FILE_SIZE);
	/* Incompressible data marked the file, as btrfs does without compress-force. */
	assert_int_equal(ubt_get_flags(fs, ino, &flags), 0);
	assert_true(flags & 0x00000400); /* FS_NOCOMP_FL */
	ubt_close(f);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);

	ufs_check_image();
	/* Two compressed chunks (4 extents of 128 KiB each) and one plain chunk. */
	ufs_sh("test $(btrfs inspect-internal dump-tree -t 5 %s | grep -c 'compression 3') -eq 8", ufs_img);
	fs = ufs_mount(&o);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "file", &ino, NULL), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDONLY, &f), 0);
	memset(got, 0, FILE_SIZE);
	assert_int_equal(ubt_pread(f, got, FILE_SIZE, 0), FILE_SIZE);
	assert_memory_equal(got, data, FILE_SIZE);
	ubt_close(f);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_kernel_compare("file", data, FILE_SIZE);
	free(data);
	free(got);
}

static int setup(void **state)
{
	(void)state;
	return ufs_setup("cz");
}

static int teardown(void **state)
{
	(void)state;
	ubt_hook_disarm_all();
	return ufs_teardown("m");
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_seed_002) };
	return cmocka_run_group_tests(tests, setup, teardown);
}
