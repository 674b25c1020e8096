/*
 * api-write.c — the changing half of the public API (include/ubtrfs.h, "Changing the filesystem"):
 * mknod/mkdir/symlink/link/unlink/rmdir/rename/setattr/xattrs/pwrite/fsync/sync on top of the
 * inode layer's write side. Each call checks everything it can first, then reserves space, starts
 * (joins) the transaction, makes its changes and ends it; an error after the first change aborts
 * the transaction (the filesystem turns read-only), so no call leaves a half-applied change.
 *
 * Created inodes count as looked up (FUSE replies with an entry): the caller forgets them.
 */
#include "fs.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/sysmacros.h>

#include "../alloc/alloc.h"
#include "../inode/inode-write.h"
#include "api-internal.h"
#include "../transaction/transaction.h"
#include "../write/write.h"
#include "../util/messages.h"

#define EMPTY_SUBVOL_DIR_OBJECTID 2ULL
#define UBT_MAX_FILE_SIZE ((u64)INT64_MAX)

/* How new data is written on this mount (compress= / compress-force=). */
static struct ubt_write_opts write_opts_of(const ubt_fs *fs)
{
	struct ubt_write_opts o = { .compress_type = fs->compress_type,
				    .compress_level = fs->compress_level,
				    .compress_force = fs->compress_force };
	return o;
}

/* ---- inode numbers (the encoding of fs.h; api.c owns the table) ---- */

static u64 root_dirid(const struct ubt_root *root)
{
	u64 d = le64toh(root->root_item.root_dirid);

	return d ? d : BTRFS_FIRST_FREE_OBJECTID;
}

