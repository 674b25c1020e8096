/*
 * write.h — the data write path (btrfs's, in userspace): buffered writes into the page cache with
 * space reserved up front and the range marked DELALLOC; writeback that turns delalloc ranges into
 * ordered extents (allocate, write, checksum) and, once every byte of an ordered extent is on disk,
 * inserts its file extent item and checksums in a transaction; reads that see cached data first;
 * flush/fsync/truncate/unmount that wait for ordered extents.
 *
 * The fs/ layer calls these for files of a read-write mount. Invariants (docs/DESIGN.md, "Data
 * write path"): a dirty page reaches the disk only through a delalloc range or an ordered extent;
 * file extent items are inserted only for ordered extents whose I/O completed without error; the
 * on-disk i_size never covers bytes whose ordered extent has not finished; every ordered extent
 * finishes (with success or error), so nothing waits forever; ENOSPC is returned by the write call.
 */
#ifndef UBT_WRITE_WRITE_H
#define UBT_WRITE_WRITE_H

#include <sys/types.h>

#include "../ctree/disk-io.h"
#include "../inode/inode-write.h"

struct ubt_write_info;
struct ubt_inode_state;

struct ubt_write_config {
	size_t cache_bytes;        /* page cache limit; 0 = 256 MiB */
	struct ubt_write_opts wopts; /* compression and inline rules for new data */
	unsigned writeback_secs;   /* background writeback of dirty data older than this; 0 = 5 */
};

/* Set up the write path of a read-write mount (page cache, worker pools, flusher thread). */
int ubt_write_init(struct ubt_fs_info *fs_info, const struct ubt_write_config *cfg);
/* Write back everything, wait, stop the threads, free the cache. */
void ubt_write_exit(struct ubt_fs_info *fs_info);

/*
 * The in-memory state of a file with cached data: get it (creating it) for @ino of @root, or
 * find it only when it exists (NULL). Each get/find reference is dropped with ubt_inode_state_put.
 */
struct ubt_inode_state *ubt_inode_state_get(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino);
struct ubt_inode_state *ubt_inode_state_find(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino);
void ubt_inode_state_put(struct ubt_inode_state *st);

/*
 * What the cache knows about an inode that the inode item may not say yet: its size and times.
 * Returns true (and fills them) when a state exists.
 */
bool ubt_write_overlay(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, u64 *size,
		       struct btrfs_timespec *mtime, struct btrfs_timespec *ctime, u64 *delalloc_bytes);

/*
 * Buffered write of @len bytes at @off (or at the end when @append) to regular file @ino whose
 * inode item is @ii. Reserves space first (-ENOSPC, -EDQUOT before anything changes), copies into
 * the page cache, marks the range DELALLOC, updates size and times in memory. Throttles the
 * writer when too much is dirty. Returns bytes written.
 */
ssize_t ubt_write_buffered(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
			   const struct btrfs_inode_item *ii, const void *buf, size_t len, u64 off, bool append);

/* Read through the cache: like ubt_file_read, with cached (dirty or written) pages taking precedence. */
ssize_t ubt_write_read(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
		       const struct btrfs_inode_item *ii, void *buf, size_t len, u64 off);

/*
 * Write back the dirty data of @ino in [start, end] (inclusive; (u64)-1 = to the end) and wait
 * for its ordered extents. Returns the first write error recorded for the file since the last
 * call that reported one (fsync semantics), or 0.
 */
int ubt_write_flush_range(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, u64 start, u64 end);
/* Write back every file and wait (sync, commit, unmount). */
int ubt_write_flush_all(struct ubt_fs_info *fs_info);

/*
 * Before the file's extents or attributes change under the cache (truncate, fallocate, punch,
 * NOCOW writes, setattr): takes the file's io lock, writes back the whole file and waits for its
 * ordered extents, then drops the cached pages of [drop_start, drop_end] (inclusive; none when
 * drop_start > drop_end; a partial first page is zeroed past drop_start). Returns the state to
 * pass to ubt_write_finish_change (NULL when nothing is cached). Call before the transaction.
 */
struct ubt_inode_state *ubt_write_prepare_change(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
						 u64 drop_start, u64 drop_end);
/* After the change is in the tree: reload size and times from the inode item, drop the io lock. */
void ubt_write_finish_change(struct ubt_inode_state *st, struct ubt_root *root, u64 ino);

#endif
