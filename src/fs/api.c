/*
 * api.c — the public API (include/ubtrfs.h) on top of the inode layer: mount options and subvolume
 * selection, inode-number mapping across subvolumes, stat conversion, directory listing with "."
 * and "..", and the thin wrappers that turn internal errors into the documented errno values.
 */
#include "fs.h"
#include "api-internal.h"
#include "fs-internal.h"

#include <stdlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/sysmacros.h>

#include "../codec/csum.h"
#include "../device/bdev.h"
#include "../alloc/alloc.h"
#include "../inode/inode-write.h"
#include "../inode/tree-log.h"
#include "../transaction/transaction.h"
#include "../write/write.h"
#include "../util/messages.h"
#include "../volumes/volumes.h"

#define BTRFS_EMPTY_SUBVOL_DIR_OBJECTID 2ULL

void ubt_set_log_level(int level)
{
	ubt_log_set_level(level);
}

void ubt_set_log_sink(void (*sink)(int level, const char *line, void *ctx), void *ctx)
{
	ubt_log_set_sink(sink, ctx);
}

const char *ubt_strerror(int err)
{
	if (err > 0)
		err = -err;
	switch (err) {
	case 0:
		return "Success";
	case -EUCLEAN:
		return "Structure needs cleaning (the image is corrupt here)";
	case -EIO:
		return "Input/output error (device error or data checksum mismatch)";
	default:
		return strerror(-err);
	}
}

