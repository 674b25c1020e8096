/*
 * test_inode_read.c — the inode layer's read side against real images: a tree generated here is
 * turned into an image by mkfs.btrfs --rootdir, opened through ctree, and every lookup, directory
 * walk, xattr, symlink and file read is compared byte for byte with the source files. Corruption
 * cases flip data bytes in the image (SINGLE and DUP data). When running as root with a btrfs
 * kernel, a second image written by the kernel adds compressed (zlib/lzo/zstd, inline and
 * partially overwritten), preallocated and NODATASUM files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/csum.h"
#include "ctree/disk-io.h"
#include "device/bdev.h"
#include "inode/inode.h"
#include "util/messages.h"

#include "unit_fs.h"

#define BIG_SIZE (1024 * 1024)
#define BLK 4096

static char tmpdir[256];
static char srcdir[300];
static bool have_kernel_image;

static u64 rng_state = 0x9e3779b97f4a7c15ULL;
static u64 rng(void) { return ufs_xorshift(&rng_state); }

static void write_file(const char *rel, const void *data, size_t len)
{
	char path[2048];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", srcdir, rel);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* 1 MiB whose 4 KiB blocks each start with a unique tag, so a block can be found in the image. */
static u8 *make_big(void)
{
	u8 *b = malloc(BIG_SIZE);

	for (size_t i = 0; i < BIG_SIZE; i += 8) {
		u64 v = rng();
		memcpy(b + i, &v, 8);
	}
	for (int i = 0; i < BIG_SIZE / BLK; i++)
		snprintf((char *)b + (size_t)i * BLK, 32, "UBTBLOCK-%08d-tag", i);
	return b;
}

static u8 *slurp(const char *path, size_t *len)
{
	struct stat st;
	u8 *buf;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return NULL;
	fstat(fd, &st);
	buf = malloc((size_t)st.st_size + 1);
	*len = 0;
	while (*len < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + *len, (size_t)st.st_size - *len);
		if (r <= 0)
			break;
		*len += (size_t)r;
	}
	close(fd);
	return buf;
}

