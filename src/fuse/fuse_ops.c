/*
 * fuse_ops.c — the FUSE low-level operations: each request is translated to public libubtrfs
 * calls (include/ubtrfs.h) and their result to a reply. FUSE node ids are ubt_ino values
 * (UBT_ROOT_INO == FUSE_ROOT_ID).
 *
 * Lookup counts: every reply that hands the kernel a node id (lookup, readdirplus entries,
 * create, mknod, mkdir, symlink, link) stands for exactly one library reference, taken by the
 * library call that produced the entry (ubt_lookup, ubt_mknod, ubt_mkdir, ubt_symlink, ubt_link)
 * and returned by the kernel's forget (ubt_forget). A reply the kernel never receives gives its
 * reference back at once. Open files hold their own reference (ubt_open .. ubt_close).
 *
 * Read-write mounts: the kernel applies the umask (FUSE_CAP_DONT_MASK is off; with -o acl it is
 * on and new inodes get the umask or their directory's default ACL in acl.c), checks
 * permissions (default_permissions) and clears set-id bits itself (FUSE_CAP_HANDLE_KILLPRIV is
 * off); O_TRUNC arrives in open (FUSE_CAP_ATOMIC_O_TRUNC) and is done here with ubt_setattr.
 * POSIX ACL xattrs arrive as plain setxattr requests: acl.c keeps the mode bits in step.
 * Without -o writeback_cache every write(2) is a WRITE request answered after ubt_pwrite
 * returned; with it the kernel sends what it already accepted, taken by ubt_pwrite_accepted.
 * Files opened with O_DIRECT keep it in their handle's flags and get FOPEN_DIRECT_IO (the kernel
 * caches nothing for them); their READ/WRITE requests go to ubt_pread_direct/ubt_pwrite_direct.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fuse/ubt_fuse.h"

_Static_assert(UBT_ROOT_INO == FUSE_ROOT_ID, "the root inode must be FUSE's root node id");

static struct ubtf_ctx *req_ctx(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Turn a negative library result into a positive errno fuse_reply_err accepts. */
static int to_errno(struct ubtf_ctx *ctx, const char *op, long ret)
{
	int err = (int)-ret;

	if (ret >= 0 || err >= 1000)
		err = EIO;
	if (ctx->debug || err == EUCLEAN || err == EIO)
		fprintf(stderr, "ubtrfs: %s: %s\n", op, ubt_strerror((int)ret));
	return err;
}

static void fill_entry(struct ubtf_ctx *ctx, struct fuse_entry_param *e, ubt_ino ino,
		       const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino;
	e->generation = 1;
	e->attr = *st;
	e->attr_timeout = ctx->attr_timeout;
	e->entry_timeout = ctx->entry_timeout;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	/* O_TRUNC comes with the open request and is done in op_open/op_create. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* chattr/lsattr on directories too (FS_IOC_GETFLAGS/SETFLAGS). */
	if (conn->capable & FUSE_CAP_IOCTL_DIR)
		conn->want |= FUSE_CAP_IOCTL_DIR;
	/*
	 * The kernel applies the umask, clears set-id bits on write/chown/truncate, and owns no
	 * dirty data of ours: writes go to the library before write(2) returns.
	 */
	conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_DONT_MASK | FUSE_CAP_HANDLE_KILLPRIV |
			FUSE_CAP_POSIX_ACL);
	/*
	 * -o writeback_cache: the kernel caches writes and sends them later, after write(2) has
	 * returned. Such data was accepted already: it goes in as ubt_pwrite_accepted (never refused
	 * for space; pages without a reservation take the fixup worker's path, ENOSPC reaches fsync).
	 */
	if (((struct ubtf_ctx *)userdata)->writeback_cache) {
		if (conn->capable & FUSE_CAP_WRITEBACK_CACHE) {
			conn->want |= FUSE_CAP_WRITEBACK_CACHE;
			/*
			 * The kernel owns mtime and ctime then: O_TRUNC is better a setattr that carries
			 * the kernel's times than a truncation here stamped with ours.
			 */
			conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
		} else {
			((struct ubtf_ctx *)userdata)->writeback_cache = false;
		}
	}
	/*
	 * -o acl: the kernel checks access ACLs too (with default_permissions) and keeps the mode in
	 * step when an ACL is set; the ACL xattrs are stored as btrfs stores them (acl.c).
	 */
	if (((struct ubtf_ctx *)userdata)->acl && (conn->capable & FUSE_CAP_POSIX_ACL)) {
		/*
		 * Default ACLs are inherited here (acl.c), which needs the mode as asked for: the
		 * kernel then leaves the umask to us (DONT_MASK) and sends it with each request.
		 */
		conn->want |= FUSE_CAP_POSIX_ACL;
		if (conn->capable & FUSE_CAP_DONT_MASK) {
			conn->want |= FUSE_CAP_DONT_MASK;
			((struct ubtf_ctx *)userdata)->acl_active = true;
		}
	}
	/*
	 * Fewer, larger requests: writes of up to 1 MiB (the kernel then negotiates max_pages) and
	 * 1 MiB of readahead, instead of 128 KiB each.
	 */
	conn->max_write = 1 << 20;
	if (conn->max_readahead < (1u << 20))
		conn->max_readahead = 1 << 20;
}