/* Index of @root in the mount's subvolume table, adding it when new. */
static int subvol_index(ubt_fs *fs, struct ubt_root *root, u32 *idx)
{
	int ret = 0;

	pthread_mutex_lock(&fs->lock);
	for (u32 i = 0; i < fs->nr_subvols; i++) {
		if (fs->subvols[i] == root) {
			*idx = i;
			goto out;
		}
	}
	if (fs->nr_subvols >= UBT_MAX_SUBVOLS) {
		ret = -EOVERFLOW;
		goto out;
	}
	if (fs->nr_subvols == fs->cap_subvols) {
		u32 cap = fs->cap_subvols ? fs->cap_subvols * 2 : 8;
		struct ubt_root **n = realloc(fs->subvols, cap * sizeof(*n));
		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		fs->subvols = n;
		fs->cap_subvols = cap;
	}
	*idx = fs->nr_subvols;
	fs->subvols[fs->nr_subvols++] = root;
out:
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static u64 root_dirid(const struct ubt_root *root)
{
	u64 d = le64toh(root->root_item.root_dirid);
	return d ? d : BTRFS_FIRST_FREE_OBJECTID;
}

static int encode_ino(ubt_fs *fs, struct ubt_root *root, u64 objectid, ubt_ino *ino, u64 *st_ino)
{
	u32 idx;
	int ret;

	if (objectid > UBT_INO_OBJECTID_MASK)
		return -EOVERFLOW;
	ret = subvol_index(fs, root, &idx);
	if (ret)
		return ret;
	if (st_ino)
		*st_ino = ((u64)idx << UBT_INO_SUBVOL_SHIFT) | objectid;
	if (ino) {
		if (idx == 0 && objectid == root_dirid(root))
			*ino = UBT_ROOT_INO;
		else
			*ino = ((u64)idx << UBT_INO_SUBVOL_SHIFT) | objectid;
	}
	return 0;
}

static int decode_ino(ubt_fs *fs, ubt_ino ino, struct ubt_root **root, u64 *objectid)
{
	u32 idx;

	return ubt_api_decode(fs, ino, root, objectid, &idx);
}

static void fill_stat(ubt_fs *fs, const struct btrfs_inode_item *ii, u64 st_ino, struct stat *st)
{
	ubt_api_fill_stat(fs, ii, (u32)(st_ino >> UBT_INO_SUBVOL_SHIFT), st_ino & UBT_INO_OBJECTID_MASK, st);
}

/* The placeholder directory btrfs shows for a subvolume that is not really there (in a snapshot). */
static void fill_empty_subvol_dir(ubt_fs *fs, struct ubt_root *root, u64 st_ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = st_ino;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 1;
	st->st_blksize = fs->fs_info->sectorsize;
	/* Like btrfs, it has no inode on disk: its times are those of the moment it is looked at. */
	clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	st->st_ctim = st->st_atim = st->st_mtim;
	(void)root;
}

static int getattr_(ubt_fs *fs, struct ubt_root *root, u64 objectid, struct stat *st)
{
	struct btrfs_inode_item ii;
	u64 st_ino;
	int ret;

	ret = encode_ino(fs, root, objectid, NULL, &st_ino);
	if (ret)
		return ret;
	if (objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID) {
		fill_empty_subvol_dir(fs, root, st_ino, st);
		return 0;
	}
	ret = ubt_inode_read(root, objectid, &ii);
	if (ret)
		return ret;
	fill_stat(fs, &ii, st_ino, st);
	ubt_api_overlay_stat(fs, root, objectid, st);
	return 0;
}

static int getattr_pub_(ubt_fs *fs, ubt_ino ino, struct stat *st)
{
	struct ubt_root *root;
	u64 objectid;
	int ret = decode_ino(fs, ino, &root, &objectid);

	return ret ? ret : getattr_(fs, root, objectid, st);
}

/*
 * Is subvolume @child really linked under (@parent_root, @dirid, @name)? A snapshot copies the
 * directory entry of a nested subvolume but not the subvolume itself; btrfs shows such an entry
 * as an empty directory.
 */
static bool subvol_linked_here(ubt_fs *fs, struct ubt_root *parent_root, u64 dirid, u64 child, const char *name,
			       size_t name_len)
{
	struct ubt_root *tree_root = &fs->fs_info->tree_root;
	struct ubt_key key = { parent_root->objectid, BTRFS_ROOT_REF_KEY, child };
	struct ubt_path path;
	bool linked = false;

	ubt_path_init(&path);
	if (ubt_search_slot(tree_root, &key, &path) == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		u32 size = ubt_item_size(leaf, slot);
		const struct btrfs_root_ref *ref = ubt_item_ptr(leaf, slot);

		if (size >= sizeof(*ref) && sizeof(*ref) + le16toh(ref->name_len) <= size &&
		    le64toh(ref->dirid) == dirid && le16toh(ref->name_len) == name_len &&
		    !memcmp(ref + 1, name, name_len))
			linked = true;
	}
	ubt_path_release(&path);
	return linked;
}

/* Resolve a directory entry's location to (root, objectid). */
static int resolve_location(ubt_fs *fs, struct ubt_root *root, u64 dir, const char *name, size_t name_len,
			    const struct ubt_key *loc, struct ubt_root **out_root, u64 *out_objectid)
{
	struct ubt_root *sub;
	int ret;

	if (loc->type == BTRFS_INODE_ITEM_KEY) {
		*out_root = root;
		*out_objectid = loc->objectid;
		return 0;
	}
	if (loc->type != BTRFS_ROOT_ITEM_KEY) {
		ubt_err("tree %llu dir %llu: entry with an invalid location type %u", (unsigned long long)root->objectid,
			(unsigned long long)dir, loc->type);
		return -EUCLEAN;
	}
	if (!subvol_linked_here(fs, root, dir, loc->objectid, name, name_len)) {
		*out_root = root;
		*out_objectid = BTRFS_EMPTY_SUBVOL_DIR_OBJECTID;
		return 0;
	}
	ret = ubt_read_fs_root(fs->fs_info, loc->objectid, &sub);
	if (ret == -ENOENT) {
		*out_root = root;
		*out_objectid = BTRFS_EMPTY_SUBVOL_DIR_OBJECTID;
		return 0;
	}
	if (ret)
		return ret;
	*out_root = sub;
	*out_objectid = root_dirid(sub);
	return 0;
}

/* Parent of (root, objectid), crossing out of a subvolume at its root directory. */
static int parent_of(ubt_fs *fs, struct ubt_root *root, u64 objectid, struct ubt_root **proot, u64 *pobj)
{
	struct ubt_root *tree_root = &fs->fs_info->tree_root;
	struct ubt_key key = { root->objectid, BTRFS_ROOT_BACKREF_KEY, 0 }, found;
	struct ubt_path path;
	int ret;

	if (root == fs->subvols[0] && objectid == root_dirid(root)) {
		*proot = root;
		*pobj = objectid;
		return 0;
	}
	if (objectid != root_dirid(root) || objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID) {
		if (objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID) {
			*proot = root;
			*pobj = root_dirid(root);
			return 0;
		}
		*proot = root;
		return ubt_inode_parent(root, objectid, pobj);
	}
	/* Root directory of a nested subvolume: its ROOT_BACKREF names the parent tree and dir. */
	ubt_path_init(&path);
	ret = ubt_search_ge(tree_root, &key, &path);
	if (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		const struct btrfs_root_ref *ref = ubt_item_ptr(leaf, slot);

		ubt_item_key(leaf, slot, &found);
		if (found.objectid != root->objectid || found.type != BTRFS_ROOT_BACKREF_KEY ||
		    ubt_item_size(leaf, slot) < sizeof(*ref)) {
			ret = -ENOENT;
		} else {
			u64 dirid = le64toh(ref->dirid);
			ubt_path_release(&path);
			ret = ubt_read_fs_root(fs->fs_info, found.offset, proot);
			if (!ret)
				*pobj = dirid;
		}
	} else if (ret > 0) {
		ret = -ENOENT;
	}
	ubt_path_release(&path);
	if (ret == -ENOENT) {
		/* Not reachable upwards: present it as its own parent. */
		*proot = root;
		*pobj = objectid;
		ret = 0;
	}
	return ret;
}

static int lookup_(ubt_fs *fs, ubt_ino parent, const char *name, ubt_ino *ino, struct stat *st)
{
	struct ubt_root *root, *croot;
	u64 dir, cobj;
	struct ubt_key loc;
	size_t len = strlen(name);
	struct stat tmp;
	u8 type;
	int ret;

	ret = decode_ino(fs, parent, &root, &dir);
	if (ret)
		return ret;
	if (len > BTRFS_NAME_LEN)
		return -ENAMETOOLONG;
	if (!strcmp(name, ".")) {
		croot = root;
		cobj = dir;
	} else if (!strcmp(name, "..")) {
		ret = parent_of(fs, root, dir, &croot, &cobj);
		if (ret)
			return ret;
	} else {
		if (dir == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID)
			return -ENOENT;
		ret = ubt_dir_lookup(root, dir, name, len, &loc, &type);
		if (ret)
			return ret;
		ret = resolve_location(fs, root, dir, name, len, &loc, &croot, &cobj);
		if (ret)
			return ret;
	}
	ret = getattr_(fs, croot, cobj, st ? st : &tmp);
	if (ret)
		return ret;
	return encode_ino(fs, croot, cobj, ino, NULL);
}

static int resolve_(ubt_fs *fs, const char *path, ubt_ino *ino, struct stat *st)
{
	ubt_ino cur = UBT_ROOT_INO;
	char name[BTRFS_NAME_LEN + 1];
	const char *p = path;
	int ret;

	while (*p) {
		const char *slash;
		size_t len;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		slash = strchr(p, '/');
		len = slash ? (size_t)(slash - p) : strlen(p);
		if (len > BTRFS_NAME_LEN)
			return -ENAMETOOLONG;
		memcpy(name, p, len);
		name[len] = 0;
		ret = lookup_(fs, cur, name, &cur, NULL);
		if (ret)
			return ret;
		p += len;
	}
	if (ino)
		*ino = cur;
	return st ? getattr_pub_(fs, cur, st) : 0;
}

static unsigned dtype_of(u8 ft)
{
	static const unsigned map[] = { DT_UNKNOWN, DT_REG, DT_DIR, DT_CHR, DT_BLK, DT_FIFO, DT_SOCK, DT_LNK };
	return ft < ARRAY_SIZE(map) ? map[ft] : DT_UNKNOWN;
}

struct readdir_ctx {
	ubt_fs *fs;
	struct ubt_root *root;
	u64 dir;
	ubt_filldir_t filler;
	void *ctx;
	int err;
};

static int readdir_cb(void *arg, u64 index, const char *name, size_t name_len, const struct ubt_key *loc, u8 type)
{
	struct readdir_ctx *rc = arg;
	struct ubt_root *croot;
	u64 cobj;
	ubt_ino ino;
	int ret;

	ret = resolve_location(rc->fs, rc->root, rc->dir, name, name_len, loc, &croot, &cobj);
	if (!ret)
		ret = encode_ino(rc->fs, croot, cobj, &ino, NULL);
	if (ret) {
		rc->err = ret;
		return 1;
	}
	if (cobj == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID)
		type = BTRFS_FT_DIR;
	return rc->filler(rc->ctx, name, name_len, ino, dtype_of(type), index + 1) ? 1 : 0;
}

static int readdir_(ubt_fs *fs, ubt_ino dir, uint64_t off, ubt_filldir_t filler, void *ctx)
{
	struct readdir_ctx rc = { .fs = fs, .filler = filler, .ctx = ctx };
	struct stat st;
	struct ubt_root *proot;
	u64 pobj;
	ubt_ino pino;
	int ret;

	ret = decode_ino(fs, dir, &rc.root, &rc.dir);
	if (ret)
		return ret;
	ret = getattr_(fs, rc.root, rc.dir, &st);
	if (ret)
		return ret;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (off == 0) {
		if (filler(ctx, ".", 1, dir, DT_DIR, 1))
			return 0;
		off = 1;
	}
	if (off == 1) {
		ret = parent_of(fs, rc.root, rc.dir, &proot, &pobj);
		if (!ret)
			ret = encode_ino(fs, proot, pobj, &pino, NULL);
		if (ret)
			return ret;
		if (filler(ctx, "..", 2, pino, DT_DIR, 2))
			return 0;
		off = 2;
	}
	if (rc.dir == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID)
		return 0;
	ret = ubt_dir_iterate(rc.root, rc.dir, off, readdir_cb, &rc);
	if (rc.err)
		return rc.err;
	return ret < 0 ? ret : 0;
}

static ssize_t readlink_(ubt_fs *fs, ubt_ino ino, char *buf, size_t size)
{
	struct ubt_root *root;
	u64 objectid;
	struct stat st;
	int ret = decode_ino(fs, ino, &root, &objectid);

	if (ret)
		return ret;
	ret = getattr_(fs, root, objectid, &st);
	if (ret)
		return ret;
	if (!S_ISLNK(st.st_mode))
		return -EINVAL;
	ret = (int)ubt_symlink_read(root, objectid, buf, size);
	/* The target is i_size bytes long (some writers store a trailing NUL after it). */
	if (ret > st.st_size)
		ret = (int)st.st_size;
	return ret;
}

static ssize_t getxattr_(ubt_fs *fs, ubt_ino ino, const char *name, void *buf, size_t size)
{
	struct ubt_root *root;
	u64 objectid;
	int ret = decode_ino(fs, ino, &root, &objectid);

	if (ret)
		return ret;
	if (objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID)
		return -ENODATA;
	return ubt_xattr_get(root, objectid, name, buf, size);
}

static ssize_t listxattr_(ubt_fs *fs, ubt_ino ino, char *buf, size_t size)
{
	struct ubt_root *root;
	u64 objectid;
	int ret = decode_ino(fs, ino, &root, &objectid);

	if (ret)
		return ret;
	if (objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID)
		return 0;
	return ubt_xattr_list(root, objectid, buf, size);
}

static int open_(ubt_fs *fs, ubt_ino ino, int flags, ubt_file **out)
{
	struct ubt_file *f;
	mode_t mode;
	int ret;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fs = fs;
	f->flags = flags;
	ret = decode_ino(fs, ino, &f->root, &f->objectid);
	if (ret)
		goto fail;
	if (f->objectid == BTRFS_EMPTY_SUBVOL_DIR_OBJECTID) {
		ret = -EISDIR;
		goto fail;
	}
	ret = ubt_inode_read(f->root, f->objectid, &f->inode);
	if (ret)
		goto fail;
	mode = le32toh(f->inode.mode);
	if (S_ISDIR(mode)) {
		ret = -EISDIR;
		goto fail;
	}
	if (!S_ISREG(mode)) {
		ret = -EINVAL;
		goto fail;
	}
	if (fs->rdonly && ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))) {
		ret = -EROFS;
		goto fail;
	}
	/* As the VFS: an immutable file opens read-only, an append-only one for appends, untruncated. */
	if (((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) &&
	    ((le64toh(f->inode.flags) & BTRFS_INODE_IMMUTABLE) ||
	     ((le64toh(f->inode.flags) & BTRFS_INODE_APPEND) && (!(flags & O_APPEND) || (flags & O_TRUNC))))) {
		ret = -EPERM;
		goto fail;
	}
	*out = f;
	return 0;
fail:
	free(f);
	return ret;
}

