/*
 * test_writeback.c — the data write path through the public API: buffered writes read back from
 * the cache before writeback and from disk after it, against a model; an injected I/O error fails
 * the ordered extent (fsync reports it, the old data stays, sync and unmount finish); forced
 * eviction while pages are dirty loses nothing; ENOSPC is returned by the write call. Every image
 * is checked with `btrfs check --readonly` after unmount.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>

#include <ubtrfs.h>

#include "cache/page-cache.h"
#include "fs/fs.h"
#include "util/hooks.h"
#include "write/write-internal.h"

#include "unit_fs.h"

static void test_buffered_model(void **state)
{
	const size_t max = 3 << 20;
	u8 *model = calloc(1, max), *buf = malloc(1 << 20);
	size_t size = 0;
	unsigned seed = 42;
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("512M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "data", O_RDWR, NULL);
	for (int op = 0; op < 600; op++) {
		size_t off, len;

		seed = seed * 1103515245 + 12345;
		off = (seed >> 8) % (max - (1 << 17));
		seed = seed * 1103515245 + 12345;
		len = 1 + (seed >> 8) % ((seed & 1) ? 9000 : (1 << 17));
		for (size_t i = 0; i < len; i++)
			buf[i] = (u8)(op * 7 + i);
		assert_int_equal(ubt_pwrite(f, buf, len, off), (ssize_t)len);
		memcpy(model + off, buf, len);
		if (off + len > size)
			size = off + len;
		if (op % 50 == 0)
			ufs_check_content(f, model, size, false); /* from the cache, partly from disk */
		if (op % 120 == 0)
			assert_int_equal(ubt_fsync(f, 0), 0);
	}
	ufs_check_content(f, model, size, false);
	assert_int_equal(ufs_file_size(fs, "data"), size);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
	fs = ufs_mount(NULL);
	f = ufs_open_existing(fs, "data", O_RDONLY);
	ufs_check_content(f, model, size, false);
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_kernel_compare("data", model, size);
	free(model);
	free(buf);
}

static void test_io_error(void **state)
{
	struct ubt_hook_spec fail = { .action = UBT_HOOK_FAIL, .error = -EIO };
	u8 old[8192], new[8192], got[8192];
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "victim", O_RDWR, NULL);
	memset(old, 'o', sizeof(old));
	memset(new, 'n', sizeof(new));
	assert_int_equal(ubt_pwrite(f, old, sizeof(old), 0), (ssize_t)sizeof(old));
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_hook_arm("write.io.before_submit", &fail), 0);
	assert_int_equal(ubt_pwrite(f, new, sizeof(new), 0), (ssize_t)sizeof(new));
	/* The failed ordered extent finishes with an error: fsync reports it, nothing hangs. */
	assert_int_equal(ubt_fsync(f, 0), -EIO);
	ubt_hook_disarm("write.io.before_submit");
	assert_int_equal(ubt_fsync(f, 0), 0); /* reported once */
	assert_int_equal(ubt_sync(fs), 0);
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
	fs = ufs_mount(NULL);
	f = ufs_open_existing(fs, "victim", O_RDONLY);
	assert_int_equal(ubt_pread(f, got, sizeof(got), 0), (ssize_t)sizeof(got));
	assert_memory_equal(got, old, sizeof(old)); /* no file extent for the failed range */
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
}

static void test_evict_dirty(void **state)
{
	struct ubt_hook_spec evict = { .action = UBT_HOOK_CALL, .fn = ubt_page_cache_evict_hook };
	u8 buf[65536], got[65536];
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "keep", O_RDWR, NULL);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (u8)(i * 13);
	assert_int_equal(ubt_hook_arm("cache.evict_now", &evict), 0);
	assert_int_equal(ubt_pwrite(f, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	/* Every unlock and put tried to evict: dirty pages must have survived. */
	assert_true(ubt_hook_hits("cache.evict_now") > 0);
	assert_int_equal(ubt_pread(f, got, sizeof(got), 0), (ssize_t)sizeof(got));
	assert_memory_equal(got, buf, sizeof(buf));
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_pread(f, got, sizeof(got), 0), (ssize_t)sizeof(got));
	assert_memory_equal(got, buf, sizeof(buf));
	ubt_hook_disarm("cache.evict_now");
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
}

static void test_enospc(void **state)
{
	u8 *buf = malloc(1 << 20);
	ubt_fs *fs;
	ubt_file *f;
	ssize_t n = 0;
	int i;

	(void)state;
	memset(buf, 0x5a, 1 << 20);
	ufs_fresh_image("200M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "fill", O_RDWR, NULL);
	for (i = 0; i < 400; i++) {
		n = ubt_pwrite(f, buf, 1 << 20, (u64)i << 20);
		if (n < 0)
			break;
	}
	assert_int_equal(n, -ENOSPC); /* the writer hears it, not writeback */
	printf("ENOSPC after %d MiB\n", i);
	assert_true(i > 100);
	assert_int_equal(ubt_fsync(f, 0), 0);
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
	free(buf);
}


/* Sequential reads fill the cache ahead of the reader; writes, truncates and direct writes keep it true. */
static void test_readahead(void **state)
{
	const size_t size = 4 << 20;
	u8 *data = malloc(size), *got = malloc(size);
	struct ubt_inode_state *st;
	struct stat sa = { 0 };
	ubt_fs *fs;
	ubt_file *f;
	ubt_ino ino;

	(void)state;
	for (size_t i = 0; i < size; i++)
		data[i] = (u8)(i * 31 + (i >> 12));
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "seq", O_RDWR, NULL);
	assert_int_equal(ubt_pwrite(f, data, size, 0), (ssize_t)size);
	assert_int_equal(ubt_close(f), 0); /* written back; the clean pages may stay cached */
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "seq", &ino, NULL), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	st = ubt_inode_state_find(fs->fs_info, f->root, f->objectid);
	assert_non_null(st);
	ubt_invalidate_mapping_pages(st->mapping, 0, (u64)-1); /* start cold */
	assert_int_equal(ubt_mapping_nr_pages(st->mapping), 0);
	for (size_t off = 0; off < size; off += 65536)
		assert_int_equal(ubt_pread(f, got + off, 65536, off), 65536);
	assert_memory_equal(got, data, size);
	/* The reader got ahead of itself: (nearly) the whole file is cached now. */
	assert_true(ubt_mapping_nr_pages(st->mapping) >= size / UBT_PAGE_SIZE - 256);
	/* Cached pages follow changes: an overwrite, a truncate, a direct write. */
	memset(data + 100000, 0x77, 5000);
	assert_int_equal(ubt_pwrite(f, data + 100000, 5000, 100000), 5000);
	sa.st_size = 3000000;
	assert_int_equal(ubt_setattr(fs, ino, &sa, UBT_SET_SIZE, NULL), 0);
	memset(data + 2 * 1048576, 0x55, 65536);
	assert_int_equal(ubt_pwrite_direct(f, data + 2 * 1048576, 65536, 2 * 1048576), 65536);
	memset(got, 0, size);
	assert_int_equal(ubt_pread(f, got, size, 0), 3000000);
	assert_memory_equal(got, data, 3000000);
	ubt_inode_state_put(st);
	ubt_close(f);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
	free(data);
	free(got);
}

static int setup(void **state)
{
	(void)state;
	return ufs_setup("wb");
}

static int teardown(void **state)
{
	(void)state;
	return ufs_teardown("m");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buffered_model),
		cmocka_unit_test(test_io_error),
		cmocka_unit_test(test_evict_dirty),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_readahead),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
