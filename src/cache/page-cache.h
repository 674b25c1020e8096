/*
 * page-cache.h — ubtrfs's own page cache (it replaces the kernel's): 4 KiB pages per inode mapping
 * with the kernel's page flags, a bounded global cache with an LRU of clean pages, dirty limits and
 * writer throttling. The data write path (delalloc, ordered extents, writeback, the fixup worker,
 * direct IO) is built on it. States, transitions, invariants and lock order: page-cache.c.
 *
 * Ownership in short:
 *  - a page in a mapping holds one reference for the mapping ("the mapping's ref"); every pointer
 *    handed out (find_get_page, find_or_create_page, next_dirty) carries one more reference that
 *    the caller drops with ubt_put_page(); unlock a page before dropping the reference you locked
 *    it under;
 *  - a page under writeback holds one extra reference of its own (set_page_writeback takes it,
 *    end_page_writeback drops it), so I/O completion needs no reference of its own;
 *  - a page removed from its mapping (truncate, invalidate) has page->mapping == NULL and lives on
 *    until the last reference is dropped; its data stays readable for the holders;
 *  - eviction frees only pages that nobody references and that are clean, unlocked and not under
 *    writeback (INVARIANT 2 of the design brief: eviction never frees a dirty page);
 *  - a mapping must not be destroyed while other threads still use its pages (the inode's owner
 *    guarantees this, as the kernel's inode refcount does).
 */
#ifndef UBT_CACHE_PAGE_CACHE_H
#define UBT_CACHE_PAGE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/compat.h"

#define UBT_PAGE_SHIFT 12
#define UBT_PAGE_SIZE (1u << UBT_PAGE_SHIFT) /* == sectorsize */

/* Page flag bits (page->flags). Room up to 31. */
enum ubt_page_flag {
	UBT_PG_LOCKED = 0, /* page lock held (a sleeping bit lock: lock_page/unlock_page) */
	UBT_PG_UPTODATE,   /* data is valid (read from disk, or fully written) */
	UBT_PG_DIRTY,      /* data newer than disk; never evicted; accounted and tagged */
	UBT_PG_WRITEBACK,  /* I/O in flight; never evicted; holds a reference */
	UBT_PG_CHECKED,    /* btrfs's fixup marker: dirty page queued to the fixup worker */
	UBT_PG_ERROR,      /* the last I/O of this page failed */
	UBT_PG_ORDERED,    /* write path: page covered by an ordered extent (btrfs's Private2) */
	UBT_PG__NR
};

struct ubt_mapping;
struct ubt_page_cache;

struct ubt_page {
	unsigned long flags;                /* UBT_PG_* bits, atomic bit operations */
	int refcount;                       /* atomic; see page-cache.c for who holds what */
	u64 index;                          /* page index in the file (byte offset >> 12); fixed */
	struct ubt_mapping *mapping;        /* NULL once removed; read with ubt_page_mapping() */
	struct ubt_page_cache *cache;       /* fixed */
	void *private;                      /* owned by the write path; the cache never touches it */
	u8 *data;                           /* UBT_PAGE_SIZE bytes, 4 KiB aligned */
	/* cache-internal */
	struct ubt_page *lru_prev, *lru_next; /* under cache->lock */
	bool on_lru;                          /* under cache->lock */
};

static inline bool ubt_page_test(const struct ubt_page *p, enum ubt_page_flag f)
{
	return (__atomic_load_n(&p->flags, __ATOMIC_ACQUIRE) >> f) & 1;
}
static inline void *ubt_page_data(struct ubt_page *p) { return p->data; }
static inline u64 ubt_page_offset(const struct ubt_page *p) { return p->index << UBT_PAGE_SHIFT; }
/* The mapping the page is in, or NULL if it was removed. Stable while the page is locked. */
static inline struct ubt_mapping *ubt_page_mapping(struct ubt_page *p)
{
	return __atomic_load_n(&p->mapping, __ATOMIC_ACQUIRE);
}