/* Reads see cached writes on read-write mounts. */
static ssize_t read_fn(ubt_file *f, const struct btrfs_inode_item *inode, void *buf, size_t size, u64 off)
{
	if (f->fs->rdonly)
		return ubt_file_read(f->root, f->objectid, inode, buf, size, off);
	return ubt_write_read(f->fs->fs_info, f->root, f->objectid, inode, buf, size, off);
}

static ssize_t pread_(ubt_file *f, void *buf, size_t size, uint64_t off)
{
	struct btrfs_inode_item ii;
	const struct btrfs_inode_item *inode = &f->inode;
	u32 sectorsize = f->fs->fs_info->sectorsize;
	ssize_t ret;

	if (off > (u64)INT64_MAX)
		return -EINVAL;
	if (size > (size_t)SSIZE_MAX)
		size = (size_t)SSIZE_MAX;
	if (!f->fs->rdonly) {
		/* The file may have changed since it was opened: use its current size and flags. */
		int err = ubt_inode_read(f->root, f->objectid, &ii);
		if (err)
			return err;
		inode = &ii;
	}
	ret = read_fn(f, inode, buf, size, off);
	if (ret == -EIO && size > sectorsize) {
		/* Like a disk read: return what precedes the first bad sector; EIO only for it. */
		size_t done = 0;

		while (done < size) {
			size_t chunk = ubt_min(size - done, (size_t)(sectorsize - ((off + done) % sectorsize)));
			ssize_t n = read_fn(f, inode, (char *)buf + done, chunk, off + done);
			if (n <= 0)
				break;
			done += (size_t)n;
			if ((size_t)n < chunk)
				break;
		}
		ret = done ? (ssize_t)done : -EIO;
	}
	return ret;
}

