/*
 * state.c — the write path's per-filesystem and per-inode state: the page cache and worker pools
 * of a read-write mount, the table of inodes with cached data (their in-memory size and times,
 * delalloc accounting through the extent io tree's callbacks), the background flusher, and the
 * flush entry points used by fsync, sync and unmount.
 */
#include <stdlib.h>
#include <time.h>

#include "../alloc/alloc.h"
#include "../transaction/transaction.h"
#include "../util/messages.h"
#include "write-internal.h"

#define UBT_DEFAULT_WRITEBACK_SECS 5

/* ---- delalloc accounting (extent io tree callbacks, called under the tree's mutex) ---- */

static void delalloc_set(void *private, u64 start, u64 end, unsigned bits)
{
	struct ubt_inode_state *st = private;

	if (bits & UBT_EXTENT_DELALLOC) {
		pthread_mutex_lock(&st->lock);
		st->delalloc_bytes += end - start + 1;
		pthread_mutex_unlock(&st->lock);
	}
}

static void delalloc_clear(void *private, u64 start, u64 end, unsigned bits)
{
	struct ubt_inode_state *st = private;
	u64 len = end - start + 1;

	if (!(bits & UBT_EXTENT_DELALLOC))
		return;
	pthread_mutex_lock(&st->lock);
	st->delalloc_bytes -= ubt_min(st->delalloc_bytes, len);
	pthread_mutex_unlock(&st->lock);
	/* The space reserved for these bytes at write time is now allocated (or given up). */
	ubt_release_space(st->wi->fs_info, 0, len);
}

static const struct ubt_extent_io_ops delalloc_ops = {
	.set_bits_cb = delalloc_set,
	.clear_bits_cb = delalloc_clear,
};

/* ---- the inode table ---- */

/*
 * Idle: nothing in flight, and no write error left for the next flush/fsync to report — neither
 * the state's nor the mapping's (a fixup that found no space puts it there, and the page is clean
 * by then: dropping the state would lose the error and fsync would report success).
 */
static bool state_idle_locked(struct ubt_inode_state *st)
{
	return !st->delalloc_bytes && !st->nr_ordered && !st->nr_async && !st->error &&
	       !ubt_mapping_has_error(st->mapping) && !ubt_mapping_nr_dirty(st->mapping);
}

static void state_free(struct ubt_inode_state *st)
{
	if (st->meta_items)
		ubt_release_space(st->wi->fs_info, st->meta_items, 0);
	ubt_mapping_destroy(st->mapping);
	ubt_extent_io_tree_release(&st->io_tree);
	pthread_mutex_destroy(&st->io_mutex);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->cond);
	free(st);
}

struct ubt_inode_state *ubt_inode_state_find(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct ubt_inode_state *st;

	if (!wi)
		return NULL;
	pthread_mutex_lock(&wi->lock);
	for (st = wi->inodes; st; st = st->next)
		if (st->root == root && st->ino == ino)
			break;
	if (st)
		st->refs++;
	pthread_mutex_unlock(&wi->lock);
	return st;
}

struct ubt_inode_state *ubt_inode_state_get(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct ubt_inode_state *st = ubt_inode_state_find(fs_info, root, ino), *other;
	struct btrfs_inode_item ii;
	int ret;

	if (st || !wi)
		return st;
	ubt_tree_read_lock(fs_info); /* a transaction may be changing the tree right now */
	ret = ubt_inode_read(root, ino, &ii);
	ubt_tree_read_unlock(fs_info);
	if (ret)
		return NULL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->wi = wi;
	st->root = root;
	st->ino = ino;
	st->refs = 1;
	st->mapping = ubt_mapping_create(wi->cache, st, ino);
	if (!st->mapping) {
		free(st);
		return NULL;
	}
	ubt_extent_io_tree_init(&st->io_tree, &delalloc_ops, st);
	pthread_mutex_init(&st->io_mutex, NULL);
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);
	st->i_size = st->disk_i_size = le64toh(ii.size);
	st->inode_flags = le64toh(ii.flags);
	st->mtime = ii.mtime;
	st->ctime = ii.ctime;

	pthread_mutex_lock(&wi->lock);
	for (other = wi->inodes; other; other = other->next)
		if (other->root == root && other->ino == ino)
			break;
	if (other) {
		other->refs++;
		pthread_mutex_unlock(&wi->lock);
		st->refs = 0;
		state_free(st);
		return other;
	}
	st->next = wi->inodes;
	wi->inodes = st;
	wi->nr_states++;
	pthread_mutex_unlock(&wi->lock);
	return st;
}

