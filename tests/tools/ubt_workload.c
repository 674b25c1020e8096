/*
 * ubt_workload — drive libubtrfs read-write from the shell suites (tests/rw).
 *
 *   ubt_workload random IMG [--seed N] [--ops N] [--batch N] [--manifest FILE] [--compress ALG]
 *       A seeded random mix of namespace and small-file operations (mknod of files and fifos,
 *       mkdir, symlink, pwrite incl. O_APPEND, truncate, link, unlink, rmdir, rename plain /
 *       NOREPLACE / EXCHANGE, setattr of mode, owner and times with ns, xattrs with CREATE /
 *       REPLACE) against an in-memory model: every call's result is checked against the model
 *       (errno included), ubt_sync after every batch. At the end the whole tree is compared with
 *       the model, and the library's own view is written to FILE in the format of
 *       `manifest dir` (see tests/tools/manifest.c) before ubt_unmount.
 *
 *   ubt_workload many IMG [--flat N] [--deep N] [--dirs N] [--batch N] [--list FILE]
 *       N empty or tiny files in /flat, and N more spread over a deep random tree of --dirs
 *       directories in /deep; every name is written to FILE (as `find .` prints it). Prints the
 *       peak RSS ("peak_rss_kib N").
 *
 *   ubt_workload pattern LEN SEED OFF
 *       Print the LEN bytes that write/append/fill with SEED put at file offset OFF.
 *
 *   ubt_workload script IMG [--compress ALG] < COMMANDS
 *       One command per line (paths are absolute inside the mount, no spaces):
 *         mkdir P | create P | write P OFF LEN SEED | append P LEN SEED | truncate P SIZE |
 *         unlink P | rmdir P | rmtree P | rename A B [noreplace|exchange] | link A B |
 *         symlink TARGET P | setxattr P NAME VALUE | rmxattr P NAME | chmod P OCTAL |
 *         utime P SEC NSEC | sync | statfs |
 *         fill DIR SIZE    files DIR/fNNNNNN of SIZE bytes until a write returns ENOSPC
 *                          (any other error fails); prints "filled N files B bytes"
 *         expect ERRNO CMD...   the command must fail with that errno name (ENOSPC, EEXIST...)
 *       A command failing unexpectedly prints the line and exits 1 (after unmounting).
 *
 * Data written by write/append/fill is a deterministic function of (SEED, file offset), so the
 * shell can produce the same bytes (see pattern_byte()).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "ubtrfs.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static ubt_fs *fs;
static const char *image;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("ubt_workload: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (fs) {
		int ret = ubt_unmount(fs);

		fs = NULL;
		if (ret)
			fprintf(stderr, "ubt_workload: unmount after the failure: %s\n", ubt_strerror(ret));
	}
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		fail("out of memory");
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		fail("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		fail("out of memory");
	return p;
}

static const char *ename(int err)
{
	static char buf[32];

	switch (-err) {
	case 0: return "0";
	case ENOENT: return "ENOENT";
	case EEXIST: return "EEXIST";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case ENOTEMPTY: return "ENOTEMPTY";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ENODATA: return "ENODATA";
	case EPERM: return "EPERM";
	case EROFS: return "EROFS";
	case EXDEV: return "EXDEV";
	case EMLINK: return "EMLINK";
	case EIO: return "EIO";
	case EUCLEAN: return "EUCLEAN";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case EFBIG: return "EFBIG";
	default:
		snprintf(buf, sizeof(buf), "errno %d", -err);
		return buf;
	}
}

static int errno_by_name(const char *s)
{
	static const struct { const char *n; int e; } t[] = {
		{ "ENOENT", ENOENT }, { "EEXIST", EEXIST }, { "ENOTDIR", ENOTDIR }, { "EISDIR", EISDIR },
		{ "ENOTEMPTY", ENOTEMPTY }, { "EINVAL", EINVAL }, { "ENOSPC", ENOSPC }, { "ENODATA", ENODATA },
		{ "EPERM", EPERM }, { "EXDEV", EXDEV }, { "EMLINK", EMLINK }, { "EFBIG", EFBIG },
	};
	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		if (!strcmp(s, t[i].n))
			return -t[i].e;
	fail("unknown errno name %s", s);
}

/* ---- deterministic data ---- */

static uint64_t rng_state = 1;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}
static uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }

/* Byte at file offset @off of data seeded @seed: cheap, reproducible, not very compressible. */
static uint8_t pattern_byte(uint64_t seed, uint64_t off)
{
	uint64_t x = (seed * 0x9E3779B97F4A7C15ull) ^ (off / 8 * 0xBF58476D1CE4E5B9ull);

	x ^= x >> 31;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 29;
	return (uint8_t)(x >> (8 * (off % 8)));
}

static void fill_pattern(uint8_t *buf, size_t len, uint64_t seed, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern_byte(seed, off + i);
}

/* ---- mount ---- */

static void do_mount(const char *compress)
{
	struct ubt_mount_opts o = { .flags = 0, .compress = compress, .commit_interval = 3600 };
	int ret = ubt_mount(image, &o, &fs);

	if (ret)
		fail("%s: mount read-write: %s", image, ubt_strerror(ret));
}

static void do_unmount(void)
{
	int ret = ubt_unmount(fs);

	fs = NULL;
	if (ret)
		fail("%s: unmount: %s", image, ubt_strerror(ret));
}

static void do_sync(void)
{
	int ret = ubt_sync(fs);

	if (ret)
		fail("sync: %s", ubt_strerror(ret));
}

/* ---- the library's view in `manifest dir` format ---- */

struct mline {
	char *path, *text;
};
static struct mline *mlines;
static size_t nmlines, capmlines;
static uint8_t *iobuf;
#define IOBUF (1u << 20)

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

static char *esc_str(const char *s)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (!f)
		fail("open_memstream");
	esc_put(f, s, strlen(s));
	fclose(f);
	return out;
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_mline(const void *a, const void *b)
{
	return strcmp(((const struct mline *)a)->path, ((const struct mline *)b)->path);
}

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

/* XXH3_128 of a file's contents, canonical hex. */
static void file_hash(ubt_ino ino, const char *what, char out[33])
{
	XXH3_state_t *hs = XXH3_createState();
	XXH128_canonical_t c;
	ubt_file *f;
	uint64_t off = 0;
	int ret;

	if (!hs)
		fail("out of memory");
	XXH3_128bits_reset(hs);
	ret = ubt_open(fs, ino, O_RDONLY, &f);
	if (ret)
		fail("%s: open: %s", what, ubt_strerror(ret));
	for (;;) {
		ssize_t r = ubt_pread(f, iobuf, IOBUF, off);

		if (r < 0)
			fail("%s: read at %" PRIu64 ": %s", what, off, ubt_strerror((int)r));
		if (r == 0)
			break;
		XXH3_128bits_update(hs, iobuf, (size_t)r);
		off += (uint64_t)r;
	}
	ret = ubt_close(f);
	if (ret)
		fail("%s: close: %s", what, ubt_strerror(ret));
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(hs));
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
	XXH3_freeState(hs);
}

struct names {
	char **v;
	size_t n, cap;
};

