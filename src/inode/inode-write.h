/*
 * inode-write.h — the write side of the inode layer: inode items, names (DIR_ITEM, DIR_INDEX,
 * INODE_REF/INODE_EXTREF), xattrs, file extents and data checksums, orphans, and the in-memory
 * registry of inodes the API still holds (open files, FUSE lookups).
 *
 * Every function taking a transaction handle must be called inside ubt_trans_start/end (tree_lock
 * held for writing) and changes only the trees; the caller decides what to do with an error: the
 * functions named *_check or documented "before any change" fail without touching anything, all
 * others may fail half-way, and then the caller aborts the transaction (ubt_trans_abort).
 * In-memory inode items (struct btrfs_inode_item) are read by the caller, changed by these helpers
 * and written back with ubt_inode_update().
 */
#ifndef UBT_INODE_INODE_WRITE_H
#define UBT_INODE_INODE_WRITE_H

#include "../ctree/ctree-write.h"
#include "inode.h"

/* btrfs's limits, from the leaf geometry (nodesize). */
#define UBT_DIR_START_INDEX 2ULL
#define UBT_LINK_MAX 65535u
#define UBT_DEFAULT_MAX_INLINE 2048u
#define UBT_MAX_EXTENT_SIZE (128ULL * 1024 * 1024)

u32 ubt_max_item_size(const struct ubt_fs_info *fs_info);
/* Largest uncompressed inline extent: min(sectorsize - 1, max item - extent header). */
u32 ubt_max_inline_size(const struct ubt_fs_info *fs_info);
/* Largest name + value of one xattr. */
u32 ubt_max_xattr_size(const struct ubt_fs_info *fs_info);

/* ---- inode items (inode-write.c) ---- */

/* Current time into a btrfs_timespec. */
void ubt_timespec_now(struct btrfs_timespec *t);
/* BTRFS_FT_* for a mode. */
u8 ubt_mode_to_ftype(u32 mode);
/* Next inode objectid of @root: one past the highest in use or handed out this mount (>= 256). */
int ubt_inode_next_objectid(struct ubt_root *root, u64 *objectid);
/* Fill a fresh inode item (nlink 1, times now, generation/transid = transid). */
void ubt_inode_init(struct ubt_trans_handle *h, struct btrfs_inode_item *ii, u32 mode, u64 rdev, u32 uid, u32 gid);
/* Insert the INODE_ITEM of a new inode. */
int ubt_inode_insert(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const struct btrfs_inode_item *ii);
/* Write back a changed inode item (transid and sequence are bumped here). */
int ubt_inode_update(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii);
/* ctime = now (and mtime when @mtime_too). */
void ubt_inode_touch(struct btrfs_inode_item *ii, bool mtime_too);

/*
 * Item helpers shared by the write side. Insert @data as item @key, or append it to the existing
 * item with that key (-EOVERFLOW when the result would exceed @max_size).
 */
int ubt_item_insert_or_extend(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
			      const void *data, u32 size, u32 max_size);
/* Remove bytes [@off, +@len) of item @key; the item is deleted when nothing is left. */
int ubt_item_cut(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, u32 off, u32 len);
/* Delete item @key (-ENOENT if absent). */
int ubt_item_delete(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key);

/* Add a back reference (INODE_REF, or INODE_EXTREF when the ref item is full). -EMLINK. */
int ubt_inode_add_ref(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 parent, const char *name,
		      size_t len, u64 index);
/* Remove the back reference (@parent, @name); *@index gets its dir index. -ENOENT if absent. */
int ubt_inode_del_ref(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 parent, const char *name,
		      size_t len, u64 *index);

/*
 * Delete every item of inode @ino (inode item, refs, xattrs, file extents with their data refs).
 * The orphan item, if any, is left to the caller.
 */
int ubt_inode_evict(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino);

/* ---- directories (dir-write.c) ---- */

/* Index for the next entry of @dir: last DIR_INDEX + 1, or 2 for an empty directory. */
int ubt_dir_next_index(struct ubt_root *root, u64 dir, u64 *index);
/*
 * Add name @name -> @location (type BTRFS_FT_*) to directory @dir: DIR_ITEM (collisions share the
 * item) and DIR_INDEX @index. @dir_ii: size += 2 * len, mtime/ctime now (written by the caller).
 */
int ubt_dir_add_entry(struct ubt_trans_handle *h, struct ubt_root *root, u64 dir, struct btrfs_inode_item *dir_ii,
		      const char *name, size_t len, const struct ubt_key *location, u8 type, u64 index);
/* Remove the DIR_ITEM entry and DIR_INDEX @index of @name; @dir_ii: size -= 2 * len, times. */
int ubt_dir_del_entry(struct ubt_trans_handle *h, struct ubt_root *root, u64 dir, struct btrfs_inode_item *dir_ii,
		      const char *name, size_t len, u64 index);
/* Is @ino (a directory) an ancestor of, or equal to, @dir? Walks INODE_REFs up to the root dir. */
int ubt_dir_is_ancestor(struct ubt_root *root, u64 ino, u64 dir, bool *result);

/* ---- xattrs (xattr-write.c) ---- */

#define UBT_XATTR_CREATE 0x1  /* = XATTR_CREATE */
#define UBT_XATTR_REPLACE 0x2 /* = XATTR_REPLACE */
/*
 * Set (@value != NULL) or remove (@value == NULL) xattr @name of @ino. -EEXIST, -ENODATA, -ENOSPC
 * (too large for a leaf), -ERANGE (name length); *@changed tells whether the tree was touched
 * before an error.
 */
int ubt_xattr_set(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const char *name, const void *value,
		  size_t size, int flags, bool *changed);

/* ---- file data (file-write.c) ---- */

