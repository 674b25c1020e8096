/*
 * test_namespace.c — the write side of the namespace and the simple data path, against a model:
 * a seeded random mix of creates, mkdirs, symlinks, writes, truncates, links, unlinks, rmdirs,
 * renames (plain, NOREPLACE, EXCHANGE), setattrs and xattrs on a fresh mkfs.btrfs image, with the
 * whole tree compared to an in-memory model along the way; then `btrfs check --readonly`, a
 * remount and the same comparison, and (as root) the kernel's own view of the image compared
 * with what ubtrfs showed. A second case checks an unlinked-while-open file (orphan item).
 *
 * UBT_NS_SEED and UBT_NS_OPS override the seed and the number of operations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <ubtrfs.h>

#include "unit_fs.h"

#define MAX_INODES 4096
#define MAX_DENTS 4096
#define MAX_XATTRS 8
#define MAX_FILE (384 * 1024)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t rng_state;
static uint64_t rng(void) { return ufs_xorshift(&rng_state); }
static uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }

/* ---- the model ---- */

struct mxattr {
	char name[64];
	uint8_t val[256];
	size_t len;
};

struct minode {
	bool used;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	uint8_t *data; /* regular files: MAX_FILE bytes */
	uint64_t size;
	char target[600];
	unsigned nlink;   /* names */
	int nxattr;
	struct mxattr xattr[MAX_XATTRS];
	ubt_ino ino;
	struct timespec mtime; /* set explicitly by setattr, else 0 */
};

struct mdent {
	bool used;
	int parent; /* inode index of the directory */
	char name[80];
	int inode;
};

static struct minode inodes[MAX_INODES];
static struct mdent dents[MAX_DENTS];
static ubt_fs *fs;

static int model_find(int dir, const char *name)
{
	for (int i = 0; i < MAX_DENTS; i++)
		if (dents[i].used && dents[i].parent == dir && !strcmp(dents[i].name, name))
			return i;
	return -1;
}

static int model_children(int dir)
{
	int n = 0;

	for (int i = 0; i < MAX_DENTS; i++)
		n += dents[i].used && dents[i].parent == dir;
	return n;
}

static int new_inode(void)
{
	for (int i = 1; i < MAX_INODES; i++)
		if (!inodes[i].used) {
			memset(&inodes[i], 0, sizeof(inodes[i]));
			inodes[i].used = true;
			return i;
		}
	return -1;
}

static int new_dent(int parent, const char *name, int inode)
{
	for (int i = 0; i < MAX_DENTS; i++)
		if (!dents[i].used) {
			dents[i].used = true;
			dents[i].parent = parent;
			snprintf(dents[i].name, sizeof(dents[i].name), "%s", name);
			dents[i].inode = inode;
			inodes[inode].nlink++;
			return i;
		}
	return -1;
}

static void drop_dent(int d)
{
	int in = dents[d].inode;

	dents[d].used = false;
	if (--inodes[in].nlink == 0 || S_ISDIR(inodes[in].mode)) {
		free(inodes[in].data);
		inodes[in].data = NULL;
		inodes[in].used = false;
	}
}

/* Is inode @anc an ancestor of (or equal to) directory inode @dir? */
static bool model_is_ancestor(int anc, int dir)
{
	while (dir != 0) {
		if (dir == anc)
			return true;
		int up = -1;
		for (int i = 0; i < MAX_DENTS; i++)
			if (dents[i].used && dents[i].inode == dir) {
				up = dents[i].parent;
				break;
			}
		if (up < 0)
			return false;
		dir = up;
	}
	return anc == 0;
}

static int random_dent(bool (*pred)(int), int tries)
{
	for (int t = 0; t < tries; t++) {
		int d = (int)rnd(MAX_DENTS);
		for (int k = 0; k < MAX_DENTS; k++) {
			int i = (d + k) % MAX_DENTS;
			if (dents[i].used && (!pred || pred(i)))
				return i;
		}
	}
	return -1;
}

static bool is_dir_dent(int d) { return S_ISDIR(inodes[dents[d].inode].mode); }
static bool is_reg_dent(int d) { return S_ISREG(inodes[dents[d].inode].mode); }
static bool is_nondir_dent(int d) { return !S_ISDIR(inodes[dents[d].inode].mode); }

static int random_dir(void)
{
	if (rnd(4) == 0)
		return 0;
	int d = random_dent(is_dir_dent, 1);
	return d < 0 ? 0 : dents[d].inode;
}

