/*
 * api-internal.h — what the files of the public API's write side share (not part of ubtrfs.h):
 * one change as a unit (reserve space, run one transaction, abort it on an error after the
 * first tree change), inode number decoding, stat filling, the mount's write options, and the
 * checks the immutable / append-only inode flags impose on changes.
 */
#ifndef UBT_FS_API_INTERNAL_H
#define UBT_FS_API_INTERNAL_H

#include "../inode/inode-write.h"
#include "fs.h"

struct wop {
	ubt_fs *fs;
	struct ubt_fs_info *fi;
	struct ubt_trans_handle h;
	u64 items, data;
	bool changed; /* set before the first tree change: an error from then on aborts */
	const char *what;
};

/* Reserve @items tree items and @data bytes, start the transaction. -EROFS, -ENOSPC. */
int ubt_api_wop_begin(struct wop *op, ubt_fs *fs, const char *what, u64 items, u64 data);
/* End it: abort when @ret < 0 after a change; release the reservation. Returns @ret or the end's error. */
int ubt_api_wop_end(struct wop *op, int ret);
/* API inode number -> (subvolume root, objectid, subvolume index). -ESTALE. */
int ubt_api_decode(ubt_fs *fs, ubt_ino ino, struct ubt_root **root, u64 *objectid, u32 *idx);
void ubt_api_fill_stat(ubt_fs *fs, const struct btrfs_inode_item *ii, u32 idx, u64 objectid, struct stat *st);
/*
 * On a read-write mount, correct a stat filled from the inode item with what cached writes not
 * yet in the tree change: the size, the space, and the times of those writes (a later ctime of
 * the inode item, from a link or an xattr change, wins). Every reply that carries attributes
 * goes through this, or the kernel would take an old size from it and cut reads short.
 */
void ubt_api_overlay_stat(ubt_fs *fs, struct ubt_root *root, u64 objectid, struct stat *st);
/* How new data is written on this mount (compress=, and the inode's own compression flag). */
struct ubt_write_opts ubt_api_write_opts(const ubt_fs *fs, const struct btrfs_inode_item *ii);

/* The checks of a data write (sizes, handle mode, read-only, file type, immutable/append); fills @ii. */
int ubt_api_write_check(ubt_file *f, size_t size, u64 off, struct btrfs_inode_item *ii);

/* -EPERM when @ii is immutable or append-only (names, attributes, data other than appends). */
static inline int ubt_api_check_mutable(const struct btrfs_inode_item *ii)
{
	return (get_le64(&ii->flags) & (BTRFS_INODE_IMMUTABLE | BTRFS_INODE_APPEND)) ? -EPERM : 0;
}

#endif
