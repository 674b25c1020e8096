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

static void fresh_image(const char *size)
{
	sh("rm -f %s && truncate -s %s %s && mkfs.btrfs -q -f %s >/dev/null 2>&1", img, size, img, img);
}

static void check_image(void)
{
	sh("btrfs check --readonly %s >%s/check.log 2>&1 || { cat %s/check.log; exit 1; }", img, dir, dir);
}

static ubt_fs *mount_rw(void)
{
	struct ubt_mount_opts o = { 0 };
	ubt_fs *fs;

	assert_int_equal(ubt_mount(img, &o, &fs), 0);
	return fs;
}

static ubt_file *create(ubt_fs *fs, const char *name)
{
	ubt_ino ino;
	struct stat st;
	ubt_file *f;

	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	ubt_forget(fs, ino, 1);
	return f;
}

static ubt_file *open_existing(ubt_fs *fs, const char *name, int flags)
{
	ubt_ino ino;
	ubt_file *f;

	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, name, &ino, NULL), 0);
	assert_int_equal(ubt_open(fs, ino, flags, &f), 0);
	ubt_forget(fs, ino, 1);
	return f;
}

static void check_content(ubt_file *f, const u8 *model, size_t size)
{
	u8 *got = malloc(size + 4096);
	ssize_t n = ubt_pread(f, got, size + 4096, 0);

	assert_int_equal(n, (ssize_t)size);
	assert_memory_equal(got, model, size);
	free(got);
}

static void test_buffered_model(void **state)
{
	const size_t max = 3 << 20;
	u8 *model = calloc(1, max), *buf = malloc(1 << 20);
	size_t size = 0;
	unsigned seed = 42;
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	fresh_image("512M");
	fs = mount_rw();
	f = create(fs, "data");
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
			check_content(f, model, size); /* from the cache, partly from disk */
		if (op % 120 == 0)
			assert_int_equal(ubt_fsync(f, 0), 0);
	}
	check_content(f, model, size);
	{
		struct stat st;
		ubt_ino ino;
		assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "data", &ino, &st), 0);
		assert_int_equal((size_t)st.st_size, size);
		ubt_forget(fs, ino, 1);
	}
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	check_image();
	fs = mount_rw();
	f = open_existing(fs, "data", O_RDONLY);
	check_content(f, model, size);
	ubt_close(f);
	assert_int_equal(ubt_unmount(fs), 0);
	if (geteuid() == 0) {
		FILE *out;
		sh("mkdir -p %s/m && mount -o loop,ro %s %s/m", dir, img, dir);
		{
			char path[256];
			snprintf(path, sizeof(path), "%s/model", dir);
			out = fopen(path, "wb");
			fwrite(model, 1, size, out);
			fclose(out);
		}
		sh("cmp %s/m/data %s/model; rc=$?; umount %s/m; exit $rc", dir, dir, dir);
	} else {
		printf("SKIP kernel comparison: needs root\n");
	}
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
	fresh_image("256M");
	fs = mount_rw();
	f = create(fs, "victim");
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
	check_image();
	fs = mount_rw();
	f = open_existing(fs, "victim", O_RDONLY);
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
	fresh_image("256M");
	fs = mount_rw();
	f = create(fs, "keep");
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
	check_image();
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
	fresh_image("200M");
	fs = mount_rw();
	f = create(fs, "fill");
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
	check_image();
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
	fresh_image("256M");
	fs = mount_rw();
	f = create(fs, "seq");
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
	check_image();
	free(data);
	free(got);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ubt-wb-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(img, sizeof(img), "%s/img", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	snprintf(cmd, sizeof(cmd), "umount %s/m 2>/dev/null; rm -rf %s", dir, dir);
	return system(cmd) == 0 ? 0 : -1;
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