/* Plain flags (no accounting): kernel-style names. Dirty/writeback/locked have functions below. */
static inline void ubt_page_set_bit(struct ubt_page *p, enum ubt_page_flag f)
{
	__atomic_fetch_or(&p->flags, 1ul << f, __ATOMIC_ACQ_REL);
}
static inline void ubt_page_clear_bit(struct ubt_page *p, enum ubt_page_flag f)
{
	__atomic_fetch_and(&p->flags, ~(1ul << f), __ATOMIC_ACQ_REL);
}
static inline bool PageLocked(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_LOCKED); }
static inline bool PageDirty(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_DIRTY); }
static inline bool PageWriteback(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_WRITEBACK); }
static inline bool PageUptodate(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_UPTODATE); }
static inline void SetPageUptodate(struct ubt_page *p) { ubt_page_set_bit(p, UBT_PG_UPTODATE); }
static inline void ClearPageUptodate(struct ubt_page *p) { ubt_page_clear_bit(p, UBT_PG_UPTODATE); }
static inline bool PageChecked(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_CHECKED); }
static inline void SetPageChecked(struct ubt_page *p) { ubt_page_set_bit(p, UBT_PG_CHECKED); }
static inline void ClearPageChecked(struct ubt_page *p) { ubt_page_clear_bit(p, UBT_PG_CHECKED); }
static inline bool PageError(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_ERROR); }
static inline void SetPageError(struct ubt_page *p) { ubt_page_set_bit(p, UBT_PG_ERROR); }
static inline void ClearPageError(struct ubt_page *p) { ubt_page_clear_bit(p, UBT_PG_ERROR); }
static inline bool PageOrdered(const struct ubt_page *p) { return ubt_page_test(p, UBT_PG_ORDERED); }
static inline void SetPageOrdered(struct ubt_page *p) { ubt_page_set_bit(p, UBT_PG_ORDERED); }
static inline void ClearPageOrdered(struct ubt_page *p) { ubt_page_clear_bit(p, UBT_PG_ORDERED); }

/* ---- the cache ---- */

/* Zeroed means defaults. */
struct ubt_page_cache_config {
	u64 limit_bytes;          /* page data bytes the cache may hold; 0 = 256 MiB; min 16 pages */
	unsigned dirty_percent;   /* dirty limit as a percentage of the limit; 0 = 20 */
	unsigned reclaim_wait_ms; /* how long an allocation waits for evictable pages before -ENOMEM; 0 = 1000 */
};

struct ubt_page_cache_stats {
	u64 nr_pages;          /* allocated pages (in mappings or still referenced after removal) */
	u64 nr_dirty;          /* dirty pages in mappings */
	u64 nr_lru;            /* evictable pages */
	u64 limit_pages, dirty_limit_pages;
	u64 evicted;           /* pages freed by eviction */
	u64 lock_sleeps;       /* lock_page calls that had to sleep */
	u64 writeback_sleeps;  /* wait_on_page_writeback calls that had to sleep */
	u64 throttle_sleeps;   /* throttle calls that had to sleep */
	u64 reclaim_waits;     /* allocations that waited for evictable pages */
	u64 alloc_failures;    /* allocations that gave up with -ENOMEM */
	u64 flusher_calls;     /* times the flusher callback was asked to write back */
};

/* Asked to start writeback (asynchronously) when dirty pages pass the limit or memory is short.
 * Called with no page-cache lock held; must not wait for pages the caller may have locked. */
typedef void (*ubt_page_cache_flusher_fn)(void *arg);

/* Create a cache; @cfg may be NULL (defaults). Returns the cache or ERR_PTR(-ENOMEM). */
struct ubt_page_cache *ubt_page_cache_create(const struct ubt_page_cache_config *cfg);
/* Destroy a cache whose mappings are all destroyed and whose pages are all released. */
void ubt_page_cache_destroy(struct ubt_page_cache *cache);
void ubt_page_cache_set_flusher(struct ubt_page_cache *cache, ubt_page_cache_flusher_fn fn, void *arg);
void ubt_page_cache_get_stats(struct ubt_page_cache *cache, struct ubt_page_cache_stats *st);
/* Check the LRU (I1) and the memory limit. 0 or -EUCLEAN (logged). */
int ubt_page_cache_verify(struct ubt_page_cache *cache);

#define UBT_EVICT_ALL ((size_t)-1)
/* Free up to @nr evictable pages (clean, unlocked, unreferenced, not under writeback), oldest
 * first. Returns the number freed. */
size_t ubt_page_cache_evict(struct ubt_page_cache *cache, size_t nr);
/*
 * Hook point "cache.evict_now" (point_arg: the struct ubt_page_cache *) is reached after
 * ubt_unlock_page(), after ubt_end_page_writeback(), in ubt_put_page() when only the mapping's
 * reference is left (the page is idle: clean ones just became evictable), and wherever the write
 * path calls ubt_page_cache_evict_point(). Tests arm it with UBT_HOOK_CALL and
 * fn = ubt_page_cache_evict_hook to force an eviction exactly there (our analog of page migration
 * jumping in between two steps).
 */
int ubt_page_cache_evict_hook(void *arg, void *point_arg);
void ubt_page_cache_evict_point(struct ubt_page_cache *cache);

/* Block the calling writer while dirty pages exceed the dirty limit, asking the flusher for
 * writeback. Returns at once when no flusher is registered (nobody could bring the count down). */
void ubt_page_cache_throttle(struct ubt_page_cache *cache);

/* ---- mappings (one per inode) ---- */