int ubt_close(ubt_file *f)
{
	int ret = 0, ret2;

	if (!f->fs->rdonly) {
		/* Mappings of this handle end with it: their changes are handed back (munmap). */
		ret = ubt_write_munmap_all(f->fs->fs_info, f, (f->flags & O_ACCMODE) == O_RDONLY ? -EBADF : 0);
		if ((f->flags & O_ACCMODE) == O_RDONLY)
			ret = 0; /* changes in a read-only handle's mapping are dropped, as MAP_PRIVATE */
		/*
		 * Written data goes to disk at the last close of a handle, so that an inode whose last
		 * name is gone can be deleted with nothing of it in flight.
		 */
		if ((f->flags & O_ACCMODE) != O_RDONLY && !ret)
			ret = ubt_write_flush_range(f->fs->fs_info, f->root, f->objectid, 0, (u64)-1);
		ret2 = ubt_inode_release(f->root, f->objectid, 1);
		if (!ret)
			ret = ret2;
	}
	free(f);
	return ret;
}

static int statfs_(ubt_fs *fs, struct statvfs *st)
{
	struct ubt_fs_info *fi = fs->fs_info;
	u64 total = le64toh(fi->super.total_bytes), used = le64toh(fi->super.bytes_used);
	u64 data, meta, sys, fsid_lo;

	ubt_chunk_map_totals(fi->chunk_map, &data, &meta, &sys);
	memset(st, 0, sizeof(*st));
	st->f_bsize = fi->sectorsize;
	st->f_frsize = fi->sectorsize;
	st->f_blocks = total / fi->sectorsize;
	st->f_bfree = used < total ? (total - used) / fi->sectorsize : 0;
	st->f_bavail = st->f_bfree;
	if (!fs->rdonly) {
		u64 atotal, afree, avail;

		/* What data writes can still get (free in data block groups + unallocated), as btrfs's
		 * statfs: free metadata space is not available to files. */
		ubt_alloc_statfs(fi, &atotal, &afree, &avail);
		if (avail / fi->sectorsize < st->f_bavail)
			st->f_bavail = avail / fi->sectorsize;
	}
	st->f_namemax = BTRFS_NAME_LEN;
	memcpy(&fsid_lo, fi->fsid, sizeof(fsid_lo));
	st->f_fsid = (unsigned long)(fsid_lo ^ fs->subvols[0]->objectid);
	if (fs->rdonly)
		st->f_flag |= ST_RDONLY;
	return 0;
}

