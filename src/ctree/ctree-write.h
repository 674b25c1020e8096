/*
 * ctree-write.h — modifying a btrfs B-tree inside a transaction: copy-on-write of blocks along a
 * path, item insertion and deletion with leaf/node split and merge, item resizing, and the dirty
 * extent-buffer list that a commit writes out.
 *
 * Locking model: every tree modification happens under fs_info->tree_lock held for writing (taken
 * by ubt_trans_start and released by ubt_trans_end/commit); readers take it for reading around
 * each search-and-copy. A block COWed in the running transaction (header generation == transid)
 * is modified in place; any other block is copied first (ubt_cow_block), so the committed tree
 * stays intact until the superblock points at the new one.
 *
 * The allocator lives in a layer above (alloc/): ctree reaches it through fs_info->extent_ops,
 * which alloc/ installs at open time (the kernel breaks the same cycle with delayed refs).
 */
#ifndef UBT_CTREE_CTREE_WRITE_H
#define UBT_CTREE_CTREE_WRITE_H

#include "ctree.h"

/* A transaction handle: what ctree needs to know about the running transaction. */
struct ubt_trans_handle {
	struct ubt_fs_info *fs_info;
	u64 transid;
	int error; /* first error in this handle (sticky: the transaction aborts) */
};

/* Extent-tree hooks installed by alloc/ (see alloc/extent-tree.h for the contracts). */
struct ubt_extent_ops {
	/* A new tree block for @root at @level: zeroed, header filled, dirty, one reference held. */
	struct extent_buffer *(*alloc_tree_block)(struct ubt_trans_handle *h, struct ubt_root *root, u64 parent,
						  int level, const struct ubt_key *first_key, u64 hint);
	/* Drop the reference of @root (or of @parent when non-zero: a shared backref) on @eb. */
	int (*free_tree_block)(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb,
			       u64 parent, bool last_ref);
	/* Add/drop references on everything @eb points to (children, or data extents of a leaf). */
	int (*inc_ref)(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, bool full_backref);
	int (*dec_ref)(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, bool full_backref);
	/* Current reference count and flags (BTRFS_BLOCK_FLAG_FULL_BACKREF) of a tree block. */
	int (*lookup_extent_info)(struct ubt_trans_handle *h, u64 bytenr, int level, u64 *refs, u64 *flags);
	int (*set_extent_flags)(struct ubt_trans_handle *h, struct extent_buffer *eb, u64 flags);

	/* Commit-time hooks, called by transaction/ in this order, looping until nothing changes. */
	/* Apply queued reference changes to the extent tree (and free space tree). 0 or <0. */
	int (*run_delayed_refs)(struct ubt_trans_handle *h);
	/* Write dirty block group items and other allocator state; returns 1 if it changed trees. */
	int (*commit_prepare)(struct ubt_trans_handle *h);
	/* After the superblock is on disk: space freed in the committed transaction becomes usable. */
	void (*commit_done)(struct ubt_fs_info *fs_info, u64 committed_transid);
	/* A commit failed: forget in-memory allocator changes of the running transaction. */
	void (*abort)(struct ubt_fs_info *fs_info);
};

#define BTRFS_BLOCK_FLAG_FULL_BACKREF (1ULL << 8)
#define BTRFS_EXTENT_FLAG_DATA (1ULL << 0)
#define BTRFS_EXTENT_FLAG_TREE_BLOCK (1ULL << 1)

/*
 * Search for @key and prepare the path for a change: every block on the path is COWed.
 * @ins_len > 0: the leaf will have room for an item of @ins_len bytes (data + item header),
 * splitting as needed; @ins_len < 0: an item will be deleted, nodes may be merged. Returns as
 * ubt_search_slot (0 found, 1 not found, <0 error).
 */
int ubt_search_slot_write(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
			  struct ubt_path *path, int ins_len);

/* Insert @nr empty items (keys ascending, all absent) at the path from a failed search_slot_write. */
int ubt_insert_empty_items(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path,
			   const struct ubt_key *keys, const u32 *data_sizes, int nr);
/* Search and insert one item with @data. -EEXIST if the key exists. */
int ubt_insert_item(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, const void *data,
		    u32 data_size);
/* Delete @nr items from @slot of the path's leaf (path from ubt_search_slot_write with ins_len < 0). */
int ubt_del_items(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int slot, int nr);
/* Grow the path's current item by @extra bytes at its end (room must exist: search with ins_len). */
void ubt_extend_item(struct ubt_trans_handle *h, struct ubt_path *path, u32 extra);
/* Shrink the current item to @new_size, dropping bytes at the end (@from_end) or the front. */
void ubt_truncate_item(struct ubt_trans_handle *h, struct ubt_path *path, u32 new_size, bool from_end);
/* Change the key of the current item (the order of the leaf must not change). */
void ubt_set_item_key(struct ubt_trans_handle *h, struct ubt_path *path, const struct ubt_key *key);
/* Free bytes in a leaf. */
u32 ubt_leaf_free_space(const struct extent_buffer *leaf);

/*
 * COW @eb (at @parent_slot of @parent, or the root node when @parent is NULL) for @root. On
 * success *@cow is the writable copy (a reference is transferred to the caller; the old block's
 * reference is dropped), and the parent pointer or root location is updated.
 */
int ubt_cow_block(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb,
		  struct extent_buffer *parent, int parent_slot, struct extent_buffer **cow);

/* Mark a block dirty in the running transaction (it must have been COWed in it). */
void ubt_mark_buffer_dirty(struct ubt_trans_handle *h, struct extent_buffer *eb);
/* Make a root's node writable even without a search (e.g. to change its root item). */
int ubt_cow_root_node(struct ubt_trans_handle *h, struct ubt_root *root);

/* Checksum and write every dirty tree block to all its copies; clears the dirty list. */
int ubt_write_dirty_blocks(struct ubt_fs_info *fs_info);

#endif