static void random_name(char *buf, size_t size)
{
	static const char *const stems[] = { "a", "b", "file", "dir", "x", "long_name_for_testing_", "zz" };
	int n = (int)rnd(40);

	if (rnd(50) == 0) {
		/* Long names, up to btrfs's 255 bytes (the model keeps 79). */
		snprintf(buf, size, "%0*d", 70 + (int)rnd(9), n);
		return;
	}
	snprintf(buf, size, "%s%d", stems[rnd(ARRAY_SIZE(stems))], n);
}

/* ---- operations, each checked against the model ---- */

static void op_create(void)
{
	char name[80];
	int dir = random_dir(), in, kind = (int)rnd(10), ret, exp;
	struct stat st;
	ubt_ino ino;
	mode_t mode = 0;

	random_name(name, sizeof(name));
	exp = model_find(dir, name) >= 0 ? -EEXIST : 0;
	if (kind < 5) {
		mode = S_IFREG | 0644;
		ret = ubt_mknod(fs, inodes[dir].ino, name, mode, 0, 1000, 1000, &ino, &st);
	} else if (kind < 8) {
		mode = S_IFDIR | 0755;
		ret = ubt_mkdir(fs, inodes[dir].ino, name, 0755, 0, 0, &ino, &st);
	} else if (kind == 8) {
		char target[600];
		size_t tl = 1 + rnd(rnd(4) == 0 ? 500 : 40);
		for (size_t i = 0; i < tl; i++)
			target[i] = "abcdefgh/._-"[rnd(12)];
		target[tl] = 0;
		mode = S_IFLNK | 0777;
		ret = ubt_symlink(fs, inodes[dir].ino, name, target, 0, 0, &ino, &st);
		if (ret == 0) {
			assert_int_equal(exp, 0);
			in = new_inode();
			inodes[in].mode = mode;
			strcpy(inodes[in].target, target);
			inodes[in].size = tl;
			inodes[in].ino = ino;
			new_dent(dir, name, in);
			assert_int_equal(st.st_size, tl);
			ubt_forget(fs, ino, 1);
			return;
		}
	} else {
		mode = (rnd(2) ? S_IFCHR : S_IFIFO) | 0600;
		ret = ubt_mknod(fs, inodes[dir].ino, name, mode, S_ISCHR(mode) ? makedev(4000, 70000) : 0, 0, 0, &ino,
				&st);
	}
	assert_int_equal(ret, exp);
	if (ret)
		return;
	in = new_inode();
	assert_true(in > 0);
	inodes[in].mode = mode;
	inodes[in].uid = st.st_uid;
	inodes[in].gid = st.st_gid;
	inodes[in].rdev = S_ISCHR(mode) ? makedev(4000, 70000) : 0;
	inodes[in].ino = ino;
	if (S_ISREG(mode))
		inodes[in].data = calloc(1, MAX_FILE);
	new_dent(dir, name, in);
	assert_int_equal(st.st_mode, mode);
	assert_int_equal(st.st_nlink, 1);
	ubt_forget(fs, ino, 1);
}

static void op_write(void)
{
	int d = random_dent(is_reg_dent, 3), in;
	ubt_file *f;
	uint64_t off, len;
	uint8_t *buf;
	ssize_t n;

	if (d < 0)
		return;
	in = dents[d].inode;
	switch (rnd(4)) {
	case 0: /* small, inline-sized */
		off = rnd(1500);
		len = 1 + rnd(600);
		break;
	case 1: /* append */
		off = inodes[in].size;
		len = 1 + rnd(20000);
		break;
	default:
		off = rnd(MAX_FILE / 2);
		len = 1 + rnd(rnd(2) ? 5000 : 100000);
		break;
	}
	if (off + len > MAX_FILE)
		len = MAX_FILE - off;
	if (len == 0)
		return;
	buf = malloc(len);
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rng() | 1);
	assert_int_equal(ubt_open(fs, inodes[in].ino, O_RDWR, &f), 0);
	n = ubt_pwrite(f, buf, len, off);
	assert_int_equal(n, (ssize_t)len);
	assert_int_equal(ubt_close(f), 0);
	memcpy(inodes[in].data + off, buf, len);
	inodes[in].mtime.tv_sec = 0; /* now written: no longer the value setattr gave */
	if (off + len > inodes[in].size)
		inodes[in].size = off + len;
	free(buf);
}