static int group_setup(void **state)
{
	char buf[1024];
	u8 *big;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ubt-inode-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(srcdir, sizeof(srcdir), "%s/src", tmpdir);
	if (ufs_run("mkdir -p %s/sub/deeper && seq 1 300000 | head -c 1048576 > %s/comp.bin", srcdir, srcdir))
		return -1;

	write_file("small.txt", "hello world\n", 12);
	write_file("empty", "", 0);
	big = make_big();
	write_file("big.bin", big, BIG_SIZE);
	write_file("odd.bin", big + 5, 70001);
	write_file("inline3000", big + 100, 3000);
	free(big);
	/* Sparse: data at 5 MiB and a tail at the end of 10 MiB. */
	if (ufs_run("cd %s && truncate -s 10M sparse && printf 'middle-data' | dd of=sparse bs=1 seek=5242880 "
		"conv=notrunc status=none && printf 'tail' | dd of=sparse bs=1 seek=10485756 conv=notrunc "
		"status=none && truncate -s 3M hole-only",
		srcdir))
		return -1;
	for (int i = 0; i < 300; i++) {
		snprintf(buf, sizeof(buf), "sub/file-%03d", i);
		write_file(buf, buf, strlen(buf));
	}
	write_file("sub/deeper/leaf", "leaf", 4);
	memset(buf, 'x', 1000);
	buf[1000] = '\0';
	if (ufs_run("cd %s && ln -s small.txt link && ln -s %s longlink && setfattr -n user.foo -v bar big.bin && "
		"setfattr -n user.empty -v '' small.txt && setfattr -n user.second -v 0x00ff00 big.bin && "
		"setfattr -n user.long -v %s sub",
		srcdir, buf, buf))
		return -1;
	if (ufs_run("cd %s && truncate -s 256M img && mkfs.btrfs -q -f --rootdir src img >mkfs.log 2>&1", tmpdir))
		return -1;
	if (ufs_run("cd %s && truncate -s 256M img-dup && mkfs.btrfs -q -f -d dup -m dup --rootdir src img-dup "
		">>mkfs.log 2>&1",
		tmpdir))
		return -1;

	/* Kernel-written image with compression, prealloc and nodatasum (needs root and btrfs). */
	if (geteuid() == 0 &&
	    ufs_run("cd %s && truncate -s 256M kimg && mkfs.btrfs -q -f kimg >>mkfs.log 2>&1 && mkdir -p mnt && "
		"mount -o loop,compress-force=zstd kimg mnt 2>/dev/null",
		tmpdir) == 0) {
		int r = ufs_run("cd %s && cp src/comp.bin mnt/zstd.bin && head -c 1000 /dev/zero > mnt/zstd-inline && "
				"sync && mount -o remount,compress-force=lzo mnt && cp src/comp.bin mnt/lzo.bin && "
				"sync && mount -o remount,compress-force=zlib mnt && cp src/comp.bin mnt/zlib.bin && "
				"yes hello | head -c 3000 > mnt/zlib-inline && "
				"dd if=src/odd.bin of=mnt/zstd.bin bs=5000 seek=40 count=1 conv=notrunc status=none && "
				"sync && mount -o remount,compress=no mnt && "
				"fallocate -l 1M mnt/prealloc && dd if=src/odd.bin of=mnt/prealloc bs=4096 seek=64 "
				"count=4 conv=notrunc status=none && "
				"touch mnt/nodsum && chattr +C mnt/nodsum && cat src/big.bin > mnt/nodsum && "
				"cp mnt/zstd.bin src/zstd.expect && cp mnt/prealloc src/prealloc.expect && sync",
				tmpdir);
		ufs_run("umount %s/mnt", tmpdir);
		have_kernel_image = r == 0;
	}
	(void)state;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (getenv("UBT_KEEP_TMP"))
		fprintf(stderr, "keeping %s\n", tmpdir);
	else if (tmpdir[0])
		ufs_run("umount %s/mnt 2>/dev/null; rm -rf %s", tmpdir, tmpdir);
	return 0;
}

struct opened {
	struct ubt_fs_info *fs;
	struct ubt_root *root;
};

static void open_image(const char *name, struct opened *o)
{
	char path[512];
	struct ubt_bdev *bdev;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	assert_int_equal(ubt_bdev_open_file(path, true, &bdev), 0);
	assert_int_equal(ubt_open_ctree(bdev, UBT_OPEN_RDONLY, 0, &o->fs), 0);
	assert_int_equal(ubt_read_fs_root(o->fs, BTRFS_FS_TREE_OBJECTID, &o->root), 0);
}

static void close_image(struct opened *o)
{
	ubt_close_ctree(o->fs);
}

/* Resolve a '/'-separated path from the top directory (256). */
static int resolve(struct ubt_root *root, const char *path, u64 *ino)
{
	u64 cur = BTRFS_FIRST_FREE_OBJECTID;
	const char *p = path;

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		struct ubt_key loc;
		u8 type;
		int ret = ubt_dir_lookup(root, cur, p, n, &loc, &type);

		if (ret < 0)
			return ret;
		assert_int_equal(loc.type, BTRFS_INODE_ITEM_KEY);
		cur = loc.objectid;
		p += n;
		if (*p == '/')
			p++;
	}
	*ino = cur;
	return 0;
}

/* Compare a whole file, sequentially in 128 KiB reads and at random ranges, with @expect. */
static void check_file_data(struct ubt_root *root, const char *path, const u8 *expect, size_t size)
{
	struct btrfs_inode_item ii;
	u64 ino;
	size_t bufsz = 300000;
	u8 *buf = malloc(bufsz);

	assert_int_equal(resolve(root, path, &ino), 0);
	assert_int_equal(ubt_inode_read(root, ino, &ii), 0);
	assert_int_equal(le64toh(ii.size), size);
	for (size_t off = 0; off < size + 131072; off += 131072) {
		size_t want = off >= size ? 0 : ubt_min((size_t)131072, size - off);
		ssize_t got = ubt_file_read(root, ino, &ii, buf, 131072, off);

		assert_int_equal(got, want);
		if (want)
			assert_memory_equal(buf, expect + off, want);
	}
	for (int i = 0; i < 200; i++) {
		size_t off = (size_t)(rng() % (size + 5000));
		size_t len = (size_t)(rng() % bufsz);
		size_t want = off >= size ? 0 : ubt_min(len, size - off);
		ssize_t got = ubt_file_read(root, ino, &ii, buf, len, off);

		assert_int_equal(got, want);
		if (want)
			assert_memory_equal(buf, expect + off, want);
	}
	free(buf);
}

