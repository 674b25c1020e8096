/*
 * test_page_cache.c — unit tests of src/cache/page-cache.c: the page flag state machine and its
 * accounting, sparse indices and the dirty iterator, page lock and writeback waits, the mapping
 * error reported once, eviction that never frees a dirty/writeback/locked/referenced page (a
 * deterministic case per state, the seed-000 fixup window forced with the "cache.evict_now" hook,
 * and a random multi-threaded stress against a model), the memory limit, dirty throttling,
 * truncation racing a locked page and a page under writeback, invalidation, and readahead.
 */
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/page-cache.h"
#include "util/hooks.h"

#define PS UBT_PAGE_SIZE

static struct ubt_page_cache *cache_new(u64 pages, unsigned reclaim_ms)
{
	struct ubt_page_cache_config cfg = { .limit_bytes = pages * PS, .reclaim_wait_ms = reclaim_ms };
	struct ubt_page_cache *c = ubt_page_cache_create(&cfg);

	assert_false(IS_ERR(c));
	return c;
}

static struct ubt_page_cache_stats stats(struct ubt_page_cache *c)
{
	struct ubt_page_cache_stats st;

	ubt_page_cache_get_stats(c, &st);
	return st;
}

static void fill(struct ubt_page *p, u32 v)
{
	u32 *w = ubt_page_data(p);

	for (unsigned i = 0; i < PS / 4; i++)
		w[i] = v ^ i;
}

static bool holds(struct ubt_page *p, u32 v)
{
	const u32 *w = ubt_page_data(p);

	for (unsigned i = 0; i < PS / 4; i++)
		if (w[i] != (v ^ i))
			return false;
	return true;
}

static bool all_zero(struct ubt_page *p)
{
	const u8 *d = ubt_page_data(p);

	for (unsigned i = 0; i < PS; i++)
		if (d[i])
			return false;
	return true;
}

/* Create page @index with data @v, uptodate and dirty, unlocked, not referenced. */
static void make_dirty(struct ubt_mapping *m, u64 index, u32 v)
{
	struct ubt_page *p = ubt_find_or_create_page(m, index);

	assert_false(IS_ERR(p));
	fill(p, v);
	SetPageUptodate(p);
	ubt_set_page_dirty(p);
	ubt_unlock_page(p);
	ubt_put_page(p);
}

static void make_clean(struct ubt_mapping *m, u64 index, u32 v)
{
	struct ubt_page *p = ubt_find_or_create_page(m, index);

	assert_false(IS_ERR(p));
	fill(p, v);
	SetPageUptodate(p);
	ubt_unlock_page(p);
	ubt_put_page(p);
}

/* Write one dirty page back synchronously (as writeback would), ending with @err. */
static void write_back(struct ubt_page *p, int err)
{
	ubt_lock_page(p);
	assert_true(ubt_clear_page_dirty_for_io(p));
	ubt_set_page_writeback(p);
	ubt_unlock_page(p);
	ubt_end_page_writeback(p, err);
}

static bool wait_for(bool (*cond)(void *), void *arg, unsigned ms)
{
	for (unsigned i = 0; i < ms; i++) {
		if (cond(arg))
			return true;
		usleep(1000);
	}
	return cond(arg);
}

static void test_flags_state_machine(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 257);
	struct ubt_page *p, *q;

	p = ubt_find_or_create_page(m, 3);
	assert_false(IS_ERR(p));
	assert_true(PageLocked(p));
	assert_false(PageUptodate(p) || PageDirty(p) || PageWriteback(p) || PageChecked(p) || PageError(p));
	assert_true(all_zero(p));
	assert_int_equal(p->index, 3);
	assert_int_equal(ubt_page_offset(p), 3 * PS);
	assert_ptr_equal(ubt_page_mapping(p), m);
	assert_false(ubt_trylock_page(p));
	SetPageUptodate(p);

	/* dirty: clean -> dirty once, counted in the mapping and the cache */
	assert_true(ubt_set_page_dirty(p));
	assert_false(ubt_set_page_dirty(p));
	assert_int_equal(ubt_mapping_nr_dirty(m), 1);
	assert_int_equal(stats(c).nr_dirty, 1);
	assert_int_equal(ubt_mapping_verify(m), 0);

	/* the fixup marker is a plain bit */
	SetPageChecked(p);
	assert_true(PageChecked(p));
	ClearPageChecked(p);
	assert_false(PageChecked(p));

	/* clear_page_dirty_for_io (page locked) -> writeback */
	assert_true(ubt_clear_page_dirty_for_io(p));
	assert_false(ubt_clear_page_dirty_for_io(p));
	assert_int_equal(ubt_mapping_nr_dirty(m), 0);
	assert_int_equal(stats(c).nr_dirty, 0);
	ubt_set_page_writeback(p);
	assert_true(PageWriteback(p));
	assert_int_equal(ubt_mapping_verify(m), 0);
	/* redirtied during writeback: both bits */
	assert_true(ubt_set_page_dirty(p));
	ubt_unlock_page(p);
	assert_false(PageLocked(p));

	/* a second lookup sees the same page */
	q = ubt_find_get_page(m, 3);
	assert_ptr_equal(q, p);
	assert_true(ubt_trylock_page(q));
	ubt_unlock_page(q);
	ubt_put_page(q);
	assert_null(ubt_find_get_page(m, 4));

	ubt_end_page_writeback(p, 0);
	assert_false(PageWriteback(p));
	assert_false(PageError(p));
	assert_true(PageDirty(p));
	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_lock_page(p);
	assert_true(ubt_clear_page_dirty_for_io(p));
	ubt_unlock_page(p);
	assert_int_equal(stats(c).nr_lru, 0); /* still referenced by us */
	ubt_put_page(p);
	assert_int_equal(stats(c).nr_lru, 1); /* clean, idle: evictable */
	assert_int_equal(ubt_page_cache_verify(c), 0);
	assert_int_equal(ubt_mapping_check_error(m), 0);

	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	ubt_page_cache_destroy(c);
}

