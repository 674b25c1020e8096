/*
 * alloc-internal.h — alloc/'s private state: range sets, block groups (usage, allocatable space,
 * pinned space, the free space tree's view), delayed reference heads, and the functions the files
 * of this folder share. Nothing outside src/alloc includes it.
 *
 * Three views of a block group's space, each a sorted set of disjoint free ranges:
 *   free   — allocatable now (what the allocator hands out);
 *   pinned — freed in the running transaction: reusable only after it commits (commit_done);
 *   fst    — exactly what the on-disk free space tree says is free (bg minus the extents in the
 *            extent tree minus the superblock stripes); kept in step with the tree item by item.
 * A range allocated but whose extent item is not yet inserted (delayed ref queued, or a data
 * extent without a reference yet) is in none of free/pinned but still in fst.
 */
#ifndef UBT_ALLOC_ALLOC_INTERNAL_H
#define UBT_ALLOC_ALLOC_INTERNAL_H

#include <pthread.h>

#include "alloc.h"

struct ubt_range {
	u64 start, len;
};

struct ubt_rangeset {
	struct ubt_range *r;
	size_t nr, cap;
	u64 total; /* sum of lengths */
};

void rs_init(struct ubt_rangeset *s);
void rs_free(struct ubt_rangeset *s);
/* Add [start, +len) (must not overlap what is there: -EEXIST), merging with neighbours. */
int rs_add(struct ubt_rangeset *s, u64 start, u64 len);
/* Remove [start, +len), which must be entirely present (-ENOENT otherwise). */
int rs_remove(struct ubt_rangeset *s, u64 start, u64 len);
/* Remove whatever of [start, +len) is present. */
int rs_remove_any(struct ubt_rangeset *s, u64 start, u64 len);
/* Index of the first range ending after @pos (nr if none). */
size_t rs_find(const struct ubt_rangeset *s, u64 pos);
bool rs_contains(const struct ubt_rangeset *s, u64 start, u64 len);
int rs_copy(struct ubt_rangeset *dst, const struct ubt_rangeset *src);

struct ubt_block_group {
	u64 start, length, flags;
	u64 used;       /* bytes of extents in the extent tree (as applied by delayed refs) */
	u64 disk_used;  /* value in the on-disk BLOCK_GROUP_ITEM */
	u64 super_bytes; /* superblock stripes excluded from the group */
	bool pending;   /* created in the running transaction: its items are not in the trees yet */
	bool removing;  /* empty and being removed: nothing is allocated from it any more */
	struct btrfs_chunk *chunk_item; /* while pending: the chunk item to insert */
	u32 chunk_item_size;
	bool fst_bitmaps; /* free space tree uses bitmaps for this group */
	u32 fst_high, fst_low; /* kernel's bitmap conversion thresholds */
	struct ubt_rangeset free, pinned, fst;
};

/* A pending change to one backref of an extent. */
struct ubt_dref {
	struct ubt_dref *next;
	u8 type;      /* BTRFS_{TREE_BLOCK,SHARED_BLOCK,EXTENT_DATA,SHARED_DATA}_REF_KEY */
	u64 root;     /* TREE_BLOCK/EXTENT_DATA: root id; SHARED_*: parent bytenr */
	u64 owner;    /* EXTENT_DATA: inode number */
	u64 offset;   /* EXTENT_DATA: file offset - extent offset */
	s64 mod;      /* net count change */
};

/* All pending changes to one extent. */
struct ubt_dhead {
	struct ubt_dhead *hash_next;
	u64 bytenr, num_bytes;
	bool is_data;
	bool must_insert; /* extent item does not exist yet: insert it */
	int level;
	struct ubt_key first_key;
	u64 set_flags;    /* extent flags to OR into the item */
	struct ubt_dref *refs;
};

#define UBT_DHEAD_BUCKETS 4096

struct ubt_alloc_info {
	pthread_mutex_t lock; /* space counters and the free/pinned sets (reservations run unlocked otherwise) */
	struct ubt_block_group **bgs; /* sorted by start */
	size_t nr_bgs, cap_bgs;
	struct ubt_root *bg_root; /* extent tree, or the block group tree */
	bool fst;                 /* maintaining a free space tree */
	bool skinny;
	bool mixed;
	u8 chunk_tree_uuid[BTRFS_UUID_SIZE];
	u64 dev_total;            /* super.dev_item.total_bytes */
	struct ubt_rangeset dev_free; /* unallocated physical space of our device */
	struct ubt_rangeset dev_freed; /* of chunks removed in the running transaction: free after commit */
	struct ubt_block_group **dead_bgs; /* removed groups, kept until unmount (pointers stay valid) */
	size_t nr_dead_bgs;
	u64 next_logical;         /* no chunk is placed below this again while mounted */
	bool have_pending_bgs;

