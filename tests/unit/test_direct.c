/*
 * test_direct.c — direct IO through the public API (ubt_pwrite_direct / ubt_pread_direct) against a
 * model: aligned direct writes and reads mixed with buffered ones on one file (coherent both
 * ways), the unaligned fallback (and a direct write past a mid-sector EOF), and seed 003 forced by
 * the hook points: a source that runs short at byte N and completes on retry (no hole), a
 * zero-length remainder (the rest cancelled, the count is what reached the disk), an injected I/O
 * error part-way (error returned, no file extent, old data kept, fsync/sync/unmount finish), ENOSPC
 * up front. Every scenario ends with unmount + `btrfs check --readonly`, a remount that reads the
 * file back, and as root the kernel's read of the image compared byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>

#include <ubtrfs.h>

#include "util/hooks.h"
#include "write/write.h"

#include "unit_fs.h"

#define SS 4096u

static void fill(uint8_t *buf, size_t len, unsigned tag)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(tag * 131 + i * 7 + (i >> 12));
}

/* ---- coherency: direct and buffered IO on one file ---- */

static void test_mixed_coherency(void **state)
{
	const size_t max = 2 << 20;
	uint8_t *model = calloc(1, max), *buf = aligned_alloc(SS, 256 << 10), *got = aligned_alloc(SS, 256 << 10);
	size_t size = 0;
	unsigned seed = 7;
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("512M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "mixed", O_RDWR | O_DIRECT, NULL);
	for (int op = 0; op < 400; op++) {
		unsigned kind;
		size_t off, len;

		seed = seed * 1103515245 + 12345;
		kind = (seed >> 16) % 6;
		seed = seed * 1103515245 + 12345;
		off = (seed >> 8) % (max - (256 << 10));
		seed = seed * 1103515245 + 12345;
		len = 1 + (seed >> 8) % (256 << 10);
		if (kind <= 2) {
			/* direct, aligned (kind 2: unaligned, the buffered fallback) */
			if (kind < 2) {
				off = off / SS * SS;
				len = (len + SS - 1) / SS * SS;
				/* past an EOF in mid-sector goes buffered too: both are fine */
			}
			fill(buf, len, (unsigned)op);
			assert_int_equal(ubt_pwrite_direct(f, buf, len, off), (ssize_t)len);
		} else if (kind == 3) {
			fill(buf, len, (unsigned)op);
			assert_int_equal(ubt_pwrite(f, buf, len, off), (ssize_t)len);
		} else {
			/* reads: direct (aligned) or buffered, each compared */
			size_t want;
			ssize_t n;

			if (kind == 4) {
				off = off / SS * SS;
				len = (len + SS - 1) / SS * SS;
				n = ubt_pread_direct(f, got, len, off);
			} else {
				n = ubt_pread(f, got, len, off);
			}
			want = off >= size ? 0 : (len < size - off ? len : size - off);
			assert_int_equal(n, (ssize_t)want);
			assert_memory_equal(got, model + off, want);
			continue;
		}
		memcpy(model + off, buf, len);
		if (off + len > size)
			size = off + len;
		if (op % 97 == 0)
			assert_int_equal(ubt_fsync(f, 0), 0);
	}
	/* A buffered write just before a direct read and a direct write just before a buffered read. */
	fill(buf, 3 * SS, 999);
	assert_int_equal(ubt_pwrite(f, buf, 3 * SS, 5 * SS + 17), (ssize_t)(3 * SS));
	memcpy(model + 5 * SS + 17, buf, 3 * SS);
	assert_int_equal(ubt_pread_direct(f, got, 4 * SS, 5 * SS), (ssize_t)(4 * SS));
	assert_memory_equal(got, model + 5 * SS, 4 * SS);
	fill(buf, 2 * SS, 1000);
	assert_int_equal(ubt_pwrite_direct(f, buf, 2 * SS, 6 * SS), (ssize_t)(2 * SS));
	memcpy(model + 6 * SS, buf, 2 * SS);
	assert_int_equal(ubt_pread(f, got, 5 * SS, 5 * SS), (ssize_t)(5 * SS));
	assert_memory_equal(got, model + 5 * SS, 5 * SS);
	ufs_check_content(f, model, size, false);
	ufs_check_content(f, model, size, true);
	assert_int_equal(ufs_file_size(fs, "mixed"), size);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("mixed", model, size, true);
	free(model);
	free(buf);
	free(got);
}

/* ---- unaligned requests fall back to buffered IO ---- */

static void test_unaligned_fallback(void **state)
{
	uint8_t model[6 * SS] = { 0 }, buf[3 * SS], got[6 * SS];
	struct stat attr = { 0 };
	ubt_fs *fs;
	ubt_file *f;
	ubt_ino ino;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "unal", O_RDWR | O_DIRECT, NULL);
	/* Old bytes past a later EOF stay on disk in the old extent: they must never show again. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(ubt_pwrite_direct(f, buf, 3 * SS, 0), (ssize_t)(3 * SS));
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "unal", &ino, NULL), 0);
	attr.st_size = 5000;
	assert_int_equal(ubt_setattr(fs, ino, &attr, UBT_SET_SIZE, NULL), 0);
	ubt_forget(fs, ino, 1);
	memset(model, 'x', 5000);
	/* Aligned, but past an EOF in mid-sector: [5000, 8192) becomes zeros (buffered path). */
	fill(buf, SS, 1);
	assert_int_equal(ubt_pwrite_direct(f, buf, SS, 2 * SS), (ssize_t)SS);
	memcpy(model + 2 * SS, buf, SS);
	/* Unaligned offset and length. */
	fill(buf, 5000, 2);
	assert_int_equal(ubt_pwrite_direct(f, buf, 5000, 100), 5000);
	memcpy(model + 100, buf, 5000);
	fill(buf, SS, 3);
	assert_int_equal(ubt_pwrite_direct(f, buf, 123, 4 * SS + 7), 123);
	memcpy(model + 4 * SS + 7, buf, 123);
	/* Unaligned direct reads. */
	assert_int_equal(ubt_pread_direct(f, got, 3000, 4001), 3000);
	assert_memory_equal(got, model + 4001, 3000);
	ufs_check_content(f, model, 4 * SS + 130, true);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("unal", model, 4 * SS + 130, true);
}