static void test_sparse_indices_and_dirty_iterator(void **state)
{
	static const u64 idx[] = { 0, 1, 63, 64, 4095, 4096, 262143, 1ull << 30, (1ull << 40) + 5,
				   (1ull << 52) - 1 };
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 258);
	struct ubt_page *p;
	u64 at = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < ARRAY_SIZE(idx); i++) {
		if (i % 2)
			make_dirty(m, idx[i], (u32)i);
		else
			make_clean(m, idx[i], (u32)i);
	}
	assert_int_equal(ubt_mapping_nr_pages(m), ARRAY_SIZE(idx));
	assert_int_equal(ubt_mapping_nr_dirty(m), ARRAY_SIZE(idx) / 2);
	assert_int_equal(ubt_mapping_verify(m), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(idx); i++) {
		p = ubt_find_get_page(m, idx[i]);
		assert_non_null(p);
		assert_true(holds(p, (u32)i));
		ubt_put_page(p);
		assert_null(ubt_find_get_page(m, idx[i] + 2));
	}

	/* walk the dirty pages in order: odd positions */
	while (ubt_mapping_next_dirty(m, at, &p) == 0) {
		assert_int_equal(p->index, idx[2 * n + 1]);
		assert_true(PageDirty(p));
		at = p->index + 1;
		n++;
		ubt_put_page(p);
	}
	assert_int_equal(n, ARRAY_SIZE(idx) / 2);
	assert_int_equal(ubt_mapping_next_dirty(m, idx[ARRAY_SIZE(idx) - 1] + 1, &p), -ENOENT);
	assert_null(p);

	/* cleaning one moves the iterator past it */
	assert_int_equal(ubt_mapping_next_dirty(m, 2, &p), 0);
	assert_int_equal(p->index, 64);
	write_back(p, 0);
	ubt_put_page(p);
	assert_int_equal(ubt_mapping_next_dirty(m, 2, &p), 0);
	assert_int_equal(p->index, 4096);
	ubt_put_page(p);
	assert_int_equal(ubt_mapping_verify(m), 0);

	/* truncate from the middle keeps the low pages */
	ubt_truncate_inode_pages_range(m, 4096 * (u64)PS, (u64)-1);
	assert_int_equal(ubt_mapping_nr_pages(m), 5);
	assert_int_equal(ubt_mapping_nr_dirty(m), 1); /* page 1 (64 was written back) */
	assert_int_equal(stats(c).nr_dirty, 1);
	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	assert_int_equal(stats(c).nr_dirty, 0);
	ubt_page_cache_destroy(c);
}

/* ---- waits ---- */

struct waiter {
	struct ubt_page *page;
	struct ubt_page_cache *cache;
	int done;
};

static void *lock_thread(void *arg)
{
	struct waiter *w = arg;

	ubt_lock_page(w->page);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	ubt_unlock_page(w->page);
	return NULL;
}

static void *wb_wait_thread(void *arg)
{
	struct waiter *w = arg;

	ubt_wait_on_page_writeback(w->page);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static u64 want_sleeps;
static bool lock_sleeps_reached(void *arg) { return stats(arg).lock_sleeps >= want_sleeps; }
static bool wb_sleeps_reached(void *arg) { return stats(arg).writeback_sleeps >= want_sleeps; }
static bool throttle_sleeps_reached(void *arg) { return stats(arg).throttle_sleeps >= want_sleeps; }

static void test_lock_and_writeback_waits(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 259);
	struct ubt_page *p = ubt_find_or_create_page(m, 0);
	struct waiter w = { .page = p, .cache = c };
	pthread_t t;

	/* lock_page sleeps while another holds the lock, unlock wakes it */
	assert_int_equal(pthread_create(&t, NULL, lock_thread, &w), 0);
	want_sleeps = 1;
	assert_true(wait_for(lock_sleeps_reached, c, 5000));
	usleep(20000);
	assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0);
	ubt_unlock_page(p);
	pthread_join(t, NULL);
	assert_int_equal(w.done, 1);

	/* wait_on_page_writeback sleeps until end_page_writeback */
	ubt_lock_page(p);
	ubt_set_page_dirty(p);
	assert_true(ubt_clear_page_dirty_for_io(p));
	ubt_set_page_writeback(p);
	ubt_unlock_page(p);
	w.done = 0;
	assert_int_equal(pthread_create(&t, NULL, wb_wait_thread, &w), 0);
	assert_true(wait_for(wb_sleeps_reached, c, 5000));
	usleep(20000);
	assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0);
	ubt_end_page_writeback(p, 0);
	pthread_join(t, NULL);
	assert_int_equal(w.done, 1);

	ubt_put_page(p);
	ubt_mapping_destroy(m);
	ubt_page_cache_destroy(c);
}

