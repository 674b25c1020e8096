/*
 * api-data.c — the public fallocate and inode-flag calls (include/ubtrfs.h, "Data"): thin
 * wrappers that check what they can, reserve space, run the extent-level work of
 * inode/falloc.c in one transaction (aborted on an error after the first change), and map the
 * chattr flags (FS_*_FL) to btrfs's inode flags the way btrfs's SETFLAGS/GETFLAGS ioctls do;
 * the direct IO calls, which check as ubt_pwrite/ubt_pread do and hand aligned requests of COW
 * files to write/direct.c (unaligned ones, NOCOW and prealloc files go the ubt_pwrite way).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>

#include "../transaction/transaction.h"
#include "../write/write.h"
#include "api-internal.h"

#define EMPTY_SUBVOL_DIR_OBJECTID 2ULL
#define UBT_MAX_FILE_SIZE ((u64)INT64_MAX)

/* The FS_IOC_GETFLAGS/SETFLAGS bit values (linux/fs.h), kept here for portability. */
#define FL_COMPR 0x00000004u
#define FL_SYNC 0x00000008u
#define FL_IMMUTABLE 0x00000010u
#define FL_APPEND 0x00000020u
#define FL_NODUMP 0x00000040u
#define FL_NOATIME 0x00000080u
#define FL_NOCOMP 0x00000400u
#define FL_DIRSYNC 0x00010000u
#define FL_NOCOW 0x00800000u
#define FL_SUPPORTED                                                                                                   \
	(FL_COMPR | FL_SYNC | FL_IMMUTABLE | FL_APPEND | FL_NODUMP | FL_NOATIME | FL_NOCOMP | FL_DIRSYNC | FL_NOCOW)

/* ---- fallocate ---- */