static void check_src_file(struct ubt_root *root, const char *rel, const char *src_rel)
{
	char path[512];
	size_t len = 0;
	u8 *data;

	snprintf(path, sizeof(path), "%s/%s", srcdir, src_rel ? src_rel : rel);
	data = slurp(path, &len);
	assert_non_null(data);
	check_file_data(root, rel, data, len);
	free(data);
}

static void test_file_reads(void **state)
{
	struct opened o;

	(void)state;
	open_image("img", &o);
	check_src_file(o.root, "small.txt", NULL);
	check_src_file(o.root, "empty", NULL);
	check_src_file(o.root, "big.bin", NULL);
	check_src_file(o.root, "odd.bin", NULL);
	check_src_file(o.root, "inline3000", NULL);
	check_src_file(o.root, "sparse", NULL);
	check_src_file(o.root, "hole-only", NULL);
	check_src_file(o.root, "sub/file-123", NULL);
	check_src_file(o.root, "sub/deeper/leaf", NULL);
	close_image(&o);
}

static void test_lookup_and_attrs(void **state)
{
	struct opened o;
	struct btrfs_inode_item ii;
	struct ubt_key loc;
	struct stat st;
	char path[512];
	char name[300];
	u64 ino, sub, parent;
	u8 type;

	(void)state;
	open_image("img", &o);
	assert_int_equal(ubt_dir_lookup(o.root, 256, "small.txt", 9, &loc, &type), 0);
	assert_int_equal(type, BTRFS_FT_REG_FILE);
	assert_int_equal(ubt_dir_lookup(o.root, 256, "sub", 3, &loc, &type), 0);
	assert_int_equal(type, BTRFS_FT_DIR);
	sub = loc.objectid;
	assert_int_equal(ubt_dir_lookup(o.root, 256, "link", 4, &loc, &type), 0);
	assert_int_equal(type, BTRFS_FT_SYMLINK);
	assert_int_equal(ubt_dir_lookup(o.root, 256, "nope", 4, &loc, &type), -ENOENT);
	assert_int_equal(ubt_dir_lookup(o.root, 256, "small.tx", 8, &loc, &type), -ENOENT);
	memset(name, 'a', sizeof(name));
	assert_int_equal(ubt_dir_lookup(o.root, 256, name, 256, &loc, &type), -ENAMETOOLONG);
	assert_int_equal(ubt_dir_lookup(o.root, 256, name, 255, &loc, &type), -ENOENT);

	assert_int_equal(resolve(o.root, "big.bin", &ino), 0);
	assert_int_equal(ubt_inode_read(o.root, ino, &ii), 0);
	snprintf(path, sizeof(path), "%s/big.bin", srcdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(le32toh(ii.mode), st.st_mode);
	assert_int_equal(le32toh(ii.nlink), 1);
	assert_int_equal(ubt_timespec(&ii.mtime).tv_sec, st.st_mtim.tv_sec);
	assert_int_equal(ubt_inode_read(o.root, 999999, &ii), -ENOENT);

	assert_int_equal(ubt_inode_parent(o.root, ino, &parent), 0);
	assert_int_equal(parent, 256);
	assert_int_equal(resolve(o.root, "sub/deeper/leaf", &ino), 0);
	assert_int_equal(resolve(o.root, "sub/deeper", &parent), 0);
	assert_int_equal(ubt_inode_parent(o.root, parent, &parent), 0);
	assert_int_equal(parent, sub);
	assert_int_equal(ubt_inode_parent(o.root, 999999, &parent), -ENOENT);
	close_image(&o);
}

struct walk {
	int count;
	u64 last_index;
	u64 resume_index; /* index of entry number 150 */
	bool seen[300];
	bool seen_other;
};

static int walk_cb(void *ctx, u64 index, const char *name, size_t name_len, const struct ubt_key *location,
		   u8 type)
{
	struct walk *w = ctx;
	char nm[16] = "";
	unsigned n;

	assert_true(index > w->last_index || w->count == 0);
	w->last_index = index;
	if (w->count == 150)
		w->resume_index = index;
	w->count++;
	if (name_len == 8)
		memcpy(nm, name, 8);
	if (name_len == 8 && sscanf(nm, "file-%3u", &n) == 1 && n < 300) {
		assert_int_equal(type, BTRFS_FT_REG_FILE);
		assert_int_equal(location->type, BTRFS_INODE_ITEM_KEY);
		assert_false(w->seen[n]);
		w->seen[n] = true;
	} else {
		assert_int_equal(name_len, 6);
		assert_memory_equal(name, "deeper", 6);
		assert_int_equal(type, BTRFS_FT_DIR);
		w->seen_other = true;
	}
	return 0;
}

static int stop_cb(void *ctx, u64 index, const char *name, size_t name_len, const struct ubt_key *location,
		   u8 type)
{
	int *n = ctx;

	return ++*n == 5 ? 42 : 0;
}

static void test_dir_iterate(void **state)
{
	struct opened o;
	struct walk w = { 0 };
	u64 sub;
	int n = 0;

	(void)state;
	open_image("img", &o);
	assert_int_equal(resolve(o.root, "sub", &sub), 0);
	assert_int_equal(ubt_dir_iterate(o.root, sub, 0, walk_cb, &w), 0);
	assert_int_equal(w.count, 301);
	assert_true(w.seen_other);
	for (int i = 0; i < 300; i++)
		assert_true(w.seen[i]);
	/* Resume from the 151st entry. */
	struct walk w2 = { 0 };
	assert_int_equal(ubt_dir_iterate(o.root, sub, w.resume_index, walk_cb, &w2), 0);
	assert_int_equal(w2.count, 301 - 150);
	/* A callback's non-zero return stops the walk and is returned. */
	assert_int_equal(ubt_dir_iterate(o.root, sub, 0, stop_cb, &n), 42);
	assert_int_equal(n, 5);
	/* Past the end, and a non-directory: nothing. */
	n = 0;
	assert_int_equal(ubt_dir_iterate(o.root, sub, UINT64_MAX, stop_cb, &n), 0);
	assert_int_equal(n, 0);
	close_image(&o);
}

static void test_xattr_symlink(void **state)
{
	struct opened o;
	char buf[2048];
	u64 ino;
	ssize_t r;

	(void)state;
	open_image("img", &o);
	assert_int_equal(resolve(o.root, "big.bin", &ino), 0);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.foo", NULL, 0), 3);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.foo", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "bar", 3);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.foo", buf, 2), -ERANGE);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.second", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "\x00\xff\x00", 3);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.nope", buf, sizeof(buf)), -ENODATA);
	r = ubt_xattr_list(o.root, ino, NULL, 0);
	assert_int_equal(r, strlen("user.foo") + 1 + strlen("user.second") + 1);
	assert_int_equal(ubt_xattr_list(o.root, ino, buf, sizeof(buf)), r);
	assert_true((memcmp(buf, "user.foo\0user.second\0", (size_t)r) == 0) ||
		    (memcmp(buf, "user.second\0user.foo\0", (size_t)r) == 0));
	assert_int_equal(ubt_xattr_list(o.root, ino, buf, (size_t)r - 1), -ERANGE);

	assert_int_equal(resolve(o.root, "small.txt", &ino), 0);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.empty", buf, sizeof(buf)), 0);
	assert_int_equal(resolve(o.root, "sub", &ino), 0);
	assert_int_equal(ubt_xattr_get(o.root, ino, "user.long", buf, sizeof(buf)), 1000);
	assert_int_equal(resolve(o.root, "odd.bin", &ino), 0);
	assert_int_equal(ubt_xattr_list(o.root, ino, buf, sizeof(buf)), 0);

	assert_int_equal(resolve(o.root, "link", &ino), 0);
	assert_int_equal(ubt_symlink_read(o.root, ino, buf, sizeof(buf)), 9);
	assert_memory_equal(buf, "small.txt", 9);
	assert_int_equal(ubt_symlink_read(o.root, ino, buf, 8), -ERANGE);
	assert_int_equal(resolve(o.root, "longlink", &ino), 0);
	assert_int_equal(ubt_symlink_read(o.root, ino, buf, sizeof(buf)), 1000);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf[i], 'x');
	close_image(&o);
}