static int decode(ubt_fs *fs, ubt_ino ino, struct ubt_root **root, u64 *objectid, u32 *idx)
{
	u32 i = (u32)(ino >> UBT_INO_SUBVOL_SHIFT);
	int ret = 0;

	pthread_mutex_lock(&fs->lock);
	if (ino == UBT_ROOT_INO) {
		*root = fs->subvols[0];
		*objectid = root_dirid(fs->subvols[0]);
		*idx = 0;
	} else if (i < fs->nr_subvols && (ino & UBT_INO_OBJECTID_MASK) >= EMPTY_SUBVOL_DIR_OBJECTID) {
		*root = fs->subvols[i];
		*objectid = ino & UBT_INO_OBJECTID_MASK;
		*idx = i;
	} else {
		ret = -ESTALE;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static ubt_ino encode(const struct ubt_root *root, u32 idx, u64 objectid)
{
	if (idx == 0 && objectid == root_dirid(root))
		return UBT_ROOT_INO;
	return ((u64)idx << UBT_INO_SUBVOL_SHIFT) | objectid;
}

static void fill_stat(ubt_fs *fs, const struct btrfs_inode_item *ii, u32 idx, u64 objectid, struct stat *st)
{
	u64 rdev = get_le64(&ii->rdev);

	memset(st, 0, sizeof(*st));
	st->st_ino = ((u64)idx << UBT_INO_SUBVOL_SHIFT) | objectid;
	st->st_mode = get_le32(&ii->mode);
	st->st_nlink = get_le32(&ii->nlink);
	st->st_uid = get_le32(&ii->uid);
	st->st_gid = get_le32(&ii->gid);
	st->st_rdev = makedev((unsigned)(rdev >> 20), (unsigned)(rdev & 0xfffff));
	st->st_size = (off_t)get_le64(&ii->size);
	st->st_blksize = fs->fs_info->sectorsize;
	/* As btrfs's getattr: bytes rounded up to whole sectors. */
	st->st_blocks = (blkcnt_t)(ALIGN_UP(get_le64(&ii->nbytes), (u64)fs->fs_info->sectorsize) >> 9);
	st->st_atim = ubt_timespec(&ii->atime);
	st->st_mtim = ubt_timespec(&ii->mtime);
	st->st_ctim = ubt_timespec(&ii->ctime);
}

/* ---- one change: reserve, transaction, abort on a failure after the first change ---- */

/* @freeing: the change gives space back (removals): it may use the global reserve. */
static int wop_begin_(struct wop *op, ubt_fs *fs, const char *what, u64 items, u64 data, bool freeing)
{
	int ret;

	memset(op, 0, sizeof(*op));
	op->fs = fs;
	op->fi = fs->fs_info;
	op->what = what;
	if (fs->rdonly || op->fi->rdonly || op->fi->fs_error)
		return -EROFS;
	ret = freeing ? ubt_reserve_space_freeing(op->fi, items, data) : ubt_reserve_space(op->fi, items, data);
	if (ret == -ENOSPC) {
		/*
		 * Space freed since the last commit (deleted files, COWed tree blocks) stays pinned
		 * until a commit: commit and try once more before giving up, as btrfs flushes.
		 */
		ret = ubt_commit_if_dirty(op->fi);
		if (ret == 0)
			ret = freeing ? ubt_reserve_space_freeing(op->fi, items, data)
				      : ubt_reserve_space(op->fi, items, data);
	}
	if (ret < 0)
		return ret;
	op->items = items;
	op->data = data;
	ret = ubt_trans_start(op->fi, &op->h);
	if (ret < 0) {
		ubt_release_space(op->fi, items, data);
		return ret;
	}
	return 0;
}

static int wop_begin(struct wop *op, ubt_fs *fs, const char *what, u64 items, u64 data)
{
	return wop_begin_(op, fs, what, items, data, false);
}

static int wop_end(struct wop *op, int ret)
{
	int ret2;

	if (ret < 0 && op->changed)
		ubt_trans_abort(&op->h, ret, op->what);
	ret2 = ubt_trans_end(&op->h);
	ubt_release_space(op->fi, op->items, op->data);
	return ret < 0 ? ret : ret2;
}

static int check_name(const char *name, size_t *len)
{
	*len = strlen(name);
	if (*len == 0)
		return -ENOENT;
	if (*len > BTRFS_NAME_LEN)
		return -ENAMETOOLONG;
	if (memchr(name, '/', *len))
		return -EINVAL;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return -EEXIST;
	return 0;
}

/* Read directory @dir's inode for a change: it must be a live directory. */
static int read_dir(struct ubt_root *root, u64 dir, struct btrfs_inode_item *ii)
{
	int ret;

	if (dir == EMPTY_SUBVOL_DIR_OBJECTID)
		return -EPERM;
	ret = ubt_inode_read(root, dir, ii);
	if (ret < 0)
		return ret;
	if (!S_ISDIR(get_le32(&ii->mode)))
		return -ENOTDIR;
	if (get_le32(&ii->nlink) == 0)
		return -ENOENT;
	return 0;
}

/* Look up @name in @dir: 0 with the inode it names (in this tree), -ENOENT, -EXDEV for a subvolume. */
static int lookup_child(struct ubt_root *root, u64 dir, const char *name, size_t len, u64 *child, u8 *type)
{
	struct ubt_key loc;
	int ret = ubt_dir_lookup(root, dir, name, len, &loc, type);

	if (ret < 0)
		return ret;
	if (loc.type != BTRFS_INODE_ITEM_KEY)
		return -EXDEV; /* a subvolume: not changed through names here */
	*child = loc.objectid;
	return 0;
}

/* ---- creation ---- */

/* As btrfs: compression and NOCOW flags come from the directory, nodatacow/nodatasum from the mount. */
static void inherit_flags(const ubt_fs *fs, const struct btrfs_inode_item *dir_ii, struct btrfs_inode_item *ii)
{
	u64 dflags = get_le64(&dir_ii->flags), flags = get_le64(&ii->flags);
	bool reg = S_ISREG(get_le32(&ii->mode));

	if (dflags & BTRFS_INODE_NOCOMPRESS)
		flags = (flags & ~BTRFS_INODE_COMPRESS) | BTRFS_INODE_NOCOMPRESS;
	else if (dflags & BTRFS_INODE_COMPRESS)
		flags = (flags & ~BTRFS_INODE_NOCOMPRESS) | BTRFS_INODE_COMPRESS;
	if (dflags & BTRFS_INODE_NODATACOW)
		flags |= BTRFS_INODE_NODATACOW | (reg ? BTRFS_INODE_NODATASUM : 0);
	if (reg && fs->nodatasum)
		flags |= BTRFS_INODE_NODATASUM;
	if (reg && fs->nodatacow)
		flags |= BTRFS_INODE_NODATACOW | BTRFS_INODE_NODATASUM;
	put_le64(&ii->flags, flags);
}

static int create_(ubt_fs *fs, ubt_ino parent, const char *name, u32 mode, u64 rdev, uid_t uid, gid_t gid,
		   const char *target, ubt_ino *ino, struct stat *st)
{
	struct btrfs_inode_item dir_ii, ii;
	struct ubt_root *root;
	struct wop op;
	u64 dir, objectid, index, child;
	size_t len, tlen = 0;
	u32 idx;
	u8 type;
	int ret;

	ret = decode(fs, parent, &root, &dir, &idx);
	if (ret)
		return ret;
	ret = check_name(name, &len);
	if (ret)
		return ret;
	if (target) {
		tlen = strlen(target);
		if (tlen == 0)
			return -ENOENT;
		if (tlen >= PATH_MAX || tlen > ubt_max_inline_size(fs->fs_info))
			return -ENAMETOOLONG;
	}
	ret = wop_begin(&op, fs, "create", 8, 0);
	if (ret)
		return ret;
	ret = read_dir(root, dir, &dir_ii);
	if (ret)
		goto out;
	if (get_le64(&dir_ii.flags) & BTRFS_INODE_IMMUTABLE) {
		ret = -EPERM;
		goto out;
	}
	ret = lookup_child(root, dir, name, len, &child, &type);
	if (ret == 0 || ret == -EXDEV)
		ret = -EEXIST;
	if (ret != -ENOENT)
		goto out;
	ret = ubt_inode_next_objectid(root, &objectid);
	if (ret)
		goto out;
	ret = ubt_dir_next_index(root, dir, &index);
	if (ret)
		goto out;

	op.changed = true;
	ubt_inode_init(&op.h, &ii, mode, rdev, uid, gid);
	inherit_flags(fs, &dir_ii, &ii);
	if (target) {
		put_le64(&ii.size, tlen);
		put_le64(&ii.nbytes, tlen);
	}
	ret = ubt_inode_insert(&op.h, root, objectid, &ii);
	if (ret)
		goto out;
	ret = ubt_inode_add_ref(&op.h, root, objectid, dir, name, len, index);
	if (ret)
		goto out;
	{
		struct ubt_key loc = { .objectid = objectid, .type = BTRFS_INODE_ITEM_KEY, .offset = 0 };

		ret = ubt_dir_add_entry(&op.h, root, dir, &dir_ii, name, len, &loc, ubt_mode_to_ftype(mode), index);
	}
	if (ret)
		goto out;
	if (target) {
		ret = ubt_symlink_write(&op.h, root, objectid, &ii, target, tlen);
		if (ret)
			goto out;
	}
	ret = ubt_inode_update(&op.h, root, dir, &dir_ii);
out:
	ret = wop_end(&op, ret);
	if (ret)
		return ret;
	ubt_inode_hold(root, objectid, 1);
	if (ino)
		*ino = encode(root, idx, objectid);
	if (st)
		fill_stat(fs, &ii, idx, objectid, st);
	return 0;
}

int ubt_mknod(ubt_fs *fs, ubt_ino parent, const char *name, mode_t mode, dev_t rdev, uid_t uid, gid_t gid,
	      ubt_ino *ino, struct stat *st)
{
	u64 disk_rdev = 0;

	if ((mode & S_IFMT) == 0)
		mode |= S_IFREG;
	switch (mode & S_IFMT) {
	case S_IFCHR:
	case S_IFBLK:
		/* btrfs stores the kernel's internal dev_t: major << 20 | minor. */
		disk_rdev = ((u64)major(rdev) << 20) | (minor(rdev) & 0xfffff);
		break;
	case S_IFREG:
	case S_IFIFO:
	case S_IFSOCK:
		break;
	default:
		return -EINVAL;
	}
	return create_(fs, parent, name, (u32)(mode & (S_IFMT | 07777)), disk_rdev, uid, gid, NULL, ino, st);
}

int ubt_mkdir(ubt_fs *fs, ubt_ino parent, const char *name, mode_t mode, uid_t uid, gid_t gid, ubt_ino *ino,
	      struct stat *st)
{
	return create_(fs, parent, name, (u32)(S_IFDIR | (mode & 07777)), 0, uid, gid, NULL, ino, st);
}

int ubt_symlink(ubt_fs *fs, ubt_ino parent, const char *name, const char *target, uid_t uid, gid_t gid,
		ubt_ino *ino, struct stat *st)
{
	return create_(fs, parent, name, (u32)(S_IFLNK | 0777), 0, uid, gid, target, ino, st);
}

int ubt_link(ubt_fs *fs, ubt_ino ino, ubt_ino newparent, const char *newname, struct stat *st)
{
	struct btrfs_inode_item dir_ii, ii;
	struct ubt_root *root, *droot;
	struct wop op;
	u64 objectid, dir, index, child;
	size_t len;
	u32 idx, didx;
	u8 type;
	int ret;

	ret = decode(fs, ino, &root, &objectid, &idx);
	if (!ret)
		ret = decode(fs, newparent, &droot, &dir, &didx);
	if (ret)
		return ret;
	if (root != droot)
		return -EXDEV;
	if (objectid == EMPTY_SUBVOL_DIR_OBJECTID || objectid == root_dirid(root))
		return -EPERM;
	ret = check_name(newname, &len);
	if (ret)
		return ret;
	ret = wop_begin(&op, fs, "link", 8, 0);
	if (ret)
		return ret;
	ret = ubt_inode_read(root, objectid, &ii);
	if (ret)
		goto out;
	if (S_ISDIR(get_le32(&ii.mode))) {
		ret = -EPERM;
		goto out;
	}
	if (get_le32(&ii.nlink) == 0) {
		ret = -ENOENT;
		goto out;
	}
	if (get_le32(&ii.nlink) >= UBT_LINK_MAX) {
		ret = -EMLINK;
		goto out;
	}
	ret = read_dir(root, dir, &dir_ii);
	if (ret)
		goto out;
	/* As the VFS: no new names for immutable/append-only inodes, none in an immutable directory. */
	ret = ubt_api_check_mutable(&ii);
	if (!ret && (get_le64(&dir_ii.flags) & BTRFS_INODE_IMMUTABLE))
		ret = -EPERM;
	if (ret)
		goto out;
	ret = lookup_child(root, dir, newname, len, &child, &type);
	if (ret == 0 || ret == -EXDEV)
		ret = -EEXIST;
	if (ret != -ENOENT)
		goto out;
	ret = ubt_dir_next_index(root, dir, &index);
	if (ret)
		goto out;
	op.changed = true;
	ret = ubt_inode_add_ref(&op.h, root, objectid, dir, newname, len, index);
	if (ret == -EMLINK) {
		/* Nothing was changed: the ref item is full and extended refs are off. */
		op.changed = false;
		goto out;
	}
	if (ret)
		goto out;
	{
		struct ubt_key loc = { .objectid = objectid, .type = BTRFS_INODE_ITEM_KEY, .offset = 0 };

		ret = ubt_dir_add_entry(&op.h, root, dir, &dir_ii, newname, len, &loc,
					ubt_mode_to_ftype(get_le32(&ii.mode)), index);
	}
	if (ret)
		goto out;
	put_le32(&ii.nlink, get_le32(&ii.nlink) + 1);
	ubt_inode_touch(&ii, false);
	ret = ubt_inode_update(&op.h, root, objectid, &ii);
	if (!ret)
		ret = ubt_inode_update(&op.h, root, dir, &dir_ii);
out:
	ret = wop_end(&op, ret);
	if (ret)
		return ret;
	ubt_inode_hold(root, objectid, 1);
	if (st) {
		fill_stat(fs, &ii, idx, objectid, st);
		ubt_api_overlay_stat(fs, root, objectid, st); /* cached writes to the file */
	}
	return 0;
}

/* ---- removal ---- */

/*
 * Drop one link of @child (item @ii, already without the name): nlink--, and at zero delete the
 * inode now, or make it an orphan when the API still holds it.
 */
static int drop_link(struct wop *op, struct ubt_root *root, u64 child, struct btrfs_inode_item *ii)
{
	u32 nlink = get_le32(&ii->nlink);
	int ret;

	if (S_ISDIR(get_le32(&ii->mode)) || nlink <= 1)
		nlink = 0;
	else
		nlink--;
	put_le32(&ii->nlink, nlink);
	ubt_inode_touch(ii, false);
	if (nlink > 0)
		return ubt_inode_update(&op->h, root, child, ii);
	if (ubt_inode_is_held(root, child)) {
		ret = ubt_orphan_add(&op->h, root, child);
		if (ret == 0)
			ret = ubt_inode_update(&op->h, root, child, ii);
		if (ret == 0)
			ubt_inode_set_orphan(root, child);
		return ret;
	}
	return ubt_inode_evict(&op->h, root, child);
}

/* Remove name @name (-> @child) from @dir: entry and back reference. */
static int remove_name(struct wop *op, struct ubt_root *root, u64 dir, struct btrfs_inode_item *dir_ii,
		       const char *name, size_t len, u64 child)
{
	u64 index;
	int ret;

	ret = ubt_inode_del_ref(&op->h, root, child, dir, name, len, &index);
	if (ret)
		return ret;
	return ubt_dir_del_entry(&op->h, root, dir, dir_ii, name, len, index);
}

static int remove_(ubt_fs *fs, ubt_ino parent, const char *name, bool isdir)
{
	struct btrfs_inode_item dir_ii, ii;
	struct ubt_root *root;
	struct wop op;
	u64 dir, child;
	size_t len;
	u32 idx;
	u8 type;
	int ret;

	ret = decode(fs, parent, &root, &dir, &idx);
	if (ret)
		return ret;
	len = strlen(name);
	if (len > BTRFS_NAME_LEN)
		return -ENAMETOOLONG;
	if (!strcmp(name, "."))
		return -EINVAL;
	if (!strcmp(name, ".."))
		return -ENOTEMPTY;
	ret = wop_begin_(&op, fs, isdir ? "rmdir" : "unlink", 16, 0, true);
	if (ret)
		return ret;
	ret = read_dir(root, dir, &dir_ii);
	if (ret)
		goto out;
	ret = lookup_child(root, dir, name, len, &child, &type);
	if (ret == -EXDEV)
		ret = -EPERM; /* deleting a subvolume is not done through rmdir here */
	if (ret)
		goto out;
	ret = ubt_inode_read(root, child, &ii);
	if (ret)
		goto out;
	/* As the VFS: nothing leaves an immutable/append-only directory, no such inode goes. */
	ret = ubt_api_check_mutable(&dir_ii);
	if (!ret)
		ret = ubt_api_check_mutable(&ii);
	if (ret)
		goto out;
	if (isdir && !S_ISDIR(get_le32(&ii.mode))) {
		ret = -ENOTDIR;
		goto out;
	}
	if (!isdir && S_ISDIR(get_le32(&ii.mode))) {
		ret = -EISDIR;
		goto out;
	}
	if (isdir && get_le64(&ii.size) != 0) {
		ret = -ENOTEMPTY;
		goto out;
	}
	op.changed = true;
	ret = remove_name(&op, root, dir, &dir_ii, name, len, child);
	if (!ret)
		ret = ubt_inode_update(&op.h, root, dir, &dir_ii);
	if (!ret)
		ret = drop_link(&op, root, child, &ii);
out:
	return wop_end(&op, ret);
}

int ubt_unlink(ubt_fs *fs, ubt_ino parent, const char *name)
{
	return remove_(fs, parent, name, false);
}

int ubt_rmdir(ubt_fs *fs, ubt_ino parent, const char *name)
{
	return remove_(fs, parent, name, true);
}

/* ---- rename ---- */

int ubt_rename(ubt_fs *fs, ubt_ino parent, const char *name, ubt_ino newparent, const char *newname,
	       unsigned flags)
{
	struct btrfs_inode_item odir_ii, ndir_ii, src_ii, dst_ii;
	struct btrfs_inode_item *ndir = &ndir_ii;
	struct ubt_root *root, *nroot;
	struct wop op;
	u64 odir, ndir_ino, src, dst = 0, sidx, didx;
	size_t len, nlen;
	u32 idx, nidx;
	u8 stype, dtype;
	bool exists, src_dir, dst_dir = false, loop;
	int ret;

	if (flags & ~(UBT_RENAME_NOREPLACE | UBT_RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & UBT_RENAME_NOREPLACE) && (flags & UBT_RENAME_EXCHANGE))
		return -EINVAL;
	ret = decode(fs, parent, &root, &odir, &idx);
	if (!ret)
		ret = decode(fs, newparent, &nroot, &ndir_ino, &nidx);
	if (ret)
		return ret;
	if (root != nroot)
		return -EXDEV;
	len = strlen(name);
	if (len == 0)
		return -ENOENT;
	if (len > BTRFS_NAME_LEN)
		return -ENAMETOOLONG;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return -EBUSY;
	ret = check_name(newname, &nlen);
	if (ret == -EEXIST)
		ret = -EBUSY;
	if (ret)
		return ret;

	ret = wop_begin(&op, fs, "rename", 24, 0);
	if (ret)
		return ret;
	ret = read_dir(root, odir, &odir_ii);
	if (ret)
		goto out;
	if (ndir_ino == odir) {
		ndir = &odir_ii;
	} else {
		ret = read_dir(root, ndir_ino, &ndir_ii);
		if (ret)
			goto out;
	}
	ret = lookup_child(root, odir, name, len, &src, &stype);
	if (ret)
		goto out;
	ret = ubt_inode_read(root, src, &src_ii);
	if (ret)
		goto out;
	src_dir = S_ISDIR(get_le32(&src_ii.mode));
	ret = lookup_child(root, ndir_ino, newname, nlen, &dst, &dtype);
	if (ret && ret != -ENOENT)
		goto out;
	exists = ret == 0;
	ret = 0;
	if (exists && (flags & UBT_RENAME_NOREPLACE)) {
		ret = -EEXIST;
		goto out;
	}
	if (!exists && (flags & UBT_RENAME_EXCHANGE)) {
		ret = -ENOENT;
		goto out;
	}
	if (exists) {
		ret = ubt_inode_read(root, dst, &dst_ii);
		if (ret)
			goto out;
		dst_dir = S_ISDIR(get_le32(&dst_ii.mode));
		if (dst == src)
			goto out; /* two names of one inode (or the same name): nothing to do */
	}
	/* As the VFS: immutable/append-only directories and inodes keep their names. */
	ret = ubt_api_check_mutable(&odir_ii);
	if (!ret)
		ret = ubt_api_check_mutable(&src_ii);
	if (!ret && (get_le64(&ndir->flags) & BTRFS_INODE_IMMUTABLE))
		ret = -EPERM;
	if (!ret && exists) {
		ret = ubt_api_check_mutable(ndir);
		if (!ret)
			ret = ubt_api_check_mutable(&dst_ii);
	}
	if (ret)
		goto out;
	/* A directory may not move below itself (checked before the types, as the VFS does). */
	if (src_dir && ndir_ino != odir) {
		ret = ubt_dir_is_ancestor(root, src, ndir_ino, &loop);
		if (ret)
			goto out;
		if (loop) {
			ret = -EINVAL;
			goto out;
		}
	}
	if ((flags & UBT_RENAME_EXCHANGE) && dst_dir && ndir_ino != odir) {
		ret = ubt_dir_is_ancestor(root, dst, odir, &loop);
		if (ret)
			goto out;
		if (loop) {
			ret = -EINVAL;
			goto out;
		}
	}
	if (!(flags & UBT_RENAME_EXCHANGE) && exists) {
		if (src_dir && !dst_dir) {
			ret = -ENOTDIR;
			goto out;
		}
		if (!src_dir && dst_dir) {
			ret = -EISDIR;
			goto out;
		}
		if (dst_dir && get_le64(&dst_ii.size) != 0) {
			ret = -ENOTEMPTY;
			goto out;
		}
	}

	op.changed = true;
	if (flags & UBT_RENAME_EXCHANGE) {
		struct ubt_key sloc = { src, BTRFS_INODE_ITEM_KEY, 0 }, dloc = { dst, BTRFS_INODE_ITEM_KEY, 0 };

		ret = remove_name(&op, root, odir, &odir_ii, name, len, src);
		if (!ret)
			ret = remove_name(&op, root, ndir_ino, ndir, newname, nlen, dst);
		if (!ret)
			ret = ubt_dir_next_index(root, ndir_ino, &didx);
		if (!ret)
			ret = ubt_inode_add_ref(&op.h, root, src, ndir_ino, newname, nlen, didx);
		if (!ret)
			ret = ubt_dir_add_entry(&op.h, root, ndir_ino, ndir, newname, nlen, &sloc, stype, didx);
		if (!ret)
			ret = ubt_dir_next_index(root, odir, &sidx);
		if (!ret)
			ret = ubt_inode_add_ref(&op.h, root, dst, odir, name, len, sidx);
		if (!ret)
			ret = ubt_dir_add_entry(&op.h, root, odir, &odir_ii, name, len, &dloc, dtype, sidx);
		if (ret)
			goto out;
		ubt_inode_touch(&dst_ii, false);
		ret = ubt_inode_update(&op.h, root, dst, &dst_ii);
	} else {
		struct ubt_key sloc = { src, BTRFS_INODE_ITEM_KEY, 0 };

		if (exists) {
			ret = remove_name(&op, root, ndir_ino, ndir, newname, nlen, dst);
			if (!ret)
				ret = drop_link(&op, root, dst, &dst_ii);
			if (ret)
				goto out;
		}
		ret = remove_name(&op, root, odir, &odir_ii, name, len, src);
		if (!ret)
			ret = ubt_dir_next_index(root, ndir_ino, &didx);
		if (!ret)
			ret = ubt_inode_add_ref(&op.h, root, src, ndir_ino, newname, nlen, didx);
		if (!ret)
			ret = ubt_dir_add_entry(&op.h, root, ndir_ino, ndir, newname, nlen, &sloc, stype, didx);
		if (ret)
			goto out;
	}
	ubt_inode_touch(&src_ii, false);
	ret = ubt_inode_update(&op.h, root, src, &src_ii);
	if (!ret)
		ret = ubt_inode_update(&op.h, root, odir, &odir_ii);
	if (!ret && ndir != &odir_ii)
		ret = ubt_inode_update(&op.h, root, ndir_ino, ndir);
out:
	return wop_end(&op, ret);
}

/* ---- attributes ---- */

static void set_time(struct btrfs_timespec *t, const struct timespec *ts)
{
	put_le64(&t->sec, (u64)ts->tv_sec);
	put_le32(&t->nsec, (u32)ts->tv_nsec);
}

int ubt_setattr(ubt_fs *fs, ubt_ino ino, const struct stat *attr, unsigned to_set, struct stat *out)
{
	struct ubt_inode_state *cached;
	struct btrfs_inode_item ii;
	struct ubt_root *root;
	struct wop op;
	u64 objectid, items = 4, data = 0;
	u32 idx, mode;
	bool ctime_set = false;
	int ret;

	ret = decode(fs, ino, &root, &objectid, &idx);
	if (ret)
		return ret;
	if (objectid == EMPTY_SUBVOL_DIR_OBJECTID)
		return -EPERM;
	if (to_set & UBT_SET_SIZE) {
		if (attr->st_size < 0)
			return -EINVAL;
		if ((u64)attr->st_size > UBT_MAX_FILE_SIZE)
			return -EFBIG;
		items += 16;
		data = 2ULL * fs->fs_info->sectorsize;
	}
	/* Cached data and sizes reach the tree first; a truncate drops the pages past the new end. */
	cached = ubt_write_prepare_change(fs->fs_info, root, objectid,
					  (to_set & UBT_SET_SIZE) ? (u64)attr->st_size : 1,
					  (to_set & UBT_SET_SIZE) ? (u64)-1 : 0);
	ret = wop_begin(&op, fs, "setattr", items, data);
	if (ret) {
		ubt_write_finish_change(cached, root, objectid);
		return ret;
	}
	ret = ubt_inode_read(root, objectid, &ii);
	if (ret)
		goto out;
	mode = get_le32(&ii.mode);
	/* As the VFS: nothing changes on an immutable inode; an append-only one takes only "now" times. */
	if ((get_le64(&ii.flags) & BTRFS_INODE_IMMUTABLE) ||
	    ((get_le64(&ii.flags) & BTRFS_INODE_APPEND) &&
	     (to_set & ~(UBT_SET_ATIME_NOW | UBT_SET_MTIME_NOW | UBT_SET_CTIME)))) {
		ret = -EPERM;
		goto out;
	}
	if (to_set & UBT_SET_SIZE) {
		if (S_ISDIR(mode)) {
			ret = -EISDIR;
			goto out;
		}
		if (!S_ISREG(mode)) {
			ret = -EINVAL;
			goto out;
		}
	}
	op.changed = true;
	if (to_set & UBT_SET_MODE)
		put_le32(&ii.mode, (mode & S_IFMT) | (attr->st_mode & 07777));
	if (to_set & UBT_SET_UID)
		put_le32(&ii.uid, attr->st_uid);
	if (to_set & UBT_SET_GID)
		put_le32(&ii.gid, attr->st_gid);
	if ((to_set & UBT_SET_SIZE) && (u64)attr->st_size != get_le64(&ii.size)) {
		struct ubt_write_opts wopts = write_opts_of(fs);

		ret = ubt_file_truncate(&op.h, root, objectid, &ii, (u64)attr->st_size, &wopts);
		if (ret)
			goto out;
		ubt_inode_touch(&ii, true);
	}
	ubt_inode_touch(&ii, false);
	if (to_set & UBT_SET_ATIME_NOW)
		ii.atime = ii.ctime;
	else if (to_set & UBT_SET_ATIME)
		set_time(&ii.atime, &attr->st_atim);
	if (to_set & UBT_SET_MTIME_NOW)
		ii.mtime = ii.ctime;
	else if (to_set & UBT_SET_MTIME)
		set_time(&ii.mtime, &attr->st_mtim);
	if (to_set & UBT_SET_CTIME) {
		set_time(&ii.ctime, &attr->st_ctim);
		ctime_set = true;
	}
	(void)ctime_set;
	ret = ubt_inode_update(&op.h, root, objectid, &ii);
out:
	ret = wop_end(&op, ret);
	ubt_write_finish_change(cached, root, objectid);
	if (!ret && out)
		fill_stat(fs, &ii, idx, objectid, out);
	return ret;
}

/* ---- xattrs ---- */

static int xattr_name_ok(const char *name)
{
	static const char *const prefixes[] = { "user.", "trusted.", "security.", "system.posix_acl_access",
						"system.posix_acl_default" };
	size_t len = strlen(name);

	if (len == 0 || len > BTRFS_NAME_LEN)
		return -ERANGE;
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		size_t pl = strlen(prefixes[i]);

		if (!strncmp(name, prefixes[i], pl))
			return len > pl || prefixes[i][pl - 1] != '.' ? 0 : -EINVAL;
	}
	return -EOPNOTSUPP;
}

static int xattr_change(ubt_fs *fs, ubt_ino ino, const char *name, const void *value, size_t size, int flags)
{
	struct btrfs_inode_item ii;
	struct ubt_root *root;
	struct wop op;
	u64 objectid;
	u32 idx;
	bool changed;
	int ret;

	ret = decode(fs, ino, &root, &objectid, &idx);
	if (ret)
		return ret;
	if (objectid == EMPTY_SUBVOL_DIR_OBJECTID)
		return -EPERM;
	ret = xattr_name_ok(name);
	if (ret)
		return ret;
	if (value && size > 65536)
		return -E2BIG;
	ret = wop_begin(&op, fs, value ? "setxattr" : "removexattr", 4, 0);
	if (ret)
		return ret;
	ret = ubt_inode_read(root, objectid, &ii);
	if (ret)
		goto out;
	ret = ubt_api_check_mutable(&ii);
	if (ret)
		goto out;
	/* As the VFS: user.* only on regular files and directories. */
	if (!strncmp(name, "user.", 5) && !S_ISREG(get_le32(&ii.mode)) && !S_ISDIR(get_le32(&ii.mode))) {
		ret = value ? -EPERM : -ENODATA;
		goto out;
	}
	ret = ubt_xattr_set(&op.h, root, objectid, name, value, size, value ? flags : 0, &changed);
	op.changed = changed;
	if (ret)
		goto out;
	op.changed = true;
	ubt_inode_touch(&ii, false);
	ret = ubt_inode_update(&op.h, root, objectid, &ii);
out:
	return wop_end(&op, ret);
}

int ubt_setxattr(ubt_fs *fs, ubt_ino ino, const char *name, const void *value, size_t size, int flags)
{
	if (flags & ~(UBT_XATTR_CREATE | UBT_XATTR_REPLACE))
		return -EINVAL;
	return xattr_change(fs, ino, name, value ? value : "", size, flags);
}

int ubt_removexattr(ubt_fs *fs, ubt_ino ino, const char *name)
{
	return xattr_change(fs, ino, name, NULL, 0, 0);
}

/* ---- data ---- */

/* The write-through path: NOCOW files (and mounts without the write path). */
static ssize_t pwrite_through(ubt_file *f, const void *buf, size_t size, uint64_t off)
{
	ubt_fs *fs = f->fs;
	struct btrfs_inode_item ii;
	struct ubt_write_opts wopts;
	struct ubt_inode_state *cached;
	struct wop op;
	u64 ss = fs->fs_info->sectorsize, items;
	int ret;

	/* Cached data of the range (or of the whole file, for appends) goes first. */
	cached = ubt_write_prepare_change(fs->fs_info, f->root, f->objectid,
					  (f->flags & O_APPEND) ? 0 : ALIGN_DOWN(off, ss), (u64)-1);
	/* Extent items, splits, csum items (one per ~leaf of checksums), the inode. */
	items = 8 + 2 * (size / UBT_MAX_EXTENT_SIZE) + size / (ss * 256) + 2;
	ret = wop_begin(&op, fs, "write", items, ALIGN_UP((u64)size, ss) + 2 * ss);
	if (ret)
		goto out_cached;
	ret = ubt_inode_read(f->root, f->objectid, &ii);
	if (ret)
		goto out;
	if (!S_ISREG(get_le32(&ii.mode))) {
		ret = -EINVAL;
		goto out;
	}
	/* Flags set after the open: immutable takes no writes, append-only only appends. */
	if ((get_le64(&ii.flags) & BTRFS_INODE_IMMUTABLE) ||
	    ((get_le64(&ii.flags) & BTRFS_INODE_APPEND) && !(f->flags & O_APPEND))) {
		ret = -EPERM;
		goto out;
	}
	if (f->flags & O_APPEND) {
		off = get_le64(&ii.size);
		if (size > UBT_MAX_FILE_SIZE - off) {
			ret = -EFBIG;
			goto out;
		}
	}
	op.changed = true;
	wopts = ubt_api_write_opts(fs, &ii);
	ret = ubt_file_write(&op.h, f->root, f->objectid, &ii, buf, size, off, &wopts);
	if (ret)
		goto out;
	ubt_inode_touch(&ii, true);
	ret = ubt_inode_update(&op.h, f->root, f->objectid, &ii);
out:
	ret = wop_end(&op, ret);
	if (!ret)
		f->inode = ii;
out_cached:
	ubt_write_finish_change(cached, f->root, f->objectid);
	return ret ? ret : (ssize_t)size;
}

int ubt_api_write_check(ubt_file *f, size_t size, u64 off, struct btrfs_inode_item *ii)
{
	ubt_fs *fs = f->fs;
	int ret;

	if (size > (size_t)SSIZE_MAX || (u64)size > UBT_MAX_FILE_SIZE)
		return -EINVAL;
	if (!(f->flags & O_APPEND) && (off > UBT_MAX_FILE_SIZE || size > UBT_MAX_FILE_SIZE - off))
		return -EFBIG;
	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (fs->rdonly || fs->fs_info->rdonly || fs->fs_info->fs_error)
		return -EROFS;
	ubt_tree_read_lock(fs->fs_info);
	ret = ubt_inode_read(f->root, f->objectid, ii);
	ubt_tree_read_unlock(fs->fs_info);
	if (ret)
		return ret;
	if (!S_ISREG(get_le32(&ii->mode)))
		return -EINVAL;
	if ((get_le64(&ii->flags) & BTRFS_INODE_IMMUTABLE) ||
	    ((get_le64(&ii->flags) & BTRFS_INODE_APPEND) && !(f->flags & O_APPEND)))
		return -EPERM;
	return 0;
}

/* ubt_pwrite and ubt_pwrite_accepted: @wb_flags for the page cache path (UBT_WB_*). */
static ssize_t pwrite_(ubt_file *f, const void *buf, size_t size, uint64_t off, unsigned wb_flags)
{
	ubt_fs *fs = f->fs;
	struct btrfs_inode_item ii;
	int ret;

	if (size == 0)
		return 0;
	ret = ubt_api_write_check(f, size, off, &ii);
	if (ret)
		return ret;
	/*
	 * NOCOW data and preallocated extents are written in place (btrfs's nocow path), which the
	 * write-through path knows how to do; everything else goes through the page cache.
	 */
	if (!fs->fs_info->write_info || (get_le64(&ii.flags) & (BTRFS_INODE_NODATACOW | BTRFS_INODE_PREALLOC)))
		return pwrite_through(f, buf, size, off);
	return ubt_write_buffered(fs->fs_info, f->root, f->objectid, &ii, buf, size, off, wb_flags);
}

ssize_t ubt_pwrite(ubt_file *f, const void *buf, size_t size, uint64_t off)
{
	return pwrite_(f, buf, size, off, (f->flags & O_APPEND) ? UBT_WB_APPEND : 0);
}

ssize_t ubt_pwrite_accepted(ubt_file *f, const void *buf, size_t size, uint64_t off)
{
	return pwrite_(f, buf, size, off, UBT_WB_ACCEPTED);
}

int ubt_fsync(ubt_file *f, int datasync)
{
	int ret, ret2;

	(void)datasync;
	if (f->fs->rdonly)
		return 0;
	/* The file's data first (reporting a write error once), then a commit makes it durable. */
	ret = ubt_write_flush_range(f->fs->fs_info, f->root, f->objectid, 0, (u64)-1);
	ret2 = ubt_commit_if_dirty(f->fs->fs_info);
	return ret ? ret : ret2;
}

int ubt_flush(ubt_file *f)
{
	if (f->fs->rdonly)
		return 0;
	return ubt_write_flush_range(f->fs->fs_info, f->root, f->objectid, 0, (u64)-1);
}

int ubt_sync(ubt_fs *fs)
{
	int ret, ret2;

	if (fs->rdonly)
		return 0;
	ret = ubt_write_flush_all(fs->fs_info);
	ret2 = ubt_commit_if_dirty(fs->fs_info);
	return ret ? ret : ret2;
}

/* ---- shared with the other API files (api-internal.h) ---- */

int ubt_api_wop_begin(struct wop *op, ubt_fs *fs, const char *what, u64 items, u64 data)
{
	return wop_begin(op, fs, what, items, data);
}

int ubt_api_wop_end(struct wop *op, int ret)
{
	return wop_end(op, ret);
}

int ubt_api_decode(ubt_fs *fs, ubt_ino ino, struct ubt_root **root, u64 *objectid, u32 *idx)
{
	return decode(fs, ino, root, objectid, idx);
}

void ubt_api_fill_stat(ubt_fs *fs, const struct btrfs_inode_item *ii, u32 idx, u64 objectid, struct stat *st)
{
	fill_stat(fs, ii, idx, objectid, st);
}

static bool timespec_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec != b->tv_sec ? a->tv_sec > b->tv_sec : a->tv_nsec > b->tv_nsec;
}

void ubt_api_overlay_stat(ubt_fs *fs, struct ubt_root *root, u64 objectid, struct stat *st)
{
	struct btrfs_timespec mtime, ctime;
	u64 size, delalloc;
	bool times_dirty;

	if (fs->rdonly ||
	    !ubt_write_overlay(fs->fs_info, root, objectid, &size, &mtime, &ctime, &delalloc, &times_dirty))
		return;
	st->st_size = (off_t)size;
	st->st_blocks += (blkcnt_t)(delalloc >> 9);
	if (times_dirty) {
		struct timespec c = ubt_timespec(&ctime);

		st->st_mtim = ubt_timespec(&mtime);
		if (timespec_after(&c, &st->st_ctim))
			st->st_ctim = c;
	}
}

struct ubt_write_opts ubt_api_write_opts(const ubt_fs *fs, const struct btrfs_inode_item *ii)
{
	struct ubt_write_opts o = write_opts_of(fs);

	/* chattr +c without compress=: zlib, as btrfs's default for the compression property. */
	if (ii && !o.compress_type && (get_le64(&ii->flags) & BTRFS_INODE_COMPRESS))
		o.compress_type = BTRFS_COMPRESS_ZLIB;
	return o;
}
