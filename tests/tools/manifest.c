/*
 * manifest — print a deterministic description of a directory tree, one line per entry, so two
 * views of the same filesystem (the kernel's btrfs, ubtrfs through FUSE, libubtrfs directly) can
 * be compared with diff(1).
 *
 *   manifest dir PATH
 *   manifest lib IMAGE [--subvol PATH | --subvolid N] [--root PATH] [--nologreplay]
 *   manifest cat IMAGE PATH [OFFSET [LENGTH]] [--subvol PATH | --subvolid N]
 *   manifest randread-dir FILE N
 *   manifest randread-lib IMAGE PATH N [--subvol PATH | --subvolid N]
 *
 * randread-*: N single pread calls at pseudo-random offsets and lengths (unaligned, some past
 * EOF; the sequence depends only on N and the file size), one line each: offset, length asked,
 * bytes returned, XXH3_64 of them. A short read inside the file shows as a difference.
 *
 * `lib --root PATH` walks only the subtree at PATH (inside the mounted subvolume; the lines
 * still start with "."). `cat` copies LENGTH bytes (default: to EOF) of the file at PATH from
 * OFFSET to stdout through the library, failing with the library's error if a read fails.
 *
 * Line format (fields separated by one space; names are escaped, see esc_put()):
 *
 *   PATH TYPE MODE UID GID SIZE MTIME NLINK EXTRA [xattr NAME=HASH ...]
 *
 *   PATH   "." for the root, otherwise "./a/b"
 *   TYPE   dir reg lnk chr blk fifo sock
 *   MODE   full st_mode in octal
 *   MTIME  sec.nsec (9 digits)
 *   EXTRA  reg: XXH3_128 of the contents (hex); lnk: "->" and the escaped target;
 *          chr/blk: major:minor; otherwise "-"
 *   xattrs sorted by name, the value as XXH3_64 hex
 *
 * Lines are sorted by PATH (bytewise). atime, ctime and inode numbers are left out on purpose.
 * Any error (including EIO while reading a file) is printed on stderr and the exit status is 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <xxhash.h>

#include "ubtrfs.h"

#define READ_CHUNK (1u << 20)

/* ------------------------------------------------------------------------------------------ */
/* Output collection                                                                          */

struct line {
	char *path; /* escaped path, the sort key */
	char *text; /* the whole line without '\n' */
};

static struct line *lines;
static size_t nlines, caplines;
static unsigned char *iobuf;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("manifest: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	/* _exit: no leak report for what the failed walk still held; the status is the report. */
	_exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory");
	return p;
}

static void *xrealloc(void *old, size_t n)
{
	void *p = realloc(old, n ? n : 1);

	if (!p)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		die("out of memory");
	return p;
}

/* Escape bytes so every name stays on one line and one field: printable ASCII except space and
 * backslash as is, everything else as \xHH. */
static void esc_put(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c > 0x20 && c < 0x7f && c != '\\' && c != '=')
			fputc(c, f);
		else
			fprintf(f, "\\x%02x", c);
	}
}

static char *esc_str(const char *s, size_t len)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);

	if (!f)
		die("open_memstream: %s", strerror(errno));
	esc_put(f, s, len);
	fclose(f);
	return out;
}

static void add_line(char *path, char *text)
{
	if (nlines == caplines) {
		caplines = caplines ? caplines * 2 : 1024;
		lines = xrealloc(lines, caplines * sizeof(*lines));
	}
	lines[nlines].path = path;
	lines[nlines].text = text;
	nlines++;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(((const struct line *)a)->path, ((const struct line *)b)->path);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_all(void)
{
	if (nlines > 1)
		qsort(lines, nlines, sizeof(*lines), cmp_line);
	for (size_t i = 0; i < nlines; i++) {
		fputs(lines[i].text, stdout);
		fputc('\n', stdout);
		free(lines[i].path);
		free(lines[i].text);
	}
	free(lines);
	if (fflush(stdout) || ferror(stdout))
		die("writing output: %s", strerror(errno));
}

/* ------------------------------------------------------------------------------------------ */
/* The backend-neutral part: format one entry                                                 */

struct xattr_val {
	char *name;
	uint64_t hash;
};

struct entry {
	const char *relpath; /* "." or "./a/b", raw bytes */
	struct stat st;
	char extra[64];      /* hash or device numbers, or empty */
	char *link;          /* symlink target (raw), or NULL */
	size_t link_len;
	struct xattr_val *xattrs;
	size_t nxattrs;
};

static const char *type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFDIR: return "dir";
	case S_IFREG: return "reg";
	case S_IFLNK: return "lnk";
	case S_IFCHR: return "chr";
	case S_IFBLK: return "blk";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "sock";
	default: return "unknown";
	}
}