static void op_destroy(void *userdata)
{
	struct ubtf_ctx *ctx = userdata;

	if (ctx->fs) {
		ctx->unmount_ret = ubt_unmount(ctx->fs);
		ctx->fs = NULL;
		if (ctx->unmount_ret)
			fprintf(stderr, "ubtrfs: unmount: %s\n", ubt_strerror(ctx->unmount_ret));
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct fuse_entry_param e;
	struct stat st;
	ubt_ino ino = 0;
	int ret;

	ret = ubt_lookup(ctx->fs, parent, name, &ino, &st);
	if (ret == -ENOENT && ctx->negative_timeout > 0) {
		/* A zero node id caches the miss for entry_timeout. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = ctx->negative_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "lookup", ret));
		return;
	}
	fill_entry(ctx, &e, ino, &st);
	if (fuse_reply_entry(req, &e))
		ubt_forget(ctx->fs, ino, 1); /* the kernel never saw it */
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	ubt_forget(req_ctx(req)->fs, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct ubtf_ctx *ctx = req_ctx(req);

	for (size_t i = 0; i < count; i++)
		ubt_forget(ctx->fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct stat st;
	int ret;

	ret = ubt_getattr(ctx->fs, ino, &st);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "getattr", ret));
		return;
	}
	fuse_reply_attr(req, &st, ctx->attr_timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	size_t size = PATH_MAX;
	char *buf = NULL;
	ssize_t len;

	for (;;) {
		char *nbuf = realloc(buf, size + 1);

		if (!nbuf) {
			len = -ENOMEM;
			break;
		}
		buf = nbuf;
		len = ubt_readlink(ctx->fs, ino, buf, size);
		if (len != -ERANGE || size >= 1u << 20)
			break;
		size *= 4;
	}
	if (len < 0 || (size_t)len > size) {
		fuse_reply_err(req, to_errno(ctx, "readlink", len < 0 ? len : -EIO));
		goto cleanup;
	}
	buf[len] = '\0';
	fuse_reply_readlink(req, buf);
cleanup:
	free(buf);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct stat st;
	int ret;

	ret = ubt_getattr(ctx->fs, ino, &st);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "opendir", ret));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, ctx->rdonly ? EROFS : EISDIR);
		return;
	}
	fi->fh = 0;
	fi->cache_readdir = ctx->rdonly;
	fi->keep_cache = ctx->rdonly;
	fuse_reply_open(req, fi);
}

/*
 * Directory listing in two steps: the library's filler only collects entries (no library call
 * is made from inside the callback), then the reply buffer is built, taking references for
 * readdirplus entries as they are added.
 */
struct dent {
	char *name;
	ubt_ino ino;
	unsigned d_type;
	uint64_t next_off;
	ubt_ino ref;            /* readdirplus: the reference handed to the kernel, or 0 */
};

struct dent_batch {
	fuse_req_t req;
	bool plus;
	size_t room;            /* bytes of the reply still to fill */
	size_t used;            /* bytes the collected entries will take */
	struct dent *ents;
	size_t nr, cap;
	int err;
};

