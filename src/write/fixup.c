/*
 * fixup.c — the fixup worker (invariants 1 and 2 of the design brief; seeds 001, 000, 004): a page
 * dirtied behind the write path's back (ubt_msync/ubt_munmap: no reservation, no DELALLOC) is
 * refused by writeback, marked CHECKED, kept dirty and queued here once. The worker gives it
 * copy-on-write setup: wait for ordered extents over it, reserve data and metadata space, set
 * DELALLOC; the page stays dirty throughout, so eviction can never free it (seed 000). When the
 * reservation fails the error goes on the mapping (the next fsync reports it) and the page is
 * cleaned explicitly: its data is dropped, and the cache forgets it (not uptodate) so reads show
 * what is on disk.
 *
 * Locks, in the order of write-internal.h: no lock while waiting for ordered extents or
 * reserving; then the extent range lock, then the page lock, under which everything is checked
 * again (the page may have been truncated, cleaned or set up by someone else meanwhile).
 *
 * Hook points: "fixup.before_run" (point_arg: the page) when the worker starts on a page, before
 * it takes any lock — a test pauses it there to hold the window between writeback refusing the
 * page and the fixup; "fixup.reserve" (point_arg: the page) before each reservation (FAIL
 * injects, e.g., -ENOSPC); "fixup.page_gone" (point_arg: the page) when the worker finds its page
 * no longer in the mapping and drops it.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "../alloc/alloc.h"
#include "../transaction/transaction.h"
#include "../util/hooks.h"
#include "../util/messages.h"
#include "write-internal.h"

#define PS ((u64)UBT_PAGE_SIZE)

struct fixup {
	struct ubt_work work;
	struct ubt_inode_state *st;
	struct ubt_page *page;
};

/* Metadata items a delalloc range needs when finished: the rule of writeback.c (items_for). */
static u64 items_for(u64 bytes)
{
	return 3 + bytes / (1 << 20);
}

static bool ordered_overlaps(struct ubt_inode_state *st, u64 start, u64 end)
{
	bool found = false;

	pthread_mutex_lock(&st->lock);
	for (struct ubt_ordered_extent *o = st->ordered; o && !found; o = o->next)
		found = o->file_offset <= end && o->file_offset + o->num_bytes > start;
	pthread_mutex_unlock(&st->lock);
	return found;
}

enum fixup_check { FIXUP_GONE, FIXUP_NOTHING, FIXUP_NEEDED };

/* Page locked: does it still need a fixup? Clears CHECKED when it does not. */
static enum fixup_check recheck(struct ubt_page *page)
{
	if (!ubt_page_mapping(page)) {
		ClearPageChecked(page);
		return FIXUP_GONE;
	}
	if (!PageDirty(page) || !PageChecked(page)) {
		ClearPageChecked(page);
		return FIXUP_NOTHING;
	}
	return FIXUP_NEEDED;
}

/* Reserve space for one more delalloc page of @st: *items metadata items and a page of data. */
static int reserve(struct ubt_inode_state *st, struct ubt_page *page, u64 *items)
{
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	int ret;

	pthread_mutex_lock(&st->lock);
	*items = items_for(st->delalloc_bytes + PS);
	*items = *items > st->meta_items ? *items - st->meta_items : 0;
	pthread_mutex_unlock(&st->lock);
	for (int attempt = 0;; attempt++) {
		ret = ubt_hook_point("fixup.reserve", page);
		if (!ret)
			ret = ubt_reserve_space(fs_info, *items, PS);
		if (ret != -ENOSPC || attempt)
			return ret;
		/*
		 * Space freed in the running transaction comes back at its commit. (No data flush
		 * here: a flush waits for this pool.)
		 */
		ubt_commit_if_dirty(fs_info);
	}
}

/*
 * The fixup failed: the error goes on the mapping for the next fsync, and the page is cleaned —
 * its data is lost, as btrfs loses it — and no longer uptodate, so reads see the disk. Page locked.
 */
static void fail_page(struct ubt_inode_state *st, struct ubt_page *page, int err)
{
	ubt_warn("root %" PRIu64 " ino %" PRIu64 ": page at %" PRIu64 " was dirtied without space reserved "
		 "and none is left (%s): its new data is dropped",
		 st->root->objectid, st->ino, ubt_page_offset(page), strerror(-err));
	ubt_mapping_set_error(st->mapping, err);
	ubt_clear_page_dirty_for_io(page);
	SetPageError(page);
	ClearPageUptodate(page);
	ClearPageChecked(page);
}