static void test_mapping_error_reported_once(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 260);
	struct ubt_page *p;

	make_dirty(m, 7, 7);
	p = ubt_find_get_page(m, 7);
	write_back(p, -EIO);
	assert_true(PageError(p));
	assert_false(PageDirty(p) || PageWriteback(p));
	assert_int_equal(ubt_mapping_check_error(m), -EIO);
	assert_int_equal(ubt_mapping_check_error(m), 0); /* reported once */
	ubt_put_page(p);

	ubt_mapping_set_error(m, -ENOSPC);
	ubt_mapping_set_error(m, -ENOSPC);
	assert_int_equal(ubt_mapping_check_error(m), -ENOSPC);
	assert_int_equal(ubt_mapping_check_error(m), 0);

	ubt_mapping_set_error(m, -ENOSPC);
	ubt_mapping_set_error(m, -EUCLEAN); /* anything but ENOSPC is EIO; EIO wins */
	assert_int_equal(ubt_mapping_check_error(m), -EIO);
	assert_int_equal(ubt_mapping_check_error(m), 0);
	ubt_mapping_set_error(m, 0);
	assert_int_equal(ubt_mapping_check_error(m), 0);

	ubt_mapping_destroy(m);
	ubt_page_cache_destroy(c);
}

/* ---- eviction ---- */

/* One page in each pinning state survives "evict everything"; only the idle clean page goes. */
static void test_eviction_never_frees_pinned_pages(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 261);
	struct ubt_page *locked, *refd, *wb, *p;

	make_clean(m, 0, 100);     /* idle, clean: the only evictable one */
	make_dirty(m, 1, 101);     /* dirty */
	make_clean(m, 2, 102);     /* under writeback */
	wb = ubt_find_get_page(m, 2);
	ubt_lock_page(wb);
	ubt_set_page_writeback(wb);
	ubt_unlock_page(wb);
	ubt_put_page(wb);
	make_clean(m, 3, 103);     /* locked (and referenced by its locker) */
	locked = ubt_find_get_page(m, 3);
	ubt_lock_page(locked);
	make_clean(m, 4, 104);     /* referenced only */
	refd = ubt_find_get_page(m, 4);
	make_dirty(m, 5, 105);     /* dirty + checked: waiting for the fixup worker */
	p = ubt_find_get_page(m, 5);
	SetPageChecked(p);
	ubt_put_page(p);

	assert_int_equal(stats(c).nr_lru, 1);
	assert_int_equal(ubt_page_cache_evict(c, UBT_EVICT_ALL), 1);
	assert_null(ubt_find_get_page(m, 0));
	for (u64 i = 1; i <= 5; i++) {
		p = ubt_find_get_page(m, i);
		assert_non_null(p);
		assert_true(holds(p, (u32)(100 + i)));
		ubt_put_page(p);
	}
	assert_int_equal(ubt_mapping_verify(m), 0);
	assert_int_equal(ubt_page_cache_verify(c), 0);

	/* release each pin: the page becomes evictable */
	ubt_unlock_page(locked);
	ubt_put_page(locked);
	ubt_put_page(refd);
	ubt_end_page_writeback(wb, 0);
	assert_int_equal(stats(c).nr_lru, 3);
	assert_int_equal(ubt_page_cache_evict(c, UBT_EVICT_ALL), 3);
	assert_int_equal(ubt_mapping_nr_pages(m), 2); /* the dirty ones */
	p = ubt_find_get_page(m, 1);
	write_back(p, 0);
	ubt_put_page(p);
	assert_int_equal(ubt_page_cache_evict(c, UBT_EVICT_ALL), 1);
	assert_int_equal(ubt_mapping_nr_pages(m), 1);
	p = ubt_find_get_page(m, 5);
	assert_true(PageDirty(p) && PageChecked(p) && holds(p, 105));
	ubt_put_page(p);

	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	ubt_page_cache_destroy(c);
}

/*
 * The seed-000 scenario at the cache level. Writeback meets a page dirtied out of band (no COW
 * setup): it takes the page (lock, clear_page_dirty_for_io), refuses to write it, marks it CHECKED
 * for the fixup worker and — the fix — redirties it before unlocking. "cache.evict_now" fires
 * right at that unlock (page migration jumping into the window before the fixup worker runs):
 * the page and its data must still be there. The same steps without the redirty (the 2019 bug)
 * lose the page, which shows the eviction really ran.
 */
static bool hooks_available;

static void writeback_refuses(struct ubt_page_cache *c, struct ubt_mapping *m, u64 index, bool redirty)
{
	struct ubt_page *p;

	assert_int_equal(ubt_mapping_next_dirty(m, index, &p), 0);
	assert_int_equal(p->index, index);
	ubt_lock_page(p);
	assert_true(ubt_clear_page_dirty_for_io(p));
	/* ... no DELALLOC / ordered extent covers it: queue it to the fixup worker ... */
	SetPageChecked(p);
	if (redirty)
		ubt_set_page_dirty(p);
	ubt_unlock_page(p); /* "cache.evict_now" */
	ubt_put_page(p);
	if (!hooks_available)
		ubt_page_cache_evict(c, UBT_EVICT_ALL);
}

static void test_seed000_fixup_page_survives_eviction(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 262);
	struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = ubt_page_cache_evict_hook, .arg = c };
	struct ubt_page *p;
	int ret;

	make_clean(m, 0, 0xAA);         /* a bystander: clean and idle, evicted by the same run */
	make_dirty(m, 1, 0xD1);         /* dirtied out of band (mmap unmap path) */
	make_dirty(m, 2, 0xD2);

	ret = ubt_hook_arm("cache.evict_now", &spec);
	hooks_available = ret == 0;
	if (!hooks_available)
		assert_int_equal(ret, -ENOSYS);

	writeback_refuses(c, m, 1, true);
	if (hooks_available)
		assert_true(ubt_hook_hits("cache.evict_now") >= 1);
	assert_null(ubt_find_get_page(m, 0)); /* eviction ran */
	p = ubt_find_get_page(m, 1);
	assert_non_null(p);                   /* INVARIANT 2: still here, dirty, checked, same data */
	assert_true(PageDirty(p) && PageChecked(p) && PageUptodate(p));
	assert_true(holds(p, 0xD1));
	assert_int_equal(ubt_mapping_nr_dirty(m), 2);

	/* the fixup worker then finds it under the page lock: in the mapping, dirty, checked */
	ubt_lock_page(p);
	assert_ptr_equal(ubt_page_mapping(p), m);
	assert_true(PageDirty(p) && PageChecked(p));
	ClearPageChecked(p); /* (delalloc set up) stays dirty for the next writeback */
	ubt_unlock_page(p);
	ubt_put_page(p);

	/* the bug: left clean while waiting for the fixup -> evicted, the data is gone */
	writeback_refuses(c, m, 2, false);
	assert_null(ubt_find_get_page(m, 2));
	ubt_hook_disarm("cache.evict_now");

	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_mapping_destroy(m);
	ubt_page_cache_destroy(c);
}