/* ---- seed 003: the source runs short part-way ---- */

struct short_src {
	uint64_t first;     /* bytes the source yields at the first copy of the write */
	uint64_t then;      /* bytes it yields at each retry ((uint64_t)-1: all of the rest) */
	unsigned calls;
};

static int short_copy(void *arg, void *point_arg)
{
	struct short_src *s = arg;
	struct ubt_direct_step *step = point_arg;
	uint64_t give = s->calls++ == 0 ? s->first : s->then;

	if (give < step->avail)
		step->avail = give;
	return 0;
}

static const uint64_t short_ns[] = { 1, 100, SS - 1, SS, SS + 1, 5000, 2 * SS, 7 * SS + 123, 15 * SS };

/* (a) short at byte N, then the retry brings the rest: the whole range reads back, no hole. */
static void test_short_source_retry(void **state)
{
	const size_t len = 16 * SS;
	const size_t nn = sizeof(short_ns) / sizeof(short_ns[0]);
	size_t size = (2 * nn + 2) * len;
	uint8_t *model = calloc(1, size), *buf = aligned_alloc(SS, len);
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "short", O_RDWR | O_DIRECT, NULL);
	/* Old data under half of the writes (overwrite), nothing under the other half (extension). */
	memset(model, 'o', nn * len);
	assert_int_equal(ubt_pwrite(f, model, nn * len, 0), (ssize_t)(nn * len));
	assert_int_equal(ubt_fsync(f, 0), 0);
	for (int ext = 0; ext < 2; ext++) {
		for (size_t i = 0; i < nn; i++) {
			struct short_src src = { .first = short_ns[i], .then = (uint64_t)-1 };
			struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = short_copy, .arg = &src };
			uint64_t off = ((size_t)ext * nn + i) * len;

			fill(buf, len, (unsigned)(ext * 100 + i));
			assert_int_equal(ubt_hook_arm("direct.copy", &spec), 0);
			assert_int_equal(ubt_pwrite_direct(f, buf, len, off), (ssize_t)len);
			ubt_hook_disarm("direct.copy");
			assert_true(src.calls >= 2); /* it did run short and retried */
			memcpy(model + off, buf, len);
			/* Straight away, from disk: the written prefix and the rest, no zeros. */
			{
				uint8_t *got = aligned_alloc(SS, len);
				assert_int_equal(ubt_pread_direct(f, got, len, off), (ssize_t)len);
				assert_memory_equal(got, buf, len);
				free(got);
			}
		}
	}
	size = 2 * nn * len;
	ufs_check_content(f, model, size, true);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("short", model, size, true);
	free(model);
	free(buf);
}