/* Flip one byte of big.bin's block @blk in image @name, in its copies number @first.. @first+@copies-1. */
static int flip_block(const char *name, int blk, int first, int copies)
{
	char path[512], tag[32];
	struct stat st;
	int fd, flipped = 0, seen = 0;
	u8 *map;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	snprintf(tag, sizeof(tag), "UBTBLOCK-%08d-tag", blk);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	fstat(fd, &st);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	for (off_t off = 0; off < st.st_size && flipped < copies; off += BLK) {
		if (memcmp(map + off, tag, strlen(tag)) == 0 && seen++ >= first) {
			map[off + 100] ^= 0x5a;
			flipped++;
		}
	}
	munmap(map, (size_t)st.st_size);
	close(fd);
	return flipped;
}

static void test_corruption(void **state)
{
	struct opened o;
	struct btrfs_inode_item ii;
	char path[512];
	size_t len = 0;
	u8 *expect, *buf = malloc(BIG_SIZE);
	u64 ino;

	(void)state;
	snprintf(path, sizeof(path), "%s/big.bin", srcdir);
	expect = slurp(path, &len);

	/* SINGLE data: the flipped block reads -EIO, its neighbours read fine. */
	assert_int_equal(ufs_run("cp --sparse=always %s/img %s/img-bad", tmpdir, tmpdir), 0);
	assert_int_equal(flip_block("img-bad", 7, 0, 1), 1);
	ubt_log_set_level(UBT_LOG_ERROR - 1); /* the -EIO lines are expected */
	open_image("img-bad", &o);
	assert_int_equal(resolve(o.root, "big.bin", &ino), 0);
	assert_int_equal(ubt_inode_read(o.root, ino, &ii), 0);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, BLK, 7 * BLK), -EIO);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, 10, 7 * BLK + 4000), -EIO);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, 131072, 0), -EIO);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, BLK, 6 * BLK), BLK);
	assert_memory_equal(buf, expect + 6 * BLK, BLK);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, BLK, 8 * BLK), BLK);
	assert_memory_equal(buf, expect + 8 * BLK, BLK);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, 131072, 131072), 131072);
	assert_memory_equal(buf, expect + 131072, 131072);
	close_image(&o);

	/* DUP data: one bad copy is repaired from the other; two bad copies give -EIO. */
	assert_int_equal(ufs_run("cp --sparse=always %s/img-dup %s/img-dup-bad", tmpdir, tmpdir), 0);
	assert_int_equal(flip_block("img-dup-bad", 3, 0, 1), 1);
	open_image("img-dup-bad", &o);
	check_file_data(o.root, "big.bin", expect, len);
	close_image(&o);
	assert_int_equal(flip_block("img-dup-bad", 3, 1, 1), 1);
	open_image("img-dup-bad", &o);
	assert_int_equal(resolve(o.root, "big.bin", &ino), 0);
	assert_int_equal(ubt_inode_read(o.root, ino, &ii), 0);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, 131072, 0), -EIO);
	assert_int_equal(ubt_file_read(o.root, ino, &ii, buf, BLK, 4 * BLK), BLK);
	close_image(&o);
	ubt_log_set_level(UBT_LOG_WARN);
	free(expect);
	free(buf);
}

