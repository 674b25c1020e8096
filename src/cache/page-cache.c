/*
 * page-cache.c — the page cache: per-inode mappings of 4 KiB pages (a tagged radix tree), the
 * kernel's page flags with their accounting, sleeping page locks on hashed waitqueues, a bounded
 * global cache with an LRU of evictable pages, dirty limits with writer throttling, truncation,
 * and a readahead window. Written for ubtrfs from the kernel's documented semantics; no GPL code.
 *
 * PAGE STATES AND TRANSITIONS (function performing each)
 *
 *   (absent) --find_or_create_page--> LOCKED, in mapping, refs = mapping + caller
 *   LOCKED  --unlock_page-->  unlocked          unlocked --lock_page/trylock_page--> LOCKED
 *   clean   --set_page_dirty-->  DIRTY  (tag DIRTY, mapping->nr_dirty++, cache->nr_dirty++)
 *   DIRTY   --clear_page_dirty_for_io [LOCKED]--> clean (untag, counts--, throttlers woken)
 *   !WB     --set_page_writeback [LOCKED]--> WRITEBACK (tag WRITEBACK, +1 writeback ref)
 *   WB      --end_page_writeback [any thread]--> !WB (+ERROR and mapping error on failure;
 *                                                 waiters woken; writeback ref dropped)
 *   in mapping --truncate_inode_pages_range / invalidate [LOCKED, !WB]--> removed
 *                 (DIRTY cleared and unaccounted; mapping ref dropped; page->mapping = NULL)
 *   on LRU  --ubt_page_cache_evict [refs == 1]--> freed (removed from the mapping first)
 *   refs 0  --put_page--> freed
 *   UPTODATE, CHECKED, ERROR, ORDERED: plain bits set/cleared by their owners (no accounting).
 *
 * REFERENCES. A page in a mapping holds one reference for the mapping. Lookups add one for the
 * caller (under mapping->lock; an idle page's 1 -> 2 also takes it off the LRU under cache->lock);
 * WRITEBACK holds one. put_page's 2 -> 1 and 1 -> 0 happen under cache->lock; other changes only
 * by holders (refs >= 2 already). So "refs == 1" seen under both locks is stable.
 *
 * INVARIANTS (checked by UBT_ASSERT in debug builds, and by ubt_mapping_verify /
 * ubt_page_cache_verify in tests)
 *   I1  on_lru  <=>  mapping != NULL && refs == 1 && !(LOCKED|DIRTY|WRITEBACK)
 *       [cache->lock + mapping->lock; under cache->lock alone refs may read 2 while a lookup is
 *       between its increment and taking the page off the LRU]. "=>" always; "<=" once the last
 *       holder's put_page ran.
 *   I2  eviction frees only LRU pages, re-checked under both locks: never a dirty, writeback,
 *       locked or referenced page (the brief's INVARIANT 2: a page waiting for fixup stays dirty
 *       and so stays in memory).
 *   I3  DIRTY bit <=> DIRTY tag <=> counted in mapping->nr_dirty and cache->nr_dirty, for pages
 *       in a mapping; both change together under mapping->lock.
 *   I4  WRITEBACK bit <=> WRITEBACK tag; a page under writeback is in its mapping (truncate waits
 *       for writeback under the page lock; set_page_writeback needs the page lock) and holds a ref.
 *   I5  page->mapping changes from a mapping to NULL only under mapping->lock + cache->lock, and
 *       either with the page locked (truncate/invalidate) or with refs == 1 (eviction); so it is
 *       stable for the page lock's holder.
 *   I6  cache->nr_pages (allocated pages) <= limit_pages: allocation reserves first, evicting or
 *       waiting for evictable pages, and fails with -ENOMEM after reclaim_wait_ms.
 *   I7  a freed page is unlocked, not under writeback, off the LRU and out of any mapping.
 *
 * LOCK ORDER (outermost first)
 *   1. page lock (PG_LOCKED, sleeping). Several page locks of one mapping: ascending index, or
 *      trylock. Never wait for a page lock while holding 2-4.
 *   2. mapping->lock: radix tree and tags, per-mapping counts, DIRTY/WRITEBACK bit changes for
 *      mapped pages, page->mapping, readahead state, error bits.
 *   3. cache->lock: LRU, nr_pages, refcount transitions to/from 1, flusher, throttle/space conds.
 *      Eviction holds cache->lock and only *tries* mapping->lock (a failed try skips the page),
 *      so it never inverts the order.
 *   4. waitqueue bucket locks (leaf): only around sleeping on / waking a page bit.
 *   The flusher callback and the "cache.evict_now" hook run with none of these held.
 *
 * HOOK POINT "cache.evict_now" (point_arg: the cache): after unlock_page, after
 * end_page_writeback, in put_page when only the mapping's reference is left, and at
 * ubt_page_cache_evict_point(). Armed with ubt_page_cache_evict_hook it evicts everything
 * evictable there: the window between two steps of the write path in which the kernel's page
 * migration could run.
 *
 * Memory: the limit counts page data (4 KiB a page); page structs and radix-tree nodes are not
 * counted (a few percent for dense files, more for very sparse ones).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/page-cache.h"
#include "util/hooks.h"
#include "util/messages.h"

#define PG_BIT(f) (1ul << (f))
#define PG_PINNED (PG_BIT(UBT_PG_LOCKED) | PG_BIT(UBT_PG_DIRTY) | PG_BIT(UBT_PG_WRITEBACK))

#define DEFAULT_LIMIT_BYTES (256ull << 20)
#define DEFAULT_DIRTY_PERCENT 20u
#define DEFAULT_RECLAIM_WAIT_MS 1000u
#define MIN_LIMIT_PAGES 16u
#define EVICT_BATCH 16u
#define RECLAIM_POLL_MS 10u
#define THROTTLE_POLL_MS 100u

#define AS_EIO 1
#define AS_ENOSPC 2

/* ------------------------------------------------------------------------------------------ */
/* Radix tree keyed by page index, 64 slots a node, with per-slot tag bitmaps (DIRTY,          */
/* WRITEBACK) propagated to the root so "next tagged page at or after i" is O(height).          */

#define RT_BITS 6
#define RT_FANOUT (1u << RT_BITS)
#define RT_MASK ((u64)RT_FANOUT - 1)

enum { RT_TAG_DIRTY, RT_TAG_WRITEBACK, RT_NR_TAGS, RT_ANY = -1 };