static int cmp_xattr(const void *a, const void *b)
{
	return strcmp(((const struct xattr_val *)a)->name, ((const struct xattr_val *)b)->name);
}

static void emit(struct entry *e)
{
	char *text = NULL;
	size_t textlen = 0;
	FILE *f = open_memstream(&text, &textlen);
	const struct stat *st = &e->st;

	if (!f)
		die("open_memstream: %s", strerror(errno));
	esc_put(f, e->relpath, strlen(e->relpath));
	fprintf(f, " %s %o %u %u %lld %lld.%09ld %lu ", type_name(st->st_mode), (unsigned)st->st_mode,
		(unsigned)st->st_uid, (unsigned)st->st_gid, (long long)st->st_size,
		(long long)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec, (unsigned long)st->st_nlink);
	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		fputs(e->extra, f);
		break;
	case S_IFLNK:
		fputs("->", f);
		esc_put(f, e->link, e->link_len);
		break;
	case S_IFCHR:
	case S_IFBLK:
		fprintf(f, "%u:%u", major(st->st_rdev), minor(st->st_rdev));
		break;
	default:
		fputc('-', f);
		break;
	}
	if (e->nxattrs) {
		qsort(e->xattrs, e->nxattrs, sizeof(*e->xattrs), cmp_xattr);
		fputs(" xattr", f);
		for (size_t i = 0; i < e->nxattrs; i++) {
			fputc(' ', f);
			esc_put(f, e->xattrs[i].name, strlen(e->xattrs[i].name));
			fprintf(f, "=%016" PRIx64, e->xattrs[i].hash);
		}
	}
	fclose(f);
	add_line(esc_str(e->relpath, strlen(e->relpath)), text);

	for (size_t i = 0; i < e->nxattrs; i++)
		free(e->xattrs[i].name);
	free(e->xattrs);
	free(e->link);
	e->xattrs = NULL;
	e->nxattrs = 0;
	e->link = NULL;
}

static void hash_hex(XXH3_state_t *s, char out[64])
{
	XXH128_hash_t h = XXH3_128bits_digest(s);
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, h);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
}

/* Split a listxattr buffer into names and add each with its value's hash. */
typedef ssize_t (*getx_fn)(void *ctx, const char *name, void *buf, size_t size);

static void collect_xattrs(struct entry *e, const char *list, ssize_t len, getx_fn get, void *ctx)
{
	size_t n = 0;

	if (len > 0 && list[len - 1] != '\0')
		die("%s: listxattr returned a list that does not end in NUL", e->relpath);
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
		n++;
	e->xattrs = xmalloc(n * sizeof(*e->xattrs));
	e->nxattrs = 0;
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
		const char *name = list + i;
		ssize_t vlen;
		void *val;

		if (!*name)
			continue;
		for (;;) {
			vlen = get(ctx, name, NULL, 0);
			if (vlen < 0)
				die("%s: getxattr %s: %s", e->relpath, name, strerror((int)-vlen));
			val = xmalloc((size_t)vlen);
			ssize_t got = get(ctx, name, val, (size_t)vlen);
			if (got == -ERANGE) { /* grew in between */
				free(val);
				continue;
			}
			if (got < 0)
				die("%s: getxattr %s: %s", e->relpath, name, strerror((int)-got));
			vlen = got;
			break;
		}
		e->xattrs[e->nxattrs].name = xstrdup(name);
		e->xattrs[e->nxattrs].hash = XXH3_64bits(val, (size_t)vlen);
		e->nxattrs++;
		free(val);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Backend 1: a directory tree through the VFS                                                */

static ssize_t dir_getx(void *ctx, const char *name, void *buf, size_t size)
{
	ssize_t r = lgetxattr((const char *)ctx, name, buf, size);

	return r < 0 ? -errno : r;
}

static void dir_entry(const char *abspath, const char *relpath);

static void dir_walk(const char *abspath, const char *relpath)
{
	DIR *d = opendir(abspath);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d)
		die("%s: opendir: %s", relpath, strerror(errno));
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				die("%s: readdir: %s", relpath, strerror(errno));
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		size_t al = strlen(abspath) + strlen(names[i]) + 2;
		size_t rl = strlen(relpath) + strlen(names[i]) + 2;
		char *a = xmalloc(al), *r = xmalloc(rl);

		snprintf(a, al, "%s/%s", abspath, names[i]);
		snprintf(r, rl, "%s/%s", relpath, names[i]);
		dir_entry(a, r);
		free(a);
		free(r);
		free(names[i]);
	}
	free(names);
}