static bool is_dot_or_dotdot(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

static int collect_dent(void *arg, const char *name, size_t name_len, ubt_ino ino,
			unsigned d_type, uint64_t next_off)
{
	struct dent_batch *b = arg;
	struct dent *d;
	size_t need;
	char *copy;

	if (name_len == 0 || name_len > NAME_MAX || memchr(name, '\0', name_len))
		return 0; /* a name no directory entry can carry: skip it */
	copy = strndup(name, name_len);
	if (!copy) {
		b->err = -ENOMEM;
		return 1;
	}
	need = b->plus ? fuse_add_direntry_plus(b->req, NULL, 0, copy, NULL, 0)
		       : fuse_add_direntry(b->req, NULL, 0, copy, NULL, 0);
	if (b->used + need > b->room) {
		free(copy);
		return 1;
	}
	if (b->nr == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 32;
		struct dent *n = realloc(b->ents, ncap * sizeof(*n));

		if (!n) {
			free(copy);
			b->err = -ENOMEM;
			return 1;
		}
		b->ents = n;
		b->cap = ncap;
	}
	d = &b->ents[b->nr++];
	d->name = copy;
	d->ino = ino;
	d->d_type = d_type;
	d->next_off = next_off;
	d->ref = 0;
	b->used += need;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t dir, size_t size, off_t off, bool plus)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct dent_batch b = { .req = req, .plus = plus, .room = size };
	char *buf = NULL;
	size_t pos = 0;
	int ret;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = ubt_readdir(ctx->fs, dir, (uint64_t)off, collect_dent, &b);
	if (ret == 0)
		ret = b.err;
	if (ret && b.nr == 0) {
		fuse_reply_err(req, to_errno(ctx, "readdir", ret));
		goto cleanup;
	}
	for (size_t i = 0; i < b.nr; i++) {
		struct dent *d = &b.ents[i];
		struct stat st;
		size_t len;

		memset(&st, 0, sizeof(st));
		st.st_ino = d->ino;
		st.st_mode = (mode_t)(d->d_type & 0xf) << 12;
		if (plus) {
			struct fuse_entry_param e;
			ubt_ino ino = 0;

			if (is_dot_or_dotdot(d->name)) {
				/* The kernel ignores . and ..: no node id, no reference. */
				if (ubt_getattr(ctx->fs, d->ino, &st) == 0)
					st.st_mode &= S_IFMT;
				memset(&e, 0, sizeof(e));
				e.attr = st;
			} else {
				ret = ubt_lookup(ctx->fs, dir, d->name, &ino, &st);
				if (ret) {
					if (pos == 0) {
						fuse_reply_err(req, to_errno(ctx, "readdirplus", ret));
						goto cleanup;
					}
					break; /* reply with what we have; the next call retries */
				}
				fill_entry(ctx, &e, ino, &st);
			}
			len = fuse_add_direntry_plus(req, buf + pos, size - pos, d->name, &e,
						     (off_t)d->next_off);
			if (len > size - pos) {
				if (ino)
					ubt_forget(ctx->fs, ino, 1);
				break;
			}
			d->ref = ino;
		} else {
			struct stat full;

			/* d_ino must agree with st_ino, which is not the node id. */
			if (ubt_getattr(ctx->fs, d->ino, &full) == 0)
				st.st_ino = full.st_ino;
			len = fuse_add_direntry(req, buf + pos, size - pos, d->name, &st,
						(off_t)d->next_off);
			if (len > size - pos)
				break;
		}
		pos += len;
	}
	if (fuse_reply_buf(req, buf, pos)) {
		/* The kernel never saw these entries (e.g. the request was interrupted). */
		for (size_t i = 0; i < b.nr; i++) {
			if (b.ents[i].ref)
				ubt_forget(ctx->fs, b.ents[i].ref, 1);
		}
	}
cleanup:
	for (size_t i = 0; i < b.nr; i++)
		free(b.ents[i].name);
	free(b.ents);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

/* Flags for ubt_open: what the kernel already did (creation) or we do (truncation) is left out. */
static int lib_open_flags(const struct ubtf_ctx *ctx, int flags)
{
	flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC);
	if (ctx->writeback_cache && !(flags & O_DIRECT)) {
		/*
		 * The kernel's page cache owns O_APPEND (it sends the offset), and it reads through
		 * any handle to fill a page it partly writes: a write-only handle must read too.
		 */
		flags &= ~O_APPEND;
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
	}
	return flags;
}

/*
 * Open @ino for @fi (and truncate it when @fi asks for O_TRUNC), fill @fi for the reply.
 * On success *@out is the handle the reply will carry.
 */