struct rt_node {
	unsigned shift;        /* slot of index i here = (i >> shift) & RT_MASK; 0 for leaves */
	unsigned count;        /* non-NULL slots */
	unsigned offset;       /* slot in parent */
	struct rt_node *parent;
	u64 tags[RT_NR_TAGS];  /* bit s: slot s is (or leads to) a tagged page */
	void *slots[RT_FANOUT];
};

static bool rt_covers(const struct rt_node *n, u64 index)
{
	return n->shift + RT_BITS >= 64 || (index >> (n->shift + RT_BITS)) == 0;
}

static struct rt_node *rt_node_alloc(unsigned shift, struct rt_node *parent, unsigned offset)
{
	struct rt_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->shift = shift;
	n->parent = parent;
	n->offset = offset;
	return n;
}

/* The leaf that holds @index, or NULL. */
static struct rt_node *rt_leaf(struct rt_node *n, u64 index)
{
	if (!n || !rt_covers(n, index))
		return NULL;
	while (n && n->shift > 0)
		n = n->slots[(index >> n->shift) & RT_MASK];
	return n;
}

static void *rt_lookup(struct rt_node *root, u64 index)
{
	struct rt_node *leaf = rt_leaf(root, index);

	return leaf ? leaf->slots[index & RT_MASK] : NULL;
}

static int rt_insert(struct rt_node **rootp, u64 index, void *item)
{
	struct rt_node *n;
	unsigned off;

	if (!*rootp) {
		*rootp = rt_node_alloc(0, NULL, 0);
		if (!*rootp)
			return -ENOMEM;
	}
	while (!rt_covers(*rootp, index)) {
		struct rt_node *old = *rootp, *top = rt_node_alloc(old->shift + RT_BITS, NULL, 0);

		if (!top)
			return -ENOMEM;
		if (old->count) {
			top->slots[0] = old;
			top->count = 1;
			for (int t = 0; t < RT_NR_TAGS; t++)
				top->tags[t] = old->tags[t] ? 1 : 0;
			old->parent = top;
			old->offset = 0;
		} else {
			free(old);
		}
		*rootp = top;
	}
	n = *rootp;
	while (n->shift > 0) {
		struct rt_node *child;

		off = (index >> n->shift) & RT_MASK;
		child = n->slots[off];
		if (!child) {
			child = rt_node_alloc(n->shift - RT_BITS, n, off);
			if (!child)
				return -ENOMEM; /* empty nodes on the path are harmless; freed at teardown */
			n->slots[off] = child;
			n->count++;
		}
		n = child;
	}
	off = index & RT_MASK;
	if (n->slots[off])
		return -EEXIST;
	n->slots[off] = item;
	n->count++;
	return 0;
}

static void rt_tag_set(struct rt_node *root, u64 index, int tag)
{
	struct rt_node *n = rt_leaf(root, index);
	unsigned off = index & RT_MASK;

	UBT_ASSERT(n && n->slots[off]);
	while (n) {
		bool was_set = n->tags[tag] & (1ull << off);

		n->tags[tag] |= 1ull << off;
		if (was_set)
			break;
		off = n->offset;
		n = n->parent;
	}
}

static void rt_tag_clear_at(struct rt_node *n, unsigned off, int tag)
{
	while (n) {
		n->tags[tag] &= ~(1ull << off);
		if (n->tags[tag])
			break;
		off = n->offset;
		n = n->parent;
	}
}

static void rt_tag_clear(struct rt_node *root, u64 index, int tag)
{
	struct rt_node *n = rt_leaf(root, index);

	if (n)
		rt_tag_clear_at(n, index & RT_MASK, tag);
}

static bool rt_tag_get(struct rt_node *root, u64 index, int tag)
{
	struct rt_node *n = rt_leaf(root, index);

	return n && (n->tags[tag] >> (index & RT_MASK)) & 1;
}

static void rt_delete(struct rt_node **rootp, u64 index)
{
	struct rt_node *n = rt_leaf(*rootp, index);
	unsigned off = index & RT_MASK;

	if (!n || !n->slots[off])
		return;
	for (int t = 0; t < RT_NR_TAGS; t++)
		rt_tag_clear_at(n, off, t);
	n->slots[off] = NULL;
	n->count--;
	while (n->count == 0) {
		struct rt_node *parent = n->parent;

		if (!parent) {
			free(n);
			*rootp = NULL;
			return;
		}
		for (int t = 0; t < RT_NR_TAGS; t++)
			rt_tag_clear_at(parent, n->offset, t);
		parent->slots[n->offset] = NULL;
		parent->count--;
		free(n);
		n = parent;
	}
}

/* First item at index >= @index under @n (covering indices from @base), tagged @tag unless RT_ANY. */
static void *rt_next_in(struct rt_node *n, u64 base, u64 index, int tag, u64 *found)
{
	for (unsigned off = (unsigned)((index - base) >> n->shift); off < RT_FANOUT; off++) {
		u64 child_base = base + ((u64)off << n->shift);
		void *slot = n->slots[off];
		void *item;

		if (n->shift + RT_BITS > 64 && off >= (1u << (64 - n->shift)))
			break; /* beyond u64 at the top level */
		if (!slot || (tag != RT_ANY && !((n->tags[tag] >> off) & 1)))
			continue;
		if (n->shift == 0) {
			*found = child_base;
			return slot;
		}
		item = rt_next_in(slot, child_base, child_base > index ? child_base : index, tag, found);
		if (item)
			return item;
	}
	return NULL;
}

static void *rt_next(struct rt_node *root, u64 index, int tag, u64 *found)
{
	if (!root || !rt_covers(root, index))
		return NULL;
	return rt_next_in(root, 0, index, tag, found);
}

static void rt_free_all(struct rt_node *n)
{
	if (!n)
		return;
	if (n->shift > 0)
		for (unsigned i = 0; i < RT_FANOUT; i++)
			rt_free_all(n->slots[i]);
	free(n);
}

/* ------------------------------------------------------------------------------------------ */

#define WQ_BITS 6
#define WQ_SIZE (1u << WQ_BITS)

struct wait_bucket {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int waiters; /* atomic; incremented under lock before testing the bit */
};