static void op_truncate(void)
{
	int d = random_dent(is_reg_dent, 3), in;
	struct stat st = { 0 }, out;
	uint64_t size;

	if (d < 0)
		return;
	in = dents[d].inode;
	size = rnd(3) == 0 ? rnd(3000) : rnd(MAX_FILE);
	st.st_size = (off_t)size;
	assert_int_equal(ubt_setattr(fs, inodes[in].ino, &st, UBT_SET_SIZE, &out), 0);
	assert_int_equal(out.st_size, size);
	if (size < inodes[in].size)
		memset(inodes[in].data + size, 0, inodes[in].size - size);
	inodes[in].mtime.tv_sec = 0;
	inodes[in].size = size;
}

static void op_link(void)
{
	int d = random_dent(is_nondir_dent, 3), dir = random_dir(), in, exp;
	char name[80];
	struct stat st;

	if (d < 0)
		return;
	in = dents[d].inode;
	random_name(name, sizeof(name));
	exp = model_find(dir, name) >= 0 ? -EEXIST : 0;
	assert_int_equal(ubt_link(fs, inodes[in].ino, inodes[dir].ino, name, &st), exp);
	if (exp)
		return;
	new_dent(dir, name, in);
	assert_int_equal(st.st_nlink, inodes[in].nlink);
	ubt_forget(fs, inodes[in].ino, 1);
}

static void op_unlink(void)
{
	int d = random_dent(NULL, 3), ret;

	if (d < 0)
		return;
	if (is_dir_dent(d)) {
		ret = ubt_rmdir(fs, inodes[dents[d].parent].ino, dents[d].name);
		assert_int_equal(ret, model_children(dents[d].inode) ? -ENOTEMPTY : 0);
		assert_int_equal(ubt_unlink(fs, inodes[dents[d].parent].ino, dents[d].name), ret ? -EISDIR : -ENOENT);
	} else {
		assert_int_equal(ubt_rmdir(fs, inodes[dents[d].parent].ino, dents[d].name), -ENOTDIR);
		ret = ubt_unlink(fs, inodes[dents[d].parent].ino, dents[d].name);
		assert_int_equal(ret, 0);
	}
	if (ret == 0)
		drop_dent(d);
}

static void op_rename(void)
{
	int s = random_dent(NULL, 3), dir, t, si, ti = -1, exp = 0;
	unsigned flags = 0;
	char name[80];

	if (s < 0)
		return;
	dir = random_dir();
	if (rnd(2)) {
		int x = random_dent(NULL, 1);
		if (x >= 0) {
			dir = dents[x].parent;
			strcpy(name, dents[x].name);
		} else {
			random_name(name, sizeof(name));
		}
	} else {
		random_name(name, sizeof(name));
	}
	switch (rnd(6)) {
	case 0:
		flags = UBT_RENAME_NOREPLACE;
		break;
	case 1:
		flags = UBT_RENAME_EXCHANGE;
		break;
	}
	if (dents[s].parent == dir && !strcmp(dents[s].name, name))
		return;
	si = dents[s].inode;
	t = model_find(dir, name);
	if (t >= 0)
		ti = dents[t].inode;
	/* The order of checks of ubt_rename (the VFS's: a loop before the types). */
	if (t >= 0 && (flags & UBT_RENAME_NOREPLACE))
		exp = -EEXIST;
	else if (t < 0 && (flags & UBT_RENAME_EXCHANGE))
		exp = -ENOENT;
	else if (t >= 0 && ti == si)
		exp = 1; /* no-op */
	else if (S_ISDIR(inodes[si].mode) && dir != dents[s].parent && model_is_ancestor(si, dir))
		exp = -EINVAL;
	else if ((flags & UBT_RENAME_EXCHANGE) && S_ISDIR(inodes[ti].mode) && dir != dents[s].parent &&
		 model_is_ancestor(ti, dents[s].parent))
		exp = -EINVAL;
	else if (!(flags & UBT_RENAME_EXCHANGE) && t >= 0 && S_ISDIR(inodes[si].mode) && !S_ISDIR(inodes[ti].mode))
		exp = -ENOTDIR;
	else if (!(flags & UBT_RENAME_EXCHANGE) && t >= 0 && !S_ISDIR(inodes[si].mode) && S_ISDIR(inodes[ti].mode))
		exp = -EISDIR;
	else if (!(flags & UBT_RENAME_EXCHANGE) && t >= 0 && S_ISDIR(inodes[ti].mode) && model_children(ti))
		exp = -ENOTEMPTY;
	assert_int_equal(ubt_rename(fs, inodes[dents[s].parent].ino, dents[s].name, inodes[dir].ino, name, flags),
			 exp == 1 ? 0 : exp);
	if (exp)
		return;
	if (flags & UBT_RENAME_EXCHANGE) {
		dents[s].inode = ti;
		dents[t].inode = si;
		return;
	}
	if (t >= 0)
		drop_dent(t);
	dents[s].parent = dir;
	strcpy(dents[s].name, name);
}