static void dir_entry(const char *abspath, const char *relpath)
{
	struct entry e = { .relpath = relpath };
	ssize_t len;

	if (lstat(abspath, &e.st))
		die("%s: lstat: %s", relpath, strerror(errno));

	if (S_ISREG(e.st.st_mode)) {
		int fd = open(abspath, O_RDONLY | O_NOFOLLOW | O_NOCTTY);
		XXH3_state_t *hs = XXH3_createState();
		uint64_t off = 0;

		if (fd < 0)
			die("%s: open: %s", relpath, strerror(errno));
		if (!hs)
			die("out of memory");
		XXH3_128bits_reset(hs);
		for (;;) {
			ssize_t r = pread(fd, iobuf, READ_CHUNK, (off_t)off);

			if (r < 0) {
				if (errno == EINTR)
					continue;
				die("%s: read at offset %" PRIu64 ": %s", relpath, off, strerror(errno));
			}
			if (r == 0)
				break;
			XXH3_128bits_update(hs, iobuf, (size_t)r);
			off += (uint64_t)r;
		}
		close(fd);
		hash_hex(hs, e.extra);
		XXH3_freeState(hs);
	} else if (S_ISLNK(e.st.st_mode)) {
		size_t cap = (size_t)e.st.st_size + 2;

		for (;;) {
			e.link = xrealloc(e.link, cap);
			len = readlink(abspath, e.link, cap);
			if (len < 0)
				die("%s: readlink: %s", relpath, strerror(errno));
			if ((size_t)len < cap)
				break;
			cap *= 2;
		}
		e.link_len = (size_t)len;
	}

	/* Extended attributes. */
	char *list = NULL;
	for (;;) {
		len = llistxattr(abspath, NULL, 0);
		if (len < 0 && (errno == ENOTSUP || errno == ENODATA)) {
			len = 0;
			break;
		}
		if (len < 0)
			die("%s: listxattr: %s", relpath, strerror(errno));
		if (len == 0)
			break;
		list = xrealloc(list, (size_t)len);
		ssize_t got = llistxattr(abspath, list, (size_t)len);
		if (got < 0 && errno == ERANGE)
			continue;
		if (got < 0)
			die("%s: listxattr: %s", relpath, strerror(errno));
		len = got;
		break;
	}
	collect_xattrs(&e, list, len, dir_getx, (void *)abspath);
	free(list);

	emit(&e);
	if (S_ISDIR(e.st.st_mode))
		dir_walk(abspath, relpath);
}

