/*
 * inode-internal.h — helpers shared by the files of src/inode/ (not part of the layer's API):
 * the corruption report and the parser of packed btrfs_dir_item runs (DIR_ITEM, DIR_INDEX and
 * XATTR_ITEM items all use it).
 */
#ifndef UBT_INODE_INODE_INTERNAL_H
#define UBT_INODE_INODE_INTERNAL_H

#include "inode.h"

/* Log an -EUCLEAN finding about item @key of inode @ino in @root (key may be NULL). */
void ubt_inode_corrupt(const struct ubt_root *root, u64 ino, const struct ubt_key *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* One entry of a DIR_ITEM / DIR_INDEX / XATTR_ITEM item. Pointers borrow the leaf. */
struct ubt_dir_entry {
	struct ubt_key location;
	const char *name;
	u16 name_len;
	const u8 *data; /* xattr value */
	u16 data_len;
	u8 type;
};

/*
 * Parse the entry at *@cursor of an item of @item_size bytes at @item and advance the cursor.
 * Returns 0 with @ent filled, 1 when the cursor is at the end, -EUCLEAN (logged against @root,
 * @ino, @key) when an entry overruns the item or has a zero or over-long name.
 */
int ubt_dir_entry_next(const struct ubt_root *root, u64 ino, const struct ubt_key *key, const u8 *item,
		       u32 item_size, u32 *cursor, struct ubt_dir_entry *ent);

/* ---- file extent items (file-write.c; used by falloc.c) ---- */

struct btrfs_file_extent_item;
struct ubt_trans_handle;

/* One EXTENT_DATA item, validated. */
struct ubt_fext {
	struct ubt_key key;
	u8 type, compression;
	u64 ram_bytes;
	u64 disk_bytenr, disk_num_bytes, offset, num_bytes;
	u64 end; /* file offset past what the item maps (inline: ram_bytes) */
	u32 inline_len;
};

int ubt_fext_parse(struct ubt_root *root, u64 ino, const struct extent_buffer *leaf, int slot, struct ubt_fext *fe);
/* The first EXTENT_DATA item of @ino that ends after @start and begins before @end. 0, 1 (none), <0. */
int ubt_fext_find(struct ubt_root *root, u64 ino, u64 start, u64 end, struct ubt_fext *fe);
/* Fill a file extent item (generation = the running transaction). */
void ubt_fext_fill(struct ubt_trans_handle *h, struct btrfs_file_extent_item *fi, u8 type, u8 compression,
		   u64 ram_bytes, u64 disk_bytenr, u64 disk_num_bytes, u64 offset, u64 num_bytes);

/*
 * Find entry @name of @type items (DIR_ITEM or XATTR_ITEM) of @ino: search the item keyed by the
 * name hash and walk its packed entries (hash collisions). Returns 0 with @ent (borrowing the leaf
 * @path holds; the caller releases @path), 1 when absent, <0 on error. @name_len must be 1..255.
 */
int ubt_find_named_entry(struct ubt_root *root, u64 ino, u8 type, const char *name, size_t name_len,
			 struct ubt_path *path, struct ubt_key *key, struct ubt_dir_entry *ent);

#endif
