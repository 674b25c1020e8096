/*
 * write-internal.h — structures shared by the files of src/write/: the per-filesystem write info,
 * the per-inode state, and ordered extents.
 *
 * Lock order (outermost first): inode io_mutex (one writer/truncate per file) -> extent range lock
 * (io_tree LOCKED bits) -> page lock -> fs_info->tree_lock -> state->lock -> wi->lock. Page locks
 * are never taken while tree_lock is held for writing; page writeback ends only after the ordered
 * extent finished (its file extent is in the tree), so a page's data is always in the cache or in
 * the tree.
 */
#ifndef UBT_WRITE_WRITE_INTERNAL_H
#define UBT_WRITE_WRITE_INTERNAL_H

#include <pthread.h>

#include "../cache/extent-io-tree.h"
#include "../cache/page-cache.h"
#include "../work/workqueue.h"
#include "write.h"

struct ubt_ordered_extent;

struct ubt_write_info {
	struct ubt_fs_info *fs_info;
	struct ubt_page_cache *cache;
	struct ubt_workqueue *io_wq;    /* device writes of ordered extents ("io") */
	struct ubt_workqueue *endio_wq; /* finishing ordered extents ("endio") */
	struct ubt_workqueue *fixup_wq; /* pages dirtied without COW setup ("fixup", fixup.c) */
	struct ubt_workqueue *compress_wq; /* async compressed writeback chunks ("compress") */
	struct ubt_write_opts wopts;
	unsigned writeback_secs;

	pthread_mutex_t lock; /* the inode table */
	struct ubt_inode_state *inodes;
	unsigned nr_states;

	pthread_t flusher;
	bool flusher_running, stopping, kick;
	pthread_mutex_t flusher_lock;
	pthread_cond_t flusher_cond;
};

struct ubt_inode_state {
	struct ubt_write_info *wi;
	struct ubt_root *root;
	u64 ino;
	int refs; /* under wi->lock */
	struct ubt_inode_state *next;

	struct ubt_mapping *mapping;
	struct ubt_extent_io_tree io_tree;
	pthread_mutex_t io_mutex; /* the inode lock: writes, truncate, fallocate of this file */

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;  /* an ordered extent finished */
	u64 i_size;           /* the file's size, including cached writes */
	u64 disk_i_size;      /* what the inode item says */
	u64 done_end;         /* highest end of a finished ordered extent */
	bool times_dirty;
	struct btrfs_timespec mtime, ctime;
	u64 inode_flags;
	bool flags_dirty;     /* inode_flags gained NOCOMPRESS: written with the next finished extent */
	unsigned nr_async;    /* compressed writeback chunks not yet submitted */
	u64 delalloc_bytes;   /* bytes under DELALLOC (kept by the io_tree callbacks) */
	u64 meta_items;       /* metadata reservation held for the delalloc and ordered extents */
	struct ubt_ordered_extent *ordered;
	unsigned nr_ordered;
	int error;            /* first write error not yet reported by a flush */
};

/* An ordered extent: file range -> newly allocated disk extent, in flight. */
struct ubt_ordered_extent {
	struct ubt_inode_state *st;
	struct ubt_ordered_extent *next;
	u64 file_offset, num_bytes;   /* file range (sector multiple) */
	u64 disk_bytenr, disk_num_bytes;
	u64 ram_bytes;
	int compress_type;
	bool is_inline;               /* the whole (small) file as an inline extent */
	u64 inline_len;
	bool datasum;
	bool finished;                /* its file extent is being inserted (st->lock) */
	int error;
	u8 *data;                     /* what goes to disk */
	u8 *csums;
	struct ubt_page **pages;
	u32 nr_pages;
	u64 meta_items;
	struct ubt_work io_work, finish_work;
};

/* state.c */
void ubt_write_kick_flusher(struct ubt_write_info *wi);

/*
 * fixup.c — invariant 1 and 2 of the brief: writeback found @page (locked by the caller, dirty,
 * not covered by DELALLOC or an ordered extent, CHECKED just set by the caller) — a page dirtied
 * behind the write path's back (ubt_msync/ubt_munmap). Queue it, once, to the fixup worker, which
 * re-checks it under the page lock and sets up delalloc (reserving space) while the page stays
 * dirty. Takes its own page and state references.
 */
void ubt_fixup_queue(struct ubt_inode_state *st, struct ubt_page *page);
/*
 * The same setup, done now by the caller (holding no page or extent lock of @st) for every dirty
 * CHECKED page of [start, end] — for paths that must not wait for the fixup pool but are about to
 * drop cached pages (ubt_write_prepare_change). Returns the number of pages set up, or the first
 * error (recorded on the mapping; that page was cleaned).
 */
int ubt_fixup_range(struct ubt_inode_state *st, u64 start, u64 end);

/* writeback.c */
int ubt_writeback_range(struct ubt_inode_state *st, u64 start, u64 end);
void ubt_wait_ordered_range(struct ubt_inode_state *st, u64 start, u64 end);
/*
 * Drop the cached pages of bytes [start, end] (inclusive; a partial first page is zeroed past
 * @start and kept). Whole pages go with any delalloc they still carry. Caller holds io_mutex and
 * has written the range back.
 */
void ubt_drop_cached_range(struct ubt_inode_state *st, u64 start, u64 end);
/*
 * Write back [start, end] and wait, round after round, until no dirty page is left there: pages
 * dirtied behind the write path are set up (synchronously when the caller holds io_mutex,
 * @io_locked, else by the fixup pool) and written too. Returns true when the range is clean.
 */
bool ubt_settle_range(struct ubt_inode_state *st, u64 start, u64 end, bool io_locked);
int ubt_inode_state_take_error(struct ubt_inode_state *st);
/*
 * For direct.c, the buffered path's own pieces: allocate / give back a data extent (short
 * transactions of their own), insert a written ordered extent (its finish transaction), and give
 * a failed one's disk extent back.
 */
int ubt_write_alloc_data(struct ubt_fs_info *fs_info, u64 len, u64 *bytenr);
void ubt_write_free_data(struct ubt_fs_info *fs_info, u64 bytenr, u64 len);
int ubt_ordered_finish(struct ubt_ordered_extent *oe);
void ubt_ordered_fail(struct ubt_ordered_extent *oe);

static inline struct ubt_write_info *ubt_wi(struct ubt_fs_info *fs_info)
{
	return fs_info->write_info;
}

#endif