static int open_file(struct ubtf_ctx *ctx, fuse_ino_t ino, struct fuse_file_info *fi,
		     ubt_file **out)
{
	ubt_file *f = NULL;
	int ret;

	if (ctx->rdonly && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
		return -EROFS;
	ret = ubt_open(ctx->fs, ino, lib_open_flags(ctx, fi->flags), &f);
	if (ret)
		return ret;
	if (fi->flags & O_TRUNC) {
		/* POSIX: an existing file opened with O_TRUNC gets new mtime and ctime. */
		struct stat attr, st;

		memset(&attr, 0, sizeof(attr));
		ret = ubt_setattr(ctx->fs, ino, &attr, UBT_SET_SIZE | UBT_SET_MTIME_NOW, &st);
		if (ret) {
			ubt_close(f);
			return ret;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	fi->direct_io = (fi->flags & O_DIRECT) != 0; /* no kernel page cache: the library's direct path */
	fi->keep_cache = ctx->rdonly && !fi->direct_io; /* the image cannot change under a read-only mount */
	fi->noflush = ctx->rdonly;
	*out = f;
	return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	ubt_file *f = NULL;
	int ret;

	ret = open_file(ctx, ino, fi, &f);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "open", ret));
		return;
	}
	if (fuse_reply_open(req, fi))
		ubt_close(f); /* interrupted: the kernel will not release it */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	ubt_file *f = (ubt_file *)(uintptr_t)fi->fh;
	const bool direct = fi->flags & O_DIRECT;
	size_t done = 0;
	char *buf;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* The kernel takes a short read for end of file: fill the buffer unless at EOF. */
	while (done < size) {
		ssize_t n = direct ? ubt_pread_direct(f, buf + done, size - done, (uint64_t)off + done)
				   : ubt_pread(f, buf + done, size - done, (uint64_t)off + done);

		if (n < 0) {
			/*
			 * Even after a part was read: a short reply would mean end of file to the kernel,
			 * which would show zeros in place of the unreadable block. The error makes it fall
			 * back to single pages, so only the bad block's reads fail.
			 */
			fuse_reply_err(req, to_errno(ctx, "read", n));
			goto cleanup;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	fuse_reply_buf(req, buf, done);
cleanup:
	free(buf);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret = ubt_close((ubt_file *)(uintptr_t)fi->fh);

	fuse_reply_err(req, ret ? to_errno(ctx, "release", ret) : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct statvfs st;
	int ret;

	memset(&st, 0, sizeof(st));
	ret = ubt_statfs(ctx->fs, &st);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "statfs", ret));
		return;
	}
	if (ctx->rdonly)
		st.f_flag |= ST_RDONLY;
	fuse_reply_statfs(req, &st);
}

/* Reply to a getxattr/listxattr: @len is the library's result for a @size byte buffer. */
static void reply_xattr(fuse_req_t req, const char *op, ssize_t len, const void *buf, size_t size)
{
	if (len < 0)
		fuse_reply_err(req, to_errno(req_ctx(req), op, len));
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if ((size_t)len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	char *buf = NULL;
	ssize_t len;

	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	len = ubt_getxattr(ctx->fs, ino, name, buf, size);
	if (len == -ENODATA) {
		fuse_reply_err(req, ENODATA); /* the common case: not worth a log line */
		goto cleanup;
	}
	reply_xattr(req, "getxattr", len, buf, size);
cleanup:
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	char *buf = NULL;
	ssize_t len;

	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	len = ubt_listxattr(ctx->fs, ino, buf, size);
	reply_xattr(req, "listxattr", len, buf, size);
	free(buf);
}

/*
 * access(2): with default_permissions (always on) the kernel has already checked the mode bits,
 * so only what the mount itself forbids is left: writing.
 */
static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct stat st;
	int ret;

	ret = ubt_getattr(ctx->fs, ino, &st);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "access", ret));
		return;
	}
	fuse_reply_err(req, (ctx->rdonly && (mask & W_OK)) ? EROFS : 0);
}

/* ---- changing the filesystem ---- */

/*
 * Owner and mode of a new inode in @parent: the caller's uid and gid, except in a set-group-id
 * directory, whose gid the new inode takes (and a new directory its S_ISGID bit), as POSIX and
 * Linux do. The kernel has applied the umask and stripped S_ISGID where the caller may not set it.
 */
static int new_owner(struct ubtf_ctx *ctx, fuse_req_t req, fuse_ino_t parent, mode_t *mode,
		     uid_t *uid, gid_t *gid)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct stat pst;
	int ret;

	*uid = fc->uid;
	*gid = fc->gid;
	ret = ubt_getattr(ctx->fs, parent, &pst);
	if (ret)
		return ret;
	if (!S_ISDIR(pst.st_mode))
		return -ENOTDIR;
	if (pst.st_mode & S_ISGID) {
		*gid = pst.st_gid;
		if (S_ISDIR(*mode))
			*mode |= S_ISGID;
	}
	return 0;
}

