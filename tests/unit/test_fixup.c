/*
 * test_fixup.c — pages dirtied behind the write path's back (ubt_mmap + ubt_msync/ubt_munmap: no
 * reservation, no DELALLOC) and the fixup worker (invariants 1 and 2; seeds 001, 000, 004). Each
 * interleaving is forced with hooks, never hoped for: the worker is paused at "fixup.before_run",
 * in the window between writeback refusing the page and the fixup, while the test evicts the
 * cache, truncates the file, or runs writeback again; "fixup.reserve" injects ENOSPC. Every image
 * passes `btrfs check --readonly` after unmount and, as root, the kernel reads the files back
 * byte for byte.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>

#include <cmocka.h>

#include <ubtrfs.h>

#include "cache/page-cache.h"
#include "fs/fs.h"
#include "util/hooks.h"
#include "write/write-internal.h"

#include "unit_fs.h"

#define PG 4096u
#define WAIT_MS 10000

static struct ubt_write_info *wi_of(ubt_fs *fs)
{
	return fs->fs_info->write_info;
}

static struct ubt_inode_state *st_of(ubt_fs *fs, ubt_file *f)
{
	struct ubt_inode_state *st = ubt_inode_state_find(fs->fs_info, f->root, f->objectid);

	assert_non_null(st);
	return st;
}

static u64 nr_dirty(ubt_fs *fs)
{
	struct ubt_page_cache_stats s;

	ubt_page_cache_get_stats(wi_of(fs)->cache, &s);
	return s.nr_dirty;
}

static void fill(u8 *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (u8)((i * 31 + seed * 7) ^ (i >> 9));
}

/* A file @name of @size pattern bytes, on disk (fsync'ed). */
static ubt_file *make_file(ubt_fs *fs, const char *name, u8 *model, size_t size, ubt_ino *ino)
{
	ubt_file *f = ufs_create(fs, name, O_RDWR, ino);

	fill(model, size, 1);
	assert_int_equal(ubt_pwrite(f, model, size, 0), (ssize_t)size);
	assert_int_equal(ubt_fsync(f, 0), 0);
	return f;
}

static void arm_pause(const char *name)
{
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE };

	assert_int_equal(ubt_hook_arm(name, &pause), 0);
}

static void arm_count(const char *name)
{
	struct ubt_hook_spec count = { .action = UBT_HOOK_CALL };

	assert_int_equal(ubt_hook_arm(name, &count), 0);
}

/* (a) A page dirtied through a mapping is fixed up, written and persists; the file does not grow. */
static void test_mapped_write_persists(void **state)
{
	const size_t size = 16 * PG + 100;
	u8 *model = malloc(size), *model2 = calloc(1, 3 * PG);
	ubt_fs *fs;
	ubt_file *f, *g;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "mapped", model, size, NULL);
	arm_count("fixup.before_run");
	/* Two pages of the middle, and the EOF page with bytes past EOF (dropped). */
	map = ubt_mmap(f, 4 * PG, 2 * PG);
	assert_non_null(map);
	assert_memory_equal(map, model + 4 * PG, 2 * PG);
	memset(map + 100, 0xa1, 5000);
	memcpy(model + 4 * PG + 100, map + 100, 5000);
	assert_int_equal(ubt_munmap(f, map, 2 * PG), 0);
	map = ubt_mmap(f, 16 * PG, 3 * PG);
	assert_non_null(map);
	assert_memory_equal(map, model + 16 * PG, 100);
	for (size_t i = 100; i < 3 * PG; i++)
		assert_int_equal(map[i], 0); /* zeros past EOF */
	memset(map + 50, 0xb2, 3 * PG - 50);
	memset(model + 16 * PG + 50, 0xb2, 50);
	assert_int_equal(ubt_msync(f, map, 3 * PG), 0);
	/* Dirty in the cache, no delalloc: readers see it already. */
	ufs_check_content(f, model, size, false);
	assert_int_equal(ubt_munmap(f, map, 3 * PG), 0);
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_true(ubt_hook_hits("fixup.before_run") >= 1);
	assert_int_equal(nr_dirty(fs), 0);
	ufs_check_content(f, model, size, false);
	ubt_hook_disarm("fixup.before_run");

	/* A second file changed only through a mapping, never fsync'ed: unmount writes it. */
	g = ufs_create(fs, "unsynced", O_RDWR, NULL);
	assert_int_equal(ubt_pwrite(g, model2, 3 * PG, 0), 3 * PG);
	map = ubt_mmap(g, 0, 3 * PG);
	assert_non_null(map);
	fill(map + PG, PG, 9);
	memcpy(model2 + PG, map + PG, PG);
	assert_int_equal(ubt_munmap(g, map, 3 * PG), 0);
	assert_int_equal(ubt_close(g), 0);

	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("mapped", model, size, false);
	ufs_verify_image("unsynced", model2, 3 * PG, false);
	free(model);
	free(model2);
}