static void test_memory_limit(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 50);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 263);
	struct ubt_page *p, *held[64];

	for (u64 i = 0; i < 1000; i++) {
		make_clean(m, i, (u32)i);
		assert_true(stats(c).nr_pages <= 64);
	}
	assert_true(stats(c).evicted >= 1000 - 64);
	assert_null(ubt_find_get_page(m, 0));          /* oldest gone */
	p = ubt_find_get_page(m, 999);                 /* newest kept */
	assert_non_null(p);
	assert_true(holds(p, 999));
	ubt_put_page(p);
	assert_int_equal(ubt_page_cache_verify(c), 0);
	assert_int_equal(ubt_mapping_verify(m), 0);

	/* every page pinned: allocation waits reclaim_wait_ms, then -ENOMEM; nothing is freed */
	ubt_truncate_inode_pages_range(m, 0, (u64)-1);
	for (u64 i = 0; i < 64; i++) {
		held[i] = ubt_find_or_create_page(m, i);
		assert_false(IS_ERR(held[i]));
		fill(held[i], (u32)i);
		ubt_set_page_dirty(held[i]);
		ubt_unlock_page(held[i]);
		if (i % 2)
			ubt_put_page(held[i]); /* odd: dirty only; even: dirty and referenced */
	}
	p = ubt_find_or_create_page(m, 64);
	assert_ptr_equal(p, ERR_PTR(-ENOMEM));
	assert_int_equal(stats(c).alloc_failures, 1);
	assert_int_equal(stats(c).nr_pages, 64);
	for (u64 i = 0; i < 64; i++) {
		p = ubt_find_get_page(m, i);
		assert_non_null(p);
		assert_true(holds(p, (u32)i));
		ubt_put_page(p);
	}
	/* writing one back frees room */
	p = ubt_find_get_page(m, 1);
	write_back(p, 0);
	ubt_put_page(p);
	p = ubt_find_or_create_page(m, 64);
	assert_false(IS_ERR(p));
	assert_null(ubt_find_get_page(m, 1));
	ubt_unlock_page(p);
	ubt_put_page(p);
	for (u64 i = 0; i < 64; i += 2)
		ubt_put_page(held[i]);
	assert_int_equal(ubt_page_cache_verify(c), 0);
	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	ubt_page_cache_destroy(c);
}

/* ---- throttling ---- */

struct flusher {
	struct ubt_mapping *m;
	sem_t kick;
	int calls;
	bool stop;
	bool do_writeback;
};

static void flusher_fn(void *arg)
{
	struct flusher *f = arg;

	__atomic_fetch_add(&f->calls, 1, __ATOMIC_SEQ_CST);
	sem_post(&f->kick);
}

static void *flusher_thread(void *arg)
{
	struct flusher *f = arg;
	struct ubt_page *p;

	for (;;) {
		sem_wait(&f->kick);
		if (__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST))
			return NULL;
		if (!__atomic_load_n(&f->do_writeback, __ATOMIC_SEQ_CST))
			continue;
		while (ubt_mapping_next_dirty(f->m, 0, &p) == 0) {
			ubt_lock_page(p);
			if (ubt_clear_page_dirty_for_io(p)) {
				ubt_set_page_writeback(p);
				ubt_unlock_page(p);
				ubt_end_page_writeback(p, 0);
			} else {
				ubt_unlock_page(p);
			}
			ubt_put_page(p);
		}
	}
}

static void *throttle_thread(void *arg)
{
	struct waiter *w = arg;

	ubt_page_cache_throttle(w->cache);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_throttle_blocks_and_resumes(void **state)
{
	struct ubt_page_cache *c = cache_new(100, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 264);
	struct flusher f = { .m = m };
	struct waiter w = { .cache = c };
	struct ubt_page *p;
	pthread_t t, ft;

	assert_int_equal(stats(c).dirty_limit_pages, 20);
	for (u64 i = 0; i < 25; i++)
		make_dirty(m, i, (u32)i);
	ubt_page_cache_throttle(c); /* no flusher: nobody could help, so no wait */

	sem_init(&f.kick, 0, 0);
	assert_int_equal(pthread_create(&ft, NULL, flusher_thread, &f), 0);
	ubt_page_cache_set_flusher(c, flusher_fn, &f);

	/* 1: the writer blocks; the flusher was asked; cleaning 5 pages (25 -> 20) releases it */
	assert_int_equal(pthread_create(&t, NULL, throttle_thread, &w), 0);
	want_sleeps = 1;
	assert_true(wait_for(throttle_sleeps_reached, c, 5000));
	assert_true(__atomic_load_n(&f.calls, __ATOMIC_SEQ_CST) >= 1);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ubt_mapping_next_dirty(m, 0, &p), 0);
		write_back(p, 0);
		ubt_put_page(p);
	}
	usleep(50000);
	assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0); /* 21 > 20 */
	assert_int_equal(ubt_mapping_next_dirty(m, 0, &p), 0);
	write_back(p, 0);
	ubt_put_page(p);
	pthread_join(t, NULL);
	assert_int_equal(w.done, 1);
	assert_int_equal(stats(c).nr_dirty, 20);

	/* 2: over the limit again; the flusher's own writeback brings it down */
	for (u64 i = 100; i < 110; i++)
		make_dirty(m, i, (u32)i);
	__atomic_store_n(&f.do_writeback, true, __ATOMIC_SEQ_CST);
	w.done = 0;
	assert_int_equal(pthread_create(&t, NULL, throttle_thread, &w), 0);
	pthread_join(t, NULL);
	assert_int_equal(w.done, 1);
	assert_true(stats(c).nr_dirty <= 20);

	__atomic_store_n(&f.stop, true, __ATOMIC_SEQ_CST);
	sem_post(&f.kick);
	pthread_join(ft, NULL);
	sem_destroy(&f.kick);
	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_mapping_destroy(m);
	ubt_page_cache_destroy(c);
}