/*
 * new_owner, and with -o acl the final mode and the ACLs a new inode inherits from @parent
 * (ubtf_acl_inherit; @init is empty otherwise).
 */
static int new_inode_attrs(struct ubtf_ctx *ctx, fuse_req_t req, fuse_ino_t parent, mode_t *mode,
			   uid_t *uid, gid_t *gid, struct ubtf_acl_init *init)
{
	int ret;

	memset(init, 0, sizeof(*init));
	ret = new_owner(ctx, req, parent, mode, uid, gid);
	if (!ret && ctx->acl_active)
		ret = ubtf_acl_inherit(req, ctx->fs, parent, mode, init);
	return ret;
}

/*
 * Store the inherited ACLs on the new inode @ino, named @name in @parent. If that fails, the
 * inode is removed again and the request fails: no inode is left with less protection than
 * its directory asked for. Returns @ret when it is already an error.
 */
static int new_inode_acls(struct ubtf_ctx *ctx, fuse_ino_t parent, const char *name, ubt_ino ino,
			  const struct ubtf_acl_init *init, int ret)
{
	if (ret || (!init->access && !init->dflt))
		return ret;
	ret = ubtf_acl_apply(ctx->fs, ino, init);
	if (ret) {
		int undo = init->dflt ? ubt_rmdir(ctx->fs, parent, name) : ubt_unlink(ctx->fs, parent, name);

		if (undo)
			ubtf_err("%s: inherited ACL not stored (%s) and the new entry not removed (%s)", name,
				 ubt_strerror(ret), ubt_strerror(undo));
		ubt_forget(ctx->fs, ino, 1);
	}
	return ret;
}

/* Reply to a creating request whose library call returned @ret and, on success, one reference. */
static void reply_new_entry(fuse_req_t req, const char *op, int ret, ubt_ino ino,
			    const struct stat *st)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct fuse_entry_param e;

	if (ret) {
		fuse_reply_err(req, to_errno(ctx, op, ret));
		return;
	}
	fill_entry(ctx, &e, ino, st);
	if (fuse_reply_entry(req, &e))
		ubt_forget(ctx->fs, ino, 1); /* the kernel never saw it */
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct ubtf_acl_init init;
	struct stat st;
	ubt_ino ino = 0;
	uid_t uid;
	gid_t gid;
	int ret;

	ret = new_inode_attrs(ctx, req, parent, &mode, &uid, &gid, &init);
	if (!ret) {
		ret = ubt_mknod(ctx->fs, parent, name, mode, rdev, uid, gid, &ino, &st);
		ret = new_inode_acls(ctx, parent, name, ino, &init, ret);
	}
	ubtf_acl_init_free(&init);
	reply_new_entry(req, "mknod", ret, ino, &st);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct ubtf_acl_init init;
	struct stat st;
	ubt_ino ino = 0;
	uid_t uid;
	gid_t gid;
	int ret;

	mode = S_IFDIR | (mode & 07777); /* the kernel sends the permission bits only */
	ret = new_inode_attrs(ctx, req, parent, &mode, &uid, &gid, &init);
	if (!ret) {
		ret = ubt_mkdir(ctx->fs, parent, name, mode, uid, gid, &ino, &st);
		ret = new_inode_acls(ctx, parent, name, ino, &init, ret);
	}
	ubtf_acl_init_free(&init);
	reply_new_entry(req, "mkdir", ret, ino, &st);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	mode_t mode = S_IFLNK | 0777;
	struct stat st;
	ubt_ino ino = 0;
	uid_t uid;
	gid_t gid;
	int ret;

	ret = new_owner(ctx, req, parent, &mode, &uid, &gid);
	if (!ret)
		ret = ubt_symlink(ctx->fs, parent, name, link, uid, gid, &ino, &st);
	reply_new_entry(req, "symlink", ret, ino, &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct stat st;
	int ret;

	ret = ubt_link(ctx->fs, ino, newparent, newname, &st);
	reply_new_entry(req, "link", ret, ino, &st);
}

