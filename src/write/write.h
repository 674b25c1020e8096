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
 * What the cache knows about an inode that the inode item may not say yet: its size, the bytes
 * of cached data, and (when @times_dirty) the times of writes not yet in the inode item. Returns
 * true (and fills them) when a state exists.
 */
bool ubt_write_overlay(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, u64 *size,
		       struct btrfs_timespec *mtime, struct btrfs_timespec *ctime, u64 *delalloc_bytes,
		       bool *times_dirty);

/*
 * Buffered write of @len bytes at @off (or at the end when @append) to regular file @ino whose
 * inode item is @ii. Reserves space first (-ENOSPC, -EDQUOT before anything changes), copies into
 * the page cache, marks the range DELALLOC, updates size and times in memory. Throttles the
 * writer when too much is dirty. Returns bytes written.
 */
#define UBT_WB_APPEND 1u   /* write at the end (O_APPEND); @off is ignored */
/*
 * The caller already acknowledged this data (a kernel page cache writing back, FUSE's writeback
 * cache): it must not fail for want of space. When none can be reserved, the pages are dirtied
 * without a reservation, as the kernel's unmap path dirties mapped pages, and the fixup worker
 * reserves at writeback; ENOSPC then reaches fsync (invariants 1 and 2). The times are left
 * alone: the writer set them when it accepted the data (FUSE's kernel sends them as a setattr).
 */
#define UBT_WB_ACCEPTED 2u
ssize_t ubt_write_buffered(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
			   const struct btrfs_inode_item *ii, const void *buf, size_t len, u64 off, unsigned flags);

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

/*
 * Mapped access (mmap.c). ubt_write_mmap: a new mapping for @owner (the file handle) of
 * [@off, @off + @len) of regular file @ino (@off page aligned): a page-aligned buffer of @len
 * rounded up to pages, filled through the cache (zeros past EOF); ERR_PTR on failure.
 * ubt_write_msync hands the bytes changed in the pages of [@addr, @addr + @len) back to the page
 * cache: the pages are dirtied without reservation or DELALLOC (as the kernel's unmap path does)
 * and writeback routes them through the fixup worker; bytes past EOF are dropped. @refuse is
 * returned instead when something changed and the caller may not write (0: it may).
 * ubt_write_munmap hands the whole mapping at @addr back the same way and frees it (also on
 * error). -EINVAL when @addr is not a mapping of @owner.
 */
void *ubt_write_mmap(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, const void *owner, u64 off,
		     size_t len);
int ubt_write_msync(struct ubt_fs_info *fs_info, const void *owner, void *addr, size_t len, int refuse);
int ubt_write_munmap(struct ubt_fs_info *fs_info, const void *owner, void *addr, int refuse);
/* Unmap (hand back and free) every mapping @owner still has: a file handle's close. */
int ubt_write_munmap_all(struct ubt_fs_info *fs_info, const void *owner, int refuse);

/*
 * Direct IO (direct.c). ubt_write_direct: sector-aligned writes of a COW file bypass the cache
 * (its cached pages of the range are written back and dropped), space reserved up front; an
 * unaligned one, or one past an EOF in mid-sector, goes to ubt_write_buffered. Returns the bytes
 * that reached the disk (short when the source ran short), or the error. NOCOW and prealloc files
 * are the caller's (the in-place path). ubt_read_direct: writes back the range's dirty pages,
 * then reads from disk (checksums verified); called without the tree lock.
 */
ssize_t ubt_write_direct(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
			 const struct btrfs_inode_item *ii, const void *buf, size_t len, u64 off, bool append);
ssize_t ubt_read_direct(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, void *buf, size_t len, u64 off);

/* point_arg of the hook points "direct.copy" and "direct.submit". */
struct ubt_direct_step {
	u64 file_offset; /* first byte of this step */
	u64 len;         /* bytes the step wants (direct.submit: the bytes about to be written) */
	u64 avail;       /* direct.copy: bytes the source yields now; a hook may lower it */
	unsigned attempt; /* 0 for an ordered extent's first copy, then one per retry */
};

#endif