/* ---- truncation and invalidation ---- */

struct truncator {
	struct ubt_mapping *m;
	u64 start, end;
	int done;
};

static void *truncate_thread(void *arg)
{
	struct truncator *t = arg;

	ubt_truncate_inode_pages_range(t->m, t->start, t->end);
	__atomic_store_n(&t->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_truncate_races_locked_page(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 265);
	struct truncator tr = { .m = m, .start = 0, .end = (u64)-1 };
	struct ubt_page *locked, *p;
	u64 sleeps;
	pthread_t t;

	for (u64 i = 0; i < 10; i++)
		make_dirty(m, i, (u32)i);
	locked = ubt_find_or_create_page(m, 5); /* the writer holds page 5 */
	fill(locked, 0x55);

	sleeps = stats(c).lock_sleeps;
	assert_int_equal(pthread_create(&t, NULL, truncate_thread, &tr), 0);
	want_sleeps = sleeps + 1;
	assert_true(wait_for(lock_sleeps_reached, c, 5000)); /* truncate sleeps on page 5 */
	usleep(20000);
	assert_int_equal(__atomic_load_n(&tr.done, __ATOMIC_SEQ_CST), 0);
	for (u64 i = 0; i < 5; i++)
		assert_null(ubt_find_get_page(m, i)); /* 0..4 removed, dirty or not */
	for (u64 i = 6; i < 10; i++) {
		p = ubt_find_get_page(m, i);
		assert_non_null(p); /* not reached yet */
		ubt_put_page(p);
	}
	assert_ptr_equal(ubt_page_mapping(locked), m);
	ubt_unlock_page(locked);
	pthread_join(t, NULL);
	assert_int_equal(tr.done, 1);

	/* the holder's page is detached but its memory lives until the last put */
	assert_null(ubt_page_mapping(locked));
	assert_true(holds(locked, 0x55));
	assert_int_equal(ubt_mapping_nr_pages(m), 0);
	assert_int_equal(ubt_mapping_nr_dirty(m), 0);
	assert_int_equal(stats(c).nr_dirty, 0);
	assert_int_equal(stats(c).nr_pages, 1);
	ubt_put_page(locked);
	assert_int_equal(stats(c).nr_pages, 0);

	/* truncate waits for writeback to end */
	make_dirty(m, 3, 3);
	p = ubt_find_get_page(m, 3);
	ubt_lock_page(p);
	ubt_clear_page_dirty_for_io(p);
	ubt_set_page_writeback(p);
	ubt_unlock_page(p);
	tr.done = 0;
	want_sleeps = stats(c).writeback_sleeps + 1;
	assert_int_equal(pthread_create(&t, NULL, truncate_thread, &tr), 0);
	assert_true(wait_for(wb_sleeps_reached, c, 5000));
	usleep(20000);
	assert_int_equal(__atomic_load_n(&tr.done, __ATOMIC_SEQ_CST), 0);
	ubt_end_page_writeback(p, 0);
	pthread_join(t, NULL);
	assert_int_equal(tr.done, 1);
	assert_null(ubt_page_mapping(p));
	ubt_put_page(p);

	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	ubt_page_cache_destroy(c);
}

static void test_truncate_partial_and_invalidate(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 266);
	struct ubt_page *p, *refd;
	const u8 *d;

	for (u64 i = 0; i < 8; i++)
		make_dirty(m, i, 0x01010101u * (u32)(i + 1));
	/* [PS + 100, 5 * PS + 9]: page 1 zeroed from 100, 2..4 removed, page 5 zeroed up to 9 */
	ubt_truncate_inode_pages_range(m, PS + 100, 5 * (u64)PS + 9);
	assert_int_equal(ubt_mapping_nr_pages(m), 5);
	assert_int_equal(ubt_mapping_nr_dirty(m), 5);
	for (u64 i = 2; i <= 4; i++)
		assert_null(ubt_find_get_page(m, i));
	p = ubt_find_get_page(m, 1);
	d = ubt_page_data(p);
	assert_int_not_equal(d[99], 0);
	for (unsigned i = 100; i < PS; i++)
		assert_int_equal(d[i], 0);
	ubt_put_page(p);
	p = ubt_find_get_page(m, 5);
	d = ubt_page_data(p);
	for (unsigned i = 0; i <= 9; i++)
		assert_int_equal(d[i], 0);
	assert_int_not_equal(d[10], 0);
	ubt_put_page(p);
	/* inside one page */
	ubt_truncate_inode_pages_range(m, 6 * (u64)PS + 8, 6 * (u64)PS + 15);
	p = ubt_find_get_page(m, 6);
	d = ubt_page_data(p);
	assert_true(d[7] && !d[8] && !d[15] && d[16]);
	ubt_put_page(p);

	/* invalidate removes only clean, idle pages */
	p = ubt_find_get_page(m, 0);
	write_back(p, 0);
	ubt_put_page(p);
	p = ubt_find_get_page(m, 7);
	write_back(p, 0);
	refd = p; /* clean but referenced */
	assert_int_equal(ubt_invalidate_mapping_pages(m, 0, (u64)-1), 1);
	assert_null(ubt_find_get_page(m, 0));
	assert_int_equal(ubt_mapping_nr_pages(m), 4);
	ubt_put_page(refd);
	assert_int_equal(ubt_invalidate_mapping_pages(m, 0, 6), 0);
	assert_int_equal(ubt_invalidate_mapping_pages(m, 7, 7), 1);
	assert_int_equal(ubt_mapping_verify(m), 0);

	/* a range ending just before a page boundary, and one past the last page */
	ubt_truncate_inode_pages_range(m, 0, 2 * (u64)PS - 1);
	assert_null(ubt_find_get_page(m, 1));
	ubt_truncate_inode_pages_range(m, 100 * (u64)PS, (u64)-1);
	assert_int_equal(ubt_mapping_nr_pages(m), 2);
	assert_int_equal(ubt_mapping_verify(m), 0);
	ubt_mapping_destroy(m);
	assert_int_equal(stats(c).nr_pages, 0);
	assert_int_equal(stats(c).nr_dirty, 0);
	ubt_page_cache_destroy(c);
}