/*
 * create: a new regular file, opened. The kernel sends it for a name it believes absent; when
 * the name exists after all and O_EXCL was not asked for, the existing file is opened instead,
 * as open(2) with O_CREAT does.
 */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	struct fuse_entry_param e;
	struct ubtf_acl_init init;
	struct stat st;
	ubt_file *f = NULL;
	ubt_ino ino = 0;
	uid_t uid;
	gid_t gid;
	int ret;

	mode = S_IFREG | (mode & 07777);
	ret = new_inode_attrs(ctx, req, parent, &mode, &uid, &gid, &init);
	if (ret)
		goto fail;
	ret = ubt_mknod(ctx->fs, parent, name, mode, 0, uid, gid, &ino, &st);
	if (!ret) {
		ret = new_inode_acls(ctx, parent, name, ino, &init, ret);
		if (ret)
			ino = 0; /* removed and forgotten */
	}
	ubtf_acl_init_free(&init);
	if (ret == -EEXIST && !(fi->flags & O_EXCL)) {
		ret = ubt_lookup(ctx->fs, parent, name, &ino, &st);
		if (ret)
			goto fail;
		if (!S_ISREG(st.st_mode)) {
			ret = S_ISDIR(st.st_mode) ? -EISDIR : -EEXIST;
			goto fail_forget;
		}
		ret = open_file(ctx, ino, fi, &f);
	} else if (ret == 0) {
		/* A new file is empty: no truncation to do. */
		fi->flags &= ~O_TRUNC;
		ret = open_file(ctx, ino, fi, &f);
	}
	if (ret)
		goto fail_forget;
	if (fi->flags & O_TRUNC) {
		struct stat now;

		if (ubt_getattr(ctx->fs, ino, &now) == 0)
			st = now; /* the attributes after the truncation */
	}
	fill_entry(ctx, &e, ino, &st);
	if (fuse_reply_create(req, &e, fi)) {
		/* The kernel never saw the entry nor the handle. */
		ubt_close(f);
		ubt_forget(ctx->fs, ino, 1);
	}
	return;
fail_forget:
	if (ino)
		ubt_forget(ctx->fs, ino, 1);
fail:
	fuse_reply_err(req, to_errno(ctx, "create", ret));
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret = ubt_unlink(ctx->fs, parent, name);

	fuse_reply_err(req, ret ? to_errno(ctx, "unlink", ret) : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret = ubt_rmdir(ctx->fs, parent, name);

	fuse_reply_err(req, ret ? to_errno(ctx, "rmdir", ret) : 0);
}

/* rename(2) and renameat2(2): RENAME_NOREPLACE and RENAME_EXCHANGE; RENAME_WHITEOUT is not. */
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	unsigned uflags = 0;
	int ret;

	if ((flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) ||
	    ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		uflags |= UBT_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		uflags |= UBT_RENAME_EXCHANGE;
	ret = ubt_rename(ctx->fs, parent, name, newparent, newname, uflags);
	fuse_reply_err(req, ret ? to_errno(ctx, "rename", ret) : 0);
}

/*
 * setattr: chmod, chown, truncate/ftruncate, utimensat. The *_NOW bits replace the explicit
 * times (the kernel sends both for UTIME_NOW). A truncation through a file handle (ftruncate)
 * is done on the inode all the same: the handle's inode, kept alive by the open file even when
 * it has no name left. Set-id bits to clear arrive as a mode change (no HANDLE_KILLPRIV).
 */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	unsigned set = 0;
	struct stat st;
	int ret;

	if (to_set & FUSE_SET_ATTR_MODE)
		set |= UBT_SET_MODE;
	if (to_set & FUSE_SET_ATTR_UID)
		set |= UBT_SET_UID;
	if (to_set & FUSE_SET_ATTR_GID)
		set |= UBT_SET_GID;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (attr->st_size < 0) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		set |= UBT_SET_SIZE;
	}
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		set |= UBT_SET_ATIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		set |= UBT_SET_ATIME;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		set |= UBT_SET_MTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		set |= UBT_SET_MTIME;
	if (to_set & FUSE_SET_ATTR_CTIME)
		set |= UBT_SET_CTIME;

	if (set)
		ret = ubt_setattr(ctx->fs, ino, attr, set, &st);
	else
		ret = ubt_getattr(ctx->fs, ino, &st);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "setattr", ret));
		return;
	}
	fuse_reply_attr(req, &st, ctx->attr_timeout);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret;

	if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!ubtf_is_acl_xattr(name)) {
		ret = ubt_setxattr(ctx->fs, ino, name, value, size, flags);
		fuse_reply_err(req, ret ? to_errno(ctx, "setxattr", ret) : 0);
		return;
	}
	ret = ubtf_set_acl_xattr(req, ctx->fs, ino, name, value, size, flags);
	fuse_reply_err(req, ret ? to_errno(ctx, "setxattr", ret) : 0);
	/* The mode bits may have changed behind the kernel's back: drop its cached attributes. */
	if (ret == 0 && ctx->se)
		fuse_lowlevel_notify_inval_inode(ctx->se, ino, -1, 0);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret = ubt_removexattr(ctx->fs, ino, name);

	if (ret == -ENODATA) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	fuse_reply_err(req, ret ? to_errno(ctx, "removexattr", ret) : 0);
}