/* @owner is opaque (the inode); @ino is for messages. Returns the mapping or ERR_PTR(-ENOMEM). */
struct ubt_mapping *ubt_mapping_create(struct ubt_page_cache *cache, void *owner, u64 ino);
/* Truncate every page (waiting for locks and writeback), then free the mapping. */
void ubt_mapping_destroy(struct ubt_mapping *mapping);
void *ubt_mapping_owner(const struct ubt_mapping *mapping);
u64 ubt_mapping_ino(const struct ubt_mapping *mapping);
u64 ubt_mapping_nr_pages(const struct ubt_mapping *mapping);
u64 ubt_mapping_nr_dirty(const struct ubt_mapping *mapping);

/* Record a writeback error for the next fsync (-ENOSPC stays -ENOSPC, anything else is -EIO). */
void ubt_mapping_set_error(struct ubt_mapping *mapping, int err);
/* Return and clear the recorded error: 0, -EIO or -ENOSPC (-EIO wins when both were seen). */
int ubt_mapping_check_error(struct ubt_mapping *mapping);
/* Is an error waiting to be reported (without taking it)? */
bool ubt_mapping_has_error(const struct ubt_mapping *mapping);

/* Check the mapping's bookkeeping (tree, tags, counts, flags). 0 or -EUCLEAN (logged). */
int ubt_mapping_verify(struct ubt_mapping *mapping);

/* ---- page operations ---- */

/* The page at @index with a reference, or NULL. Does not lock it. */
struct ubt_page *ubt_find_get_page(struct ubt_mapping *mapping, u64 index);
/*
 * The page at @index, locked and referenced, allocated (zeroed, not uptodate) when absent. May
 * evict pages and wait up to reclaim_wait_ms for evictable ones. Returns the page,
 * ERR_PTR(-ENOMEM) when the cache is full of pinned pages.
 */
struct ubt_page *ubt_find_or_create_page(struct ubt_mapping *mapping, u64 index);

void ubt_get_page(struct ubt_page *page); /* caller already holds a reference */
void ubt_put_page(struct ubt_page *page);

void ubt_lock_page(struct ubt_page *page);
bool ubt_trylock_page(struct ubt_page *page); /* true if locked by us */
void ubt_unlock_page(struct ubt_page *page);  /* wakes waiters; reaches "cache.evict_now" */

/* Mark dirty (accounting and tagging it). Returns true if it was clean before. Any holder of a
 * reference may call it; the write path holds the page lock. */
bool ubt_set_page_dirty(struct ubt_page *page);
/* Page locked: clear DIRTY before I/O (or before handing it to the fixup worker). Returns whether
 * it was dirty. */
bool ubt_clear_page_dirty_for_io(struct ubt_page *page);
/* Page locked, not under writeback: set WRITEBACK (takes the writeback reference). */
void ubt_set_page_writeback(struct ubt_page *page);
/* Any thread (I/O completion): clear WRITEBACK, wake waiters, drop the writeback reference. With
 * @err < 0: set ERROR and record @err on the mapping. */
void ubt_end_page_writeback(struct ubt_page *page, int err);
void ubt_wait_on_page_writeback(struct ubt_page *page);

/* The first dirty page at index >= @index, referenced, in *@page: 0, or -ENOENT if none. */
int ubt_mapping_next_dirty(struct ubt_mapping *mapping, u64 index, struct ubt_page **page);
/* Wait until no page with index in [@first, @last] (inclusive) is under writeback. */
void ubt_mapping_wait_writeback_range(struct ubt_mapping *mapping, u64 first, u64 last);

/*
 * Remove the pages of byte range [@start, @end] (@end inclusive; (u64)-1 = to the end): each whole
 * page is locked (waiting for its holder), waited on for writeback and removed — a dirty page is
 * cleaned and dropped. Partial pages at the edges stay, with the covered bytes zeroed.
 */
void ubt_truncate_inode_pages_range(struct ubt_mapping *mapping, u64 start, u64 end);
/* Remove the pages with index in [@first, @last] that are clean, unlocked, not under writeback and
 * not referenced by anyone else. Returns the number removed. */
size_t ubt_invalidate_mapping_pages(struct ubt_mapping *mapping, u64 first, u64 last);

/*
 * Readahead: on a cache miss at @index the read path asks how many pages to read from @index.
 * Sequential misses (at the end of the previous window) double the window from 4 pages up to
 * 1 MiB; a miss within the previous window returns the rest of it; any other miss resets to 1.
 */
unsigned ubt_page_cache_readahead_hint(struct ubt_mapping *mapping, u64 index);
/*
 * Insert a clean uptodate copy of @data (UBT_PAGE_SIZE bytes) as page @index unless present; never
 * sleeps (evicts once at the limit, else -ENOMEM). For readahead. 0, -EEXIST, -ENOMEM.
 */
int ubt_page_cache_add_clean(struct ubt_mapping *mapping, u64 index, const void *data);
#define UBT_RA_INIT_PAGES 4u
#define UBT_RA_MAX_PAGES ((1u << 20) >> UBT_PAGE_SHIFT)

#endif