void ubt_forget(ubt_fs *fs, ubt_ino ino, uint64_t nlookup)
{
	struct ubt_root *root;
	u64 objectid;

	/* Inode numbers are computed, not allocated; only the write side counts references. */
	if (fs->rdonly || decode_ino(fs, ino, &root, &objectid))
		return;
	ubt_inode_release(root, objectid, nlookup);
}

/* ---- public read calls: each holds the tree lock for reading (writers exclude them) ---- */

#define WITH_READ_LOCK(fs, type, call)                                                             \
	do {                                                                                        \
		type ret_;                                                                          \
		ubt_tree_read_lock((fs)->fs_info);                                                  \
		ret_ = (call);                                                                      \
		ubt_tree_read_unlock((fs)->fs_info);                                                \
		return ret_;                                                                        \
	} while (0)

int ubt_getattr(ubt_fs *fs, ubt_ino ino, struct stat *st)
{
	WITH_READ_LOCK(fs, int, getattr_pub_(fs, ino, st));
}

int ubt_lookup(ubt_fs *fs, ubt_ino parent, const char *name, ubt_ino *ino, struct stat *st)
{
	struct ubt_root *root;
	u64 objectid;
	int ret;

	ubt_tree_read_lock(fs->fs_info);
	ret = lookup_(fs, parent, name, ino, st);
	/* A lookup is a reference until ubt_forget: an unlinked inode lives while it is held. */
	if (!ret && ino && !fs->rdonly && !decode_ino(fs, *ino, &root, &objectid))
		ubt_inode_hold(root, objectid, 1);
	ubt_tree_read_unlock(fs->fs_info);
	return ret;
}