static int run_dir(const char *root)
{
	dir_entry(root, ".");
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Backend 2: libubtrfs directly                                                              */

static ubt_fs *gfs;
static unsigned gmount_flags = UBT_MOUNT_RDONLY;

static void ldie(int err, const char *relpath, const char *what)
{
	die("%s: %s: %s", relpath, what, ubt_strerror(err));
}

struct lx_ctx {
	ubt_ino ino;
};

static ssize_t lib_getx(void *ctx, const char *name, void *buf, size_t size)
{
	return ubt_getxattr(gfs, ((struct lx_ctx *)ctx)->ino, name, buf, size);
}

struct name_list {
	char **names;
	size_t n, cap;
	uint64_t next_off;
};

static int lib_filler(void *ctx, const char *name, size_t name_len, ubt_ino ino, unsigned d_type,
		      uint64_t next_off)
{
	struct name_list *l = ctx;

	l->next_off = next_off;
	if ((name_len == 1 && name[0] == '.') || (name_len == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	if (memchr(name, '\0', name_len) || memchr(name, '/', name_len))
		die("directory entry with an invalid name (%zu bytes)", name_len);
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->names = xrealloc(l->names, l->cap * sizeof(*l->names));
	}
	char *s = xmalloc(name_len + 1);
	memcpy(s, name, name_len);
	s[name_len] = '\0';
	l->names[l->n++] = s;
	return 0;
}

static void lib_entry(ubt_ino ino, const struct stat *st, const char *relpath);

static void lib_walk(ubt_ino dir, const char *relpath)
{
	struct name_list l = { 0 };
	int ret = ubt_readdir(gfs, dir, 0, lib_filler, &l);

	if (ret < 0)
		ldie(ret, relpath, "readdir");
	if (l.n > 1)
		qsort(l.names, l.n, sizeof(*l.names), cmp_str);
	for (size_t i = 0; i < l.n; i++) {
		size_t rl = strlen(relpath) + strlen(l.names[i]) + 2;
		char *r = xmalloc(rl);
		struct stat st;
		ubt_ino ino;

		snprintf(r, rl, "%s/%s", relpath, l.names[i]);
		ret = ubt_lookup(gfs, dir, l.names[i], &ino, &st);
		if (ret < 0)
			ldie(ret, r, "lookup");
		lib_entry(ino, &st, r);
		ubt_forget(gfs, ino, 1);
		free(r);
		free(l.names[i]);
	}
	free(l.names);
}

static void lib_entry(ubt_ino ino, const struct stat *lst, const char *relpath)
{
	struct entry e = { .relpath = relpath };
	ssize_t len;
	int ret;

	/* getattr as well as lookup: both must agree, and FUSE uses both. */
	ret = ubt_getattr(gfs, ino, &e.st);
	if (ret < 0)
		ldie(ret, relpath, "getattr");
	if (lst && (lst->st_mode != e.st.st_mode || lst->st_size != e.st.st_size ||
		    lst->st_nlink != e.st.st_nlink || lst->st_ino != e.st.st_ino))
		die("%s: lookup and getattr disagree (mode %o/%o size %lld/%lld nlink %lu/%lu)", relpath,
		    (unsigned)lst->st_mode, (unsigned)e.st.st_mode, (long long)lst->st_size,
		    (long long)e.st.st_size, (unsigned long)lst->st_nlink, (unsigned long)e.st.st_nlink);

	if (S_ISREG(e.st.st_mode)) {
		ubt_file *f;
		XXH3_state_t *hs = XXH3_createState();
		uint64_t off = 0;

		if (!hs)
			die("out of memory");
		ret = ubt_open(gfs, ino, O_RDONLY, &f);
		if (ret < 0)
			ldie(ret, relpath, "open");
		XXH3_128bits_reset(hs);
		for (;;) {
			ssize_t r = ubt_pread(f, iobuf, READ_CHUNK, off);

			if (r < 0)
				die("%s: read at offset %" PRIu64 ": %s", relpath, off, ubt_strerror((int)r));
			if (r == 0)
				break;
			if ((size_t)r > READ_CHUNK)
				die("%s: pread returned %zd for %u bytes", relpath, r, READ_CHUNK);
			XXH3_128bits_update(hs, iobuf, (size_t)r);
			off += (uint64_t)r;
		}
		ret = ubt_close(f);
		if (ret < 0)
			ldie(ret, relpath, "close");
		hash_hex(hs, e.extra);
		XXH3_freeState(hs);
	} else if (S_ISLNK(e.st.st_mode)) {
		size_t cap = (size_t)e.st.st_size + 2;

		for (;;) {
			e.link = xrealloc(e.link, cap);
			len = ubt_readlink(gfs, ino, e.link, cap);
			if (len == -ERANGE || (len >= 0 && (size_t)len >= cap)) {
				cap *= 2;
				continue;
			}
			if (len < 0)
				ldie((int)len, relpath, "readlink");
			break;
		}
		e.link_len = (size_t)len;
	}

	char *list = NULL;
	for (;;) {
		len = ubt_listxattr(gfs, ino, NULL, 0);
		if (len == -ENOTSUP || len == -ENODATA) {
			len = 0;
			break;
		}
		if (len < 0)
			ldie((int)len, relpath, "listxattr");
		if (len == 0)
			break;
		list = xrealloc(list, (size_t)len);
		ssize_t got = ubt_listxattr(gfs, ino, list, (size_t)len);
		if (got == -ERANGE)
			continue;
		if (got < 0)
			ldie((int)got, relpath, "listxattr");
		len = got;
		break;
	}
	struct lx_ctx lx = { .ino = ino };
	collect_xattrs(&e, list, len, lib_getx, &lx);
	free(list);

	emit(&e);
	if (S_ISDIR(e.st.st_mode))
		lib_walk(ino, relpath);
}

static void lib_mount(const char *image, const char *subvol, uint64_t subvolid)
{
	struct ubt_mount_opts o = { .flags = gmount_flags, .subvol = subvol, .subvolid = subvolid };
	int ret = ubt_mount(image, &o, &gfs);

	if (ret < 0)
		die("%s: mount: %s", image, ubt_strerror(ret));
}

static void lib_unmount(const char *image)
{
	int ret = ubt_unmount(gfs);

	gfs = NULL;
	if (ret < 0)
		die("%s: unmount: %s", image, ubt_strerror(ret));
}

static int run_lib(const char *image, const char *subvol, uint64_t subvolid, const char *root)
{
	int ret;

	lib_mount(image, subvol, subvolid);
	if (root && strcmp(root, "/")) {
		struct stat st;
		ubt_ino ino;

		ret = ubt_resolve(gfs, root, &ino, &st);
		if (ret < 0)
			ldie(ret, root, "resolve");
		lib_entry(ino, &st, "."); /* no forget: ubt_resolve is not a FUSE lookup */
	} else {
		lib_entry(UBT_ROOT_INO, NULL, ".");
	}
	lib_unmount(image);
	return 0;
}

static int run_cat(const char *image, const char *subvol, uint64_t subvolid, const char *path,
		   uint64_t off, uint64_t len)
{
	struct stat st;
	ubt_ino ino;
	ubt_file *f;
	int ret;

	lib_mount(image, subvol, subvolid);
	ret = ubt_resolve(gfs, path, &ino, &st);
	if (ret < 0)
		ldie(ret, path, "resolve");
	ret = ubt_open(gfs, ino, O_RDONLY, &f);
	if (ret < 0)
		ldie(ret, path, "open");
	while (len) {
		size_t want = len < READ_CHUNK ? (size_t)len : READ_CHUNK;
		ssize_t r = ubt_pread(f, iobuf, want, off);

		if (r < 0)
			die("%s: read at offset %" PRIu64 ": %s", path, off, ubt_strerror((int)r));
		if (r == 0)
			break;
		if (fwrite(iobuf, 1, (size_t)r, stdout) != (size_t)r)
			die("writing output: %s", strerror(errno));
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	ret = ubt_close(f);
	if (ret < 0)
		ldie(ret, path, "close");
	lib_unmount(image);
	if (fflush(stdout))
		die("writing output: %s", strerror(errno));
	return 0;
}


/* ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------ */
/* Random reads                                                                               */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

typedef ssize_t (*pread_fn)(void *ctx, void *buf, size_t size, uint64_t off);

static void randread(const char *what, uint64_t size, unsigned n, pread_fn rd, void *ctx)
{
	static const uint64_t lens[] = { 1, 7, 512, 4095, 4096, 4097, 65536, 131071, 131072, 131073,
					 300000, 1048576 };

	rng_state = size * 31 + n;
	for (unsigned i = 0; i < n; i++) {
		uint64_t r = rng_next();
		uint64_t len = (r & 1) ? lens[(r >> 1) % (sizeof(lens) / sizeof(lens[0]))]
				       : 1 + (r >> 8) % 200000;
		uint64_t off = rng_next() % (size + 8192);

		if (i % 4 == 0) /* block-aligned starts too */
			off &= ~(uint64_t)4095;
		ssize_t got = rd(ctx, iobuf, (size_t)len, off);
		if (got < 0)
			die("%s: read of %" PRIu64 " bytes at %" PRIu64 ": %s", what, len, off,
			    strerror((int)-got));
		printf("%" PRIu64 " %" PRIu64 " %zd %016" PRIx64 "\n", off, len, got,
		       XXH3_64bits(iobuf, (size_t)got));
	}
	if (fflush(stdout))
		die("writing output: %s", strerror(errno));
}

static ssize_t fd_pread(void *ctx, void *buf, size_t size, uint64_t off)
{
	ssize_t r;

	do
		r = pread(*(int *)ctx, buf, size, (off_t)off);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

static ssize_t lib_pread(void *ctx, void *buf, size_t size, uint64_t off)
{
	return ubt_pread((ubt_file *)ctx, buf, size, off);
}

static int run_randread_dir(const char *path, unsigned n)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW);

	if (fd < 0 || fstat(fd, &st))
		die("%s: %s", path, strerror(errno));
	randread(path, (uint64_t)st.st_size, n, fd_pread, &fd);
	close(fd);
	return 0;
}

static int run_randread_lib(const char *image, const char *subvol, uint64_t subvolid,
			    const char *path, unsigned n)
{
	struct stat st;
	ubt_ino ino;
	ubt_file *f;
	int ret;

	lib_mount(image, subvol, subvolid);
	ret = ubt_resolve(gfs, path, &ino, &st);
	if (ret < 0)
		ldie(ret, path, "resolve");
	ret = ubt_open(gfs, ino, O_RDONLY, &f);
	if (ret < 0)
		ldie(ret, path, "open");
	randread(path, (uint64_t)st.st_size, n, lib_pread, f);
	ret = ubt_close(f);
	if (ret < 0)
		ldie(ret, path, "close");
	lib_unmount(image);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: manifest dir PATH\n"
			"       manifest lib IMAGE [--subvol PATH | --subvolid N] [--root PATH] [--nologreplay]\n"
			"       manifest cat IMAGE PATH [OFFSET [LENGTH]] [--subvol PATH | --subvolid N]\n"
			"       manifest randread-dir FILE N\n"
			"       manifest randread-lib IMAGE PATH N [--subvol PATH | --subvolid N]\n");
	exit(2);
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || !*s || *end)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	const char *subvol = NULL, *root = NULL;
	const char *pos[4];
	uint64_t subvolid = 0;
	int npos = 0, ret;

	if (argc < 3)
		usage();
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--subvol") && i + 1 < argc)
			subvol = argv[++i];
		else if (!strcmp(argv[i], "--subvolid") && i + 1 < argc)
			subvolid = parse_u64(argv[++i]);
		else if (!strcmp(argv[i], "--root") && i + 1 < argc)
			root = argv[++i];
		else if (!strcmp(argv[i], "--nologreplay"))
			gmount_flags |= UBT_MOUNT_NOLOGREPLAY;
		else if (npos < 4)
			pos[npos++] = argv[i];
		else
			usage();
	}
	if (subvol && subvolid)
		usage();
	iobuf = xmalloc(READ_CHUNK);
	if (!strcmp(argv[1], "dir")) {
		if (npos != 1 || subvol || subvolid || root || gmount_flags != UBT_MOUNT_RDONLY)
			usage();
		ret = run_dir(pos[0]);
		print_all();
	} else if (!strcmp(argv[1], "lib")) {
		if (npos != 1)
			usage();
		ret = run_lib(pos[0], subvol, subvolid, root);
		print_all();
	} else if (!strcmp(argv[1], "cat")) {
		if (npos < 2 || npos > 4 || root)
			usage();
		ret = run_cat(pos[0], subvol, subvolid, pos[1], npos > 2 ? parse_u64(pos[2]) : 0,
			      npos > 3 ? parse_u64(pos[3]) : UINT64_MAX);
	} else if (!strcmp(argv[1], "randread-dir")) {
		if (npos != 2 || subvol || subvolid || root)
			usage();
		ret = run_randread_dir(pos[0], (unsigned)parse_u64(pos[1]));
	} else if (!strcmp(argv[1], "randread-lib")) {
		if (npos != 3 || root)
			usage();
		ret = run_randread_lib(pos[0], subvol, subvolid, pos[1], (unsigned)parse_u64(pos[2]));
	} else {
		usage();
	}
	free(iobuf);
	return ret;
}