static void op_setattr(void)
{
	int d = random_dent(NULL, 3), in;
	struct stat st = { 0 }, out;
	unsigned set = 0;

	if (d < 0)
		return;
	in = dents[d].inode;
	if (S_ISLNK(inodes[in].mode))
		return;
	if (rnd(2)) {
		set |= UBT_SET_MODE;
		st.st_mode = (mode_t)rnd(07777);
		inodes[in].mode = (inodes[in].mode & S_IFMT) | st.st_mode;
	}
	if (rnd(2)) {
		set |= UBT_SET_UID | UBT_SET_GID;
		st.st_uid = (uid_t)rnd(70000);
		st.st_gid = (gid_t)rnd(70000);
		inodes[in].uid = st.st_uid;
		inodes[in].gid = st.st_gid;
	}
	if (rnd(2)) {
		set |= UBT_SET_MTIME;
		st.st_mtim.tv_sec = (time_t)(1600000000 + rnd(100000000));
		st.st_mtim.tv_nsec = (long)rnd(1000000000);
		inodes[in].mtime = st.st_mtim;
	}
	assert_int_equal(ubt_setattr(fs, inodes[in].ino, &st, set, &out), 0);
	assert_int_equal(out.st_mode, inodes[in].mode);
}

static void op_xattr(void)
{
	int d = random_dent(NULL, 3), in, x = -1, ret;
	char name[64];
	uint8_t val[256];
	size_t len = rnd(200);
	int flags = 0;

	if (d < 0)
		return;
	in = dents[d].inode;
	if (S_ISLNK(inodes[in].mode))
		return; /* user.* xattrs are not allowed on symlinks by the kernel */
	snprintf(name, sizeof(name), "%s.attr%d", rnd(4) ? "user" : "trusted", (int)rnd(6));
	for (int i = 0; i < inodes[in].nxattr; i++)
		if (!strcmp(inodes[in].xattr[i].name, name))
			x = i;
	if (rnd(3) == 0) {
		ret = ubt_removexattr(fs, inodes[in].ino, name);
		assert_int_equal(ret, x >= 0 ? 0 : -ENODATA);
		if (x >= 0)
			inodes[in].xattr[x] = inodes[in].xattr[--inodes[in].nxattr];
		return;
	}
	for (size_t i = 0; i < len; i++)
		val[i] = (uint8_t)rng();
	if (rnd(4) == 0)
		flags = rnd(2) ? XATTR_CREATE : XATTR_REPLACE;
	ret = ubt_setxattr(fs, inodes[in].ino, name, val, len, flags);
	if (!strncmp(name, "user.", 5) && !S_ISREG(inodes[in].mode) && !S_ISDIR(inodes[in].mode)) {
		assert_int_equal(ret, -EPERM);
		return;
	}
	if (x >= 0 && flags == XATTR_CREATE) {
		assert_int_equal(ret, -EEXIST);
		return;
	}
	if (x < 0 && flags == XATTR_REPLACE) {
		assert_int_equal(ret, -ENODATA);
		return;
	}
	if (x < 0 && inodes[in].nxattr == MAX_XATTRS) {
		ubt_removexattr(fs, inodes[in].ino, name);
		return;
	}
	assert_int_equal(ret, 0);
	if (x < 0)
		x = inodes[in].nxattr++;
	strcpy(inodes[in].xattr[x].name, name);
	memcpy(inodes[in].xattr[x].val, val, len);
	inodes[in].xattr[x].len = len;
}

/* ---- comparison ---- */

struct seen {
	int n;
	char names[512][80];
	ubt_ino inos[512];
};