/* (b) the retry yields nothing: the rest is cancelled, the count is what reached the disk. */
static void test_zero_length_remainder(void **state)
{
	const size_t len = 8 * SS;
	const uint64_t ns[] = { 0, 1, SS - 1, SS, 5000, 3 * SS, 7 * SS + 4095 };
	const size_t nn = sizeof(ns) / sizeof(ns[0]);
	uint8_t *model = calloc(1, (nn + 1) * len), *buf = aligned_alloc(SS, len);
	size_t size;
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "zero", O_RDWR | O_DIRECT, NULL);
	memset(model, 'o', nn * len);
	assert_int_equal(ubt_pwrite(f, model, nn * len, 0), (ssize_t)(nn * len));
	assert_int_equal(ubt_fsync(f, 0), 0);
	size = nn * len;
	for (size_t i = 0; i < nn; i++) {
		struct short_src src = { .first = ns[i], .then = 0 };
		struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = short_copy, .arg = &src };
		uint64_t written = ns[i] / SS * SS;
		ssize_t n;

		fill(buf, len, (unsigned)i);
		assert_int_equal(ubt_hook_arm("direct.copy", &spec), 0);
		n = ubt_pwrite_direct(f, buf, len, i * len);
		ubt_hook_disarm("direct.copy");
		if (!written) {
			assert_int_equal(n, -EFAULT); /* nothing reached the disk */
		} else {
			assert_int_equal(n, (ssize_t)written);
			memcpy(model + i * len, buf, written);
		}
	}
	/* At the end of the file: the size grows by what was written only. */
	{
		struct short_src src = { .first = 5000, .then = 0 };
		struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = short_copy, .arg = &src };

		fill(buf, len, 77);
		assert_int_equal(ubt_hook_arm("direct.copy", &spec), 0);
		assert_int_equal(ubt_pwrite_direct(f, buf, len, size), (ssize_t)SS);
		ubt_hook_disarm("direct.copy");
		memcpy(model + size, buf, SS);
		size += SS;
		assert_int_equal(ufs_file_size(fs, "zero"), size);
	}
	ufs_check_content(f, model, size, true);
	ufs_check_content(f, model, size, false);
	assert_int_equal(ubt_fsync(f, 0), 0); /* a short source is no I/O error */
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("zero", model, size, true);
	free(model);
	free(buf);
}