/* (b) Seed 000: eviction forced while the page waits for the fixup — it stays dirty, nothing lost. */
static void test_evict_in_window(void **state)
{
	struct ubt_hook_spec evict = { .action = UBT_HOOK_CALL, .fn = ubt_page_cache_evict_hook };
	const size_t size = 8 * PG;
	u8 *model = malloc(size), junk[PG];
	struct ubt_inode_state *st;
	struct ubt_page *page;
	ubt_fs *fs;
	ubt_file *f;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "evict", model, size, NULL);
	arm_pause("fixup.before_run");
	map = ubt_mmap(f, 2 * PG, PG);
	assert_non_null(map);
	fill(map, PG, 77);
	memcpy(model + 2 * PG, map, PG);
	/*
	 * Evict at every page unlock and idle put from here on: right after the unmap dirtied the
	 * page, and right after writeback marked it CHECKED and unlocked it (seed 000's window).
	 */
	assert_int_equal(ubt_hook_arm("cache.evict_now", &evict), 0);
	assert_int_equal(ubt_munmap(f, map, PG), 0); /* kicks the flusher: writeback refuses the page */
	assert_int_equal(ubt_hook_wait_paused("fixup.before_run", 1, WAIT_MS), 0);
	assert_true(ubt_hook_hits("cache.evict_now") > 0);

	/* The window: refused by writeback, not yet fixed up. It must be dirty and CHECKED. */
	st = st_of(fs, f);
	page = ubt_find_get_page(st->mapping, 2);
	assert_non_null(page);
	assert_true(PageDirty(page));
	assert_true(PageChecked(page));
	ubt_put_page(page);
	ubt_page_cache_evict(wi_of(fs)->cache, UBT_EVICT_ALL);
	for (int i = 0; i < 8; i++)
		assert_int_equal(ubt_pread(f, junk, PG, (u64)i * PG), PG);
	ubt_page_cache_evict(wi_of(fs)->cache, UBT_EVICT_ALL);
	page = ubt_find_get_page(st->mapping, 2);
	assert_non_null(page); /* never freed */
	assert_true(PageDirty(page));
	assert_memory_equal(ubt_page_data(page), model + 2 * PG, PG);
	ubt_put_page(page);
	ubt_inode_state_put(st);
	ubt_hook_release("fixup.before_run");
	ubt_hook_disarm("fixup.before_run");

	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(nr_dirty(fs), 0);
	ubt_page_cache_evict(wi_of(fs)->cache, UBT_EVICT_ALL);
	ubt_hook_disarm("cache.evict_now");
	ufs_check_content(f, model, size, false); /* from disk now */
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("evict", model, size, false);
	free(model);
}

struct trunc_arg {
	ubt_fs *fs;
	ubt_ino ino;
	off_t size;
	int ret;
	volatile bool done;
};

static void *trunc_fn(void *p)
{
	struct trunc_arg *a = p;
	struct stat at = { .st_size = a->size }, out;

	a->ret = ubt_setattr(a->fs, a->ino, &at, UBT_SET_SIZE, &out);
	a->done = true;
	return NULL;
}