struct ubt_write_opts {
	int compress_type; /* BTRFS_COMPRESS_*; 0 = none */
	int compress_level;
	bool compress_force; /* also data that a first look calls incompressible */
	u32 max_inline;    /* 0 = UBT_DEFAULT_MAX_INLINE */
};

/*
 * Write @len bytes at @off of regular file @ino (item @ii: size, nbytes updated in memory):
 * copy-on-write into new data extents (whole sectors, read-modify-write at the edges), checksums,
 * file extent items replacing the overlapped ones; small files become one inline extent.
 */
int ubt_file_write(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		   const void *buf, size_t len, u64 off, const struct ubt_write_opts *opts);
/* Change the size of @ino: drop/trim extents past a smaller size, holes/zeroing for a larger one. */
int ubt_file_truncate(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		      u64 new_size, const struct ubt_write_opts *opts);
/*
 * Remove file extents over [@start, @end) (@end (u64)-1: to the end): items inside are deleted and
 * their data refs dropped, items across an edge are trimmed or split (the split part takes its own
 * data ref). Regular extents are cut at @start/@end, which must be sector aligned; an inline extent
 * across @start is shortened. *@nbytes (may be NULL) is decreased by the bytes no longer mapped.
 */
int ubt_file_drop_extents(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 start, u64 end,
			  u64 *nbytes);
/* Insert the inline extent holding a symlink target (@ii->size/nbytes set). */
int ubt_symlink_write(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		      const char *target, size_t len);
/* Write @len bytes (sector multiple) to every copy of logical @logical. */
int ubt_write_logical(struct ubt_fs_info *fs_info, u64 logical, const void *buf, size_t len);
/* Insert data checksums for @len bytes of @data stored at @bytenr (merged with a preceding item). */
int ubt_csum_insert(struct ubt_trans_handle *h, u64 bytenr, const void *data, u64 len);
/* Insert @nsec precomputed checksums (csum_size bytes each) for the sectors from @bytenr. */
int ubt_csum_insert_sums(struct ubt_trans_handle *h, u64 bytenr, const u8 *csums, u64 nsec);

/* ---- orphans and the held-inode registry (orphan.c) ---- */

int ubt_orphan_add(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino);
int ubt_orphan_del(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino);
/*
 * At a read-write mount: delete every inode named by an ORPHAN_ITEM of @root (nlink 0), or just
 * the orphan item if the inode still has links. Runs its own transaction(s).
 */
int ubt_orphan_cleanup(struct ubt_root *root);

/*
 * The registry counts the API's references to an inode (ubt_open, lookups and creations not yet
 * forgotten). An inode unlinked while held gets an orphan item; its last release deletes it.
 */
void ubt_inode_hold(struct ubt_root *root, u64 ino, u64 n);
/* Drop @n references; at zero an orphaned inode is deleted (own transaction). 0 or <0. */
int ubt_inode_release(struct ubt_root *root, u64 ino, u64 n);
bool ubt_inode_is_held(struct ubt_root *root, u64 ino);
/* Mark @ino orphaned (unlinked while held). */
void ubt_inode_set_orphan(struct ubt_root *root, u64 ino);
/* Forget every entry of @fs_info (unmount). Orphans still held stay on disk for the next mount. */
void ubt_inode_registry_drop(struct ubt_fs_info *fs_info);

/*
 * ---- fallocate, NOCOW writes (falloc.c; file-write.c's helpers they share) ----
 * Extent-level operations on regular file @ino inside a transaction; @ii (size, nbytes, flags)
 * is updated in memory and written back by the caller. Offsets are bytes; sector alignment is
 * handled here as btrfs does.
 */

/* Insert explicit hole extents over the gaps of [@start, +@len) (no-holes off), never over extents. */
int ubt_file_insert_holes(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 start, u64 len);
/*
 * Before the file reaches past its size: zero the bytes after i_size in its last sector (rewritten
 * when mapped) and turn an inline extent into a regular one.
 */
int ubt_file_prepare_extend(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
			    const struct ubt_write_opts *opts);
/*
 * Sector-aligned range [@pos, @end) of @data (data[0] is file offset @pos) for a NODATACOW or
 * PREALLOC inode: when the extent at @pos may be overwritten in place (regular extent of a
 * NODATACOW inode, or prealloc extent; uncompressed, referenced only by this inode at this
 * offset, newer than the root's last snapshot — btrfs's can-nocow rules), write up to its end
 * there: checksums when @datasum, and a prealloc part becomes regular (split as btrfs does).
 * *@done: bytes written in place (0 when not possible); then *@cow: how many bytes from @pos
 * the caller writes copy-on-write (up to the end of that extent or hole).
 */
int ubt_file_write_nocow(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
			 bool datasum, const u8 *data, u64 pos, u64 end, u64 *done, u64 *cow);
/* Bytes of [@start, @end) not backed by an extent (holes, explicit or not) and how many gaps. */
int ubt_file_count_holes(struct ubt_root *root, u64 ino, u64 start, u64 end, u64 *bytes, u64 *gaps);
/*
 * fallocate(2) on the extent level. Mode 0 / UBT_FALLOC_KEEP_SIZE: PREALLOC extents over the holes
 * of [@off, +@len) rounded out to sectors (existing extents untouched), size grown unless
 * KEEP_SIZE, BTRFS_INODE_PREALLOC set. PUNCH_HOLE|KEEP_SIZE: within the size, partial edge
 * sectors zeroed, whole sectors unmapped (hole extents without no-holes). ZERO_RANGE (+KEEP_SIZE):
 * partial edge sectors with data zeroed, the rest becomes prealloc. Other modes: -EOPNOTSUPP.
 */
int ubt_file_fallocate(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		       int mode, u64 off, u64 len, const struct ubt_write_opts *opts);

#endif