/* (c) an I/O error part-way: the error, no file extent for the range, old data, nothing hangs. */
static void test_io_error_midway(void **state)
{
	const size_t len = 16 * SS;
	struct short_src src = { .first = 6 * SS, .then = (uint64_t)-1 };
	struct ubt_hook_spec copy = { .action = UBT_HOOK_CALL, .fn = short_copy, .arg = &src };
	struct ubt_hook_spec fail = { .action = UBT_HOOK_FAIL, .error = -EIO, .skip = 1, .count = 1 };
	uint8_t *model = calloc(1, 3 * len), *buf = aligned_alloc(SS, len);
	ubt_fs *fs;
	ubt_file *f;

	(void)state;
	alarm(120); /* nothing may wait forever: the test dies instead of hanging */
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "ioerr", O_RDWR | O_DIRECT, NULL);
	memset(model, 'o', 2 * len);
	assert_int_equal(ubt_pwrite_direct(f, model, 2 * len, 0), (ssize_t)(2 * len));
	assert_int_equal(ubt_fsync(f, 0), 0);
	/* Overwrite: the first submission (6 sectors) goes in, the retry's submission fails. */
	fill(buf, len, 5);
	assert_int_equal(ubt_hook_arm("direct.copy", &copy), 0);
	assert_int_equal(ubt_hook_arm("direct.submit", &fail), 0);
	assert_int_equal(ubt_pwrite_direct(f, buf, len, len / 2), -EIO);
	assert_int_equal(ubt_hook_hits("direct.submit"), 2);
	ubt_hook_disarm("direct.copy");
	ubt_hook_disarm("direct.submit");
	ufs_check_content(f, model, 2 * len, true); /* old data, also the submitted prefix */
	/* Extending: a failed write past EOF does not grow the file. */
	fail.skip = 0;
	assert_int_equal(ubt_hook_arm("direct.submit", &fail), 0);
	assert_int_equal(ubt_pwrite_direct(f, buf, len, 2 * len), -EIO);
	ubt_hook_disarm("direct.submit");
	assert_int_equal(ufs_file_size(fs, "ioerr"), 2 * len);
	/* The error reaches fsync once; sync and unmount finish. */
	assert_int_equal(ubt_fsync(f, 0), -EIO);
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_sync(fs), 0);
	/* A later write of the range works. */
	assert_int_equal(ubt_pwrite_direct(f, buf, len, 2 * len), (ssize_t)len);
	memcpy(model + 2 * len, buf, len);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	alarm(0);
	/* No file extent for the failed range: exactly the old extent and the later one are there. */
	ufs_sh("btrfs inspect-internal dump-tree -t 5 %s | grep -c 'EXTENT_DATA' | grep -qx 2 || "
	       "{ btrfs inspect-internal dump-tree -t 5 %s | grep -A4 EXTENT_DATA; exit 1; }",
	       ufs_img, ufs_img);
	ufs_verify_image("ioerr", model, 3 * len, true);
	free(model);
	free(buf);
}

/* A source that faults at once and on the retry: -EFAULT, nothing changed. */
static int fault_copy(void *arg, void *point_arg)
{
	(void)arg;
	(void)point_arg;
	return -EFAULT;
}

static void test_fault_and_enospc(void **state)
{
	struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = fault_copy };
	uint8_t *buf = aligned_alloc(SS, 1 << 20);
	ssize_t n = 0;
	ubt_fs *fs;
	ubt_file *f;
	int i;

	(void)state;
	memset(buf, 0x5a, 1 << 20);
	ufs_fresh_image("200M", NULL);
	fs = ufs_mount(NULL);
	f = ufs_create(fs, "fill", O_RDWR | O_DIRECT, NULL);
	assert_int_equal(ubt_hook_arm("direct.copy", &spec), 0);
	assert_int_equal(ubt_pwrite_direct(f, buf, 1 << 20, 0), -EFAULT);
	ubt_hook_disarm("direct.copy");
	assert_int_equal(ufs_file_size(fs, "fill"), 0);
	for (i = 0; i < 400; i++) {
		n = ubt_pwrite_direct(f, buf, 1 << 20, (uint64_t)i << 20);
		if (n < 0)
			break;
		assert_int_equal(n, 1 << 20);
	}
	assert_int_equal(n, -ENOSPC); /* up front: nothing of that write happened */
	printf("ENOSPC after %d MiB\n", i);
	assert_true(i > 100);
	assert_int_equal(ufs_file_size(fs, "fill"), (uint64_t)i << 20);
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
	free(buf);
}

static int setup(void **state)
{
	(void)state;
	return ufs_setup("dio");
}

static int teardown(void **state)
{
	(void)state;
	return ufs_teardown("m");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixed_coherency),
		cmocka_unit_test(test_unaligned_fallback),
		cmocka_unit_test(test_short_source_retry),
		cmocka_unit_test(test_zero_length_remainder),
		cmocka_unit_test(test_io_error_midway),
		cmocka_unit_test(test_fault_and_enospc),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
