/*
 * ctree.h — the btrfs B-tree as seen from above: keys, extent buffers (tree blocks in memory),
 * paths, search and iteration. Read side; the copy-on-write side joins it in the read-write step.
 *
 * Lifetime: an extent buffer returned in a path is referenced by that path until
 * ubt_path_release(); item pointers from ubt_item_ptr() are valid only while the path holds the
 * leaf. Every tree block was verified by the tree checker (tree-checker.c) when it was read, so
 * item offsets and sizes are within the block; item *contents* are still untrusted: parsers check
 * each item's size before reading a field (-EUCLEAN otherwise).
 */
#ifndef UBT_CTREE_CTREE_H
#define UBT_CTREE_CTREE_H

#include <pthread.h>
#include <stdatomic.h>

#include "../format/ondisk.h"

struct ubt_fs_info;

struct ubt_key {
	u64 objectid;
	u8 type;
	u64 offset;
};

static inline void ubt_disk_key_to_cpu(struct ubt_key *k, const struct btrfs_disk_key *d)
{
	k->objectid = le64toh(d->objectid);
	k->type = d->type;
	k->offset = le64toh(d->offset);
}

static inline void ubt_cpu_key_to_disk(struct btrfs_disk_key *d, const struct ubt_key *k)
{
	d->objectid = htole64(k->objectid);
	d->type = k->type;
	d->offset = htole64(k->offset);
}

static inline int ubt_key_cmp(const struct ubt_key *a, const struct ubt_key *b)
{
	if (a->objectid != b->objectid)
		return a->objectid < b->objectid ? -1 : 1;
	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return 0;
}

/* A tree block in memory. Refcounted; the cache holds one reference while it is cached. */
struct extent_buffer {
	u64 start;          /* logical bytenr */
	u32 len;            /* nodesize */
	atomic_int refs;
	struct extent_buffer *hash_next; /* cache bucket chain */
	struct extent_buffer *lru_prev, *lru_next;
	struct extent_buffer *dirty_next; /* fs_info->dirty_list link (holds a reference) */
	bool dirty;         /* modified in the running transaction, not yet written */
	u8 *data;           /* len bytes */
};

static inline const struct btrfs_header *ubt_eb_header(const struct extent_buffer *eb)
{
	return (const struct btrfs_header *)eb->data;
}
static inline u32 ubt_eb_nritems(const struct extent_buffer *eb) { return le32toh(ubt_eb_header(eb)->nritems); }
static inline u8 ubt_eb_level(const struct extent_buffer *eb) { return ubt_eb_header(eb)->level; }
static inline u64 ubt_eb_generation(const struct extent_buffer *eb) { return le64toh(ubt_eb_header(eb)->generation); }
static inline u64 ubt_eb_owner(const struct extent_buffer *eb) { return le64toh(ubt_eb_header(eb)->owner); }

static inline const struct btrfs_item *ubt_eb_item(const struct extent_buffer *eb, int slot)
{
	return (const struct btrfs_item *)(eb->data + sizeof(struct btrfs_header)) + slot;
}
static inline const struct btrfs_key_ptr *ubt_eb_key_ptr(const struct extent_buffer *eb, int slot)
{
	return (const struct btrfs_key_ptr *)(eb->data + sizeof(struct btrfs_header)) + slot;
}
static inline void ubt_item_key(const struct extent_buffer *eb, int slot, struct ubt_key *k)
{
	ubt_disk_key_to_cpu(k, &ubt_eb_item(eb, slot)->key);
}
static inline void ubt_node_key(const struct extent_buffer *eb, int slot, struct ubt_key *k)
{
	ubt_disk_key_to_cpu(k, &ubt_eb_key_ptr(eb, slot)->key);
}
static inline u32 ubt_item_size(const struct extent_buffer *eb, int slot) { return le32toh(ubt_eb_item(eb, slot)->size); }
static inline void *ubt_item_ptr(const struct extent_buffer *eb, int slot)
{
	return eb->data + sizeof(struct btrfs_header) + le32toh(ubt_eb_item(eb, slot)->offset);
}

/* A tree: root block location. For subvolume trees also the root item. */
struct ubt_root {
	struct ubt_fs_info *fs_info;
	u64 objectid;       /* tree id (BTRFS_*_TREE_OBJECTID or a subvolume id) */
	u64 bytenr;         /* root block */
	u64 generation;     /* of the root block */
	u8 level;
	bool has_root_item;
	bool dirty;         /* root node moved in the running transaction: root item needs updating */
	bool track_dirty;   /* root item lives in the root tree (not the root/chunk trees themselves) */
	u64 highest_objectid; /* highest inode number in use or handed out this mount (0: not yet
			       * known); set when the root is loaded, under tree_lock after that */
	struct btrfs_root_item root_item; /* valid when has_root_item (zero-padded for v1 items) */
	struct ubt_root *next; /* fs_info's list of loaded subvolume roots */
};

struct ubt_path {
	struct extent_buffer *nodes[BTRFS_MAX_LEVEL];
	int slots[BTRFS_MAX_LEVEL];
};

static inline void ubt_path_init(struct ubt_path *p) { memset(p, 0, sizeof(*p)); }
void ubt_path_release(struct ubt_path *p);

/*
 * Search @root for @key. Returns 0 when found (path->nodes[0]/slots[0] at it), 1 when not found
 * (slots[0] is where it would be inserted: possibly == nritems of that leaf), <0 on error
 * (-EIO, -EUCLEAN with a message naming the block). The path is released first.
 */
int ubt_search_slot(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path);
/*
 * Move to the next item (crossing into the next leaf when needed). Also normalises a path whose
 * slot equals nritems after a search. Returns 0, 1 at the end of the tree, <0 on error.
 */
int ubt_next_item(struct ubt_root *root, struct ubt_path *path);
/* Move to the previous item. Returns 0, 1 at the start of the tree, <0 on error. */
int ubt_prev_item(struct ubt_root *root, struct ubt_path *path);
/*
 * Position the path at the last item whose key is <= @key. Returns 0 (found one), 1 (every item
 * is > @key, path released), <0 on error.
 */
int ubt_search_le(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path);
/*
 * Set @root->highest_objectid from the tree (the largest inode number below
 * BTRFS_LAST_FREE_OBJECTID, at least 255): new inodes count up from there for the whole mount, as
 * btrfs does, so no number is handed out twice while mounted. 0 or <0 on a read error.
 */
int ubt_root_load_highest_objectid(struct ubt_root *root);
/*
 * Position the path at the first item whose key is >= @key. Returns 0, 1 (no such item, path
 * released), <0 on error.
 */
int ubt_search_ge(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path);

/* First slot of @eb (leaf or node) whose key is >= @key; *exact is set when it is equal. */
int ubt_bin_search(const struct extent_buffer *eb, const struct ubt_key *key, bool *exact);

/* Current leaf item of a positioned path. */
static inline struct extent_buffer *ubt_path_leaf(const struct ubt_path *p) { return p->nodes[0]; }
static inline int ubt_path_slot(const struct ubt_path *p) { return p->slots[0]; }

#endif