/*
 * Give @page (referenced by the caller, not locked) its copy-on-write setup if it still needs
 * one. Returns 1 when the page was set up, 0 when there was nothing to do (or it is gone), or the
 * negative error recorded on the mapping.
 */
static int fixup_page(struct ubt_inode_state *st, struct ubt_page *page, bool worker)
{
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	u64 pstart = ubt_page_offset(page), pend = pstart + PS - 1, items = 0;
	enum fixup_check c;
	int ret;

	for (;;) {
		ubt_lock_page(page);
		c = recheck(page);
		ubt_unlock_page(page);
		if (c != FIXUP_NEEDED)
			goto done;
		/* Stable data first: an ordered extent over the page finishes without page locks. */
		ubt_wait_ordered_range(st, pstart, pend);
		ret = reserve(st, page, &items);
		ubt_lock_extent(&st->io_tree, pstart, pend, NULL);
		ubt_lock_page(page);
		c = recheck(page);
		if (c != FIXUP_NEEDED) {
			if (!ret)
				ubt_release_space(fs_info, items, PS);
			ret = 0;
			break;
		}
		if (ret) {
			fail_page(st, page, ret);
			break;
		}
		if (ordered_overlaps(st, pstart, pend)) {
			/* Written out again meanwhile (a flush that raced us): wait for it and start over. */
			ubt_unlock_page(page);
			ubt_unlock_extent(&st->io_tree, pstart, pend, NULL);
			ubt_release_space(fs_info, items, PS);
			continue;
		}
		if (ubt_test_range_bit(&st->io_tree, pstart, pend, UBT_EXTENT_DELALLOC, UBT_TEST_ANY)) {
			/* A buffered write covered it meanwhile: it is set up already. */
			ClearPageChecked(page);
			ubt_release_space(fs_info, items, PS);
			c = FIXUP_NOTHING;
			break;
		}
		ret = ubt_set_extent_bit(&st->io_tree, pstart, pend, UBT_EXTENT_DELALLOC, NULL);
		if (ret) {
			ubt_release_space(fs_info, items, PS);
			fail_page(st, page, ret);
			break;
		}
		/* The page stays dirty: from here on it is an ordinary delalloc page. */
		pthread_mutex_lock(&st->lock);
		st->meta_items += items;
		pthread_mutex_unlock(&st->lock);
		ClearPageChecked(page);
		break;
	}
	ubt_unlock_page(page);
	ubt_unlock_extent(&st->io_tree, pstart, pend, NULL);
	if (ret)
		return ret;
done:
	if (c == FIXUP_GONE && worker)
		ubt_hook_point("fixup.page_gone", page);
	return c == FIXUP_NEEDED ? 1 : 0;
}

static void fixup_fn(struct ubt_work *work)
{
	struct fixup *fx = (struct fixup *)((u8 *)work - offsetof(struct fixup, work));

	ubt_hook_point("fixup.before_run", fx->page);
	fixup_page(fx->st, fx->page, true);
	ubt_put_page(fx->page);
	ubt_inode_state_put(fx->st);
	free(fx);
}

void ubt_fixup_queue(struct ubt_inode_state *st, struct ubt_page *page)
{
	struct ubt_write_info *wi = st->wi;
	struct fixup *fx = calloc(1, sizeof(*fx));

	if (!fx) {
		/* The page stays dirty; the next writeback queues it again. */
		ClearPageChecked(page);
		return;
	}
	ubt_get_page(page);
	pthread_mutex_lock(&wi->lock);
	st->refs++;
	pthread_mutex_unlock(&wi->lock);
	fx->st = st;
	fx->page = page;
	ubt_init_work(&fx->work, fixup_fn, NULL, NULL);
	ubt_queue_work(wi->fixup_wq, &fx->work);
}

int ubt_fixup_range(struct ubt_inode_state *st, u64 start, u64 end)
{
	u64 idx = start / PS;
	struct ubt_page *page;
	int done = 0, err = 0;

	while (!ubt_mapping_next_dirty(st->mapping, idx, &page)) {
		int r = 0;

		if (ubt_page_offset(page) > end) {
			ubt_put_page(page);
			break;
		}
		idx = page->index + 1;
		if (PageChecked(page))
			r = fixup_page(st, page, false);
		ubt_put_page(page);
		if (r > 0)
			done++;
		else if (r < 0 && !err)
			err = r;
		if (!idx)
			break;
	}
	return err ? err : done;
}