	struct ubt_rangeset reserved_data; /* data extents allocated, no reference queued yet */

	struct ubt_dhead *heads[UBT_DHEAD_BUCKETS];
	size_t nr_heads;

	u64 meta_reserved, data_reserved; /* outstanding ubt_reserve_space reservations */
	bool broken; /* after an abort: refuse allocations */
};

static inline struct ubt_alloc_info *ainfo(struct ubt_fs_info *fs_info)
{
	return fs_info->alloc_info;
}

/* block-group.c */
struct ubt_block_group *ubt_bg_lookup(struct ubt_alloc_info *ai, u64 bytenr);
int ubt_bg_load(struct ubt_fs_info *fs_info);
void ubt_bg_free_all(struct ubt_alloc_info *ai);
/* Allocate a chunk of @type (BTRFS_BLOCK_GROUP_DATA/METADATA/SYSTEM) in memory; -ENOSPC. */
int ubt_alloc_chunk(struct ubt_fs_info *fs_info, u64 type);
/* Insert the items of block groups created in this transaction. Returns 1 if it did anything. */
int ubt_create_pending_bgs(struct ubt_trans_handle *h);
int ubt_write_bg_items(struct ubt_trans_handle *h);
/*
 * Remove block groups that are empty (nothing used, nothing allocated, at most space freed in
 * this transaction) when the filesystem can do without them: their BLOCK_GROUP_ITEM, free space
 * tree items, DEV_EXTENTs and CHUNK_ITEM go, the device item's bytes_used drops, and their device
 * space becomes unallocated once the transaction has committed. Returns 1 if it removed any.
 */
int ubt_remove_unused_bgs(struct ubt_trans_handle *h, u64 meta_keep, u64 data_keep);
/* After a commit: the device space of removed groups is allocatable again. */
void ubt_bg_commit_done(struct ubt_alloc_info *ai);
/* Space of a kind: free bytes and total bytes of groups whose flags intersect @type. */
void ubt_space_of(struct ubt_alloc_info *ai, u64 type, u64 *total, u64 *free, u64 *pinned);
/* Superblock stripes inside [start, +len) as excluded ranges (added to @out). */
int ubt_bg_super_ranges(struct ubt_fs_info *fs_info, u64 start, u64 len, struct ubt_rangeset *out);

/* free-space.c */
void ubt_fst_thresholds(struct ubt_fs_info *fs_info, struct ubt_block_group *bg);
int ubt_fst_load(struct ubt_fs_info *fs_info);
int ubt_free_space_from_extents(struct ubt_fs_info *fs_info);
/* On-disk free space tree edits for an extent inserted/deleted in the extent tree. */
int ubt_fst_remove(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 start, u64 len);
int ubt_fst_add(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 start, u64 len);
/* Delete the item at @key of @root; -EUCLEAN (logged, naming @what) when it is missing. */
int ubt_alloc_del_item(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
		       const char *what);
/* Delete every free space tree item of a block group being removed. */
int ubt_fst_remove_bg(struct ubt_trans_handle *h, struct ubt_block_group *bg);
/* Insert FREE_SPACE_INFO and the extents of a new block group. */
int ubt_fst_add_bg(struct ubt_trans_handle *h, struct ubt_block_group *bg);
/* First fit of @len bytes at or after @hint (wrapping), no 64 KiB stripe crossing when @meta. */
int ubt_find_free(struct ubt_fs_info *fs_info, u64 type, u64 len, u64 hint, bool meta, u64 *out);

/* extent-tree.c */
int ubt_queue_ref(struct ubt_fs_info *fs_info, u64 bytenr, u64 num_bytes, bool is_data, int level, u8 type,
		  u64 root, u64 owner, u64 offset, s64 mod);
int ubt_run_delayed_refs(struct ubt_trans_handle *h);
/* The queued changes of one extent: found, or created (NULL on -ENOMEM). */
struct ubt_dhead *ubt_find_head(struct ubt_alloc_info *ai, u64 bytenr);
struct ubt_dhead *ubt_get_head(struct ubt_alloc_info *ai, u64 bytenr, u64 num_bytes, bool is_data, int level);
void ubt_drop_all_heads(struct ubt_alloc_info *ai);
extern const struct ubt_extent_ops ubt_alloc_extent_ops;
u64 ubt_hash_extent_data_ref(u64 root, u64 owner, u64 offset);

#endif