static int fill_cb(void *ctx, const char *name, size_t name_len, ubt_ino ino, unsigned d_type, uint64_t next_off)
{
	struct seen *s = ctx;

	(void)d_type;
	(void)next_off;
	if ((name_len == 1 && name[0] == '.') || (name_len == 2 && !memcmp(name, "..", 2)))
		return 0;
	assert_true(s->n < 512);
	memcpy(s->names[s->n], name, name_len);
	s->names[s->n][name_len] = 0;
	s->inos[s->n++] = ino;
	return 0;
}

static void check_xattrs_lib(int in)
{
	char list[4096];
	ssize_t n = ubt_listxattr(fs, inodes[in].ino, list, sizeof(list));
	int count = 0;

	assert_true(n >= 0);
	for (char *p = list; p < list + n; p += strlen(p) + 1)
		count++;
	assert_int_equal(count, inodes[in].nxattr);
	for (int i = 0; i < inodes[in].nxattr; i++) {
		uint8_t v[256];
		ssize_t l = ubt_getxattr(fs, inodes[in].ino, inodes[in].xattr[i].name, v, sizeof(v));
		assert_int_equal(l, (ssize_t)inodes[in].xattr[i].len);
		assert_memory_equal(v, inodes[in].xattr[i].val, inodes[in].xattr[i].len);
	}
}

static uint8_t *readbuf;

static void check_inode_lib(int in, const struct stat *st)
{
	assert_int_equal(st->st_mode, inodes[in].mode);
	assert_int_equal(st->st_nlink, S_ISDIR(inodes[in].mode) ? 1 : inodes[in].nlink);
	assert_int_equal(st->st_uid, inodes[in].uid);
	assert_int_equal(st->st_gid, inodes[in].gid);
	if (inodes[in].mtime.tv_sec && !S_ISDIR(inodes[in].mode)) {
		assert_int_equal(st->st_mtim.tv_sec, inodes[in].mtime.tv_sec);
		assert_int_equal(st->st_mtim.tv_nsec, inodes[in].mtime.tv_nsec);
	}
	if (S_ISREG(inodes[in].mode)) {
		ubt_file *f;
		ssize_t n;

		assert_int_equal(st->st_size, inodes[in].size);
		assert_int_equal(ubt_open(fs, inodes[in].ino, O_RDONLY, &f), 0);
		n = ubt_pread(f, readbuf, MAX_FILE + 10, 0);
		assert_int_equal(n, (ssize_t)inodes[in].size);
		assert_memory_equal(readbuf, inodes[in].data, inodes[in].size);
		ubt_close(f);
	} else if (S_ISLNK(inodes[in].mode)) {
		char t[700];
		ssize_t n = ubt_readlink(fs, inodes[in].ino, t, sizeof(t));
		assert_int_equal(n, (ssize_t)strlen(inodes[in].target));
		assert_memory_equal(t, inodes[in].target, (size_t)n);
	} else if (S_ISCHR(inodes[in].mode)) {
		assert_int_equal(st->st_rdev, inodes[in].rdev);
	} else if (S_ISDIR(inodes[in].mode)) {
		uint64_t expect = 0;
		for (int i = 0; i < MAX_DENTS; i++)
			if (dents[i].used && dents[i].parent == in)
				expect += 2 * strlen(dents[i].name);
		assert_int_equal(st->st_size, expect);
	}
	check_xattrs_lib(in);
}

static void compare_dir_lib(int dir, int depth)
{
	struct seen *s = calloc(1, sizeof(*s));

	assert_true(depth < 64);
	assert_int_equal(ubt_readdir(fs, inodes[dir].ino, 0, fill_cb, s), 0);
	assert_int_equal(s->n, model_children(dir));
	for (int i = 0; i < s->n; i++) {
		int d = model_find(dir, s->names[i]), in;
		struct stat st;
		ubt_ino ino;

		if (d < 0)
			fail_msg("unexpected entry '%s'", s->names[i]);
		in = dents[d].inode;
		assert_int_equal(s->inos[i], inodes[in].ino);
		assert_int_equal(ubt_lookup(fs, inodes[dir].ino, s->names[i], &ino, &st), 0);
		ubt_forget(fs, ino, 1);
		assert_int_equal(ino, inodes[in].ino);
		check_inode_lib(in, &st);
		if (S_ISDIR(inodes[in].mode))
			compare_dir_lib(in, depth + 1);
	}
	free(s);
}