int ubt_fallocate(ubt_file *f, int mode, uint64_t off, uint64_t len)
{
	ubt_fs *fs = f->fs;
	const u64 ss = fs->fs_info->sectorsize;
	struct btrfs_inode_item ii;
	struct ubt_inode_state *cached;
	struct ubt_write_opts wopts;
	struct wop op;
	u64 holes = 0, gaps = 0, items, data, aend;
	const bool punch = mode & UBT_FALLOC_PUNCH_HOLE;
	int ret;

	/* As fallocate(2)/vfs_fallocate. */
	if (mode & ~(UBT_FALLOC_KEEP_SIZE | UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (punch && (mode & UBT_FALLOC_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (punch && !(mode & UBT_FALLOC_KEEP_SIZE))
		return -EOPNOTSUPP;
	if (len == 0)
		return -EINVAL;
	if (off > UBT_MAX_FILE_SIZE || len > UBT_MAX_FILE_SIZE - off)
		return -EFBIG;
	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (fs->rdonly || fs->fs_info->rdonly || fs->fs_info->fs_error)
		return -EROFS;

	/* The metadata estimate wants the number of holes the range has now (one item each + refs). */
	aend = ALIGN_UP(off + len, ss);
	if (!punch) {
		ubt_tree_read_lock(fs->fs_info);
		ret = ubt_file_count_holes(f->root, f->objectid, ALIGN_DOWN(off, ss), aend, &holes, &gaps);
		ubt_tree_read_unlock(fs->fs_info);
		if (ret < 0)
			return ret;
	}
	items = 16 + 3 * gaps + 3 * ((aend - ALIGN_DOWN(off, ss)) / UBT_MAX_EXTENT_SIZE);
	/* As btrfs: the whole range's data space for prealloc and zero range; edge rewrites. */
	data = 2 * ss + (punch ? 0 : aend - ALIGN_DOWN(off, ss));
	/* Cached writes reach the tree first; cached pages of the range are dropped. */
	cached = ubt_write_prepare_change(fs->fs_info, f->root, f->objectid, ALIGN_DOWN(off, ss), aend - 1);
	ret = ubt_api_wop_begin(&op, fs, "fallocate", items, data);
	if (ret) {
		ubt_write_finish_change(cached, f->root, f->objectid);
		return ret;
	}
	ret = ubt_inode_read(f->root, f->objectid, &ii);
	if (ret)
		goto out;
	if (S_ISDIR(get_le32(&ii.mode))) {
		ret = -EISDIR;
		goto out;
	}
	if (!S_ISREG(get_le32(&ii.mode))) {
		ret = -ENODEV;
		goto out;
	}
	/* As vfs_fallocate: immutable takes nothing, append-only only plain preallocation. */
	if ((get_le64(&ii.flags) & BTRFS_INODE_IMMUTABLE) ||
	    ((get_le64(&ii.flags) & BTRFS_INODE_APPEND) && (mode & ~UBT_FALLOC_KEEP_SIZE))) {
		ret = -EPERM;
		goto out;
	}
	op.changed = true;
	wopts = ubt_api_write_opts(fs, &ii);
	ret = ubt_file_fallocate(&op.h, f->root, f->objectid, &ii, mode, off, len, &wopts);
	if (ret)
		goto out;
	/* Punch and zero range change the data (mtime); preallocation only the inode (ctime). */
	ubt_inode_touch(&ii, mode & (UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_ZERO_RANGE));
	ret = ubt_inode_update(&op.h, f->root, f->objectid, &ii);
out:
	ret = ubt_api_wop_end(&op, ret);
	ubt_write_finish_change(cached, f->root, f->objectid);
	if (!ret)
		f->inode = ii;
	return ret;
}

/* ---- direct IO ---- */

ssize_t ubt_pwrite_direct(ubt_file *f, const void *buf, size_t size, uint64_t off)
{
	ubt_fs *fs = f->fs;
	const u64 ss = fs->fs_info->sectorsize;
	struct btrfs_inode_item ii;
	int ret;

	/* Unaligned (btrfs falls back to buffered), empty, or no write path: ubt_pwrite decides. */
	if (!size || !fs->fs_info->write_info ||
	    (!(f->flags & O_APPEND) && (!IS_ALIGNED(off, ss) || !IS_ALIGNED((u64)size, ss))))
		return ubt_pwrite(f, buf, size, off);
	ret = ubt_api_write_check(f, size, off, &ii);
	if (ret)
		return ret;
	/* NOCOW and preallocated data are written in place, straight to disk: the write-through path. */
	if (get_le64(&ii.flags) & (BTRFS_INODE_NODATACOW | BTRFS_INODE_PREALLOC))
		return ubt_pwrite(f, buf, size, off);
	return ubt_write_direct(fs->fs_info, f->root, f->objectid, &ii, buf, size, off, f->flags & O_APPEND);
}

ssize_t ubt_pread_direct(ubt_file *f, void *buf, size_t size, uint64_t off)
{
	ubt_fs *fs = f->fs;
	const u64 ss = fs->fs_info->sectorsize;

	if (off > (u64)INT64_MAX)
		return -EINVAL;
	if (size > (size_t)SSIZE_MAX)
		size = ALIGN_DOWN((size_t)SSIZE_MAX, (size_t)ss);
	/* Unaligned (buffered, as btrfs), or a read-only mount (nothing cached): ubt_pread. */
	if (fs->rdonly || !fs->fs_info->write_info || !IS_ALIGNED(off, ss) || !IS_ALIGNED((u64)size, ss))
		return ubt_pread(f, buf, size, off);
	return ubt_read_direct(fs->fs_info, f->root, f->objectid, buf, size, off);
}

/* ---- inode flags ---- */

static unsigned to_fsflags(u64 flags)
{
	unsigned fl = 0;

	if (flags & BTRFS_INODE_SYNC)
		fl |= FL_SYNC;
	if (flags & BTRFS_INODE_IMMUTABLE)
		fl |= FL_IMMUTABLE;
	if (flags & BTRFS_INODE_APPEND)
		fl |= FL_APPEND;
	if (flags & BTRFS_INODE_NODUMP)
		fl |= FL_NODUMP;
	if (flags & BTRFS_INODE_NOATIME)
		fl |= FL_NOATIME;
	if (flags & BTRFS_INODE_DIRSYNC)
		fl |= FL_DIRSYNC;
	if (flags & BTRFS_INODE_NODATACOW)
		fl |= FL_NOCOW;
	if (flags & BTRFS_INODE_NOCOMPRESS)
		fl |= FL_NOCOMP;
	else if (flags & BTRFS_INODE_COMPRESS)
		fl |= FL_COMPR;
	return fl;
}

int ubt_get_flags(ubt_fs *fs, ubt_ino ino, unsigned *flags)
{
	struct btrfs_inode_item ii;
	struct ubt_root *root;
	u64 objectid;
	u32 idx;
	int ret;

	ret = ubt_api_decode(fs, ino, &root, &objectid, &idx);
	if (ret)
		return ret;
	if (objectid == EMPTY_SUBVOL_DIR_OBJECTID) {
		*flags = 0;
		return 0;
	}
	ubt_tree_read_lock(fs->fs_info);
	ret = ubt_inode_read(root, objectid, &ii);
	ubt_tree_read_unlock(fs->fs_info);
	if (ret)
		return ret;
	*flags = to_fsflags(get_le64(&ii.flags));
	return 0;
}

static void set_bit_if(u64 *flags, u64 bit, bool on)
{
	*flags = on ? (*flags | bit) : (*flags & ~bit);
}

/* The btrfs.compression property chattr +c sets: the mount's algorithm, else zlib. */
static const char *compress_prop(const ubt_fs *fs)
{
	switch (fs->compress_type) {
	case BTRFS_COMPRESS_LZO:
		return "lzo";
	case BTRFS_COMPRESS_ZSTD:
		return "zstd";
	default:
		return "zlib";
	}
}

int ubt_set_flags(ubt_fs *fs, ubt_ino ino, unsigned fsflags)
{
	struct ubt_inode_state *cached;
	struct btrfs_inode_item ii;
	struct ubt_root *root;
	struct wop op;
	u64 objectid, flags;
	u32 idx, mode;
	unsigned old;
	bool changed;
	int ret;

	ret = ubt_api_decode(fs, ino, &root, &objectid, &idx);
	if (ret)
		return ret;
	if (objectid == EMPTY_SUBVOL_DIR_OBJECTID)
		return -EPERM;
	/* btrfs's check_fsflags: known bits, no compression together with NOCOW or NOCOMP. */
	if (fsflags & ~FL_SUPPORTED)
		return -EOPNOTSUPP;
	if ((fsflags & FL_COMPR) && (fsflags & (FL_NOCOMP | FL_NOCOW)))
		return -EINVAL;
	cached = ubt_write_prepare_change(fs->fs_info, root, objectid, 1, 0);
	ret = ubt_api_wop_begin(&op, fs, "setflags", 6, 0);
	if (ret) {
		ubt_write_finish_change(cached, root, objectid);
		return ret;
	}
	ret = ubt_inode_read(root, objectid, &ii);
	if (ret)
		goto out;
	flags = get_le64(&ii.flags);
	old = to_fsflags(flags);
	if (((old & FL_NOCOW) && (fsflags & (FL_COMPR | FL_NOCOMP))) ||
	    ((fsflags & FL_NOCOW) && (old & (FL_COMPR | FL_NOCOMP)))) {
		ret = -EINVAL;
		goto out;
	}
	/* As btrfs: directories take every flag, files all but DIRSYNC, others NODUMP/NOATIME. */
	mode = get_le32(&ii.mode);
	if (S_ISREG(mode))
		fsflags &= ~FL_DIRSYNC;
	else if (!S_ISDIR(mode))
		fsflags &= FL_NODUMP | FL_NOATIME;
	set_bit_if(&flags, BTRFS_INODE_SYNC, fsflags & FL_SYNC);
	set_bit_if(&flags, BTRFS_INODE_IMMUTABLE, fsflags & FL_IMMUTABLE);
	set_bit_if(&flags, BTRFS_INODE_APPEND, fsflags & FL_APPEND);
	set_bit_if(&flags, BTRFS_INODE_NODUMP, fsflags & FL_NODUMP);
	set_bit_if(&flags, BTRFS_INODE_NOATIME, fsflags & FL_NOATIME);
	set_bit_if(&flags, BTRFS_INODE_DIRSYNC, fsflags & FL_DIRSYNC);
	/* NOCOW changes a file only while it is empty (no extents exist); a directory passes it on. */
	if (S_ISREG(mode)) {
		if (get_le64(&ii.size) == 0)
			set_bit_if(&flags, BTRFS_INODE_NODATACOW | BTRFS_INODE_NODATASUM, fsflags & FL_NOCOW);
	} else {
		set_bit_if(&flags, BTRFS_INODE_NODATACOW, fsflags & FL_NOCOW);
	}
	if (fsflags & FL_NOCOMP)
		flags = (flags & ~BTRFS_INODE_COMPRESS) | BTRFS_INODE_NOCOMPRESS;
	else if (fsflags & FL_COMPR)
		flags = (flags & ~BTRFS_INODE_NOCOMPRESS) | BTRFS_INODE_COMPRESS;
	else
		flags &= ~(BTRFS_INODE_COMPRESS | BTRFS_INODE_NOCOMPRESS);
	/* The compression property goes with the flag, as btrfs keeps it. */
	if (fsflags & FL_COMPR) {
		const char *alg = compress_prop(fs);

		ret = ubt_xattr_set(&op.h, root, objectid, "btrfs.compression", alg, strlen(alg), 0, &changed);
	} else {
		ret = ubt_xattr_set(&op.h, root, objectid, "btrfs.compression", NULL, 0, 0, &changed);
		if (ret == -ENODATA)
			ret = 0;
	}
	op.changed = changed;
	if (ret)
		goto out;
	op.changed = true;
	put_le64(&ii.flags, flags);
	ubt_inode_touch(&ii, false);
	ret = ubt_inode_update(&op.h, root, objectid, &ii);
out:
	ret = ubt_api_wop_end(&op, ret);
	ubt_write_finish_change(cached, root, objectid);
	return ret;
}

/* ---- mapped access (write/mmap.c) ---- */

void *ubt_mmap(ubt_file *f, uint64_t off, size_t len)
{
	void *p;

	if (off > UBT_MAX_FILE_SIZE || len > UBT_MAX_FILE_SIZE - off) {
		errno = EINVAL;
		return NULL;
	}
	p = ubt_write_mmap(f->fs->fs_info, f->root, f->objectid, f, off, len);
	if (IS_ERR(p)) {
		errno = (int)-PTR_ERR(p);
		return NULL;
	}
	return p;
}

/* Changes made through a mapping need a handle open for writing on a writable mount. */
static int map_refuse(const ubt_file *f)
{
	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (f->fs->rdonly || f->fs->fs_info->rdonly || f->fs->fs_info->fs_error)
		return -EROFS;
	return 0;
}

int ubt_msync(ubt_file *f, void *addr, size_t len)
{
	return ubt_write_msync(f->fs->fs_info, f, addr, len, map_refuse(f));
}

int ubt_munmap(ubt_file *f, void *addr, size_t len)
{
	(void)len; /* the whole mapping goes */
	return ubt_write_munmap(f->fs->fs_info, f, addr, map_refuse(f));
}