/*
 * Unlink @st (to be freed) if nobody uses it and it holds no data in flight. A state whose only
 * content is clean cached pages (read cache, readahead) is kept while the table is small, so
 * repeated reads of a file are served from memory; past UBT_KEEP_IDLE_STATES it goes, with its
 * clean pages. Caller holds wi->lock.
 */
#define UBT_KEEP_IDLE_STATES 256

static bool reap_locked(struct ubt_write_info *wi, struct ubt_inode_state *st)
{
	struct ubt_inode_state **pp;
	bool idle;

	if (st->refs)
		return false;
	pthread_mutex_lock(&st->lock);
	idle = state_idle_locked(st);
	pthread_mutex_unlock(&st->lock);
	if (!idle)
		return false;
	if (ubt_mapping_nr_pages(st->mapping) && wi->nr_states <= UBT_KEEP_IDLE_STATES)
		return false;
	wi->nr_states--;
	for (pp = &wi->inodes; *pp && *pp != st; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = st->next;
	return true;
}

void ubt_inode_state_put(struct ubt_inode_state *st)
{
	struct ubt_write_info *wi;
	bool gone;

	if (!st)
		return;
	wi = st->wi;
	pthread_mutex_lock(&wi->lock);
	st->refs--;
	gone = reap_locked(wi, st);
	pthread_mutex_unlock(&wi->lock);
	if (gone)
		state_free(st);
}

bool ubt_write_overlay(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, u64 *size,
		       struct btrfs_timespec *mtime, struct btrfs_timespec *ctime, u64 *delalloc_bytes,
		       bool *times_dirty)
{
	struct ubt_inode_state *st = ubt_inode_state_find(fs_info, root, ino);

	if (!st)
		return false;
	pthread_mutex_lock(&st->lock);
	*size = st->i_size;
	*mtime = st->mtime;
	*ctime = st->ctime;
	*delalloc_bytes = st->delalloc_bytes;
	*times_dirty = st->times_dirty;
	pthread_mutex_unlock(&st->lock);
	ubt_inode_state_put(st);
	return true;
}

int ubt_inode_state_take_error(struct ubt_inode_state *st)
{
	int err, merr;

	pthread_mutex_lock(&st->lock);
	err = st->error;
	st->error = 0;
	pthread_mutex_unlock(&st->lock);
	merr = ubt_mapping_check_error(st->mapping);
	return err ? err : merr;
}

int ubt_write_flush_range(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, u64 start, u64 end)
{
	struct ubt_inode_state *st = ubt_inode_state_find(fs_info, root, ino);
	int err;

	if (!st)
		return 0;
	/* Written and waited for until clean; a write error is the state's, reported once here. */
	ubt_settle_range(st, start, end, false);
	err = ubt_inode_state_take_error(st);
	ubt_inode_state_put(st);
	return err;
}

int ubt_write_flush_all(struct ubt_fs_info *fs_info)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct ubt_inode_state **v = NULL, *st;
	size_t n = 0, cap = 0;
	int ret = 0;

	if (!wi)
		return 0;
	pthread_mutex_lock(&wi->lock);
	for (st = wi->inodes; st; st = st->next) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct ubt_inode_state **nv = realloc(v, ncap * sizeof(*nv));
			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		st->refs++;
		v[n++] = st;
	}
	pthread_mutex_unlock(&wi->lock);
	for (size_t i = 0; i < n; i++) {
		int r = ubt_writeback_range(v[i], 0, (u64)-1);
		if (r && !ret)
			ret = r;
	}
	for (size_t i = 0; i < n; i++) {
		ubt_settle_range(v[i], 0, (u64)-1, false);
		ubt_inode_state_put(v[i]);
	}
	free(v);
	return ret;
}

/* ---- background writeback ---- */

void ubt_write_kick_flusher(struct ubt_write_info *wi)
{
	pthread_mutex_lock(&wi->flusher_lock);
	wi->kick = true;
	pthread_cond_signal(&wi->flusher_cond);
	pthread_mutex_unlock(&wi->flusher_lock);
}

static void flusher_cb(void *arg)
{
	ubt_write_kick_flusher(arg);
}