struct ubt_page_cache {
	pthread_mutex_t lock;
	pthread_cond_t space_cond;    /* CLOCK_MONOTONIC: a page became evictable or was freed */
	pthread_cond_t throttle_cond; /* CLOCK_MONOTONIC: dirty count fell to the limit */
	struct ubt_page *lru_first;   /* most recently released */
	struct ubt_page *lru_last;    /* eviction starts here */
	u64 limit_pages, dirty_limit_pages;
	unsigned reclaim_wait_ms;
	u64 nr_pages;                 /* allocated, under lock */
	u64 nr_lru;                   /* under lock */
	u64 nr_dirty;                 /* atomic */
	int throttle_waiters;         /* atomic */
	unsigned space_waiters;       /* under lock */
	ubt_page_cache_flusher_fn flusher;
	void *flusher_arg;
	u64 evicted, lock_sleeps, writeback_sleeps, throttle_sleeps, reclaim_waits, alloc_failures,
		flusher_calls; /* atomic counters */
	struct wait_bucket wq[WQ_SIZE];
};

struct ubt_mapping {
	pthread_mutex_t lock;
	struct ubt_page_cache *cache;
	void *owner;
	u64 ino;
	struct rt_node *root;
	u64 nr_pages, nr_dirty, nr_writeback; /* under lock; read atomically */
	int error_bits;                       /* atomic AS_EIO | AS_ENOSPC */
	u64 ra_start, ra_end;                 /* last readahead window [start, end) */
	unsigned ra_window;
};

#define stat_inc(c, field) __atomic_fetch_add(&(c)->field, 1, __ATOMIC_RELAXED)

static void cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
}

static struct timespec deadline_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static bool time_after(const struct timespec *now, const struct timespec *t)
{
	return now->tv_sec > t->tv_sec || (now->tv_sec == t->tv_sec && now->tv_nsec >= t->tv_nsec);
}

static int page_refs(const struct ubt_page *p)
{
	return __atomic_load_n(&p->refcount, __ATOMIC_ACQUIRE);
}

static unsigned long page_flags(const struct ubt_page *p)
{
	return __atomic_load_n(&p->flags, __ATOMIC_SEQ_CST);
}

static bool test_and_set_bit(struct ubt_page *p, enum ubt_page_flag f)
{
	return __atomic_fetch_or(&p->flags, PG_BIT(f), __ATOMIC_SEQ_CST) & PG_BIT(f);
}

static bool test_and_clear_bit(struct ubt_page *p, enum ubt_page_flag f)
{
	return __atomic_fetch_and(&p->flags, ~PG_BIT(f), __ATOMIC_SEQ_CST) & PG_BIT(f);
}

/* ---- hashed waitqueues: sleeping on LOCKED (to take it) or WRITEBACK (until clear) ---- */

static struct wait_bucket *page_wq(struct ubt_page *p)
{
	u64 h = (u64)(uintptr_t)p * 0x9E3779B97F4A7C15ull;

	return &p->cache->wq[h >> (64 - WQ_BITS)];
}

/* Sleep until we took @bit (lock) or until @bit is clear (!lock). The waker clears the bit and
 * then reads b->waiters (both seq_cst), we bump b->waiters and then test the bit: one of us sees
 * the other, so no wakeup is lost. */
static void page_wait_bit(struct ubt_page *p, enum ubt_page_flag bit, bool lock)
{
	struct wait_bucket *b = page_wq(p);

	pthread_mutex_lock(&b->lock);
	__atomic_fetch_add(&b->waiters, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		if (lock ? !test_and_set_bit(p, bit) : !(page_flags(p) & PG_BIT(bit)))
			break;
		pthread_cond_wait(&b->cond, &b->lock);
	}
	__atomic_fetch_sub(&b->waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&b->lock);
}