static void compare_lib(void)
{
	struct stat st;

	assert_int_equal(ubt_getattr(fs, UBT_ROOT_INO, &st), 0);
	check_inode_lib(0, &st);
	compare_dir_lib(0, 0);
}

/* The kernel's view: POSIX calls on a read-only loop mount. */
static void compare_dir_kernel(const char *path, int dir)
{
	DIR *dp = opendir(path);
	struct dirent *de;
	int n = 0;

	assert_non_null(dp);
	while ((de = readdir(dp))) {
		char p[4096];
		struct stat st;
		int d, in;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		n++;
		d = model_find(dir, de->d_name);
		if (d < 0)
			fail_msg("kernel shows unexpected entry '%s/%s'", path, de->d_name);
		in = dents[d].inode;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		assert_int_equal(lstat(p, &st), 0);
		assert_int_equal(st.st_ino, inodes[in].ino & 0xffffffffffffULL);
		assert_int_equal(st.st_mode, inodes[in].mode);
		assert_int_equal(st.st_nlink, S_ISDIR(inodes[in].mode) ? 1 : inodes[in].nlink);
		assert_int_equal(st.st_uid, inodes[in].uid);
		assert_int_equal(st.st_gid, inodes[in].gid);
		if (inodes[in].mtime.tv_sec && !S_ISDIR(inodes[in].mode)) {
			assert_int_equal(st.st_mtim.tv_sec, inodes[in].mtime.tv_sec);
			assert_int_equal(st.st_mtim.tv_nsec, inodes[in].mtime.tv_nsec);
		}
		{
			struct stat ust;
			assert_int_equal(ubt_getattr(fs, inodes[in].ino, &ust), 0);
			assert_int_equal(st.st_size, ust.st_size);
			assert_int_equal(st.st_blocks, ust.st_blocks);
			assert_int_equal(st.st_mtim.tv_sec, ust.st_mtim.tv_sec);
			assert_int_equal(st.st_mtim.tv_nsec, ust.st_mtim.tv_nsec);
			assert_int_equal(st.st_ctim.tv_sec, ust.st_ctim.tv_sec);
			assert_int_equal(st.st_ctim.tv_nsec, ust.st_ctim.tv_nsec);
			assert_int_equal(st.st_rdev, ust.st_rdev);
		}
		if (S_ISREG(st.st_mode)) {
			int fd = open(p, O_RDONLY);
			ssize_t r;

			assert_true(fd >= 0);
			r = pread(fd, readbuf, MAX_FILE + 10, 0);
			close(fd);
			assert_int_equal(r, (ssize_t)inodes[in].size);
			assert_memory_equal(readbuf, inodes[in].data, inodes[in].size);
		} else if (S_ISLNK(st.st_mode)) {
			char t[700];
			ssize_t r = readlink(p, t, sizeof(t));
			assert_int_equal(r, (ssize_t)strlen(inodes[in].target));
			assert_memory_equal(t, inodes[in].target, (size_t)r);
		}
		for (int i = 0; i < inodes[in].nxattr; i++) {
			uint8_t v[256];
			ssize_t l = lgetxattr(p, inodes[in].xattr[i].name, v, sizeof(v));
			assert_int_equal(l, (ssize_t)inodes[in].xattr[i].len);
			assert_memory_equal(v, inodes[in].xattr[i].val, inodes[in].xattr[i].len);
		}
		if (S_ISDIR(st.st_mode))
			compare_dir_kernel(p, in);
	}
	closedir(dp);
	assert_int_equal(n, model_children(dir));
}

static void mount_rw(void)
{
	fs = ufs_mount(NULL);
}

static void model_reset(void)
{
	for (int i = 0; i < MAX_INODES; i++) {
		free(inodes[i].data);
		inodes[i].data = NULL;
		inodes[i].used = false;
	}
	memset(dents, 0, sizeof(dents));
	inodes[0].used = true;
	inodes[0].mode = S_IFDIR | 0755;
	inodes[0].ino = UBT_ROOT_INO;
	inodes[0].nlink = 1;
}

static void fresh_image(const char *extra)
{
	assert_int_equal(ufs_run("rm -f %s && truncate -s 512M %s && mkfs.btrfs -q -f %s %s >/dev/null", ufs_img,
				 ufs_img, extra, ufs_img),
			 0);
}

