/*
 * inode.h — inodes, directories, xattrs, symlinks and file data of one subvolume tree (read side).
 *
 * Every function takes the subvolume root and btrfs objectids (not the API's inode numbers: the
 * fs/ layer maps those). All item contents are untrusted: a malformed item gives -EUCLEAN and a
 * log line naming the root, inode and key.
 */
#ifndef UBT_INODE_INODE_H
#define UBT_INODE_INODE_H

#include <sys/types.h>

#include "../ctree/ctree.h"

/* Read the INODE_ITEM of @ino. -ENOENT if absent. */
int ubt_inode_read(struct ubt_root *root, u64 ino, struct btrfs_inode_item *out);

/*
 * Look up @name in directory @dir through its DIR_ITEM (btrfs name hash, collisions handled).
 * On success fills @location (an INODE_ITEM key in this tree, or a ROOT_ITEM key naming a
 * subvolume) and @type (BTRFS_FT_*). -ENOENT if absent, -ENAMETOOLONG for names over 255 bytes.
 */
int ubt_dir_lookup(struct ubt_root *root, u64 dir, const char *name, size_t name_len,
		   struct ubt_key *location, u8 *type);

/*
 * Call @cb for each entry of directory @dir in DIR_INDEX order, starting at index >= @start_index.
 * A non-zero return from @cb stops the walk and is returned. Returns 0 at the end or <0 on error.
 */
typedef int (*ubt_dir_cb)(void *ctx, u64 index, const char *name, size_t name_len,
			  const struct ubt_key *location, u8 type);
int ubt_dir_iterate(struct ubt_root *root, u64 dir, u64 start_index, ubt_dir_cb cb, void *ctx);

/* Parent directory objectid of @ino through its first INODE_REF or INODE_EXTREF. -ENOENT if none. */
int ubt_inode_parent(struct ubt_root *root, u64 ino, u64 *parent);

/* getxattr(2)/listxattr(2) semantics: size 0 returns the needed length; -ENODATA, -ERANGE. */
ssize_t ubt_xattr_get(struct ubt_root *root, u64 ino, const char *name, void *buf, size_t size);
ssize_t ubt_xattr_list(struct ubt_root *root, u64 ino, char *buf, size_t size);

/* Symlink target (stored as an inline extent) into @buf; returns its length; -ERANGE if short. */
ssize_t ubt_symlink_read(struct ubt_root *root, u64 ino, char *buf, size_t size);

/*
 * Read file data: up to @len bytes at @off of inode @ino whose INODE_ITEM is @inode (for size and
 * the NODATASUM flag). Handles inline, regular (partially referenced, shared), prealloc (zeros),
 * holes (explicit or implied by no-holes), and zlib/lzo/zstd compressed extents. Data checksums
 * are verified against the csum tree unless the inode is NODATASUM; a mismatch on every copy gives
 * -EIO for the read and a log line naming root, inode and file offset.
 * Returns the number of bytes read (short only at end of file) or <0.
 */
ssize_t ubt_file_read(struct ubt_root *root, u64 ino, const struct btrfs_inode_item *inode, void *buf,
		      size_t len, u64 off);

/*
 * Look up the data checksums for @nr sectors starting at logical @bytenr in the csum tree.
 * @csums receives nr * csum_size bytes; @found[i] is set for sectors that have a checksum.
 * Returns 0 or <0.
 */
int ubt_lookup_data_csums(struct ubt_fs_info *fs_info, u64 bytenr, u32 nr, u8 *csums, bool *found);

/* Convert a btrfs_timespec to struct timespec. */
#include <time.h>
static inline struct timespec ubt_timespec(const struct btrfs_timespec *t)
{
	struct timespec ts = { .tv_sec = (time_t)le64toh(t->sec), .tv_nsec = (long)le32toh(t->nsec) };
	return ts;
}

#endif
