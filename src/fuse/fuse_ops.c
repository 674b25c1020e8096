/*
 * fuse_ops.c — the FUSE low-level operations: each request is translated to one public libubtrfs
 * call (include/ubtrfs.h) and its result to a reply. FUSE node ids are ubt_ino values
 * (UBT_ROOT_INO == FUSE_ROOT_ID); every reply that hands the kernel a node id (lookup,
 * readdirplus) takes exactly one library reference, which the kernel returns with forget.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
	/* Nothing changes under a read-only mount: let the kernel keep what it read. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	ubt_file *f = NULL;
	int ret;

	if (ctx->rdonly && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = ubt_open(ctx->fs, ino, fi->flags, &f);
	if (ret) {
		fuse_reply_err(req, to_errno(ctx, "open", ret));
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	fi->keep_cache = ctx->rdonly; /* the image cannot change under a read-only mount */
	fi->noflush = 1;
	if (fuse_reply_open(req, fi))
		ubt_close(f); /* interrupted: the kernel will not release it */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ubtf_ctx *ctx = req_ctx(req);
	ubt_file *f = (ubt_file *)(uintptr_t)fi->fh;
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
		ssize_t n = ubt_pread(f, buf + done, size - done, (uint64_t)off + done);

		if (n < 0) {
			if (done == 0) {
				fuse_reply_err(req, to_errno(ctx, "read", n));
				goto cleanup;
			}
			break;
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
};