static int names_filler(void *ctx, const char *name, size_t len, ubt_ino ino, unsigned d_type, uint64_t next)
{
	struct names *l = ctx;

	(void)ino;
	(void)d_type;
	(void)next;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n] = xmalloc(len + 1);
	memcpy(l->v[l->n], name, len);
	l->v[l->n][len] = 0;
	l->n++;
	return 0;
}

static void list_dir(ubt_ino dir, const char *what, struct names *l)
{
	int ret;

	memset(l, 0, sizeof(*l));
	ret = ubt_readdir(fs, dir, 0, names_filler, l);
	if (ret)
		fail("%s: readdir: %s", what, ubt_strerror(ret));
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), cmp_cstr);
}

struct xv {
	char *name;
	uint64_t hash;
};
static int cmp_xv(const void *a, const void *b) { return strcmp(((const struct xv *)a)->name, ((const struct xv *)b)->name); }

static void man_entry(ubt_ino ino, const char *rel);

static void man_walk(ubt_ino dir, const char *rel)
{
	struct names l;

	list_dir(dir, rel, &l);
	for (size_t i = 0; i < l.n; i++) {
		char *r = xmalloc(strlen(rel) + strlen(l.v[i]) + 2);
		struct stat st;
		ubt_ino ino;
		int ret;

		sprintf(r, "%s/%s", rel, l.v[i]);
		ret = ubt_lookup(fs, dir, l.v[i], &ino, &st);
		if (ret)
			fail("%s: lookup: %s", r, ubt_strerror(ret));
		man_entry(ino, r);
		ubt_forget(fs, ino, 1);
		free(r);
		free(l.v[i]);
	}
	free(l.v);
}

static void man_entry(ubt_ino ino, const char *rel)
{
	char *text = NULL, hash[33] = "", *link = NULL;
	size_t textlen = 0, nxv = 0;
	struct xv *xv = NULL;
	struct stat st;
	ssize_t len;
	FILE *f;
	int ret;

	ret = ubt_getattr(fs, ino, &st);
	if (ret)
		fail("%s: getattr: %s", rel, ubt_strerror(ret));
	if (S_ISREG(st.st_mode))
		file_hash(ino, rel, hash);
	if (S_ISLNK(st.st_mode)) {
		link = xmalloc((size_t)st.st_size + 1);
		len = ubt_readlink(fs, ino, link, (size_t)st.st_size + 1);
		if (len < 0)
			fail("%s: readlink: %s", rel, ubt_strerror((int)len));
		link[len] = 0;
	}
	len = ubt_listxattr(fs, ino, NULL, 0);
	if (len < 0 && len != -ENOTSUP && len != -ENODATA)
		fail("%s: listxattr: %s", rel, ubt_strerror((int)len));
	if (len > 0) {
		char *list = xmalloc((size_t)len);

		len = ubt_listxattr(fs, ino, list, (size_t)len);
		if (len < 0)
			fail("%s: listxattr: %s", rel, ubt_strerror((int)len));
		for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
			ssize_t vl = ubt_getxattr(fs, ino, list + i, iobuf, IOBUF);

			if (vl < 0)
				fail("%s: getxattr %s: %s", rel, list + i, ubt_strerror((int)vl));
			xv = xrealloc(xv, (nxv + 1) * sizeof(*xv));
			xv[nxv].name = xstrdup(list + i);
			xv[nxv].hash = XXH3_64bits(iobuf, (size_t)vl);
			nxv++;
		}
		free(list);
	}

	f = open_memstream(&text, &textlen);
	if (!f)
		fail("open_memstream");
	esc_put(f, rel, strlen(rel));
	fprintf(f, " %s %o %u %u %lld %lld.%09ld %lu ", type_name(st.st_mode), (unsigned)st.st_mode,
		(unsigned)st.st_uid, (unsigned)st.st_gid, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
		(long)st.st_mtim.tv_nsec, (unsigned long)st.st_nlink);
	if (S_ISREG(st.st_mode)) {
		fputs(hash, f);
	} else if (S_ISLNK(st.st_mode)) {
		fputs("->", f);
		esc_put(f, link, strlen(link));
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		fprintf(f, "%u:%u", major(st.st_rdev), minor(st.st_rdev));
	} else {
		fputc('-', f);
	}
	if (nxv) {
		qsort(xv, nxv, sizeof(*xv), cmp_xv);
		fputs(" xattr", f);
		for (size_t i = 0; i < nxv; i++) {
			fputc(' ', f);
			esc_put(f, xv[i].name, strlen(xv[i].name));
			fprintf(f, "=%016" PRIx64, xv[i].hash);
			free(xv[i].name);
		}
	}
	free(xv);
	free(link);
	fclose(f);
	if (nmlines == capmlines) {
		capmlines = capmlines ? 2 * capmlines : 1024;
		mlines = xrealloc(mlines, capmlines * sizeof(*mlines));
	}
	mlines[nmlines].path = esc_str(rel);
	mlines[nmlines].text = text;
	nmlines++;
	if (S_ISDIR(st.st_mode))
		man_walk(ino, rel);
}

static void write_manifest(const char *path)
{
	FILE *out = fopen(path, "w");

	if (!out)
		fail("%s: %s", path, strerror(errno));
	man_entry(UBT_ROOT_INO, ".");
	qsort(mlines, nmlines, sizeof(*mlines), cmp_mline);
	for (size_t i = 0; i < nmlines; i++) {
		fprintf(out, "%s\n", mlines[i].text);
		free(mlines[i].path);
		free(mlines[i].text);
	}
	free(mlines);
	mlines = NULL;
	nmlines = capmlines = 0;
	if (fclose(out))
		fail("%s: write: %s", path, strerror(errno));
}

/* ---- path helpers (script mode) ---- */

static int resolve(const char *path, ubt_ino *ino, struct stat *st)
{
	return ubt_resolve(fs, path, ino, st);
}

/* Split "/a/b/c" into the parent's inode and "c". */
static int resolve_parent(const char *path, ubt_ino *parent, const char **name)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int ret;

	if (!slash || !slash[1])
		return -EINVAL;
	dir = xmalloc((size_t)(slash - path) + 2);
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = 0;
	if (!dir[0])
		strcpy(dir, "/");
	ret = resolve(dir, parent, NULL);
	free(dir);
	*name = slash + 1;
	return ret;
}