/* (c) Truncate below the page while the worker waits: the worker finds the page gone, drops it. */
static void test_truncate_races_fixup(void **state)
{
	const size_t size = 4 * PG;
	const off_t new_size = PG + 1000;
	u8 *model = malloc(size);
	struct trunc_arg a = { 0 };
	struct stat st;
	pthread_t t;
	ubt_fs *fs;
	ubt_file *f;
	ubt_ino ino;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "trunc", model, size, &ino);
	arm_pause("fixup.before_run");
	arm_count("fixup.page_gone");
	map = ubt_mmap(f, 0, size);
	assert_non_null(map);
	memset(map + 3 * PG, 0xcc, PG); /* the page the truncate removes */
	memset(map + 10, 0xdd, 20);     /* and one it keeps */
	memset(model + 10, 0xdd, 20);
	assert_int_equal(ubt_msync(f, map + 3 * PG, PG), 0);
	assert_int_equal(ubt_hook_wait_paused("fixup.before_run", 1, WAIT_MS), 0);

	a.fs = fs;
	a.ino = ino;
	a.size = new_size;
	assert_int_equal(pthread_create(&t, NULL, trunc_fn, &a), 0);
	/* The truncate must not wait for the paused worker. */
	for (int i = 0; i < WAIT_MS / 10 && !a.done; i++)
		usleep(10000);
	if (!a.done)
		ubt_hook_release("fixup.before_run"); /* do not hang the suite; fail below */
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(a.done);
	assert_int_equal(a.ret, 0);
	assert_int_equal(ubt_hook_hits("fixup.page_gone"), 0);
	ubt_hook_release("fixup.before_run");
	ubt_hook_disarm("fixup.before_run");

	/* Hand back the other change, then everything must settle. */
	assert_int_equal(ubt_msync(f, map, PG), 0);
	assert_int_equal(ubt_munmap(f, map, size), 0); /* page 3 is past EOF now: dropped */
	assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_hook_hits("fixup.page_gone"), 1);
	ubt_hook_disarm("fixup.page_gone");
	assert_int_equal(nr_dirty(fs), 0);
	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, new_size);
	ufs_check_content(f, model, (size_t)new_size, false);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("trunc", model, (size_t)new_size, false);
	free(model);
}

/* (d) ENOSPC inside the fixup: fsync reports it, the page is cleaned, the old data stays. */
static void test_fixup_enospc(void **state)
{
	struct ubt_hook_spec fail = { .action = UBT_HOOK_FAIL, .error = -ENOSPC };
	const size_t size = 6 * PG;
	u8 *model = malloc(size);
	struct ubt_inode_state *st;
	struct ubt_page *page;
	ubt_fs *fs;
	ubt_file *f;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "nospc", model, size, NULL);
	assert_int_equal(ubt_hook_arm("fixup.reserve", &fail), 0);
	map = ubt_mmap(f, PG, 2 * PG);
	assert_non_null(map);
	memset(map, 0xee, 2 * PG);
	assert_int_equal(ubt_munmap(f, map, 2 * PG), 0);
	assert_int_equal(ubt_fsync(f, 0), -ENOSPC);
	assert_true(ubt_hook_hits("fixup.reserve") >= 2);
	ubt_hook_disarm("fixup.reserve");
	assert_int_equal(nr_dirty(fs), 0); /* cleaned, not left dirty forever */
	st = ubt_inode_state_find(fs->fs_info, f->root, f->objectid);
	page = st ? ubt_find_get_page(st->mapping, 1) : NULL; /* a clean file's state may be gone */
	if (page) {
		assert_false(PageDirty(page));
		assert_false(PageChecked(page));
		assert_true(PageError(page));
		ubt_put_page(page);
	}
	ubt_inode_state_put(st);
	ufs_check_content(f, model, size, false); /* the old data, read from disk */
	assert_int_equal(ubt_fsync(f, 0), 0); /* reported once */
	assert_int_equal(ubt_sync(fs), 0);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("nospc", model, size, false);
	free(model);
}

