/*
 * alloc.h — space: block groups and their usage, the free space tree, extent allocation for data
 * and metadata, the extent tree's items and backrefs (through delayed references), pinned extents
 * (freed space is reusable only after the transaction that freed it commits), chunk allocation
 * when a block group type runs short, and reservations so ENOSPC reaches the caller up front.
 */
#ifndef UBT_ALLOC_ALLOC_H
#define UBT_ALLOC_ALLOC_H

#include "../transaction/transaction.h"

/*
 * Load block groups (extent tree, or block-group tree), build the in-memory free space (from the
 * free space tree when present and valid, else from the extent tree), and install
 * fs_info->extent_ops. Called when opening read-write. 0 or <0.
 */
int ubt_alloc_init(struct ubt_fs_info *fs_info);
void ubt_alloc_exit(struct ubt_fs_info *fs_info);

/*
 * Reserve space for a change before making it, so ENOSPC is returned to the caller and never
 * found at commit: @meta_items tree items to insert/modify (each may COW a path and split), and
 * @data_bytes of new data. Reservations are released by ubt_release_space when the change is
 * done (or failed). Returns 0 or -ENOSPC.
 */
int ubt_reserve_space(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes);
/*
 * The same for a change that frees space (unlink, rmdir, truncate down, evicting an orphan):
 * when the metadata space outside the global reserve runs out, it may use the global reserve
 * (never more than the free metadata space), so a full filesystem can still be emptied.
 * Released with ubt_release_space.
 */
int ubt_reserve_space_freeing(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes);
void ubt_release_space(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes);

/*
 * Allocate a data extent of exactly @num_bytes (sector aligned) near @hint. The extent item and
 * its first backref are created when ubt_add_data_ref is queued for it. -ENOSPC.
 */
int ubt_alloc_data_extent(struct ubt_trans_handle *h, u64 num_bytes, u64 hint, u64 *bytenr);
/* Return an allocated but unused data extent (no reference was ever added). */
void ubt_free_reserved_data_extent(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes);

/*
 * Add/drop one reference to data extent [@bytenr, +@num_bytes) from file extent item
 * (@root, @ino, @offset = key.offset - file_extent.offset), or a shared ref from leaf @parent when
 * @parent != 0. The first add creates the EXTENT_ITEM; dropping the last frees the extent (its
 * checksums are deleted from the csum tree and the space is pinned until commit).
 */
int ubt_add_data_ref(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
		     u64 parent);
int ubt_drop_data_ref(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
		      u64 parent);

/* statfs numbers: total and free bytes as btrfs reports them (df). */
void ubt_alloc_statfs(struct ubt_fs_info *fs_info, u64 *total, u64 *free, u64 *avail);

/*
 * Log replay (inode/tree-log.c). The space of log tree blocks and of the data extents a log
 * references but the extent tree does not know looks free to the allocator; these keep it out.
 * exclude: [@bytenr, +@len) (free now) is not handed out until unexcluded; unexclude: the range
 * becomes allocatable after the next commit (as pinned space). claim: a logged data extent becomes
 * a reserved data extent, as if just allocated, so the first ubt_add_data_ref inserts its extent
 * item (a second claim of the same extent is a no-op); unclaim: a claimed extent that got no
 * reference is released after the next commit. -EUCLEAN when the range is not free space.
 */
int ubt_alloc_exclude_range(struct ubt_fs_info *fs_info, u64 bytenr, u64 len);
int ubt_alloc_unexclude_range(struct ubt_fs_info *fs_info, u64 bytenr, u64 len);
int ubt_alloc_claim_data_extent(struct ubt_fs_info *fs_info, u64 bytenr, u64 len);
int ubt_alloc_unclaim_data_extent(struct ubt_fs_info *fs_info, u64 bytenr, u64 len);
/* Delete the data checksums of [@bytenr, +@len) from the csum tree (items split as needed). */
int ubt_alloc_del_csums(struct ubt_trans_handle *h, u64 bytenr, u64 len);

/*
 * May a NOCOW write overwrite data extent [@bytenr, +@num_bytes) in place? *@excl: its only
 * references are EXTENT_DATA_REFs of (@root, @ino, @offset), counting the extent tree and the
 * references queued in this transaction. *@gen: the extent item's generation (the running
 * transaction's for an extent not in the tree yet); the caller compares it with its root's
 * last_snapshot, as btrfs does (a snapshot shares the leaf, not the reference).
 */
int ubt_data_extent_exclusive(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
			      bool *excl, u64 *gen);

#endif