static void test_readahead_window(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, NULL, 267);
	u64 at = 0;
	unsigned n, expect = UBT_RA_INIT_PAGES;

	for (int i = 0; i < 10; i++) {
		n = ubt_page_cache_readahead_hint(m, at);
		assert_int_equal(n, expect);
		at += n;
		expect = ubt_min(expect * 2, UBT_RA_MAX_PAGES);
	}
	assert_int_equal(n, UBT_RA_MAX_PAGES); /* capped at 1 MiB */
	assert_int_equal(UBT_RA_MAX_PAGES * PS, 1u << 20);
	/* a miss inside the window returns the rest of it */
	assert_int_equal(ubt_page_cache_readahead_hint(m, at - 10), 10);
	/* random access: one page, then sequential again from there */
	assert_int_equal(ubt_page_cache_readahead_hint(m, 5), 1);
	assert_int_equal(ubt_page_cache_readahead_hint(m, 6), UBT_RA_INIT_PAGES);
	assert_int_equal(ubt_page_cache_readahead_hint(m, 6 + UBT_RA_INIT_PAGES), 2 * UBT_RA_INIT_PAGES);
	assert_int_equal(ubt_page_cache_readahead_hint(m, 1000000), 1);
	ubt_mapping_destroy(m);
	ubt_page_cache_destroy(c);
}

/* ---- random stress: 3 writers, each on its own mapping, and an evictor, against a model ---- */

#define ST_THREADS 3
#define ST_IDX 48
#define ST_OPS 6000
#define ST_MAXPIN 12
#define ST_LIMIT 64

struct st_slot {
	bool dirty;             /* must be present, dirty, with @pattern */
	struct ubt_page *wb;    /* under writeback: must be present */
	struct ubt_page *held;  /* we hold a reference: must be present */
	u32 pattern;            /* data whenever present and uptodate */
};

struct st_thread {
	struct ubt_page_cache *c;
	struct ubt_mapping *m;
	u64 rng;
	struct st_slot s[ST_IDX];
	bool expect_error;
	unsigned line;          /* failing check, 0 if none */
	const char *what;
	u64 ops_done, evict_seen;
};

static int st_stop;

static u64 st_rand(struct st_thread *t)
{
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return t->rng;
}

#define TCHECK(t, cond)                                                                                  \
	do {                                                                                             \
		if (!(cond)) {                                                                           \
			(t)->line = __LINE__;                                                            \
			(t)->what = #cond;                                                               \
			return false;                                                                    \
		}                                                                                        \
	} while (0)

static u64 st_index(unsigned i) { return (u64)i * 37 + (i % 3) * 4096; } /* spread over the tree */

static bool st_required(const struct st_slot *s) { return s->dirty || s->wb || s->held; }

static unsigned st_pinned(struct st_thread *t)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ST_IDX; i++)
		n += st_required(&t->s[i]);
	return n;
}

static bool st_write(struct st_thread *t, unsigned i)
{
	struct st_slot *s = &t->s[i];
	struct ubt_page *p;

	if (s->wb)
		return true; /* only we complete our writeback: don't wait for it */
	p = ubt_find_or_create_page(t->m, st_index(i));
	TCHECK(t, !IS_ERR(p));
	TCHECK(t, PageLocked(p) && p->index == st_index(i));
	if (PageUptodate(p))
		TCHECK(t, holds(p, s->pattern));
	else
		TCHECK(t, !st_required(s) && all_zero(p)); /* a required page can't have been recreated */
	s->pattern = (u32)st_rand(t);
	fill(p, s->pattern);
	SetPageUptodate(p);
	ClearPageChecked(p);
	ubt_set_page_dirty(p);
	s->dirty = true;
	ubt_unlock_page(p);
	if (!s->held && st_rand(t) % 4 == 0)
		s->held = p;
	else
		ubt_put_page(p);
	return true;
}