/* (e) One page, one fixup: CHECKED keeps writeback from queueing it again, paused or not. */
static void test_queued_once(void **state)
{
	const size_t size = 4 * PG;
	u8 *model = malloc(size);
	struct ubt_inode_state *st;
	struct ubt_page *page;
	ubt_fs *fs;
	ubt_file *f;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "once", model, size, NULL);
	arm_pause("fixup.before_run");
	map = ubt_mmap(f, 0, size);
	assert_non_null(map);
	fill(map + PG, PG, 3);
	memcpy(model + PG, map + PG, PG);
	assert_int_equal(ubt_msync(f, map, size), 0);
	st = st_of(fs, f);
	assert_int_equal(ubt_hook_wait_paused("fixup.before_run", 1, WAIT_MS), 0);
	/* Writeback again and again while the worker waits: the page is refused, not requeued. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(ubt_writeback_range(st, 0, (u64)-1), 0);
		ubt_write_kick_flusher(wi_of(fs));
	}
	usleep(100000);
	page = ubt_find_get_page(st->mapping, 1);
	assert_non_null(page);
	assert_true(PageDirty(page));
	assert_true(PageChecked(page));
	ubt_put_page(page);
	assert_int_equal(ubt_hook_hits("fixup.before_run"), 1);
	ubt_hook_release("fixup.before_run");
	/* Unpaused: any second work would pause here and hang the fsync; count instead. */
	arm_count("fixup.before_run");
	for (int i = 0; i < 3; i++)
		assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_hook_hits("fixup.before_run"), 0);
	page = ubt_find_get_page(st->mapping, 1);
	if (page) {
		assert_false(PageChecked(page));
		assert_false(PageDirty(page));
		ubt_put_page(page);
	}
	/* Dirtied again: one more fixup, exactly one. */
	fill(map + PG, PG, 4);
	memcpy(model + PG, map + PG, PG);
	assert_int_equal(ubt_msync(f, map, size), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ubt_writeback_range(st, 0, (u64)-1), 0);
		assert_int_equal(ubt_fsync(f, 0), 0);
	}
	assert_int_equal(ubt_hook_hits("fixup.before_run"), 1);
	ubt_hook_disarm("fixup.before_run");
	assert_int_equal(ubt_munmap(f, map, size), 0);
	ubt_inode_state_put(st);
	assert_int_equal(nr_dirty(fs), 0);
	ufs_check_content(f, model, size, false);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_verify_image("once", model, size, false);
	free(model);
}

/* The API's edges: alignment, unknown buffers, read-only handles. */
static void test_api_edges(void **state)
{
	u8 model[2 * PG];
	ubt_fs *fs;
	ubt_file *f, *r;
	u8 *map;

	(void)state;
	ufs_fresh_image("256M", NULL);
	fs = ufs_mount(NULL);
	f = make_file(fs, "edges", model, sizeof(model), NULL);
	errno = 0;
	assert_null(ubt_mmap(f, 100, PG));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(ubt_munmap(f, model, PG), -EINVAL);
	r = ufs_open_existing(fs, "edges", O_RDONLY);
	map = ubt_mmap(r, 0, 10);
	assert_non_null(map);
	assert_int_equal((uintptr_t)map % PG, 0);
	assert_memory_equal(map, model, 10);
	assert_int_equal(ubt_msync(r, map, PG), 0); /* nothing changed */
	assert_int_equal(ubt_munmap(f, map, PG), -EINVAL); /* another handle's mapping */
	map[0] ^= 1;
	assert_int_equal(ubt_msync(r, map, PG), -EBADF);
	assert_int_equal(ubt_munmap(r, map, PG), -EBADF); /* freed all the same */
	assert_int_equal(ubt_close(r), 0);
	ufs_check_content(f, model, sizeof(model), false);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_check_image();
}

static int setup(void **state)
{
	(void)state;
	return ufs_setup("fixup");
}

static int teardown(void **state)
{
	(void)state;
	ubt_hook_disarm_all();
	return ufs_teardown("m");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapped_write_persists),
		cmocka_unit_test(test_evict_in_window),
		cmocka_unit_test(test_truncate_races_fixup),
		cmocka_unit_test(test_fixup_enospc),
		cmocka_unit_test(test_queued_once),
		cmocka_unit_test(test_api_edges),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