static void test_kernel_image(void **state)
{
	struct opened o;
	struct btrfs_inode_item ii;
	char path[512];
	size_t len = 0, clen = 0;
	u8 *big, *comp, *zeros;
	u64 ino;

	(void)state;
	if (!have_kernel_image)
		skip();
	snprintf(path, sizeof(path), "%s/comp.bin", srcdir);
	comp = slurp(path, &clen);
	snprintf(path, sizeof(path), "%s/big.bin", srcdir);
	big = slurp(path, &len);
	open_image("kimg", &o);
	check_file_data(o.root, "lzo.bin", comp, clen);
	check_file_data(o.root, "zlib.bin", comp, clen);
	check_src_file(o.root, "zstd.bin", "zstd.expect");
	check_src_file(o.root, "prealloc", "prealloc.expect");
	check_file_data(o.root, "nodsum", big, len);
	assert_int_equal(resolve(o.root, "nodsum", &ino), 0);
	assert_int_equal(ubt_inode_read(o.root, ino, &ii), 0);
	assert_true(le64toh(ii.flags) & BTRFS_INODE_NODATASUM);
	zeros = calloc(1, 1000);
	check_file_data(o.root, "zstd-inline", zeros, 1000);
	free(zeros);
	assert_int_equal(ufs_run("yes hello | head -c 3000 > %s/zi.expect", srcdir), 0);
	check_src_file(o.root, "zlib-inline", "zi.expect");
	close_image(&o);
	free(big);
	free(comp);
}