static bool st_read(struct st_thread *t, unsigned i)
{
	struct st_slot *s = &t->s[i];
	struct ubt_page *p = ubt_find_get_page(t->m, st_index(i));

	if (!p) {
		TCHECK(t, !st_required(s)); /* I2: nothing dirty/writeback/referenced disappears */
		t->evict_seen++;
		return true;
	}
	TCHECK(t, PageUptodate(p) && holds(p, s->pattern));
	TCHECK(t, PageDirty(p) == s->dirty);
	TCHECK(t, PageWriteback(p) == (s->wb != NULL));
	ubt_put_page(p);
	return true;
}

static bool st_writeback_start(struct st_thread *t, unsigned i)
{
	struct ubt_page *p;
	struct st_slot *s;
	unsigned j;
	int ret = ubt_mapping_next_dirty(t->m, st_index(i), &p);

	for (j = 0; j < ST_IDX; j++)
		if (st_index(j) >= st_index(i) && t->s[j].dirty)
			break;
	if (ret == -ENOENT) {
		TCHECK(t, j == ST_IDX);
		return true;
	}
	TCHECK(t, ret == 0 && j < ST_IDX);
	for (j = 0; j < ST_IDX && st_index(j) != p->index; j++)
		;
	TCHECK(t, j < ST_IDX);
	s = &t->s[j];
	TCHECK(t, s->dirty && !s->wb);
	ubt_lock_page(p);
	TCHECK(t, ubt_clear_page_dirty_for_io(p));
	if (st_rand(t) % 4 == 0) {
		/* refused: the fixup path keeps it dirty and checked */
		SetPageChecked(p);
		ubt_set_page_dirty(p);
	} else {
		ubt_set_page_writeback(p);
		s->wb = p;
		s->dirty = false;
	}
	ubt_unlock_page(p);
	ubt_put_page(p);
	return true;
}

static bool st_writeback_end(struct st_thread *t, unsigned i)
{
	struct st_slot *s = &t->s[i];
	int err = st_rand(t) % 16 == 0 ? -EIO : 0;

	if (!s->wb)
		return true;
	TCHECK(t, PageWriteback(s->wb) && ubt_page_mapping(s->wb) == t->m);
	ubt_end_page_writeback(s->wb, err);
	s->wb = NULL;
	if (err)
		t->expect_error = true;
	return true;
}

static bool st_end_all_writeback(struct st_thread *t)
{
	for (unsigned i = 0; i < ST_IDX; i++)
		if (!st_writeback_end(t, i))
			return false;
	return true;
}

static bool st_truncate(struct st_thread *t, unsigned a, unsigned b)
{
	if (!st_end_all_writeback(t)) /* truncate would wait for them, and only we end them */
		return false;
	ubt_truncate_inode_pages_range(t->m, st_index(a) * PS, st_index(b) * PS + PS - 1);
	for (unsigned i = 0; i < ST_IDX; i++) {
		struct st_slot *s = &t->s[i];

		if (st_index(i) < st_index(a) || st_index(i) > st_index(b))
			continue;
		TCHECK(t, ubt_find_get_page(t->m, st_index(i)) == NULL);
		s->dirty = false;
		if (s->held) {
			TCHECK(t, ubt_page_mapping(s->held) == NULL && holds(s->held, s->pattern));
			ubt_put_page(s->held);
			s->held = NULL;
		}
	}
	return true;
}

static bool st_check_all(struct st_thread *t)
{
	for (unsigned i = 0; i < ST_IDX; i++)
		if (!st_read(t, i))
			return false;
	TCHECK(t, ubt_mapping_verify(t->m) == 0);
	TCHECK(t, ubt_mapping_check_error(t->m) == (t->expect_error ? -EIO : 0));
	t->expect_error = false;
	return true;
}

static bool st_run(struct st_thread *t)
{
	for (unsigned n = 0; n < ST_OPS; n++) {
		unsigned i = st_rand(t) % ST_IDX, op = st_rand(t) % 100;
		bool ok = true;

		if (op < 30)
			ok = st_pinned(t) < ST_MAXPIN ? st_write(t, i) : st_writeback_start(t, i);
		else if (op < 55)
			ok = st_read(t, i);
		else if (op < 70)
			ok = st_writeback_start(t, i);
		else if (op < 85)
			ok = st_writeback_end(t, i);
		else if (op < 92) {
			if (t->s[i].held) {
				ubt_put_page(t->s[i].held);
				t->s[i].held = NULL;
			}
		} else if (op < 94) {
			unsigned j = st_rand(t) % ST_IDX;

			ok = st_truncate(t, ubt_min(i, j), ubt_max(i, j));
		} else if (op < 97) {
			ubt_page_cache_evict(t->c, 1 + st_rand(t) % 8);
		} else {
			ok = st_check_all(t);
		}
		if (!ok)
			return false;
		TCHECK(t, stats(t->c).nr_pages <= ST_LIMIT); /* I6 */
		t->ops_done++;
	}
	if (!st_end_all_writeback(t) || !st_check_all(t))
		return false;
	for (unsigned i = 0; i < ST_IDX; i++)
		if (t->s[i].held) {
			ubt_put_page(t->s[i].held);
			t->s[i].held = NULL;
		}
	return true;
}