static void *flusher_fn(void *arg)
{
	struct ubt_write_info *wi = arg;

	pthread_mutex_lock(&wi->flusher_lock);
	while (!wi->stopping) {
		struct timespec deadline;

		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += wi->writeback_secs;
		while (!wi->stopping && !wi->kick &&
		       pthread_cond_timedwait(&wi->flusher_cond, &wi->flusher_lock, &deadline) != ETIMEDOUT)
			;
		if (wi->stopping)
			break;
		wi->kick = false;
		pthread_mutex_unlock(&wi->flusher_lock);
		ubt_write_flush_all(wi->fs_info);
		pthread_mutex_lock(&wi->flusher_lock);
	}
	pthread_mutex_unlock(&wi->flusher_lock);
	return NULL;
}

int ubt_write_init(struct ubt_fs_info *fs_info, const struct ubt_write_config *cfg)
{
	struct ubt_page_cache_config pcfg = { 0 };
	struct ubt_write_info *wi;
	int ret;

	wi = calloc(1, sizeof(*wi));
	if (!wi)
		return -ENOMEM;
	wi->fs_info = fs_info;
	wi->wopts = cfg->wopts;
	wi->writeback_secs = cfg->writeback_secs ? cfg->writeback_secs : UBT_DEFAULT_WRITEBACK_SECS;
	pthread_mutex_init(&wi->lock, NULL);
	pthread_mutex_init(&wi->flusher_lock, NULL);
	pthread_cond_init(&wi->flusher_cond, NULL);
	pcfg.limit_bytes = cfg->cache_bytes;
	wi->cache = ubt_page_cache_create(&pcfg);
	if (IS_ERR_OR_NULL(wi->cache)) {
		ret = wi->cache ? (int)PTR_ERR(wi->cache) : -ENOMEM;
		wi->cache = NULL;
		goto fail;
	}
	ubt_page_cache_set_flusher(wi->cache, flusher_cb, wi);
	wi->io_wq = ubt_wq_create("io", 4, 0);
	wi->endio_wq = ubt_wq_create("endio", 2, UBT_WQ_KEEP_ONE);
	wi->fixup_wq = ubt_wq_create("fixup", 1, 0);
	wi->compress_wq = ubt_wq_create("compress", 4, 0);
	if (IS_ERR_OR_NULL(wi->io_wq) || IS_ERR_OR_NULL(wi->endio_wq) || IS_ERR_OR_NULL(wi->fixup_wq) ||
	    IS_ERR_OR_NULL(wi->compress_wq)) {
		ret = -ENOMEM;
		goto fail;
	}
	fs_info->write_info = wi;
	ret = -pthread_create(&wi->flusher, NULL, flusher_fn, wi);
	if (ret) {
		fs_info->write_info = NULL;
		goto fail;
	}
	wi->flusher_running = true;
	return 0;
fail:
	if (!IS_ERR_OR_NULL(wi->io_wq))
		ubt_wq_destroy(wi->io_wq);
	if (!IS_ERR_OR_NULL(wi->endio_wq))
		ubt_wq_destroy(wi->endio_wq);
	if (!IS_ERR_OR_NULL(wi->fixup_wq))
		ubt_wq_destroy(wi->fixup_wq);
	if (!IS_ERR_OR_NULL(wi->compress_wq))
		ubt_wq_destroy(wi->compress_wq);
	if (wi->cache)
		ubt_page_cache_destroy(wi->cache);
	free(wi);
	return ret;
}

void ubt_write_exit(struct ubt_fs_info *fs_info)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct ubt_inode_state *st, *next;

	if (!wi)
		return;
	if (wi->flusher_running) {
		pthread_mutex_lock(&wi->flusher_lock);
		wi->stopping = true;
		pthread_cond_signal(&wi->flusher_cond);
		pthread_mutex_unlock(&wi->flusher_lock);
		pthread_join(wi->flusher, NULL);
	}
	ubt_write_flush_all(fs_info);
	ubt_wq_destroy(wi->fixup_wq);
	ubt_wq_destroy(wi->compress_wq);
	ubt_wq_destroy(wi->io_wq);
	ubt_wq_destroy(wi->endio_wq);
	for (st = wi->inodes; st; st = next) {
		next = st->next;
		state_free(st);
	}
	{
		struct ubt_page_cache_stats cs;

		ubt_page_cache_get_stats(wi->cache, &cs);
		if (cs.nr_pages)
			ubt_err("unmount: %llu cached pages are still referenced (a reference leak)",
				(unsigned long long)cs.nr_pages);
	}
	ubt_page_cache_destroy(wi->cache);
	fs_info->write_info = NULL;
	pthread_mutex_destroy(&wi->lock);
	pthread_mutex_destroy(&wi->flusher_lock);
	pthread_cond_destroy(&wi->flusher_cond);
	free(wi);
}