int ubt_resolve(ubt_fs *fs, const char *path, ubt_ino *ino, struct stat *st)
{
	WITH_READ_LOCK(fs, int, resolve_(fs, path, ino, st));
}

int ubt_readdir(ubt_fs *fs, ubt_ino dir, uint64_t off, ubt_filldir_t filler, void *ctx)
{
	WITH_READ_LOCK(fs, int, readdir_(fs, dir, off, filler, ctx));
}

ssize_t ubt_readlink(ubt_fs *fs, ubt_ino ino, char *buf, size_t size)
{
	WITH_READ_LOCK(fs, ssize_t, readlink_(fs, ino, buf, size));
}

ssize_t ubt_getxattr(ubt_fs *fs, ubt_ino ino, const char *name, void *buf, size_t size)
{
	WITH_READ_LOCK(fs, ssize_t, getxattr_(fs, ino, name, buf, size));
}

ssize_t ubt_listxattr(ubt_fs *fs, ubt_ino ino, char *buf, size_t size)
{
	WITH_READ_LOCK(fs, ssize_t, listxattr_(fs, ino, buf, size));
}

int ubt_open(ubt_fs *fs, ubt_ino ino, int flags, ubt_file **out)
{
	int ret;

	ubt_tree_read_lock(fs->fs_info);
	ret = open_(fs, ino, flags, out);
	if (!ret && !fs->rdonly)
		ubt_inode_hold((*out)->root, (*out)->objectid, 1);
	ubt_tree_read_unlock(fs->fs_info);
	if (!ret && (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) {
		struct stat st = { .st_size = 0 };

		ret = ubt_setattr(fs, ino, &st, UBT_SET_SIZE | UBT_SET_MTIME_NOW, NULL);
		if (ret) {
			ubt_close(*out);
			*out = NULL;
		}
	}
	return ret;
}

ssize_t ubt_pread(ubt_file *f, void *buf, size_t size, uint64_t off)
{
	WITH_READ_LOCK(f->fs, ssize_t, pread_(f, buf, size, off));
}

int ubt_statfs(ubt_fs *fs, struct statvfs *st)
{
	WITH_READ_LOCK(fs, int, statfs_(fs, st));
}

/* Commits every commit_interval seconds while mounted read-write (the kernel's commit= option). */
static void *commit_thread_fn(void *arg)
{
	ubt_fs *fs = arg;

	pthread_mutex_lock(&fs->commit_lock);
	while (!fs->stopping) {
		struct timespec deadline;
		int ret;

		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += fs->commit_interval;
		while (!fs->stopping && pthread_cond_timedwait(&fs->commit_cond, &fs->commit_lock, &deadline) != ETIMEDOUT)
			;
		if (fs->stopping)
			break;
		pthread_mutex_unlock(&fs->commit_lock);
		ret = ubt_commit_if_dirty(fs->fs_info);
		if (ret && ret != -EROFS)
			ubt_err("periodic commit failed: %s", ubt_strerror(ret));
		pthread_mutex_lock(&fs->commit_lock);
	}
	pthread_mutex_unlock(&fs->commit_lock);
	return NULL;
}

/* "zlib", "lzo", "zstd", optionally ":LEVEL"; "no"/"none"/NULL = off. */
static int parse_compress(ubt_fs *fs, const char *spec)
{
	static const struct {
		const char *name;
		int type, max_level;
	} algs[] = { { "zlib", BTRFS_COMPRESS_ZLIB, 9 }, { "lzo", BTRFS_COMPRESS_LZO, 0 }, { "zstd", BTRFS_COMPRESS_ZSTD, 15 } };
	size_t len;

	fs->compress_type = BTRFS_COMPRESS_NONE;
	fs->compress_level = 0;
	if (!spec || !*spec || !strcmp(spec, "no") || !strcmp(spec, "none"))
		return 0;
	len = strcspn(spec, ":");
	for (size_t i = 0; i < ARRAY_SIZE(algs); i++) {
		if (strlen(algs[i].name) != len || strncmp(spec, algs[i].name, len))
			continue;
		fs->compress_type = algs[i].type;
		if (spec[len] == ':') {
			char *end;
			long level = strtol(spec + len + 1, &end, 10);
			if (*end || level < 1 || level > algs[i].max_level) {
				ubt_err("compress=%s: invalid level", spec);
				return -EINVAL;
			}
			fs->compress_level = (int)level;
		}
		return 0;
	}
	ubt_err("compress=%s: unknown algorithm (zlib, lzo, zstd)", spec);
	return -EINVAL;
}

/* The default subvolume: the "default" entry of the root tree's directory, else the top level. */
static int default_subvol(struct ubt_fs_info *fs_info, u64 *id)
{
	struct ubt_key loc;
	u8 type;
	int ret;

	ret = ubt_dir_lookup(&fs_info->tree_root, BTRFS_ROOT_TREE_DIR_OBJECTID, "default", 7, &loc, &type);
	if (ret == -ENOENT) {
		*id = BTRFS_FS_TREE_OBJECTID;
		return 0;
	}
	if (ret)
		return ret;
	*id = loc.objectid;
	return 0;
}

int ubt_mount_bdev(struct ubt_bdev *bdev, const char *path, const struct ubt_mount_opts *opts, ubt_fs **out)
{
	struct ubt_mount_opts defaults = { 0 };
	struct ubt_fs *fs = NULL;
	struct ubt_root *root;
	unsigned oflags = 0;
	u64 id;
	u32 idx;
	int ret;

	if (!opts)
		opts = &defaults;
	fs = calloc(1, sizeof(*fs));
	if (!fs) {
		ubt_bdev_close(bdev);
		return -ENOMEM;
	}
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->commit_lock, NULL);
	pthread_cond_init(&fs->commit_cond, NULL);
	fs->rdonly = opts->flags & UBT_MOUNT_RDONLY;
	if (fs->rdonly)
		oflags |= UBT_OPEN_RDONLY;
	if (opts->flags & UBT_MOUNT_NOLOGREPLAY)
		oflags |= UBT_OPEN_NOLOGREPLAY;
	if ((opts->flags & UBT_MOUNT_NOLOGREPLAY) && !fs->rdonly) {
		/* As the kernel: ignoring the log and then writing would lose the fsync'd data for good. */
		ubt_err("%s: nologreplay requires a read-only mount (-o ro,nologreplay)", path);
		ret = -EINVAL;
		ubt_bdev_close(bdev);
		goto fail;
	}
	if (!fs->rdonly)
		oflags |= UBT_OPEN_REPLAY_LOG;
	else
		oflags |= UBT_OPEN_MEMORY_REPLAY;
	ret = ubt_open_ctree(bdev, oflags, opts->cache_bytes, &fs->fs_info);
	if (ret) {
		ubt_bdev_close(bdev);
		goto fail;
	}
	ret = parse_compress(fs, opts->compress);
	if (ret)
		goto fail;
	fs->compress_force = opts->compress_force;
	fs->nodatacow = opts->flags & UBT_MOUNT_NODATACOW;
	fs->nodatasum = (opts->flags & UBT_MOUNT_NODATASUM) || fs->nodatacow;
	if (!fs->rdonly || fs->fs_info->memory_only) {
		ret = ubt_alloc_init(fs->fs_info);
		if (ret) {
			ubt_err("%s: cannot prepare the allocator for a read-write mount: %s", path, ubt_strerror(ret));
			goto fail;
		}
		fs->alloc_ready = true;
		ret = ubt_replay_log(fs->fs_info);
		if (ret) {
			ubt_err("%s: replaying the log tree failed: %s", path, ubt_strerror(ret));
			goto fail;
		}
		if (!fs->rdonly) {
			struct ubt_write_config wcfg = { .cache_bytes = opts->page_cache_bytes };

			wcfg.wopts.compress_type = fs->compress_type;
			wcfg.wopts.compress_level = fs->compress_level;
			wcfg.wopts.compress_force = fs->compress_force;
			ret = ubt_write_init(fs->fs_info, &wcfg);
			if (ret) {
				ubt_err("%s: cannot start the data write path: %s", path, ubt_strerror(ret));
				goto fail;
			}
		}
		/* As the kernel: an lzo or zstd mount marks the filesystem as possibly holding such extents. */
		if (!fs->rdonly && (fs->compress_type == BTRFS_COMPRESS_LZO || fs->compress_type == BTRFS_COMPRESS_ZSTD)) {
			u64 bit = fs->compress_type == BTRFS_COMPRESS_LZO ? BTRFS_FEATURE_INCOMPAT_COMPRESS_LZO
									  : BTRFS_FEATURE_INCOMPAT_COMPRESS_ZSTD;
			fs->fs_info->incompat |= bit;
			fs->fs_info->super.incompat_flags = htole64(fs->fs_info->incompat);
		}
	}

	if (opts->subvolid) {
		id = opts->subvolid;
	} else if (!opts->subvol) {
		ret = default_subvol(fs->fs_info, &id);
		if (ret)
			goto fail;
	} else {
		id = BTRFS_FS_TREE_OBJECTID;
	}
	ret = ubt_read_fs_root(fs->fs_info, id, &root);
	if (ret) {
		ubt_err("%s: subvolume id %llu not found", path, (unsigned long long)id);
		goto fail;
	}
	ret = subvol_index(fs, root, &idx);
	if (ret)
		goto fail;
	if (opts->subvol && *opts->subvol && strcmp(opts->subvol, "/")) {
		/* Walk from the top level; the path must end at a subvolume root. */
		struct ubt_root *top = root;
		ubt_ino ino;
		u64 objectid;

		if (opts->subvolid && opts->subvolid != BTRFS_FS_TREE_OBJECTID) {
			/* Both given: the kernel checks they agree; resolve from the top level then compare. */
			ret = ubt_read_fs_root(fs->fs_info, BTRFS_FS_TREE_OBJECTID, &top);
			if (ret)
				goto fail;
			fs->subvols[0] = top;
		}
		ret = resolve_(fs, opts->subvol, &ino, NULL);
		if (ret) {
			ubt_err("%s: subvol=%s: %s", path, opts->subvol, ubt_strerror(ret));
			goto fail;
		}
		ret = decode_ino(fs, ino, &root, &objectid);
		if (ret)
			goto fail;
		if (objectid != root_dirid(root) || root == top) {
			ubt_err("%s: subvol=%s is not a subvolume", path, opts->subvol);
			ret = -EINVAL;
			goto fail;
		}
		if (opts->subvolid && opts->subvolid != root->objectid) {
			ubt_err("%s: subvol=%s is subvolume %llu, not subvolid=%llu", path, opts->subvol,
				(unsigned long long)root->objectid, (unsigned long long)opts->subvolid);
			ret = -EINVAL;
			goto fail;
		}
		/* Make it index 0: restart the table with it. */
		fs->nr_subvols = 0;
		ret = subvol_index(fs, root, &idx);
		if (ret)
			goto fail;
	}
	if (!fs->rdonly) {
		ret = ubt_fs_rw_start(fs);
		if (ret)
			goto fail;
		fs->commit_interval = opts->commit_interval ? opts->commit_interval : 30;
		ret = -pthread_create(&fs->commit_thread, NULL, commit_thread_fn, fs);
		if (ret)
			goto fail;
		fs->commit_thread_running = true;
	}
	*out = fs;
	return 0;
fail:
	ubt_unmount(fs);
	return ret;
}