/*
 * write: the kernel gives the offset (for O_APPEND the end of file as it knows it; the handle
 * was opened with O_APPEND, so the library appends whatever the offset says). A short write
 * after some bytes went in (ENOSPC part-way) is reported as such; the next write gets the error.
 */
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	ubt_file *f = (ubt_file *)(uintptr_t)fi->fh;
	const bool direct = fi->flags & O_DIRECT;
	size_t done = 0;
	int ret;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	while (done < size) {
		ssize_t n = direct		 ? ubt_pwrite_direct(f, buf + done, size - done, (uint64_t)off + done)
			    : ctx->writeback_cache ? ubt_pwrite_accepted(f, buf + done, size - done, (uint64_t)off + done)
						 : ubt_pwrite(f, buf + done, size - done, (uint64_t)off + done);

		if (n < 0) {
			if (done == 0) {
				fuse_reply_err(req, to_errno(ctx, "write", n));
				return;
			}
			break;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	/* O_SYNC / O_DSYNC: durable before write(2) returns. */
	if (done && (fi->flags & O_DSYNC)) {
		ret = ubt_fsync(f, (fi->flags & O_SYNC) != O_SYNC);
		if (ret) {
			fuse_reply_err(req, to_errno(ctx, "write (sync)", ret));
			return;
		}
	}
	fuse_reply_write(req, done);
}

/* close(2): writes are already in the library; errors were reported by write itself. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret;

	if (ctx->rdonly) {
		fuse_reply_err(req, 0);
		return;
	}
	ret = fi && fi->fh ? ubt_fsync((ubt_file *)(uintptr_t)fi->fh, datasync) : ubt_sync(ctx->fs);
	fuse_reply_err(req, ret ? to_errno(ctx, "fsync", ret) : 0);
}

/* Directories have no handle of their own: a directory fsync commits everything. */
static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret;

	if (ctx->rdonly) {
		fuse_reply_err(req, 0);
		return;
	}
	ret = ubt_sync(ctx->fs);
	fuse_reply_err(req, ret ? to_errno(ctx, "fsyncdir", ret) : 0);
}

/* fallocate(2): preallocate, punch a hole, zero a range (other modes: EOPNOTSUPP). */
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	int ret;

	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (ctx->rdonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = ubt_fallocate((ubt_file *)(uintptr_t)fi->fh, mode, (uint64_t)offset, (uint64_t)length);
	fuse_reply_err(req, ret ? to_errno(ctx, "fallocate", ret) : 0);
}

/*
 * FS_IOC_GETFLAGS/SETFLAGS (chattr, lsattr). FUSE passes these restricted ioctls with the data
 * size their number encodes: a long for the native commands, an int for the 32-bit ones
 * (FUSE_IOCTL_COMPAT). The flags themselves are an int either way: read the first 4 bytes,
 * answer 4 bytes (the kernel copies back only what the reply holds). The kernel's own
 * SETFLAGS path reads the old attributes with FS_IOC_FSGETXATTR first (fileattr_get without
 * a format), so that one is answered too, with the xflags btrfs maps (FSSETXATTR likewise).
 */
#define UBTF_IOC_GETFLAGS _IOR('f', 1, long)
#define UBTF_IOC_SETFLAGS _IOW('f', 2, long)
#define UBTF_IOC32_GETFLAGS _IOR('f', 1, int)
#define UBTF_IOC32_SETFLAGS _IOW('f', 2, int)
#define UBTF_IOC_FSGETXATTR _IOR('X', 31, struct ubtf_fsxattr)
#define UBTF_IOC_FSSETXATTR _IOW('X', 32, struct ubtf_fsxattr)
#define UBTF_FL_IMMUTABLE_APPEND (0x10u | 0x20u)