static void page_wake(struct wait_bucket *b)
{
	if (__atomic_load_n(&b->waiters, __ATOMIC_SEQ_CST) == 0)
		return;
	pthread_mutex_lock(&b->lock);
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/* ---- LRU (cache->lock held) ---- */

static void lru_add(struct ubt_page_cache *c, struct ubt_page *p)
{
	UBT_ASSERT(!p->on_lru && p->mapping && page_refs(p) == 1 && !(page_flags(p) & PG_PINNED));
	p->lru_prev = NULL;
	p->lru_next = c->lru_first;
	if (c->lru_first)
		c->lru_first->lru_prev = p;
	else
		c->lru_last = p;
	c->lru_first = p;
	p->on_lru = true;
	c->nr_lru++;
	if (c->space_waiters)
		pthread_cond_broadcast(&c->space_cond);
}

static void lru_del(struct ubt_page_cache *c, struct ubt_page *p)
{
	UBT_ASSERT(p->on_lru);
	if (p->lru_prev)
		p->lru_prev->lru_next = p->lru_next;
	else
		c->lru_first = p->lru_next;
	if (p->lru_next)
		p->lru_next->lru_prev = p->lru_prev;
	else
		c->lru_last = p->lru_prev;
	p->lru_prev = p->lru_next = NULL;
	p->on_lru = false;
	c->nr_lru--;
}

/* ---- page allocation and references ---- */

static struct ubt_page *page_alloc(struct ubt_page_cache *c, u64 index)
{
	struct ubt_page *p = calloc(1, sizeof(*p));
	void *data = NULL;

	if (!p)
		return NULL;
	if (posix_memalign(&data, UBT_PAGE_SIZE, UBT_PAGE_SIZE)) {
		free(p);
		return NULL;
	}
	memset(data, 0, UBT_PAGE_SIZE);
	p->data = data;
	p->cache = c;
	p->index = index;
	return p;
}

static void page_free(struct ubt_page *p)
{
	UBT_ASSERT(!(page_flags(p) & (PG_BIT(UBT_PG_LOCKED) | PG_BIT(UBT_PG_WRITEBACK)))); /* I7 */
	UBT_ASSERT(!p->on_lru && !p->mapping && page_refs(p) == 0);
	free(p->data);
	free(p);
}

static void free_list(struct ubt_page *list)
{
	while (list) {
		struct ubt_page *next = list->lru_next;

		page_free(list);
		list = next;
	}
}

/* Take a reference on a page found in @m's tree (mapping->lock held). */
static void page_get_mapped(struct ubt_mapping *m, struct ubt_page *p)
{
	if (__atomic_fetch_add(&p->refcount, 1, __ATOMIC_ACQ_REL) == 1) {
		pthread_mutex_lock(&m->cache->lock);
		if (p->on_lru)
			lru_del(m->cache, p);
		pthread_mutex_unlock(&m->cache->lock);
	}
}

void ubt_get_page(struct ubt_page *page)
{
	int old = __atomic_fetch_add(&page->refcount, 1, __ATOMIC_ACQ_REL);

	(void)old;
	UBT_ASSERT(old >= 2 || (old == 1 && !ubt_page_mapping(page)));
}

void ubt_put_page(struct ubt_page *page)
{
	struct ubt_page_cache *c = page->cache;
	int old = page_refs(page);
	bool do_free = false, idle = false;

	while (old > 2)
		if (__atomic_compare_exchange_n(&page->refcount, &old, old - 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return;
	pthread_mutex_lock(&c->lock);
	old = __atomic_fetch_sub(&page->refcount, 1, __ATOMIC_ACQ_REL);
	UBT_ASSERT(old >= 1);
	if (old == 2 && page->mapping) {
		/* Only the mapping's reference is left: evictable unless pinned by state. */
		UBT_ASSERT(!(page_flags(page) & PG_BIT(UBT_PG_LOCKED))); /* unlock before put */
		if (!(page_flags(page) & PG_PINNED))
			lru_add(c, page);
		idle = true;
	} else if (old == 1) {
		UBT_ASSERT(!page->mapping);
		c->nr_pages--;
		if (c->space_waiters)
			pthread_cond_broadcast(&c->space_cond);
		do_free = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (do_free)
		page_free(page);
	if (idle)
		ubt_page_cache_evict_point(c); /* nobody holds it now: eviction may run here */
}

/* ---- eviction ---- */

/* cache->lock held. Evict up to @nr pages from the LRU tail; freed pages go on *@freelist. */
static size_t evict_locked(struct ubt_page_cache *c, size_t nr, struct ubt_page **freelist)
{
	struct ubt_page *p = c->lru_last;
	size_t done = 0;
	u64 budget = c->nr_lru;

	while (p && done < nr && budget--) {
		struct ubt_page *prev = p->lru_prev;
		struct ubt_mapping *m = p->mapping;

		if (pthread_mutex_trylock(&m->lock) != 0) {
			p = prev; /* its mapping is busy: try it next time */
			continue;
		}
		/* I2: re-check under both locks; the LRU must never hold a pinned page (I1). */
		if (page_refs(p) != 1 || (page_flags(p) & PG_PINNED) || p->mapping != m) {
			ubt_err("page cache: ino %llu page %llu on the LRU but pinned (flags %#lx refs %d)",
				(unsigned long long)m->ino, (unsigned long long)p->index, page_flags(p),
				page_refs(p));
			UBT_ASSERT(!"pinned page on the LRU");
			lru_del(c, p);
			pthread_mutex_unlock(&m->lock);
			p = prev;
			continue;
		}
		rt_delete(&m->root, p->index);
		__atomic_store_n(&m->nr_pages, m->nr_pages - 1, __ATOMIC_RELAXED);
		lru_del(c, p);
		__atomic_store_n(&p->mapping, NULL, __ATOMIC_RELEASE);
		__atomic_store_n(&p->refcount, 0, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&m->lock);
		c->nr_pages--;
		p->lru_next = *freelist;
		*freelist = p;
		stat_inc(c, evicted);
		done++;
		p = prev;
	}
	return done;
}

size_t ubt_page_cache_evict(struct ubt_page_cache *cache, size_t nr)
{
	struct ubt_page *freelist = NULL;
	size_t done;

	pthread_mutex_lock(&cache->lock);
	done = evict_locked(cache, nr, &freelist);
	if (done && cache->space_waiters)
		pthread_cond_broadcast(&cache->space_cond);
	pthread_mutex_unlock(&cache->lock);
	free_list(freelist);
	return done;
}

int ubt_page_cache_evict_hook(void *arg, void *point_arg)
{
	if (point_arg && (!arg || arg == point_arg))
		ubt_page_cache_evict(point_arg, UBT_EVICT_ALL);
	return 0;
}

void ubt_page_cache_evict_point(struct ubt_page_cache *cache)
{
	(void)ubt_hook_point("cache.evict_now", cache);
}

static void kick_flusher(struct ubt_page_cache *c)
{
	ubt_page_cache_flusher_fn fn;
	void *arg;

	pthread_mutex_lock(&c->lock);
	fn = c->flusher;
	arg = c->flusher_arg;
	pthread_mutex_unlock(&c->lock);
	if (fn) {
		stat_inc(c, flusher_calls);
		fn(arg);
	}
}

/* Account one more allocated page, evicting or waiting (bounded) to stay under the limit (I6). */
static int reserve_page(struct ubt_page_cache *c)
{
	struct ubt_page *freelist = NULL;
	struct timespec deadline = deadline_ms(c->reclaim_wait_ms), now;
	bool waited = false;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	while (c->nr_pages >= c->limit_pages) {
		struct timespec poll;

		if (evict_locked(c, c->nr_pages - c->limit_pages + EVICT_BATCH, &freelist))
			continue;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (time_after(&now, &deadline)) {
			stat_inc(c, alloc_failures);
			ret = -ENOMEM;
			break;
		}
		if (!waited) {
			stat_inc(c, reclaim_waits);
			waited = true;
		}
		pthread_mutex_unlock(&c->lock);
		free_list(freelist);
		freelist = NULL;
		kick_flusher(c);
		pthread_mutex_lock(&c->lock);
		if (c->nr_pages < c->limit_pages)
			continue;
		/* Evictable pages whose mapping was busy: retry soon; none at all: wait longer. */
		poll = deadline_ms(c->nr_lru ? 1 : RECLAIM_POLL_MS);
		c->space_waiters++;
		pthread_cond_timedwait(&c->space_cond, &c->lock, &poll);
		c->space_waiters--;
	}
	if (!ret)
		c->nr_pages++;
	pthread_mutex_unlock(&c->lock);
	free_list(freelist);
	return ret;
}

static void unreserve_page(struct ubt_page_cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->nr_pages--;
	if (c->space_waiters)
		pthread_cond_broadcast(&c->space_cond);
	pthread_mutex_unlock(&c->lock);
}

/* ---- dirty accounting and throttling ---- */

static void dirty_inc(struct ubt_mapping *m)
{
	__atomic_store_n(&m->nr_dirty, m->nr_dirty + 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&m->cache->nr_dirty, 1, __ATOMIC_SEQ_CST);
}

/* mapping->lock held; may take cache->lock (order 2 -> 3) to wake throttled writers. */
static void dirty_dec(struct ubt_mapping *m)
{
	struct ubt_page_cache *c = m->cache;
	u64 n;

	UBT_ASSERT(m->nr_dirty > 0);
	__atomic_store_n(&m->nr_dirty, m->nr_dirty - 1, __ATOMIC_RELAXED);
	n = __atomic_sub_fetch(&c->nr_dirty, 1, __ATOMIC_SEQ_CST);
	if (n <= c->dirty_limit_pages && __atomic_load_n(&c->throttle_waiters, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&c->lock);
		pthread_cond_broadcast(&c->throttle_cond);
		pthread_mutex_unlock(&c->lock);
	}
}

void ubt_page_cache_throttle(struct ubt_page_cache *cache)
{
	bool slept = false;

	if (__atomic_load_n(&cache->nr_dirty, __ATOMIC_SEQ_CST) <= cache->dirty_limit_pages)
		return;
	pthread_mutex_lock(&cache->lock);
	if (!cache->flusher) {
		pthread_mutex_unlock(&cache->lock);
		return;
	}
	pthread_mutex_unlock(&cache->lock);
	kick_flusher(cache);
	pthread_mutex_lock(&cache->lock);
	__atomic_fetch_add(&cache->throttle_waiters, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&cache->nr_dirty, __ATOMIC_SEQ_CST) > cache->dirty_limit_pages) {
		struct timespec poll = deadline_ms(THROTTLE_POLL_MS);

		if (!slept) {
			stat_inc(cache, throttle_sleeps);
			slept = true;
		}
		if (pthread_cond_timedwait(&cache->throttle_cond, &cache->lock, &poll) == ETIMEDOUT) {
			pthread_mutex_unlock(&cache->lock);
			kick_flusher(cache); /* writeback is slow or was not started: ask again */
			pthread_mutex_lock(&cache->lock);
		}
	}
	__atomic_fetch_sub(&cache->throttle_waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&cache->lock);
}

/* ---- cache lifecycle ---- */

struct ubt_page_cache *ubt_page_cache_create(const struct ubt_page_cache_config *cfg)
{
	struct ubt_page_cache *c = calloc(1, sizeof(*c));
	u64 limit = cfg && cfg->limit_bytes ? cfg->limit_bytes : DEFAULT_LIMIT_BYTES;
	unsigned pct = cfg && cfg->dirty_percent ? cfg->dirty_percent : DEFAULT_DIRTY_PERCENT;

	if (!c)
		return ERR_PTR(-ENOMEM);
	if (pct > 100)
		pct = 100;
	c->limit_pages = ubt_max(limit >> UBT_PAGE_SHIFT, (u64)MIN_LIMIT_PAGES);
	c->dirty_limit_pages = ubt_max(c->limit_pages * pct / 100, (u64)1);
	c->reclaim_wait_ms = cfg && cfg->reclaim_wait_ms ? cfg->reclaim_wait_ms : DEFAULT_RECLAIM_WAIT_MS;
	pthread_mutex_init(&c->lock, NULL);
	cond_init_monotonic(&c->space_cond);
	cond_init_monotonic(&c->throttle_cond);
	for (unsigned i = 0; i < WQ_SIZE; i++) {
		pthread_mutex_init(&c->wq[i].lock, NULL);
		pthread_cond_init(&c->wq[i].cond, NULL);
	}
	return c;
}

void ubt_page_cache_destroy(struct ubt_page_cache *cache)
{
	if (!cache)
		return;
	if (cache->nr_pages)
		ubt_warn("page cache: destroyed with %llu pages still allocated",
			 (unsigned long long)cache->nr_pages);
	UBT_ASSERT(cache->nr_pages == 0 && cache->nr_lru == 0);
	for (unsigned i = 0; i < WQ_SIZE; i++) {
		pthread_mutex_destroy(&cache->wq[i].lock);
		pthread_cond_destroy(&cache->wq[i].cond);
	}
	pthread_cond_destroy(&cache->throttle_cond);
	pthread_cond_destroy(&cache->space_cond);
	pthread_mutex_destroy(&cache->lock);
	free(cache);
}

void ubt_page_cache_set_flusher(struct ubt_page_cache *cache, ubt_page_cache_flusher_fn fn, void *arg)
{
	pthread_mutex_lock(&cache->lock);
	cache->flusher = fn;
	cache->flusher_arg = arg;
	pthread_mutex_unlock(&cache->lock);
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void ubt_page_cache_get_stats(struct ubt_page_cache *cache, struct ubt_page_cache_stats *st)
{
	pthread_mutex_lock(&cache->lock);
	st->nr_pages = cache->nr_pages;
	st->nr_lru = cache->nr_lru;
	pthread_mutex_unlock(&cache->lock);
	st->nr_dirty = LOAD(cache->nr_dirty);
	st->limit_pages = cache->limit_pages;
	st->dirty_limit_pages = cache->dirty_limit_pages;
	st->evicted = LOAD(cache->evicted);
	st->lock_sleeps = LOAD(cache->lock_sleeps);
	st->writeback_sleeps = LOAD(cache->writeback_sleeps);
	st->throttle_sleeps = LOAD(cache->throttle_sleeps);
	st->reclaim_waits = LOAD(cache->reclaim_waits);
	st->alloc_failures = LOAD(cache->alloc_failures);
	st->flusher_calls = LOAD(cache->flusher_calls);
}

int ubt_page_cache_verify(struct ubt_page_cache *cache)
{
	u64 n = 0;
	int ret = 0;

	pthread_mutex_lock(&cache->lock);
	for (struct ubt_page *p = cache->lru_first; p; p = p->lru_next) {
		bool refs_ok = true;

		n++;
		/* A lookup raises refs under mapping->lock before taking the page off the LRU. */
		if (p->mapping && pthread_mutex_trylock(&p->mapping->lock) == 0) {
			refs_ok = page_refs(p) == 1;
			pthread_mutex_unlock(&p->mapping->lock);
		}
		if (!p->on_lru || !p->mapping || !refs_ok || (page_flags(p) & PG_PINNED)) {
			ubt_err("page cache: LRU page %llu breaks I1 (flags %#lx refs %d)",
				(unsigned long long)p->index, page_flags(p), page_refs(p));
			ret = -EUCLEAN;
		}
	}
	if (n != cache->nr_lru || cache->nr_pages > cache->limit_pages) {
		ubt_err("page cache: lru %llu/%llu pages %llu limit %llu", (unsigned long long)n,
			(unsigned long long)cache->nr_lru, (unsigned long long)cache->nr_pages,
			(unsigned long long)cache->limit_pages);
		ret = -EUCLEAN;
	}
	pthread_mutex_unlock(&cache->lock);
	return ret;
}

/* ---- mappings ---- */

struct ubt_mapping *ubt_mapping_create(struct ubt_page_cache *cache, void *owner, u64 ino)
{
	struct ubt_mapping *m = calloc(1, sizeof(*m));

	if (!m)
		return ERR_PTR(-ENOMEM);
	pthread_mutex_init(&m->lock, NULL);
	m->cache = cache;
	m->owner = owner;
	m->ino = ino;
	return m;
}

void ubt_mapping_destroy(struct ubt_mapping *mapping)
{
	if (!mapping)
		return;
	ubt_truncate_inode_pages_range(mapping, 0, (u64)-1);
	pthread_mutex_lock(&mapping->lock);
	if (mapping->nr_pages)
		ubt_warn("page cache: ino %llu destroyed with %llu pages added meanwhile",
			 (unsigned long long)mapping->ino, (unsigned long long)mapping->nr_pages);
	UBT_ASSERT(mapping->nr_pages == 0 && mapping->nr_dirty == 0 && mapping->nr_writeback == 0);
	rt_free_all(mapping->root);
	pthread_mutex_unlock(&mapping->lock);
	pthread_mutex_destroy(&mapping->lock);
	free(mapping);
}

void *ubt_mapping_owner(const struct ubt_mapping *mapping) { return mapping->owner; }
u64 ubt_mapping_ino(const struct ubt_mapping *mapping) { return mapping->ino; }
u64 ubt_mapping_nr_pages(const struct ubt_mapping *mapping) { return LOAD(mapping->nr_pages); }
u64 ubt_mapping_nr_dirty(const struct ubt_mapping *mapping) { return LOAD(mapping->nr_dirty); }

void ubt_mapping_set_error(struct ubt_mapping *mapping, int err)
{
	if (err >= 0)
		return;
	__atomic_fetch_or(&mapping->error_bits, err == -ENOSPC ? AS_ENOSPC : AS_EIO, __ATOMIC_SEQ_CST);
}

bool ubt_mapping_has_error(const struct ubt_mapping *mapping)
{
	return LOAD(mapping->error_bits) != 0;
}

int ubt_mapping_check_error(struct ubt_mapping *mapping)
{
	int bits = __atomic_exchange_n(&mapping->error_bits, 0, __ATOMIC_SEQ_CST);

	if (bits & AS_EIO)
		return -EIO;
	if (bits & AS_ENOSPC)
		return -ENOSPC;
	return 0;
}

int ubt_mapping_verify(struct ubt_mapping *m)
{
	u64 index = 0, found, pages = 0, dirty = 0, wb = 0;
	struct ubt_page *p;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	while ((p = rt_next(m->root, index, RT_ANY, &found))) {
		unsigned long fl = page_flags(p);
		bool d = fl & PG_BIT(UBT_PG_DIRTY), w = fl & PG_BIT(UBT_PG_WRITEBACK);

		pages++;
		dirty += d;
		wb += w;
		if (p->index != found || p->mapping != m || page_refs(p) < 1 ||
		    d != rt_tag_get(m->root, found, RT_TAG_DIRTY) || w != rt_tag_get(m->root, found, RT_TAG_WRITEBACK) ||
		    (w && page_refs(p) < 2)) {
			ubt_err("page cache: ino %llu page %llu at %llu inconsistent (flags %#lx refs %d)",
				(unsigned long long)m->ino, (unsigned long long)p->index,
				(unsigned long long)found, fl, page_refs(p));
			ret = -EUCLEAN;
		}
		if (found == (u64)-1)
			break;
		index = found + 1;
	}
	if (pages != m->nr_pages || dirty != m->nr_dirty || wb != m->nr_writeback) {
		ubt_err("page cache: ino %llu counts pages %llu/%llu dirty %llu/%llu writeback %llu/%llu",
			(unsigned long long)m->ino, (unsigned long long)pages, (unsigned long long)m->nr_pages,
			(unsigned long long)dirty, (unsigned long long)m->nr_dirty, (unsigned long long)wb,
			(unsigned long long)m->nr_writeback);
		ret = -EUCLEAN;
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- lookups ---- */

struct ubt_page *ubt_find_get_page(struct ubt_mapping *mapping, u64 index)
{
	struct ubt_page *p;

	pthread_mutex_lock(&mapping->lock);
	p = rt_lookup(mapping->root, index);
	if (p)
		page_get_mapped(mapping, p);
	pthread_mutex_unlock(&mapping->lock);
	return p;
}

static void page_lock(struct ubt_page *p)
{
	if (test_and_set_bit(p, UBT_PG_LOCKED)) {
		stat_inc(p->cache, lock_sleeps);
		page_wait_bit(p, UBT_PG_LOCKED, true);
	}
}

static void page_unlock(struct ubt_page *p)
{
	struct wait_bucket *b = page_wq(p);
	bool was = test_and_clear_bit(p, UBT_PG_LOCKED);

	(void)was;
	UBT_ASSERT(was);
	page_wake(b);
}

struct ubt_page *ubt_find_or_create_page(struct ubt_mapping *mapping, u64 index)
{
	struct ubt_page_cache *c = mapping->cache;
	struct ubt_page *p, *newp = NULL;
	int ret;

again:
	pthread_mutex_lock(&mapping->lock);
	p = rt_lookup(mapping->root, index);
	if (p)
		page_get_mapped(mapping, p);
	pthread_mutex_unlock(&mapping->lock);
	if (p)
		goto found;

	ret = reserve_page(c);
	if (ret)
		return ERR_PTR(ret);
	newp = page_alloc(c, index);
	if (!newp) {
		unreserve_page(c);
		return ERR_PTR(-ENOMEM);
	}
	newp->flags = PG_BIT(UBT_PG_LOCKED);
	newp->refcount = 2; /* the mapping's and the caller's */

	pthread_mutex_lock(&mapping->lock);
	p = rt_lookup(mapping->root, index);
	if (p) {
		/* Lost a race with another creator: use theirs. */
		page_get_mapped(mapping, p);
		pthread_mutex_unlock(&mapping->lock);
		newp->flags = 0;
		newp->refcount = 0;
		unreserve_page(c);
		page_free(newp);
		goto found;
	}
	ret = rt_insert(&mapping->root, index, newp);
	if (ret) {
		pthread_mutex_unlock(&mapping->lock);
		newp->flags = 0;
		newp->refcount = 0;
		unreserve_page(c);
		page_free(newp);
		return ERR_PTR(ret);
	}
	__atomic_store_n(&newp->mapping, mapping, __ATOMIC_RELEASE);
	__atomic_store_n(&mapping->nr_pages, mapping->nr_pages + 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&mapping->lock);
	return newp;

found:
	page_lock(p);
	if (ubt_page_mapping(p) != mapping) {
		/* Truncated while we slept on its lock. */
		page_unlock(p);
		ubt_put_page(p);
		goto again;
	}
	return p;
}

/*
 * Readahead and read caching: insert a clean, uptodate copy of @data as page @index unless the
 * mapping has that page already. Never sleeps (callers hold locks a sleeping allocation could
 * wait on): at the limit it evicts once, then gives up. 0, -EEXIST, -ENOMEM.
 */
int ubt_page_cache_add_clean(struct ubt_mapping *mapping, u64 index, const void *data)
{
	struct ubt_page_cache *c = mapping->cache;
	struct ubt_page *freelist = NULL, *p;
	bool reserved = false;
	int ret;

	pthread_mutex_lock(&mapping->lock);
	p = rt_lookup(mapping->root, index);
	pthread_mutex_unlock(&mapping->lock);
	if (p)
		return -EEXIST;
	pthread_mutex_lock(&c->lock);
	if (c->nr_pages >= c->limit_pages)
		evict_locked(c, c->nr_pages - c->limit_pages + EVICT_BATCH, &freelist);
	if (c->nr_pages < c->limit_pages) {
		c->nr_pages++;
		reserved = true;
	}
	pthread_mutex_unlock(&c->lock);
	free_list(freelist);
	if (!reserved)
		return -ENOMEM;
	p = page_alloc(c, index);
	if (!p) {
		unreserve_page(c);
		return -ENOMEM;
	}
	memcpy(p->data, data, UBT_PAGE_SIZE);
	p->flags = PG_BIT(UBT_PG_UPTODATE);
	p->refcount = 2; /* the mapping's and ours, dropped below so the page joins the LRU */
	pthread_mutex_lock(&mapping->lock);
	ret = rt_lookup(mapping->root, index) ? -EEXIST : rt_insert(&mapping->root, index, p);
	if (ret) {
		pthread_mutex_unlock(&mapping->lock);
		p->flags = 0;
		p->refcount = 0;
		unreserve_page(c);
		page_free(p);
		return ret;
	}
	__atomic_store_n(&p->mapping, mapping, __ATOMIC_RELEASE);
	__atomic_store_n(&mapping->nr_pages, mapping->nr_pages + 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&mapping->lock);
	ubt_put_page(p);
	return 0;
}

/* ---- page lock ---- */

void ubt_lock_page(struct ubt_page *page)
{
	page_lock(page);
}

bool ubt_trylock_page(struct ubt_page *page)
{
	return !test_and_set_bit(page, UBT_PG_LOCKED);
}

void ubt_unlock_page(struct ubt_page *page)
{
	struct ubt_page_cache *c = page->cache;

	page_unlock(page);
	ubt_page_cache_evict_point(c);
}

/* ---- dirty, writeback ---- */

bool ubt_set_page_dirty(struct ubt_page *page)
{
	struct ubt_mapping *m = ubt_page_mapping(page);
	bool was;

	if (PageDirty(page))
		return false;
	if (!m)
		return !test_and_set_bit(page, UBT_PG_DIRTY);
	pthread_mutex_lock(&m->lock);
	if (page->mapping != m) {
		/* Removed meanwhile: a dead page's dirt is not accounted. */
		pthread_mutex_unlock(&m->lock);
		return !test_and_set_bit(page, UBT_PG_DIRTY);
	}
	was = test_and_set_bit(page, UBT_PG_DIRTY);
	if (!was) {
		rt_tag_set(m->root, page->index, RT_TAG_DIRTY);
		dirty_inc(m);
	}
	pthread_mutex_unlock(&m->lock);
	return !was;
}

bool ubt_clear_page_dirty_for_io(struct ubt_page *page)
{
	struct ubt_mapping *m = ubt_page_mapping(page);
	bool was;

	UBT_ASSERT(PageLocked(page));
	if (!m)
		return test_and_clear_bit(page, UBT_PG_DIRTY);
	pthread_mutex_lock(&m->lock);
	UBT_ASSERT(page->mapping == m); /* I5: stable under the page lock */
	was = test_and_clear_bit(page, UBT_PG_DIRTY);
	if (was) {
		rt_tag_clear(m->root, page->index, RT_TAG_DIRTY);
		dirty_dec(m);
	}
	pthread_mutex_unlock(&m->lock);
	return was;
}

void ubt_set_page_writeback(struct ubt_page *page)
{
	struct ubt_mapping *m = ubt_page_mapping(page);
	bool was;

	UBT_ASSERT(PageLocked(page) && m);
	ubt_get_page(page); /* the writeback reference */
	if (!m) {
		/* A caller bug (writeback of a truncated page): keep the flag and reference balanced. */
		ubt_err("page cache: writeback of page %llu outside any mapping", (unsigned long long)page->index);
		ubt_page_set_bit(page, UBT_PG_WRITEBACK);
		return;
	}
	pthread_mutex_lock(&m->lock);
	was = test_and_set_bit(page, UBT_PG_WRITEBACK);
	(void)was;
	UBT_ASSERT(!was);
	rt_tag_set(m->root, page->index, RT_TAG_WRITEBACK);
	__atomic_store_n(&m->nr_writeback, m->nr_writeback + 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&m->lock);
}

void ubt_end_page_writeback(struct ubt_page *page, int err)
{
	struct ubt_mapping *m = ubt_page_mapping(page); /* I4: in its mapping while under writeback */
	struct ubt_page_cache *c = page->cache;
	struct wait_bucket *b = page_wq(page);
	bool was;

	UBT_ASSERT(m && PageWriteback(page));
	if (err < 0)
		SetPageError(page);
	if (m) {
		pthread_mutex_lock(&m->lock);
		if (err < 0)
			ubt_mapping_set_error(m, err);
		was = test_and_clear_bit(page, UBT_PG_WRITEBACK);
		UBT_ASSERT(was);
		if (was) {
			rt_tag_clear(m->root, page->index, RT_TAG_WRITEBACK);
			__atomic_store_n(&m->nr_writeback, m->nr_writeback - 1, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&m->lock);
	} else {
		test_and_clear_bit(page, UBT_PG_WRITEBACK);
	}
	page_wake(b);
	ubt_put_page(page); /* the writeback reference */
	ubt_page_cache_evict_point(c);
}

void ubt_wait_on_page_writeback(struct ubt_page *page)
{
	if (!(page_flags(page) & PG_BIT(UBT_PG_WRITEBACK)))
		return;
	stat_inc(page->cache, writeback_sleeps);
	page_wait_bit(page, UBT_PG_WRITEBACK, false);
}

int ubt_mapping_next_dirty(struct ubt_mapping *mapping, u64 index, struct ubt_page **page)
{
	struct ubt_page *p;
	u64 found;

	pthread_mutex_lock(&mapping->lock);
	p = rt_next(mapping->root, index, RT_TAG_DIRTY, &found);
	if (p)
		page_get_mapped(mapping, p);
	pthread_mutex_unlock(&mapping->lock);
	*page = p;
	return p ? 0 : -ENOENT;
}

/* The first page at index in [@index, @last] (tagged @tag unless RT_ANY), referenced. */
static struct ubt_page *next_page(struct ubt_mapping *m, u64 index, u64 last, int tag)
{
	struct ubt_page *p;
	u64 found;

	pthread_mutex_lock(&m->lock);
	p = rt_next(m->root, index, tag, &found);
	if (p && found > last)
		p = NULL;
	if (p)
		page_get_mapped(m, p);
	pthread_mutex_unlock(&m->lock);
	return p;
}

void ubt_mapping_wait_writeback_range(struct ubt_mapping *mapping, u64 first, u64 last)
{
	struct ubt_page *p;
	u64 index = first;

	while (index <= last && (p = next_page(mapping, index, last, RT_TAG_WRITEBACK))) {
		index = p->index + 1;
		ubt_wait_on_page_writeback(p);
		ubt_put_page(p);
		if (index == 0)
			break;
	}
}

/* ---- removal ---- */

/*
 * Remove @p from @m (page locked by us, a reference held by us, not under writeback). With
 * @only_idle, remove only if nobody else holds it and it is clean. Returns whether removed.
 */
static bool remove_page(struct ubt_mapping *m, struct ubt_page *p, bool only_idle)
{
	struct ubt_page_cache *c = m->cache;

	UBT_ASSERT(PageLocked(p) && !PageWriteback(p));
	pthread_mutex_lock(&m->lock);
	if (p->mapping != m ||
	    (only_idle && (page_refs(p) != 2 || (page_flags(p) & PG_BIT(UBT_PG_DIRTY))))) {
		pthread_mutex_unlock(&m->lock);
		return false;
	}
	if (test_and_clear_bit(p, UBT_PG_DIRTY))
		dirty_dec(m); /* a truncated dirty page is cleaned and dropped */
	rt_delete(&m->root, p->index);
	__atomic_store_n(&m->nr_pages, m->nr_pages - 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&c->lock);
	UBT_ASSERT(!p->on_lru); /* we hold a reference (I1) */
	__atomic_store_n(&p->mapping, NULL, __ATOMIC_RELEASE);
	__atomic_fetch_sub(&p->refcount, 1, __ATOMIC_ACQ_REL); /* the mapping's; ours remains */
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&m->lock);
	return true;
}

static void zero_partial(struct ubt_mapping *m, u64 index, unsigned from, unsigned to)
{
	struct ubt_page *p = ubt_find_get_page(m, index);

	if (!p)
		return;
	page_lock(p);
	ubt_wait_on_page_writeback(p);
	if (p->mapping == m)
		memset(p->data + from, 0, to - from + 1);
	page_unlock(p);
	ubt_put_page(p);
}

void ubt_truncate_inode_pages_range(struct ubt_mapping *mapping, u64 start, u64 end)
{
	u64 first, last, head = start >> UBT_PAGE_SHIFT, tail = end >> UBT_PAGE_SHIFT;
	unsigned head_off = start & (UBT_PAGE_SIZE - 1), tail_off = end & (UBT_PAGE_SIZE - 1);
	bool to_eof = end == (u64)-1;
	struct ubt_page *p;

	if (end < start)
		return;
	if (!to_eof && head == tail && (head_off || tail_off != UBT_PAGE_SIZE - 1)) {
		zero_partial(mapping, head, head_off, tail_off); /* inside one page */
		return;
	}
	first = head;
	if (head_off) {
		zero_partial(mapping, head, head_off, UBT_PAGE_SIZE - 1);
		first++;
	}
	if (to_eof) {
		last = (u64)-1;
	} else {
		if (tail_off != UBT_PAGE_SIZE - 1)
			zero_partial(mapping, tail, 0, tail_off);
		if (tail_off != UBT_PAGE_SIZE - 1 && tail == 0)
			return;
		last = tail_off == UBT_PAGE_SIZE - 1 ? tail : tail - 1;
	}

	while (first <= last && (p = next_page(mapping, first, last, RT_ANY))) {
		first = p->index + 1;
		page_lock(p);
		ubt_wait_on_page_writeback(p); /* no new writeback: that needs the page lock */
		remove_page(mapping, p, false);
		page_unlock(p);
		ubt_put_page(p);
		if (first == 0)
			break;
	}
}

size_t ubt_invalidate_mapping_pages(struct ubt_mapping *mapping, u64 first, u64 last)
{
	struct ubt_page *p;
	size_t n = 0;

	while (first <= last && (p = next_page(mapping, first, last, RT_ANY))) {
		first = p->index + 1;
		if (ubt_trylock_page(p)) {
			if (!PageWriteback(p) && remove_page(mapping, p, true))
				n++;
			page_unlock(p);
		}
		ubt_put_page(p);
		if (first == 0)
			break;
	}
	return n;
}

/* ---- readahead ---- */

unsigned ubt_page_cache_readahead_hint(struct ubt_mapping *mapping, u64 index)
{
	unsigned n;

	pthread_mutex_lock(&mapping->lock);
	if (index == mapping->ra_end) {
		/* Sequential: the miss is right after the previous window (or the first read at 0). */
		n = ubt_min(ubt_max(mapping->ra_window * 2, UBT_RA_INIT_PAGES), UBT_RA_MAX_PAGES);
	} else if (index >= mapping->ra_start && index < mapping->ra_end) {
		n = (unsigned)(mapping->ra_end - index); /* the rest of the current window */
		pthread_mutex_unlock(&mapping->lock);
		return n;
	} else {
		n = 1; /* random access: no readahead */
	}
	if (index + n < index)
		n = (unsigned)(-index); /* at the end of the index space */
	if (n == 0)
		n = 1;
	mapping->ra_window = n;
	mapping->ra_start = index;
	mapping->ra_end = index + n;
	pthread_mutex_unlock(&mapping->lock);
	return n;
}