int ubt_mount(const char *path, const struct ubt_mount_opts *opts, ubt_fs **out)
{
	struct ubt_bdev *bdev = NULL;
	int ret;

	ret = ubt_bdev_open_file(path, opts && (opts->flags & UBT_MOUNT_RDONLY), &bdev);
	if (ret)
		return ret;
	return ubt_mount_bdev(bdev, path, opts, out);
}

int ubt_unmount(ubt_fs *fs)
{
	int ret = 0;

	if (!fs)
		return 0;
	if (fs->commit_thread_running) {
		pthread_mutex_lock(&fs->commit_lock);
		fs->stopping = true;
		pthread_cond_signal(&fs->commit_cond);
		pthread_mutex_unlock(&fs->commit_lock);
		pthread_join(fs->commit_thread, NULL);
	}
	if (fs->fs_info && fs->fs_info->write_info)
		ubt_write_exit(fs->fs_info); /* writes back and waits for all cached data */
	if (!fs->rdonly && fs->fs_info && !fs->fs_info->fs_error && fs->alloc_ready) {
		ubt_fs_rw_stop(fs);
		ret = ubt_commit_if_dirty(fs->fs_info);
		if (ret)
			ubt_err("unmount: the final commit failed: %s; changes since the last commit are lost",
				ubt_strerror(ret));
	}
	if (fs->alloc_ready)
		ubt_alloc_exit(fs->fs_info);
	ubt_close_ctree(fs->fs_info);
	free(fs->subvols);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->commit_lock);
	pthread_cond_destroy(&fs->commit_cond);
	free(fs);
	return ret;
}