static long peak_rss_kib(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* ==== random mode: the model ==== */

#define MAX_NAME 255
#define MAX_FILE_SIZE (96 * 1024)
#define MAX_XATTR 4
#define MAX_DENTS 3000

struct mx {
	char name[40];
	uint8_t val[200];
	size_t len;
};

struct mnode {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	uint8_t *data;
	size_t size;
	char *target;
	unsigned nlink;
	unsigned nchildren;
	int nx;
	struct mx x[MAX_XATTR];
	ubt_ino ino;
	bool live;
	int parent_dent; /* directories: their one name (-1 for the root) */
};

struct mdent {
	int parent; /* node index of the directory */
	char *name;
	int node;
};

static struct mnode *nodes;
static size_t nnodes, capnodes;
static struct mdent *dents;
static size_t ndents, capdents;

static int node_new(mode_t mode)
{
	if (nnodes == capnodes) {
		capnodes = capnodes ? 2 * capnodes : 1024;
		nodes = xrealloc(nodes, capnodes * sizeof(*nodes));
	}
	memset(&nodes[nnodes], 0, sizeof(nodes[nnodes]));
	nodes[nnodes].mode = mode;
	nodes[nnodes].live = true;
	nodes[nnodes].parent_dent = -1;
	return (int)nnodes++;
}

static int dent_find(int dir, const char *name)
{
	for (size_t i = 0; i < ndents; i++)
		if (dents[i].parent == dir && !strcmp(dents[i].name, name))
			return (int)i;
	return -1;
}

static void dent_add(int dir, const char *name, int node)
{
	if (ndents == capdents) {
		capdents = capdents ? 2 * capdents : 1024;
		dents = xrealloc(dents, capdents * sizeof(*dents));
	}
	dents[ndents].parent = dir;
	dents[ndents].name = xstrdup(name);
	dents[ndents].node = node;
	nodes[node].nlink++;
	nodes[dir].nchildren++;
	if (S_ISDIR(nodes[node].mode))
		nodes[node].parent_dent = (int)ndents;
	ndents++;
}

/* Remove dent @d (swap with the last one; fixes the moved dent's directory back pointer). */
static void dent_del(int d)
{
	int node = dents[d].node;

	nodes[dents[d].parent].nchildren--;
	if (--nodes[node].nlink == 0 || S_ISDIR(nodes[node].mode)) {
		nodes[node].live = false;
		free(nodes[node].data);
		free(nodes[node].target);
		nodes[node].data = NULL;
		nodes[node].target = NULL;
	}
	free(dents[d].name);
	ndents--;
	if ((size_t)d != ndents) {
		dents[d] = dents[ndents];
		if (S_ISDIR(nodes[dents[d].node].mode))
			nodes[dents[d].node].parent_dent = d;
	}
}

static char *node_path(int node)
{
	char *p = xstrdup("");

	while (node != 0) {
		int d = nodes[node].parent_dent;
		char *q;

		if (d < 0) {
			free(p);
			return xstrdup("(unlinked)");
		}
		q = xmalloc(strlen(p) + strlen(dents[d].name) + 2);
		sprintf(q, "/%s%s", dents[d].name, p);
		free(p);
		p = q;
		node = dents[d].parent;
	}
	if (!*p) {
		free(p);
		p = xstrdup("/");
	}
	return p;
}

static char *dent_path(int d)
{
	char *dir = node_path(dents[d].parent);
	char *p = xmalloc(strlen(dir) + strlen(dents[d].name) + 2);

	sprintf(p, "%s/%s", strcmp(dir, "/") ? dir : "", dents[d].name);
	free(dir);
	return p;
}

static bool is_ancestor(int a, int node) /* a is node or one of its ancestors */
{
	while (node != 0) {
		if (node == a)
			return true;
		node = dents[nodes[node].parent_dent].parent;
	}
	return a == 0;
}

static uint64_t opno;

static void expect(int ret, int want, const char *op, const char *path)
{
	if (ret != want)
		fail("op %" PRIu64 " %s %s: got %s, expected %s", opno, op, path, ename(ret), ename(want));
}

static void random_name(char *buf)
{
	unsigned k = (unsigned)rnd(100);

	if (k < 85) {
		snprintf(buf, MAX_NAME + 1, "n%u", (unsigned)rnd(40));
	} else if (k < 92) {
		size_t len = 100 + rnd(MAX_NAME - 99);

		for (size_t i = 0; i < len; i++)
			buf[i] = (char)('a' + rnd(3));
		buf[len] = 0;
	} else if (k < 97) {
		/* bytes outside ASCII and odd punctuation */
		static const char *odd[] = { "caf\xc3\xa9", "sp ace", "x=y", "back\\slash", "\xe2\x98\x83",
					     "tab\tname", "..x", "-dash" };
		snprintf(buf, MAX_NAME + 1, "%s%u", odd[rnd(ARRAY_SIZE(odd))], (unsigned)rnd(5));
	} else {
		snprintf(buf, MAX_NAME + 1, "h%08x", (unsigned)rnd(UINT32_MAX));
	}
}

static int random_node_of(mode_t type)
{
	for (int tries = 0; tries < 50; tries++) {
		int n = (int)rnd(nnodes);

		if (nodes[n].live && (nodes[n].mode & S_IFMT) == type)
			return n;
	}
	for (size_t n = 0; n < nnodes; n++)
		if (nodes[n].live && (nodes[n].mode & S_IFMT) == type)
			return (int)n;
	return -1;
}

static int random_dir(void) { return random_node_of(S_IFDIR); }

static void model_write(struct mnode *n, const uint8_t *buf, size_t len, size_t off)
{
	if (off + len > n->size) {
		n->data = xrealloc(n->data, off + len);
		memset(n->data + n->size, 0, off + len - n->size);
		n->size = off + len;
	}
	memcpy(n->data + off, buf, len);
}

static void model_truncate(struct mnode *n, size_t size)
{
	if (size > n->size) {
		n->data = xrealloc(n->data, size);
		memset(n->data + n->size, 0, size - n->size);
	}
	n->size = size;
}

static const uid_t uids[] = { 0, 1000, 1234, 65534 };

static void op_create(void)
{
	int dir = random_dir(), existing, node;
	char name[MAX_NAME + 1];
	mode_t mode;
	dev_t rdev = 0;
	uid_t uid = uids[rnd(ARRAY_SIZE(uids))];
	gid_t gid = uids[rnd(ARRAY_SIZE(uids))];
	unsigned k = (unsigned)rnd(100);
	ubt_ino ino = 0;
	struct stat st;
	char *dpath;
	int ret;

	random_name(name);
	existing = dent_find(dir, name);
	dpath = node_path(dir);
	if (k < 60) {
		mode = S_IFREG | (mode_t)(rnd(2) ? 0644 : rnd(010000));
		ret = ubt_mknod(fs, nodes[dir].ino, name, mode, 0, uid, gid, &ino, &st);
	} else if (k < 78) {
		mode = S_IFDIR | (mode_t)(rnd(2) ? 0755 : rnd(010000));
		ret = ubt_mkdir(fs, nodes[dir].ino, name, mode, uid, gid, &ino, &st);
	} else if (k < 90) {
		char target[1100];
		size_t tl = rnd(4) ? 1 + rnd(60) : 1 + rnd(1000);

		for (size_t i = 0; i < tl; i++)
			target[i] = (char)(rnd(8) ? 'a' + rnd(26) : '/');
		target[tl] = 0;
		mode = S_IFLNK | 0777;
		ret = ubt_symlink(fs, nodes[dir].ino, name, target, uid, gid, &ino, &st);
		if (ret == 0 && existing < 0) {
			node = node_new(mode);
			nodes[node].target = xstrdup(target);
			goto created;
		}
	} else if (k < 97) {
		mode = S_IFIFO | 0644;
		ret = ubt_mknod(fs, nodes[dir].ino, name, mode, 0, uid, gid, &ino, &st);
	} else {
		mode = (rnd(2) ? S_IFCHR : S_IFBLK) | 0600;
		rdev = makedev((unsigned)rnd(300), (unsigned)rnd(70000));
		ret = ubt_mknod(fs, nodes[dir].ino, name, mode, rdev, uid, gid, &ino, &st);
	}
	if (existing >= 0) {
		expect(ret, -EEXIST, "create existing", dpath);
		free(dpath);
		return;
	}
	expect(ret, 0, "create", dpath);
	node = node_new(mode);
	nodes[node].rdev = rdev;
created:
	expect(ret, 0, "create", dpath);
	nodes[node].uid = uid;
	nodes[node].gid = gid;
	nodes[node].ino = ino;
	dent_add(dir, name, node);
	if (st.st_mode != mode || st.st_uid != uid || st.st_gid != gid)
		fail("op %" PRIu64 " create %s/%s: stat mode %o uid %u gid %u, expected %o %u %u", opno, dpath, name,
		     (unsigned)st.st_mode, st.st_uid, st.st_gid, (unsigned)mode, uid, gid);
	ubt_forget(fs, ino, 1);
	free(dpath);
}

static int random_file(void) { return random_node_of(S_IFREG); }

static void op_write(void)
{
	int n = random_file();
	struct mnode *m;
	ubt_file *f;
	size_t len, off;
	bool append = rnd(5) == 0;
	uint8_t *buf;
	ssize_t r;
	int ret;

	if (n < 0)
		return;
	m = &nodes[n];
	len = rnd(4) ? 1 + rnd(5000) : 1 + rnd(40000);
	off = rnd(3) ? rnd(m->size + 1) : rnd(MAX_FILE_SIZE / 2);
	if (append)
		off = m->size;
	if (off + len > MAX_FILE_SIZE)
		return;
	buf = xmalloc(len);
	fill_pattern(buf, len, rng(), off);
	ret = ubt_open(fs, m->ino, O_WRONLY | (append ? O_APPEND : 0), &f);
	expect(ret, 0, "open", "file");
	r = ubt_pwrite(f, buf, len, append ? 0 : off);
	if (r != (ssize_t)len)
		fail("op %" PRIu64 " pwrite %zu at %zu: %s", opno, len, off, r < 0 ? ubt_strerror((int)r) : "short");
	ret = ubt_close(f);
	expect(ret, 0, "close", "file");
	model_write(m, buf, len, off);
	free(buf);
}

static void op_truncate(void)
{
	int n = random_file();
	struct stat st = { 0 };
	size_t size;
	int ret;

	if (n < 0)
		return;
	size = rnd(3) ? rnd(nodes[n].size + 1) : rnd(MAX_FILE_SIZE);
	st.st_size = (off_t)size;
	ret = ubt_setattr(fs, nodes[n].ino, &st, UBT_SET_SIZE, NULL);
	expect(ret, 0, "truncate", "file");
	model_truncate(&nodes[n], size);
}

static void op_link(void)
{
	int d, dir, existing;
	char name[MAX_NAME + 1];
	struct stat st;
	char *p;
	int ret;

	if (!ndents)
		return;
	d = (int)rnd(ndents);
	if (S_ISDIR(nodes[dents[d].node].mode))
		return;
	dir = random_dir();
	random_name(name);
	existing = dent_find(dir, name);
	p = dent_path(d);
	ret = ubt_link(fs, nodes[dents[d].node].ino, nodes[dir].ino, name, &st);
	if (existing >= 0) {
		expect(ret, -EEXIST, "link to existing", p);
	} else {
		expect(ret, 0, "link", p);
		dent_add(dir, name, dents[d].node);
		ubt_forget(fs, nodes[dents[d].node].ino, 1);
		if (st.st_nlink != nodes[dents[d].node].nlink)
			fail("op %" PRIu64 " link %s: nlink %lu, expected %u", opno, p, (unsigned long)st.st_nlink,
			     nodes[dents[d].node].nlink);
	}
	free(p);
}

static void op_remove(void)
{
	int d, node;
	char *p;
	int ret;

	if (!ndents)
		return;
	d = (int)rnd(ndents);
	node = dents[d].node;
	p = dent_path(d);
	if (S_ISDIR(nodes[node].mode)) {
		ret = ubt_unlink(fs, nodes[dents[d].parent].ino, dents[d].name);
		expect(ret, -EISDIR, "unlink of a dir", p);
		ret = ubt_rmdir(fs, nodes[dents[d].parent].ino, dents[d].name);
		expect(ret, nodes[node].nchildren ? -ENOTEMPTY : 0, "rmdir", p);
	} else {
		if (rnd(10) == 0) {
			ret = ubt_rmdir(fs, nodes[dents[d].parent].ino, dents[d].name);
			expect(ret, -ENOTDIR, "rmdir of a non-dir", p);
		}
		ret = ubt_unlink(fs, nodes[dents[d].parent].ino, dents[d].name);
		expect(ret, 0, "unlink", p);
	}
	if (ret == 0)
		dent_del(d);
	free(p);
}

static void op_rename(void)
{
	int sd, dir, td, snode, tnode;
	char name[MAX_NAME + 1];
	unsigned k = (unsigned)rnd(10), flags = k < 6 ? 0 : k < 8 ? UBT_RENAME_NOREPLACE : UBT_RENAME_EXCHANGE;
	char *sp, *tp;
	int ret, want;

	if (!ndents)
		return;
	sd = (int)rnd(ndents);
	snode = dents[sd].node;
	if (rnd(3) == 0 && ndents > 1) { /* onto an existing name */
		td = (int)rnd(ndents);
		dir = dents[td].parent;
		snprintf(name, sizeof(name), "%s", dents[td].name);
	} else {
		dir = random_dir();
		random_name(name);
		td = dent_find(dir, name);
	}
	tnode = td >= 0 ? dents[td].node : -1;
	sp = dent_path(sd);
	{
		char *dp = node_path(dir);

		tp = xmalloc(strlen(dp) + strlen(name) + 2);
		sprintf(tp, "%s/%s", strcmp(dp, "/") ? dp : "", name);
		free(dp);
	}
	ret = ubt_rename(fs, nodes[dents[sd].parent].ino, dents[sd].name, nodes[dir].ino, name, flags);

	if (flags == UBT_RENAME_EXCHANGE) {
		if (td < 0)
			want = -ENOENT;
		else if (td == sd)
			want = 0;
		else if ((S_ISDIR(nodes[snode].mode) && is_ancestor(snode, dir)) ||
			 (S_ISDIR(nodes[tnode].mode) && is_ancestor(tnode, dents[sd].parent)))
			want = -EINVAL;
		else
			want = 0;
		if (want == -EINVAL && ret < 0)
			want = ret; /* the kernel says EINVAL or ENOTEMPTY depending on which side */
		expect(ret, want, "rename exchange", sp);
		if (ret == 0 && td != sd) {
			/* swap the nodes of the two names */
			dents[sd].node = tnode;
			dents[td].node = snode;
			if (S_ISDIR(nodes[snode].mode))
				nodes[snode].parent_dent = td;
			if (S_ISDIR(nodes[tnode].mode))
				nodes[tnode].parent_dent = sd;
		}
		goto out;
	}
	if (S_ISDIR(nodes[snode].mode) && is_ancestor(snode, dir))
		want = -EINVAL;
	else if (td < 0)
		want = 0;
	else if (flags == UBT_RENAME_NOREPLACE)
		want = -EEXIST;
	else if (tnode == snode)
		want = 0; /* same inode: nothing happens */
	else if (S_ISDIR(nodes[snode].mode) && !S_ISDIR(nodes[tnode].mode))
		want = -ENOTDIR;
	else if (!S_ISDIR(nodes[snode].mode) && S_ISDIR(nodes[tnode].mode))
		want = -EISDIR;
	else if (S_ISDIR(nodes[tnode].mode) && nodes[tnode].nchildren)
		want = -ENOTEMPTY;
	else if (S_ISDIR(nodes[tnode].mode) && is_ancestor(tnode, snode))
		want = -ENOTEMPTY;
	else
		want = 0;
	if (want == -EINVAL && ret == -EEXIST && td >= 0 && flags == UBT_RENAME_NOREPLACE)
		want = ret;
	if (want == -EINVAL && ret < 0 && tnode == snode)
		want = ret;
	expect(ret, want, flags ? "rename noreplace" : "rename", sp);
	if (ret == 0 && tnode != snode) {
		if (td >= 0) {
			/* the target name goes; fix sd if dent_del moves it */
			int last = (int)ndents - 1;

			dent_del(td);
			if (sd == last)
				sd = td;
		}
		nodes[dents[sd].parent].nchildren--;
		nodes[dir].nchildren++;
		dents[sd].parent = dir;
		free(dents[sd].name);
		dents[sd].name = xstrdup(name);
	}
out:
	free(sp);
	free(tp);
}

static void op_setattr(void)
{
	int d;
	struct mnode *m;
	struct stat st = { 0 }, out;
	unsigned set = 0, k = (unsigned)rnd(3);
	char *p;
	int ret;

	if (!ndents)
		return;
	d = (int)rnd(ndents);
	m = &nodes[dents[d].node];
	if (k == 0 && !S_ISLNK(m->mode)) {
		st.st_mode = (mode_t)rnd(010000);
		set |= UBT_SET_MODE;
	} else if (k == 1) {
		st.st_uid = uids[rnd(ARRAY_SIZE(uids))];
		st.st_gid = uids[rnd(ARRAY_SIZE(uids))];
		set |= UBT_SET_UID | UBT_SET_GID;
	} else {
		st.st_atim.tv_sec = (time_t)rnd(2000000000);
		st.st_atim.tv_nsec = (long)rnd(1000000000);
		st.st_mtim.tv_sec = rnd(8) ? (time_t)rnd(2000000000) : -(time_t)rnd(100000000);
		st.st_mtim.tv_nsec = (long)rnd(1000000000);
		set |= UBT_SET_ATIME | UBT_SET_MTIME;
	}
	p = dent_path(d);
	ret = ubt_setattr(fs, m->ino, &st, set, &out);
	expect(ret, 0, "setattr", p);
	if (set & UBT_SET_MODE)
		m->mode = (m->mode & S_IFMT) | st.st_mode;
	if (set & UBT_SET_UID) {
		m->uid = st.st_uid;
		m->gid = st.st_gid;
		/* chown clears setuid/setgid of non-directories (setgid only with group exec) */
	}
	if ((set & UBT_SET_MTIME) &&
	    (out.st_mtim.tv_sec != st.st_mtim.tv_sec || out.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
		fail("op %" PRIu64 " setattr %s: mtime %lld.%09ld, expected %lld.%09ld", opno, p,
		     (long long)out.st_mtim.tv_sec, out.st_mtim.tv_nsec, (long long)st.st_mtim.tv_sec,
		     st.st_mtim.tv_nsec);
	if ((set & UBT_SET_MODE) && out.st_mode != m->mode)
		fail("op %" PRIu64 " chmod %s: mode %o, expected %o", opno, p, (unsigned)out.st_mode, (unsigned)m->mode);
	if (set & UBT_SET_UID)
		m->mode = out.st_mode; /* the library's suid/sgid clearing is checked by the kernel compare */
	free(p);
}

static void op_xattr(void)
{
	int d;
	struct mnode *m;
	char name[40];
	int xi = -1, ret;
	char *p;

	if (!ndents)
		return;
	d = (int)rnd(ndents);
	m = &nodes[dents[d].node];
	if (!S_ISREG(m->mode) && !S_ISDIR(m->mode))
		return;
	snprintf(name, sizeof(name), "user.x%u", (unsigned)rnd(6));
	for (int i = 0; i < m->nx; i++)
		if (!strcmp(m->x[i].name, name))
			xi = i;
	p = dent_path(d);
	if (rnd(4) == 0) {
		ret = ubt_removexattr(fs, m->ino, name);
		expect(ret, xi >= 0 ? 0 : -ENODATA, "removexattr", p);
		if (xi >= 0)
			m->x[xi] = m->x[--m->nx];
	} else {
		uint8_t val[200];
		size_t len = rnd(sizeof(val));
		int flags = (int)rnd(3); /* 0, XATTR_CREATE 1, XATTR_REPLACE 2 */

		if (xi < 0 && m->nx == MAX_XATTR)
			goto out;
		fill_pattern(val, len, rng(), 0);
		ret = ubt_setxattr(fs, m->ino, name, val, len, flags);
		if (flags == 1 && xi >= 0) {
			expect(ret, -EEXIST, "setxattr create", p);
		} else if (flags == 2 && xi < 0) {
			expect(ret, -ENODATA, "setxattr replace", p);
		} else {
			expect(ret, 0, "setxattr", p);
			if (xi < 0)
				xi = m->nx++;
			snprintf(m->x[xi].name, sizeof(m->x[xi].name), "%s", name);
			memcpy(m->x[xi].val, val, len);
			m->x[xi].len = len;
		}
	}
out:
	free(p);
}

/* Compare one node with what the library shows. */
static void verify_node(int node, ubt_ino ino, const char *p)
{
	struct mnode *m = &nodes[node];
	struct stat st;
	int ret = ubt_getattr(fs, ino, &st);

	if (ret)
		fail("verify %s: getattr: %s", p, ubt_strerror(ret));
	if (st.st_mode != m->mode || st.st_uid != m->uid || st.st_gid != m->gid)
		fail("verify %s: mode %o uid %u gid %u, model %o %u %u", p, (unsigned)st.st_mode, st.st_uid,
		     st.st_gid, (unsigned)m->mode, m->uid, m->gid);
	if (!S_ISDIR(m->mode) && st.st_nlink != m->nlink)
		fail("verify %s: nlink %lu, model %u", p, (unsigned long)st.st_nlink, m->nlink);
	if (S_ISREG(m->mode)) {
		ubt_file *f;
		ssize_t r;

		if ((size_t)st.st_size != m->size)
			fail("verify %s: size %lld, model %zu", p, (long long)st.st_size, m->size);
		ret = ubt_open(fs, ino, O_RDONLY, &f);
		if (ret)
			fail("verify %s: open: %s", p, ubt_strerror(ret));
		r = ubt_pread(f, iobuf, IOBUF, 0);
		if (r != (ssize_t)m->size)
			fail("verify %s: read %zd, model size %zu", p, r, m->size);
		if (m->size && memcmp(iobuf, m->data, m->size)) {
			size_t i = 0;

			while (iobuf[i] == m->data[i])
				i++;
			fail("verify %s: contents differ from offset %zu", p, i);
		}
		ubt_close(f);
	} else if (S_ISLNK(m->mode)) {
		ssize_t r = ubt_readlink(fs, ino, (char *)iobuf, IOBUF);

		if (r != (ssize_t)strlen(m->target) || memcmp(iobuf, m->target, (size_t)r))
			fail("verify %s: symlink target differs", p);
	} else if (S_ISCHR(m->mode) || S_ISBLK(m->mode)) {
		if (st.st_rdev != m->rdev)
			fail("verify %s: rdev %u:%u, model %u:%u", p, major(st.st_rdev), minor(st.st_rdev),
			     major(m->rdev), minor(m->rdev));
	}
	if (S_ISREG(m->mode) || S_ISDIR(m->mode)) {
		ssize_t len = ubt_listxattr(fs, ino, (char *)iobuf, IOBUF);
		int n = 0;

		if (len < 0)
			fail("verify %s: listxattr: %s", p, ubt_strerror((int)len));
		for (ssize_t i = 0; i < len; i += (ssize_t)strlen((char *)iobuf + i) + 1)
			n++;
		if (n != m->nx)
			fail("verify %s: %d xattrs, model %d", p, n, m->nx);
		for (int i = 0; i < m->nx; i++) {
			uint8_t v[256];
			ssize_t vl = ubt_getxattr(fs, ino, m->x[i].name, v, sizeof(v));

			if (vl != (ssize_t)m->x[i].len || memcmp(v, m->x[i].val, m->x[i].len))
				fail("verify %s: xattr %s differs", p, m->x[i].name);
		}
	}
	if (S_ISDIR(m->mode)) {
		struct names l;

		list_dir(ino, p, &l);
		if (l.n != m->nchildren)
			fail("verify %s: %zu entries, model %u", p, l.n, m->nchildren);
		for (size_t i = 0; i < l.n; i++) {
			if (dent_find(node, l.v[i]) < 0)
				fail("verify %s: unexpected entry %s", p, l.v[i]);
			free(l.v[i]);
		}
		free(l.v);
	}
}

static void verify_all(void)
{
	verify_node(0, UBT_ROOT_INO, "/");
	for (size_t d = 0; d < ndents; d++) {
		char *p = dent_path((int)d);
		struct stat st;
		ubt_ino ino;
		int ret = ubt_lookup(fs, nodes[dents[d].parent].ino, dents[d].name, &ino, &st);

		if (ret)
			fail("verify %s: lookup: %s", p, ubt_strerror(ret));
		if (ino != nodes[dents[d].node].ino)
			fail("verify %s: inode %" PRIu64 ", model %" PRIu64, p, ino, nodes[dents[d].node].ino);
		verify_node(dents[d].node, ino, p);
		ubt_forget(fs, ino, 1);
		free(p);
	}
}

static int run_random(uint64_t seed, uint64_t ops, uint64_t batch, const char *manifest, const char *compress)
{
	struct stat st;
	int root;
	int ret;

	rng_state = seed * 2654435761u + 1;
	do_mount(compress);
	/* The model starts from the image's root: it must be empty. */
	root = node_new(S_IFDIR);
	ret = ubt_getattr(fs, UBT_ROOT_INO, &st);
	if (ret)
		fail("getattr /: %s", ubt_strerror(ret));
	nodes[root].mode = st.st_mode;
	nodes[root].uid = st.st_uid;
	nodes[root].gid = st.st_gid;
	nodes[root].ino = UBT_ROOT_INO;
	{
		struct names l;

		list_dir(UBT_ROOT_INO, "/", &l);
		if (l.n)
			fail("the image's root is not empty (%zu entries)", l.n);
		free(l.v);
	}
	for (opno = 1; opno <= ops; opno++) {
		unsigned k = (unsigned)rnd(100);

		if (ndents > MAX_DENTS && k < 30)
			k += 35; /* grow less, remove more */
		if (k < 30)
			op_create();
		else if (k < 45)
			op_write();
		else if (k < 50)
			op_truncate();
		else if (k < 56)
			op_link();
		else if (k < 70)
			op_remove();
		else if (k < 82)
			op_rename();
		else if (k < 90)
			op_setattr();
		else
			op_xattr();
		if (opno % batch == 0) {
			do_sync();
			if (opno % (batch * 10) == 0) {
				verify_all();
				printf("op %" PRIu64 ": %zu names, model verified\n", opno, ndents);
				fflush(stdout);
			}
		}
	}
	verify_all();
	do_sync();
	verify_all();
	if (manifest)
		write_manifest(manifest);
	printf("done: %" PRIu64 " ops, %zu names, peak_rss_kib %ld\n", ops, ndents, peak_rss_kib());
	do_unmount();
	return 0;
}

/* ==== many mode ==== */

static void forget_new(ubt_ino ino) { ubt_forget(fs, ino, 1); }

static int run_many(uint64_t nflat, uint64_t ndeep, uint64_t ndirs, uint64_t batch, const char *listpath)
{
	FILE *list = listpath ? fopen(listpath, "w") : NULL;
	ubt_ino flat, deep, ino;
	ubt_ino *dirs;
	char **dpaths;
	char name[64];
	uint64_t ops = 0;
	int ret;

	if (listpath && !list)
		fail("%s: %s", listpath, strerror(errno));
	rng_state = 12345;
	do_mount(NULL);
	ret = ubt_mkdir(fs, UBT_ROOT_INO, "flat", 0755, 0, 0, &flat, NULL);
	if (ret)
		fail("mkdir /flat: %s", ubt_strerror(ret));
	if (list)
		fprintf(list, ".\n./flat\n");
	for (uint64_t i = 0; i < nflat; i++) {
		snprintf(name, sizeof(name), "file-%07" PRIu64 "-%s", i, i % 3 ? "x" : "a-longer-name-to-vary-sizes");
		ret = ubt_mknod(fs, flat, name, S_IFREG | 0644, 0, 0, 0, &ino, NULL);
		if (ret)
			fail("create /flat/%s: %s", name, ubt_strerror(ret));
		if (i % 7 == 0) {
			ubt_file *f;
			uint8_t buf[100];

			fill_pattern(buf, sizeof(buf), i, 0);
			if ((ret = ubt_open(fs, ino, O_WRONLY, &f)) || (ret = (int)ubt_pwrite(f, buf, 1 + i % 100, 0)) < 0 ||
			    (ret = ubt_close(f)))
				fail("write /flat/%s: %s", name, ubt_strerror(ret));
		}
		forget_new(ino);
		if (list)
			fprintf(list, "./flat/%s\n", name);
		if (++ops % batch == 0)
			do_sync();
	}
	do_sync();
	printf("flat: %" PRIu64 " files, peak_rss_kib %ld\n", nflat, peak_rss_kib());
	fflush(stdout);

	ret = ubt_mkdir(fs, UBT_ROOT_INO, "deep", 0755, 0, 0, &deep, NULL);
	if (ret)
		fail("mkdir /deep: %s", ubt_strerror(ret));
	if (list)
		fprintf(list, "./deep\n");
	dirs = xmalloc((ndirs + 1) * sizeof(*dirs));
	dpaths = xmalloc((ndirs + 1) * sizeof(*dpaths));
	dirs[0] = deep;
	dpaths[0] = xstrdup("./deep");
	for (uint64_t i = 1; i <= ndirs; i++) {
		/* a parent among the last few: long chains, some branching */
		uint64_t p = i - 1 - rnd(i < 4 ? i : 4);

		snprintf(name, sizeof(name), "d%" PRIu64, i);
		ret = ubt_mkdir(fs, dirs[p], name, 0755, 0, 0, &dirs[i], NULL);
		if (ret)
			fail("mkdir %s/%s: %s", dpaths[p], name, ubt_strerror(ret));
		dpaths[i] = xmalloc(strlen(dpaths[p]) + strlen(name) + 2);
		sprintf(dpaths[i], "%s/%s", dpaths[p], name);
		if (list)
			fprintf(list, "%s\n", dpaths[i]);
		/* held: the directory handles stay valid while referenced (forgotten at the end) */
	}
	for (uint64_t i = 0; i < ndeep; i++) {
		uint64_t p = rnd(ndirs + 1);

		snprintf(name, sizeof(name), "f%" PRIu64, i);
		ret = ubt_mknod(fs, dirs[p], name, S_IFREG | 0600, 0, 1000, 1000, &ino, NULL);
		if (ret)
			fail("create %s/%s: %s", dpaths[p], name, ubt_strerror(ret));
		forget_new(ino);
		if (list)
			fprintf(list, "%s/%s\n", dpaths[p], name);
		if (++ops % batch == 0)
			do_sync();
	}
	for (uint64_t i = 1; i <= ndirs; i++) {
		forget_new(dirs[i]);
		free(dpaths[i]);
	}
	free(dpaths[0]);
	free(dirs);
	free(dpaths);
	do_sync();
	printf("deep: %" PRIu64 " files in %" PRIu64 " dirs, peak_rss_kib %ld\n", ndeep, ndirs, peak_rss_kib());
	do_unmount();
	printf("peak_rss_kib %ld\n", peak_rss_kib());
	if (list && fclose(list))
		fail("%s: %s", listpath, strerror(errno));
	return 0;
}

/* ==== script mode ==== */

static ssize_t write_pattern(ubt_ino ino, uint64_t off, uint64_t len, uint64_t seed, bool append)
{
	ubt_file *f;
	uint64_t done = 0;
	ssize_t r = 0;
	int ret;

	ret = ubt_open(fs, ino, O_WRONLY | (append ? O_APPEND : 0), &f);
	if (ret)
		return ret;
	if (append) {
		struct stat st;

		ret = ubt_getattr(fs, ino, &st);
		if (ret)
			return ret;
		off = (uint64_t)st.st_size;
	}
	while (done < len) {
		size_t n = len - done < IOBUF ? (size_t)(len - done) : IOBUF;

		fill_pattern(iobuf, n, seed, off + done);
		r = ubt_pwrite(f, iobuf, n, off + done);
		if (r < 0)
			break;
		if (r == 0) {
			r = -EIO;
			break;
		}
		done += (uint64_t)r;
	}
	ret = ubt_close(f);
	if (r < 0)
		return r;
	return ret ? ret : (ssize_t)done;
}

static int rmtree(ubt_ino parent, const char *name)
{
	struct stat st;
	ubt_ino ino;
	int ret = ubt_lookup(fs, parent, name, &ino, &st);

	if (ret)
		return ret;
	if (S_ISDIR(st.st_mode)) {
		struct names l;

		list_dir(ino, name, &l);
		for (size_t i = 0; i < l.n; i++) {
			if (!ret)
				ret = rmtree(ino, l.v[i]);
			free(l.v[i]);
		}
		free(l.v);
		ubt_forget(fs, ino, 1);
		return ret ? ret : ubt_rmdir(fs, parent, name);
	}
	ubt_forget(fs, ino, 1);
	return ubt_unlink(fs, parent, name);
}

static void print_statfs(void)
{
	struct statvfs sv;
	int ret = ubt_statfs(fs, &sv);

	if (ret)
		fail("statfs: %s", ubt_strerror(ret));
	printf("statfs blocks %llu bfree %llu bavail %llu bsize %lu\n", (unsigned long long)sv.f_blocks,
	       (unsigned long long)sv.f_bfree, (unsigned long long)sv.f_bavail, (unsigned long)sv.f_bsize);
}

static int script_cmd(char **a, int n)
{
	ubt_ino ino, parent;
	const char *name;
	struct stat st;
	int ret;

#define NEED(k)                                                                                    \
	do {                                                                                        \
		if (n != (k))                                                                       \
			fail("%s: expected %d arguments", a[0], (k) - 1);                           \
	} while (0)
	if (!strcmp(a[0], "mkdir") || !strcmp(a[0], "create")) {
		NEED(2);
		ret = resolve_parent(a[1], &parent, &name);
		if (ret)
			return ret;
		ret = a[0][0] == 'm' ? ubt_mkdir(fs, parent, name, 0755, 0, 0, &ino, NULL)
				     : ubt_mknod(fs, parent, name, S_IFREG | 0644, 0, 0, 0, &ino, NULL);
		if (!ret)
			ubt_forget(fs, ino, 1);
		return ret;
	}
	if (!strcmp(a[0], "write") || !strcmp(a[0], "append")) {
		bool app = a[0][0] == 'a';
		ssize_t r;

		NEED(app ? 4 : 5);
		ret = resolve(a[1], &ino, NULL);
		if (ret == -ENOENT) {
			ret = resolve_parent(a[1], &parent, &name);
			if (!ret)
				ret = ubt_mknod(fs, parent, name, S_IFREG | 0644, 0, 0, 0, &ino, NULL);
			if (!ret)
				ubt_forget(fs, ino, 1);
		}
		if (ret)
			return ret;
		r = app ? write_pattern(ino, 0, strtoull(a[2], NULL, 0), strtoull(a[3], NULL, 0), true)
			: write_pattern(ino, strtoull(a[2], NULL, 0), strtoull(a[3], NULL, 0), strtoull(a[4], NULL, 0),
					false);
		return r < 0 ? (int)r : 0;
	}
	if (!strcmp(a[0], "truncate")) {
		NEED(3);
		ret = resolve(a[1], &ino, NULL);
		if (ret)
			return ret;
		memset(&st, 0, sizeof(st));
		st.st_size = (off_t)strtoull(a[2], NULL, 0);
		return ubt_setattr(fs, ino, &st, UBT_SET_SIZE, NULL);
	}
	if (!strcmp(a[0], "unlink") || !strcmp(a[0], "rmdir") || !strcmp(a[0], "rmtree")) {
		NEED(2);
		ret = resolve_parent(a[1], &parent, &name);
		if (ret)
			return ret;
		if (a[0][1] == 'n')
			return ubt_unlink(fs, parent, name);
		return a[0][2] == 'd' ? ubt_rmdir(fs, parent, name) : rmtree(parent, name);
	}
	if (!strcmp(a[0], "rename")) {
		ubt_ino np;
		const char *nn;
		unsigned flags = 0;

		if (n != 3 && n != 4)
			fail("rename: A B [noreplace|exchange]");
		if (n == 4)
			flags = !strcmp(a[3], "noreplace") ? UBT_RENAME_NOREPLACE
				: !strcmp(a[3], "exchange") ? UBT_RENAME_EXCHANGE
							    : (fail("rename flag %s", a[3]), 0);
		ret = resolve_parent(a[1], &parent, &name);
		if (!ret)
			ret = resolve_parent(a[2], &np, &nn);
		return ret ? ret : ubt_rename(fs, parent, name, np, nn, flags);
	}
	if (!strcmp(a[0], "link")) {
		NEED(3);
		ret = resolve(a[1], &ino, NULL);
		if (!ret)
			ret = resolve_parent(a[2], &parent, &name);
		if (!ret)
			ret = ubt_link(fs, ino, parent, name, NULL);
		if (!ret)
			ubt_forget(fs, ino, 1);
		return ret;
	}
	if (!strcmp(a[0], "symlink")) {
		NEED(3);
		ret = resolve_parent(a[2], &parent, &name);
		if (!ret)
			ret = ubt_symlink(fs, parent, name, a[1], 0, 0, &ino, NULL);
		if (!ret)
			ubt_forget(fs, ino, 1);
		return ret;
	}
	if (!strcmp(a[0], "setxattr")) {
		NEED(4);
		ret = resolve(a[1], &ino, NULL);
		return ret ? ret : ubt_setxattr(fs, ino, a[2], a[3], strlen(a[3]), 0);
	}
	if (!strcmp(a[0], "rmxattr")) {
		NEED(3);
		ret = resolve(a[1], &ino, NULL);
		return ret ? ret : ubt_removexattr(fs, ino, a[2]);
	}
	if (!strcmp(a[0], "chmod")) {
		NEED(3);
		ret = resolve(a[1], &ino, NULL);
		memset(&st, 0, sizeof(st));
		st.st_mode = (mode_t)strtoul(a[2], NULL, 8);
		return ret ? ret : ubt_setattr(fs, ino, &st, UBT_SET_MODE, NULL);
	}
	if (!strcmp(a[0], "utime")) {
		NEED(4);
		ret = resolve(a[1], &ino, NULL);
		memset(&st, 0, sizeof(st));
		st.st_mtim.tv_sec = st.st_atim.tv_sec = (time_t)strtoll(a[2], NULL, 0);
		st.st_mtim.tv_nsec = st.st_atim.tv_nsec = strtol(a[3], NULL, 0);
		return ret ? ret : ubt_setattr(fs, ino, &st, UBT_SET_ATIME | UBT_SET_MTIME, NULL);
	}
	if (!strcmp(a[0], "sync")) {
		NEED(1);
		return ubt_sync(fs);
	}
	if (!strcmp(a[0], "statfs")) {
		NEED(1);
		print_statfs();
		return 0;
	}
	if (!strcmp(a[0], "fill")) {
		uint64_t size, nfiles = 0, bytes = 0;
		char path[4096];

		NEED(3);
		size = strtoull(a[2], NULL, 0);
		ret = resolve(a[1], &parent, NULL);
		if (ret)
			return ret;
		for (;;) {
			ssize_t r;

			snprintf(path, sizeof(path), "f%06" PRIu64, nfiles);
			ret = ubt_mknod(fs, parent, path, S_IFREG | 0644, 0, 0, 0, &ino, NULL);
			if (ret == -ENOSPC)
				break;
			if (ret)
				fail("fill: create %s/%s: %s", a[1], path, ubt_strerror(ret));
			ubt_forget(fs, ino, 1);
			r = write_pattern(ino, 0, size, nfiles, false);
			if (r == -ENOSPC) {
				struct stat fst;

				/* the partial file stays; what it holds must read back */
				if (ubt_getattr(fs, ino, &fst))
					fail("fill: getattr after ENOSPC");
				bytes += (uint64_t)fst.st_size;
				nfiles++;
				break;
			}
			if (r < 0)
				fail("fill: write %s/%s: %s (expected success or ENOSPC)", a[1], path,
				     ubt_strerror((int)r));
			bytes += size;
			nfiles++;
			if (nfiles % 16 == 0) {
				ret = ubt_sync(fs);
				if (ret == -ENOSPC)
					fail("fill: sync returned ENOSPC (a commit must always fit)");
				if (ret)
					fail("fill: sync: %s", ubt_strerror(ret));
			}
		}
		printf("filled %" PRIu64 " files %" PRIu64 " bytes\n", nfiles, bytes);
		return 0;
	}
#undef NEED
	fail("unknown command %s", a[0]);
}

static int run_script(const char *compress)
{
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;

	do_mount(compress);
	while (getline(&line, &cap, stdin) > 0) {
		char *a[16], *save = NULL, *t;
		int n = 0, want = 0, ret;

		lineno++;
		for (t = strtok_r(line, " \t\n", &save); t && n < 16; t = strtok_r(NULL, " \t\n", &save))
			a[n++] = t;
		if (!n || a[0][0] == '#')
			continue;
		if (!strcmp(a[0], "expect")) {
			if (n < 3)
				fail("line %u: expect ERRNO CMD...", lineno);
			want = errno_by_name(a[1]);
			ret = script_cmd(a + 2, n - 2);
		} else {
			ret = script_cmd(a, n);
		}
		if (ret != want)
			fail("line %u: %s: got %s, expected %s", lineno, a[want ? 2 : 0], ename(ret), ename(want));
	}
	free(line);
	do_unmount();
	return 0;
}

/* ==== main ==== */

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
	fprintf(stderr, "usage: ubt_workload random IMG [--seed N] [--ops N] [--batch N] [--manifest FILE] [--compress ALG]\n"
			"       ubt_workload many IMG [--flat N] [--deep N] [--dirs N] [--batch N] [--list FILE]\n"
			"       ubt_workload script IMG [--compress ALG] < COMMANDS\n"
			"       ubt_workload pattern LEN SEED OFF\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t seed = 1, ops = 20000, batch = 500, nflat = 100000, ndeep = 100000, ndirs = 2000;
	const char *manifest = NULL, *compress = NULL, *list = NULL;

	if (argc == 5 && !strcmp(argv[1], "pattern")) {
		/* pattern LEN SEED OFF: the bytes write/append/fill put at file offset OFF */
		uint64_t len = strtoull(argv[2], NULL, 0), pseed = strtoull(argv[3], NULL, 0);
		uint64_t off = strtoull(argv[4], NULL, 0);

		for (uint64_t i = 0; i < len; i++)
			putchar(pattern_byte(pseed, off + i));
		return fflush(stdout) ? 1 : 0;
	}
	if (argc < 3)
		usage();
	image = argv[2];
	for (int i = 3; i < argc; i++) {
		const char *o = argv[i];

		if (i + 1 >= argc)
			usage();
		if (!strcmp(o, "--seed"))
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--ops"))
			ops = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--batch"))
			batch = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--manifest"))
			manifest = argv[++i];
		else if (!strcmp(o, "--compress"))
			compress = argv[++i];
		else if (!strcmp(o, "--flat"))
			nflat = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--deep"))
			ndeep = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--dirs"))
			ndirs = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(o, "--list"))
			list = argv[++i];
		else
			usage();
	}
	if (!batch)
		batch = 1;
	iobuf = xmalloc(IOBUF);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "random"))
		return run_random(seed, ops, batch, manifest, compress);
	if (!strcmp(argv[1], "many"))
		return run_many(nflat, ndeep, ndirs ? ndirs : 1, batch, list);
	if (!strcmp(argv[1], "script"))
		return run_script(compress);
	usage();
}