static void test_random_mix(void **state)
{
	const char *s = getenv("UBT_NS_SEED"), *o = getenv("UBT_NS_OPS");
	uint64_t seed = s ? strtoull(s, NULL, 0) : 0x5eed1234ULL;
	int nops = o ? atoi(o) : 3000;
	char mnt[300];

	(void)state;
	rng_state = seed | 1;
	print_message("seed 0x%llx, %d operations\n", (unsigned long long)seed, nops);
	fresh_image(getenv("UBT_NS_MKFS_OPTS") ? getenv("UBT_NS_MKFS_OPTS") : "");
	model_reset();
	mount_rw();
	for (int i = 0; i < nops; i++) {
		switch (rnd(20)) {
		case 0 ... 4:
			op_create();
			break;
		case 5 ... 8:
			op_write();
			break;
		case 9:
			op_truncate();
			break;
		case 10:
			op_link();
			break;
		case 11 ... 12:
			op_unlink();
			break;
		case 13 ... 14:
			op_rename();
			break;
		case 15:
			op_setattr();
			break;
		case 16 ... 17:
			op_xattr();
			break;
		case 18:
			if (rnd(10) == 0)
				assert_int_equal(ubt_sync(fs), 0);
			break;
		default:
			op_create();
			break;
		}
		if (i % 500 == 499)
			compare_lib();
	}
	compare_lib();
	assert_int_equal(ubt_unmount(fs), 0);
	fs = NULL;
	assert_int_equal(ufs_run("btrfs check --readonly %s", ufs_img), 0);

	mount_rw();
	compare_lib();
	assert_int_equal(ubt_unmount(fs), 0);
	assert_int_equal(ufs_run("btrfs check --readonly %s >/dev/null 2>&1", ufs_img), 0);

	if (getuid() != 0 || ufs_run("grep -qw btrfs /proc/filesystems") != 0) {
		print_message("kernel comparison skipped (needs root and btrfs in the kernel)\n");
		return;
	}
	snprintf(mnt, sizeof(mnt), "%s/mnt", ufs_dir);
	mkdir(mnt, 0755);
	if (ufs_run("mount -o loop,ro %s %s", ufs_img, mnt) != 0) {
		print_message("kernel comparison skipped (loop mount failed)\n");
		return;
	}
	/* The library, read-only, alongside: its stats are what the kernel must show. */
	{
		struct ubt_mount_opts ro = { .flags = UBT_MOUNT_RDONLY };
		assert_int_equal(ubt_mount(ufs_img, &ro, &fs), 0);
	}
	compare_dir_kernel(mnt, 0);
	ubt_unmount(fs);
	fs = NULL;
	ufs_run("umount %s", mnt);
}

/* An inode unlinked while open lives on (orphan item) until its last close; a crash leaves it for cleanup. */
static void test_orphan(void **state)
{
	ubt_ino ino;
	ubt_file *f;
	struct stat st;
	char buf[100];

	(void)state;
	fresh_image(getenv("UBT_NS_MKFS_OPTS") ? getenv("UBT_NS_MKFS_OPTS") : "");
	mount_rw();
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "victim", S_IFREG | 0600, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	assert_int_equal(ubt_pwrite(f, "hello world", 11, 5000), 11);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "victim"), 0);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, "victim", &ino, &st), -ENOENT);
	assert_int_equal(ubt_pread(f, buf, sizeof(buf), 5000), 11);
	assert_memory_equal(buf, "hello world", 11);
	assert_int_equal(ubt_sync(fs), 0);
	assert_int_equal(
		ufs_run("btrfs inspect-internal dump-tree -t fs %s 2>/dev/null | grep -q ORPHAN_ITEM", ufs_img), 0);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_getattr(fs, ino, &st), -ENOENT);
	assert_int_equal(ubt_unmount(fs), 0);
	fs = NULL;
	assert_int_equal(ufs_run("btrfs check --readonly %s >/dev/null 2>&1", ufs_img), 0);
	assert_int_not_equal(
		ufs_run("btrfs inspect-internal dump-tree -t fs %s 2>/dev/null | grep -q ORPHAN_ITEM", ufs_img), 0);
}

static int group_setup(void **state)
{
	(void)state;
	if (ufs_setup("ns"))
		return -1;
	readbuf = malloc(MAX_FILE + 16);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (fs)
		ubt_unmount(fs);
	ufs_teardown("mnt");
	free(readbuf);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_orphan),
		cmocka_unit_test(test_random_mix),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