struct ubtf_fsxattr { /* struct fsxattr */
	uint32_t xflags, extsize, nextents, projid, cowextsize;
	unsigned char pad[8];
};

/* FS_*_FL <-> FS_XFLAG_* for the flags btrfs shows as xflags (sync, immutable, append, nodump, noatime). */
static const unsigned ubtf_xmap[][2] = {
	{ 0x08, 0x20 }, { 0x10, 0x08 }, { 0x20, 0x10 }, { 0x40, 0x80 }, { 0x80, 0x40 },
};

static void op_ioctl_xattr(fuse_req_t req, struct ubtf_ctx *ctx, fuse_ino_t ino, bool set, const void *in_buf,
			   size_t in_bufsz)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct ubtf_fsxattr fa;
	unsigned cur, val, all = 0;
	struct stat st;
	int ret;

	ret = ubt_get_flags(ctx->fs, ino, &cur);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "fsgetxattr", ret));
		return;
	}
	if (!set) {
		memset(&fa, 0, sizeof(fa));
		for (size_t i = 0; i < sizeof(ubtf_xmap) / sizeof(ubtf_xmap[0]); i++)
			if (cur & ubtf_xmap[i][0])
				fa.xflags |= ubtf_xmap[i][1];
		fuse_reply_ioctl(req, 0, &fa, sizeof(fa));
		return;
	}
	if (in_bufsz < sizeof(fa)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(&fa, in_buf, sizeof(fa));
	val = cur;
	for (size_t i = 0; i < sizeof(ubtf_xmap) / sizeof(ubtf_xmap[0]); i++) {
		all |= ubtf_xmap[i][1];
		val = (fa.xflags & ubtf_xmap[i][1]) ? (val | ubtf_xmap[i][0]) : (val & ~ubtf_xmap[i][0]);
	}
	if ((fa.xflags & ~all) || fa.extsize || fa.projid || fa.cowextsize) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	ret = ctx->rdonly ? -EROFS : ubt_getattr(ctx->fs, ino, &st);
	if (!ret && fc->uid != 0 && (fc->uid != st.st_uid || ((val ^ cur) & UBTF_FL_IMMUTABLE_APPEND)))
		ret = -EPERM;
	if (!ret)
		ret = ubt_set_flags(ctx->fs, ino, val);
	if (ret)
		fuse_reply_err(req, to_errno(ctx, "fssetxattr", ret));
	else
		fuse_reply_ioctl(req, 0, NULL, 0);
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf, size_t in_bufsz,
		     size_t out_bufsz)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	unsigned cur, val;
	struct stat st;
	int ret;

	(void)arg;
	(void)fi;
	(void)flags;
	if (cmd == UBTF_IOC_FSGETXATTR || cmd == UBTF_IOC_FSSETXATTR) {
		op_ioctl_xattr(req, ctx, ino, cmd == UBTF_IOC_FSSETXATTR, in_buf, in_bufsz);
		return;
	}
	if (cmd == UBTF_IOC_GETFLAGS || cmd == UBTF_IOC32_GETFLAGS) {
		if (out_bufsz < sizeof(int)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		ret = ubt_get_flags(ctx->fs, ino, &cur);
		if (ret) {
			fuse_reply_err(req, to_errno(ctx, "getflags", ret));
			return;
		}
		val = cur;
		fuse_reply_ioctl(req, 0, &val, sizeof(int));
		return;
	}
	if (cmd != UBTF_IOC_SETFLAGS && cmd != UBTF_IOC32_SETFLAGS) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	if (in_bufsz < sizeof(int)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(&val, in_buf, sizeof(int));
	if (ctx->rdonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* As the kernel: the owner (or root) may set flags; immutable/append-only need root. */
	ret = ubt_getattr(ctx->fs, ino, &st);
	if (!ret)
		ret = ubt_get_flags(ctx->fs, ino, &cur);
	if (!ret && fc->uid != 0 &&
	    (fc->uid != st.st_uid || ((val ^ cur) & UBTF_FL_IMMUTABLE_APPEND)))
		ret = -EPERM;
	if (!ret)
		ret = ubt_set_flags(ctx->fs, ino, val);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "setflags", ret));
		return;
	}
	fuse_reply_ioctl(req, 0, NULL, 0);
}

const struct fuse_lowlevel_ops ubtf_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.access = op_access,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.link = op_link,
	.create = op_create,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.setattr = op_setattr,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.fsyncdir = op_fsyncdir,
	.fallocate = op_fallocate,
	.ioctl = op_ioctl,
};