static void *st_thread_fn(void *arg)
{
	struct st_thread *t = arg;

	if (!st_run(t))
		__atomic_store_n(&st_stop, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *st_evictor(void *arg)
{
	struct ubt_page_cache *c = arg;
	unsigned n = 0;

	while (!__atomic_load_n(&st_stop, __ATOMIC_SEQ_CST)) {
		ubt_page_cache_evict(c, n % 5 == 0 ? UBT_EVICT_ALL : 1 + n % 7);
		if (ubt_page_cache_verify(c) != 0)
			return (void *)1;
		if (++n % 64 == 0)
			sched_yield();
	}
	return NULL;
}

/* Looks up pages of every mapping: foreign references race the owners, truncation and the
 * evictor (a page truncated while we hold it keeps only our reference). */
struct st_reader {
	struct st_thread *t;
	u64 rng, lookups;
	int bad;
};

static void *st_reader_fn(void *arg)
{
	struct st_reader *r = arg;

	while (!__atomic_load_n(&st_stop, __ATOMIC_SEQ_CST)) {
		struct st_thread *t;
		struct ubt_page *p;
		unsigned i;

		r->rng ^= r->rng << 13;
		r->rng ^= r->rng >> 7;
		r->rng ^= r->rng << 17;
		t = &r->t[r->rng % ST_THREADS];
		i = (unsigned)(r->rng >> 8) % ST_IDX;
		p = ubt_find_get_page(t->m, st_index(i));
		r->lookups++;
		if (!p)
			continue;
		if (p->index != st_index(i) || __atomic_load_n(&p->refcount, __ATOMIC_ACQUIRE) < 1)
			r->bad = 1;
		if (r->rng % 8 == 0)
			sched_yield(); /* hold it a little */
		ubt_put_page(p);
	}
	return NULL;
}

static void test_stress_eviction_vs_model(void **state)
{
	struct ubt_page_cache *c = cache_new(ST_LIMIT, 2000);
	struct st_thread *t = calloc(ST_THREADS, sizeof(*t));
	pthread_t th[ST_THREADS], ev, rt;
	struct st_reader rd = { .rng = 0xFEEDull };
	void *ev_ret;
	u64 seed = 0x5EED0000;

	if (getenv("UBT_SEED"))
		seed = strtoull(getenv("UBT_SEED"), NULL, 0);
	print_message("stress seed %#llx (UBT_SEED to repeat)\n", (unsigned long long)seed);
	st_stop = 0;
	for (int k = 0; k < ST_THREADS; k++) {
		t[k].c = c;
		t[k].m = ubt_mapping_create(c, &t[k], 300 + (u64)k);
		t[k].rng = seed * 2654435761u + (u64)k * 0x9E3779B97F4A7C15ull + 1;
		assert_int_equal(pthread_create(&th[k], NULL, st_thread_fn, &t[k]), 0);
	}
	assert_int_equal(pthread_create(&ev, NULL, st_evictor, c), 0);
	rd.t = t;
	assert_int_equal(pthread_create(&rt, NULL, st_reader_fn, &rd), 0);
	for (int k = 0; k < ST_THREADS; k++)
		pthread_join(th[k], NULL);
	__atomic_store_n(&st_stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(ev, &ev_ret);
	pthread_join(rt, NULL);
	assert_int_equal(rd.bad, 0);
	for (int k = 0; k < ST_THREADS; k++) {
		if (t[k].line)
			print_error("thread %d failed at line %u: %s (after %llu ops)\n", k, t[k].line, t[k].what,
				    (unsigned long long)t[k].ops_done);
		assert_int_equal(t[k].line, 0);
		assert_int_equal(t[k].ops_done, ST_OPS);
	}
	assert_null(ev_ret);
	assert_true(stats(c).evicted > 0);
	assert_int_equal(ubt_page_cache_verify(c), 0);
	print_message("evicted %llu pages; %llu owner lookups found no page; %llu foreign lookups\n",
		      (unsigned long long)stats(c).evicted,
		      (unsigned long long)(t[0].evict_seen + t[1].evict_seen + t[2].evict_seen),
		      (unsigned long long)rd.lookups);
	for (int k = 0; k < ST_THREADS; k++)
		ubt_mapping_destroy(t[k].m);
	assert_int_equal(stats(c).nr_pages, 0);
	assert_int_equal(stats(c).nr_dirty, 0);
	free(t);
	ubt_page_cache_destroy(c);
}

static void test_destroy_with_held_page(void **state)
{
	struct ubt_page_cache *c = cache_new(64, 0);
	struct ubt_mapping *m = ubt_mapping_create(c, (void *)0x1234, 268);
	struct ubt_page *p;

	assert_ptr_equal(ubt_mapping_owner(m), (void *)0x1234);
	assert_int_equal(ubt_mapping_ino(m), 268);
	make_dirty(m, 9, 9);
	p = ubt_find_get_page(m, 9);
	ubt_mapping_destroy(m); /* a fixup worker still holds the page */
	ubt_lock_page(p);
	assert_null(ubt_page_mapping(p)); /* the worker sees it gone: drop */
	assert_true(holds(p, 9));
	ubt_unlock_page(p);
	assert_int_equal(stats(c).nr_pages, 1);
	assert_int_equal(stats(c).nr_dirty, 0);
	ubt_put_page(p);
	assert_int_equal(stats(c).nr_pages, 0);
	ubt_page_cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags_state_machine),
		cmocka_unit_test(test_sparse_indices_and_dirty_iterator),
		cmocka_unit_test(test_lock_and_writeback_waits),
		cmocka_unit_test(test_mapping_error_reported_once),
		cmocka_unit_test(test_eviction_never_frees_pinned_pages),
		cmocka_unit_test(test_seed000_fixup_page_survives_eviction),
		cmocka_unit_test(test_memory_limit),
		cmocka_unit_test(test_throttle_blocks_and_resumes),
		cmocka_unit_test(test_truncate_races_locked_page),
		cmocka_unit_test(test_truncate_partial_and_invalidate),
		cmocka_unit_test(test_readahead_window),
		cmocka_unit_test(test_stress_eviction_vs_model),
		cmocka_unit_test(test_destroy_with_held_page),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