/* Exercise every read call on every entry of directory @dir (results ignored: no crash, no overrun). */
struct exercise {
	struct ubt_root *root;
	u8 *buf;
	int depth;
};

static int exercise_cb(void *ctx, u64 index, const char *name, size_t name_len, const struct ubt_key *location,
		       u8 type);

static void exercise_ino(struct exercise *e, u64 ino, u8 type)
{
	struct btrfs_inode_item ii;
	char names[4096];
	ssize_t n;
	u64 parent;

	ubt_inode_parent(e->root, ino, &parent);
	n = ubt_xattr_list(e->root, ino, names, sizeof(names));
	for (ssize_t p = 0; n > 0 && p < n; p += (ssize_t)strlen(names + p) + 1)
		ubt_xattr_get(e->root, ino, names + p, e->buf, 65536);
	if (ubt_inode_read(e->root, ino, &ii) < 0)
		return;
	if (type == BTRFS_FT_SYMLINK)
		ubt_symlink_read(e->root, ino, (char *)e->buf, 4096);
	if (type == BTRFS_FT_REG_FILE) {
		ubt_file_read(e->root, ino, &ii, e->buf, 1 << 20, 0);
		ubt_file_read(e->root, ino, &ii, e->buf, 5000, 3000);
	}
	if (type == BTRFS_FT_DIR && e->depth < 3) {
		e->depth++;
		ubt_dir_iterate(e->root, ino, 0, exercise_cb, e);
		e->depth--;
	}
}

static int exercise_cb(void *ctx, u64 index, const char *name, size_t name_len, const struct ubt_key *location,
		       u8 type)
{
	struct exercise *e = ctx;
	struct ubt_key loc;
	char nm[256];
	u8 t;

	memcpy(nm, name, name_len);
	ubt_dir_lookup(e->root, BTRFS_FIRST_FREE_OBJECTID, nm, name_len, &loc, &t);
	if (location->type == BTRFS_INODE_ITEM_KEY)
		exercise_ino(e, location->objectid, type);
	return 0;
}

/* Physical offsets of the copies of tree block @logical in the image mapped at @map. */
static int find_block_copies(const u8 *map, size_t size, u32 nodesize, u64 logical, size_t *offs, int max)
{
	int n = 0;

	for (size_t off = 0; off + nodesize <= size && n < max; off += nodesize)
		if (get_le64(map + offsetof(struct btrfs_header, bytenr) + off) == logical)
			offs[n++] = off;
	return n;
}

/*
 * Fuzz item contents: mutate bytes inside items of fs-tree leaves (re-checksummed, both copies),
 * then run every read call over the tree. Nothing may crash or overrun (run under UBT_SANITIZE).
 */
static void test_fuzz_items(void **state)
{
	static const char *const paths[] = { "", "big.bin", "sub", "link", "sparse" };
	struct opened o;
	struct exercise e;
	char path[512];
	struct stat st;
	u64 leaves[ARRAY_SIZE(paths)];
	u16 csum_type;
	u32 nodesize;
	u8 *map, *saved;
	int fd;

	(void)state;
	open_image("img", &o);
	nodesize = o.fs->nodesize;
	csum_type = o.fs->csum_type;
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		struct ubt_path p;
		struct ubt_key k = { 0, BTRFS_INODE_ITEM_KEY, 0 };

		assert_int_equal(resolve(o.root, paths[i], &k.objectid), 0);
		k.type = i == 0 ? BTRFS_DIR_INDEX_KEY : BTRFS_EXTENT_DATA_KEY;
		if (i == 2)
			k.type = BTRFS_XATTR_ITEM_KEY;
		ubt_path_init(&p);
		assert_true(ubt_search_le(o.root, &k, &p) == 0);
		leaves[i] = ubt_path_leaf(&p)->start;
		ubt_path_release(&p);
	}
	close_image(&o);

	snprintf(path, sizeof(path), "%s/img", tmpdir);
	assert_int_equal(ufs_run("cp --sparse=always %s/img %s/img-fuzz", tmpdir, tmpdir), 0);
	snprintf(path, sizeof(path), "%s/img-fuzz", tmpdir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	fstat(fd, &st);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	saved = malloc(nodesize);
	e.buf = malloc(1 << 20);
	ubt_log_set_level(getenv("UBT_FUZZ_LOG") ? UBT_LOG_ERROR : UBT_LOG_ERROR - 1);
	for (int iter = 0; iter < 300; iter++) {
		size_t offs[4];
		u64 leaf = leaves[rng() % ARRAY_SIZE(leaves)];
		int ncopies = find_block_copies(map, (size_t)st.st_size, nodesize, leaf, offs, 4);
		u8 *blk = map + offs[0];
		u32 nritems = get_le32(blk + offsetof(struct btrfs_header, nritems));
		u8 csum[UBT_CSUM_MAX];

		assert_true(ncopies >= 1 && nritems > 0);
		memcpy(saved, blk, nodesize);
		for (int m = 1 + (int)(rng() % 4); m > 0; m--) {
			const struct btrfs_item *it =
				(const struct btrfs_item *)(blk + sizeof(struct btrfs_header)) + rng() % nritems;
			u32 isz = get_le32(&it->size), ioff = get_le32(&it->offset);
			u8 *at;

			if (isz == 0)
				continue;
			at = blk + sizeof(struct btrfs_header) + ioff + rng() % isz;
			switch (rng() % 3) {
			case 0: *at = (u8)rng(); break;
			case 1: *at = 0xff; break;
			default: *at ^= (u8)(1u << (rng() % 8)); break;
			}
		}
		ubt_csum(csum_type, blk + BTRFS_CSUM_SIZE, nodesize - BTRFS_CSUM_SIZE, csum);
		memcpy(blk, csum, BTRFS_CSUM_SIZE);
		for (int c = 1; c < ncopies; c++)
			memcpy(map + offs[c], blk, nodesize);
		msync(map, (size_t)st.st_size, MS_SYNC);

		open_image("img-fuzz", &o);
		e.root = o.root;
		e.depth = 0;
		exercise_ino(&e, BTRFS_FIRST_FREE_OBJECTID, BTRFS_FT_DIR);
		close_image(&o);

		for (int c = 0; c < ncopies; c++)
			memcpy(map + offs[c], saved, nodesize);
	}
	ubt_log_set_level(UBT_LOG_WARN);
	munmap(map, (size_t)st.st_size);
	close(fd);
	free(saved);
	free(e.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_and_attrs),
		cmocka_unit_test(test_dir_iterate),
		cmocka_unit_test(test_xattr_symlink),
		cmocka_unit_test(test_file_reads),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_kernel_image),
		cmocka_unit_test(test_fuzz_items),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
