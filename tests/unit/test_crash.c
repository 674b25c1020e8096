/*
 * test_crash.c — power loss at every flush point (invariant 6), with the crash-recording device:
 * a seeded workload (creates, buffered writes that extend and overwrite, truncates, renames,
 * unlinks, fsyncs, syncs) runs on a mkfs.btrfs image through the recorder; then for every flush
 * point K (and seeded random subsets of the writes still unflushed at K) the crashed image must
 * pass `btrfs check --readonly`, mount read-only, read every file without error, and show every
 * file made durable (fsync or sync returned before flush K was logged, and the file was not
 * touched again before it) exactly as it was then, also after a read-write mount replayed its
 * log. A second case fails writes with -EIO from a chosen write of a commit on: the filesystem
 * turns read-only and the last committed state is intact. A third loses power around the removal
 * of emptied block groups (chunk, device extents, free space tree items go in one commit).
 *
 * UBT_CRASH_SEED and UBT_CRASH_OPS override the seed and the number of operations,
 * UBT_CRASH_COMPRESS (e.g. zstd) mounts the recorded run with compress=;
 * UBT_CRASH_NEGATIVE=1 is a self-test of the checker (it claims durability one flush early and
 * must then report violations).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ubtrfs.h>

#include "device/bdev.h"
#include "fs/fs-internal.h"

#include "unit_fs.h"

#define NFILES 16
#define MAX_FILE (512 * 1024)
#define NONE UINT32_MAX

static char tmpdir[256];
static char image[300];
static char crashed[300];
static u64 rng_state;
static unsigned violations;

/*
 * A durable state of a name: what a crash at flush points [from, until) shows (until = NONE: to
 * the end), and at until too when only flushed writes land (the next change began after the
 * until-th flush was logged, so none of its writes are before it).
 */
struct version {
	u32 from, until;
	bool exists;
	size_t size;
	u8 *data;
};

struct mfile {
	bool exists;
	bool created_here; /* the inode under this name was created under it (not renamed in) */
	u8 *data;
	size_t size;
	bool durable;      /* the last version below is still the name's state */
	struct version *v; /* its durable states, oldest first */
	size_t nv;
};

static struct mfile model[NFILES];
static struct ubt_crash_dev *cur_cd;

static u64 rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static u64 rnd_below(u64 n)
{
	return n ? rnd() % n : 0;
}

static void make_image(void)
{
	if (ufs_run("rm -f %s && truncate -s 256M %s && mkfs.btrfs -f -q %s >/dev/null 2>&1", image, image, image))
		fail_msg("mkfs.btrfs failed");
}

static void name_of(int i, char *buf)
{
	snprintf(buf, 8, "f%02d", i);
}

static void touch(int i)
{
	struct mfile *m = &model[i];

	if (m->durable)
		m->v[m->nv - 1].until = ubt_crash_nr_flushes(cur_cd);
	m->durable = false;
}

static void make_durable(int i, u32 at)
{
	struct mfile *m = &model[i];
	struct version *v;

	if (m->durable)
		return;
	m->v = realloc(m->v, (m->nv + 1) * sizeof(*m->v));
	assert_non_null(m->v);
	v = &m->v[m->nv++];
	v->from = at;
	v->until = NONE;
	v->exists = m->exists;
	v->size = m->size;
	v->data = malloc(m->size ? m->size : 1);
	assert_non_null(v->data);
	memcpy(v->data, m->data, m->size);
	m->durable = true;
}

/* The state the name must show at flush point @k, or NULL when it may be in flux. */
static const struct version *durable_version(const struct mfile *m, u32 k, bool flushed_only)
{
	u32 slack = getenv("UBT_CRASH_NEGATIVE") ? 1 : 0; /* self-test: claims durability one flush early */

	for (size_t j = m->nv; j-- > 0;) {
		const struct version *v = &m->v[j];
		if (v->from <= k + slack && (v->until == NONE || k < v->until || (k == v->until && flushed_only)))
			return v;
	}
	return NULL;
}

/* ---- the workload ---- */

static ubt_file *open_name(ubt_fs *fs, int i, ubt_ino *ino)
{
	char name[8];
	struct stat st;
	ubt_file *f;

	name_of(i, name);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, name, ino, &st), 0);
	assert_int_equal((u64)st.st_size, model[i].size);
	assert_int_equal(ubt_open(fs, *ino, O_RDWR, &f), 0);
	return f;
}

static void close_name(ubt_fs *fs, ubt_file *f, ubt_ino ino)
{
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
}

static void op_create(ubt_fs *fs, int i)
{
	char name[8];
	struct stat st;
	ubt_ino ino;

	name_of(i, name);
	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	ubt_forget(fs, ino, 1);
	model[i].exists = true;
	model[i].created_here = true;
	model[i].size = 0;
	touch(i);
}

/* Random bytes, or (half the time) a random 64-byte pattern repeated, which compresses. */
static void fill_random(u8 *p, size_t n)
{
	size_t j = 0;

	if (n > 64 && rnd_below(2)) {
		fill_random(p, 64);
		for (j = 64; j < n; j++)
			p[j] = p[j % 64];
		return;
	}

	for (; j + 8 <= n; j += 8) {
		u64 v = rnd();
		memcpy(p + j, &v, 8);
	}
	for (; j < n; j++)
		p[j] = (u8)rnd();
}

/* A buffered write: an overwrite inside the file, an append, or a write past the end (a hole). */
static void op_write(ubt_fs *fs, int i)
{
	struct mfile *m = &model[i];
	static u8 buf[MAX_FILE];
	size_t len, off;
	ubt_file *f;
	ubt_ino ino;

	switch (rnd_below(4)) {
	case 0:
		len = 1 + rnd_below(200);
		break;
	case 1:
		len = 1 + rnd_below(16384);
		break;
	case 2:
		len = 4096 * (1 + rnd_below(16));
		break;
	default:
		len = 1 + rnd_below(192 * 1024);
		break;
	}
	switch (rnd_below(3)) {
	case 0: /* overwrite */
		off = m->size ? rnd_below(m->size) : 0;
		break;
	case 1: /* append */
		off = m->size;
		break;
	default: /* past the end */
		off = m->size + rnd_below(64 * 1024);
		break;
	}
	if (rnd_below(2))
		off &= ~(size_t)4095;
	if (off >= MAX_FILE)
		off = rnd_below(MAX_FILE / 2);
	if (off + len > MAX_FILE)
		len = MAX_FILE - off;
	fill_random(buf, len);
	f = open_name(fs, i, &ino);
	assert_int_equal(ubt_pwrite(f, buf, len, off), (ssize_t)len);
	close_name(fs, f, ino);
	if (off > m->size)
		memset(m->data + m->size, 0, off - m->size);
	memcpy(m->data + off, buf, len);
	if (off + len > m->size)
		m->size = off + len;
	touch(i);
}

static void op_truncate(ubt_fs *fs, int i)
{
	struct mfile *m = &model[i];
	size_t size = rnd_below(3) ? rnd_below(m->size + 1) : rnd_below(MAX_FILE);
	struct stat attr = { .st_size = (off_t)size };
	char name[8];
	struct stat st;
	ubt_ino ino;

	name_of(i, name);
	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, name, &ino, &st), 0);
	assert_int_equal(ubt_setattr(fs, ino, &attr, UBT_SET_SIZE, NULL), 0);
	ubt_forget(fs, ino, 1);
	if (size > m->size)
		memset(m->data + m->size, 0, size - m->size);
	m->size = size;
	touch(i);
}

static void op_rename(ubt_fs *fs, int from, int to)
{
	char a[8], b[8];
	u8 *tmp;

	name_of(from, a);
	name_of(to, b);
	assert_int_equal(ubt_rename(fs, UBT_ROOT_INO, a, UBT_ROOT_INO, b, 0), 0);
	tmp = model[to].data;
	model[to].data = model[from].data;
	model[from].data = tmp;
	model[to].size = model[from].size;
	model[to].exists = true;
	model[to].created_here = false;
	model[from].exists = false;
	model[from].size = 0;
	touch(from);
	touch(to);
}

static void op_unlink(ubt_fs *fs, int i)
{
	char name[8];

	name_of(i, name);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, name), 0);
	model[i].exists = false;
	model[i].size = 0;
	touch(i);
}

/* Write, then fsync: the file is durable from the flushes logged so far on. */
static void op_fsync(ubt_fs *fs, struct ubt_crash_dev *cd, int i)
{
	ubt_file *f;
	ubt_ino ino;

	op_write(fs, i);
	f = open_name(fs, i, &ino);
	assert_int_equal(ubt_fsync(f, (int)rnd_below(2)), 0);
	close_name(fs, f, ino);
	if (model[i].created_here)
		make_durable(i, ubt_crash_nr_flushes(cd));
}

static void op_sync(ubt_fs *fs, struct ubt_crash_dev *cd)
{
	u32 at;

	assert_int_equal(ubt_sync(fs), 0);
	at = ubt_crash_nr_flushes(cd);
	for (int i = 0; i < NFILES; i++)
		make_durable(i, at);
}

static void model_free(void)
{
	for (int i = 0; i < NFILES; i++) {
		for (size_t j = 0; j < model[i].nv; j++)
			free(model[i].v[j].data);
		free(model[i].v);
		free(model[i].data);
		memset(&model[i], 0, sizeof(model[i]));
	}
}

static void model_reset(void)
{
	model_free();
	for (int i = 0; i < NFILES; i++) {
		model[i].data = calloc(1, MAX_FILE);
		assert_non_null(model[i].data);
		make_durable(i, 0); /* absent in the fresh image */
	}
}

static void workload(ubt_fs *fs, struct ubt_crash_dev *cd, unsigned nops, unsigned *counts)
{
	for (unsigned n = 0; n < nops; n++) {
		int i = (int)rnd_below(NFILES);
		u64 r = rnd_below(100);

		if (!model[i].exists) {
			op_create(fs, i);
			counts[0]++;
		} else if (r < 40) {
			op_write(fs, i);
			counts[1]++;
		} else if (r < 52) {
			op_truncate(fs, i);
			counts[2]++;
		} else if (r < 60) {
			int to = (int)rnd_below(NFILES);
			if (to != i) {
				op_rename(fs, i, to);
				counts[3]++;
			}
		} else if (r < 66) {
			op_unlink(fs, i);
			counts[4]++;
		} else if (r < 94) {
			op_fsync(fs, cd, i);
			counts[5]++;
		} else {
			op_sync(fs, cd);
			counts[6]++;
		}
	}
}

/* ---- checking a crashed image ---- */

static void violation(u32 k, const char *how, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void violation(u32 k, const char *how, const char *fmt, ...)
{
	va_list ap;

	printf("VIOLATION at flush point %u (%s): ", k, how);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (violations++ == 0)
		ufs_run("cp --sparse=always %s %s/first-violation.img", crashed, tmpdir);
}

static bool btrfs_check(const char *img)
{
	return ufs_run("btrfs check --readonly %s >%s/check.log 2>&1 && ! grep -q -e ERROR -e 'checksum verify failed' "
		       "%s/check.log",
		       img, tmpdir, tmpdir) == 0;
}

static unsigned compared; /* durable states checked */

static void verify_image(u32 k, const char *how, bool flushed_only)
{
	struct ubt_mount_opts ro = { .flags = UBT_MOUNT_RDONLY };
	static u8 buf[MAX_FILE + 4096];
	ubt_fs *fs;
	int ret;

	if (!btrfs_check(crashed)) {
		violation(k, how, "btrfs check failed:");
		ufs_run("head -30 %s/check.log", tmpdir);
	}
	ret = ubt_mount(crashed, &ro, &fs);
	if (ret) {
		violation(k, how, "read-only mount failed: %s", ubt_strerror(ret));
		return;
	}
	for (int i = 0; i < NFILES; i++) {
		struct mfile *m = &model[i];
		const struct version *v = durable_version(m, k, flushed_only);
		char name[8];
		struct stat st;
		ubt_ino ino;
		ubt_file *f;
		size_t got = 0;

		name_of(i, name);
		ret = ubt_lookup(fs, UBT_ROOT_INO, name, &ino, &st);
		if (ret == -ENOENT) {
			if (v && v->exists)
				violation(k, how, "%s (durable since flush %u, %zu bytes) is missing", name, v->from,
					  v->size);
			compared += v != NULL;
			continue;
		}
		if (ret) {
			violation(k, how, "lookup %s: %s", name, ubt_strerror(ret));
			continue;
		}
		if (v && !v->exists)
			violation(k, how, "%s exists but was removed durably at flush %u", name, v->from);
		ret = ubt_open(fs, ino, O_RDONLY, &f);
		if (ret) {
			violation(k, how, "open %s: %s", name, ubt_strerror(ret));
			ubt_forget(fs, ino, 1);
			continue;
		}
		/* Every file reads without error (no data pointed to before it was written). */
		while (got < sizeof(buf)) {
			ssize_t n = ubt_pread(f, buf + got, sizeof(buf) - got, got);
			if (n < 0) {
				violation(k, how, "read %s at %zu: %s", name, got, ubt_strerror((int)n));
				break;
			}
			if (n == 0)
				break;
			got += (size_t)n;
		}
		if (got != (size_t)st.st_size && got < sizeof(buf))
			violation(k, how, "%s: read %zu bytes, size %lld", name, got, (long long)st.st_size);
		if (v && v->exists) {
			compared++;
			if ((size_t)st.st_size != v->size) {
				violation(k, how, "%s: size %lld, fsync'd/synced %zu at flush %u", name, (long long)st.st_size,
					  v->size, v->from);
			} else if (memcmp(buf, v->data, v->size)) {
				size_t at = 0;
				while (buf[at] == v->data[at])
					at++;
				violation(k, how, "%s: content differs from byte %zu (durable since flush %u)", name, at,
					  v->from);
			}
		}
		ubt_close(f);
		ubt_forget(fs, ino, 1);
	}
	ret = ubt_unmount(fs);
	if (ret)
		violation(k, how, "unmount: %s", ubt_strerror(ret));
}

static u64 env_u64(const char *name, u64 dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static ubt_fs *mount_recorded(struct ubt_crash_dev **cd)
{
	struct ubt_mount_opts opts = { .commit_interval = 3600, .compress = getenv("UBT_CRASH_COMPRESS") };
	struct ubt_bdev *bdev;
	ubt_fs *fs;

	assert_int_equal(ubt_crash_open(image, cd), 0);
	assert_int_equal(ubt_crash_bdev(*cd, &bdev), 0);
	assert_int_equal(ubt_mount_bdev(bdev, "recorded", &opts, &fs), 0);
	return fs;
}

static void test_power_loss(void **state)
{
	u64 seed = env_u64("UBT_CRASH_SEED", 20240611);
	unsigned nops = (unsigned)env_u64("UBT_CRASH_OPS", 220);
	unsigned counts[7] = { 0 }, points = 0, subsets = 0, remounts = 0;
	struct ubt_crash_dev *cd;
	double t0 = now(), t1;
	u32 nflush;
	ubt_fs *fs;

	(void)state;
	rng_state = (seed * 0x9E3779B97F4A7C15ull) | 1;
	violations = 0;
	compared = 0;
	model_reset();
	make_image();
	fs = mount_recorded(&cd);
	cur_cd = cd;
	workload(fs, cd, nops, counts);
	assert_int_equal(ubt_unmount(fs), 0);
	/* After a clean unmount everything is durable. */
	for (int i = 0; i < NFILES; i++)
		make_durable(i, ubt_crash_nr_flushes(cd));
	nflush = ubt_crash_nr_flushes(cd);
	t1 = now();
	printf("seed %llu: %u ops (create %u, write %u, truncate %u, rename %u, unlink %u, fsync %u, sync %u), "
	       "%llu writes, %u flushes, workload %.1f s\n",
	       (unsigned long long)seed, nops, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
	       counts[6], (unsigned long long)ubt_crash_nr_writes(cd), nflush, t1 - t0);

	for (u32 k = 0; k <= nflush; k++) {
		u64 applied;

		assert_int_equal(ubt_crash_materialize(cd, k, UBT_CRASH_FLUSHED, 0, crashed, &applied), 0);
		verify_image(k, "flushed writes only", true);
		points++;
		if (k % 8 == 0 || k == nflush) {
			/* A read-write mount replays the log to disk and cleans orphans: still the same. */
			int ret = ubt_mount(crashed, NULL, &fs);
			if (ret)
				violation(k, "read-write mount", "%s", ubt_strerror(ret));
			else if ((ret = ubt_unmount(fs)))
				violation(k, "read-write mount", "unmount: %s", ubt_strerror(ret));
			else
				verify_image(k, "after a read-write mount", true);
			remounts++;
		}
		/* Some of the writes in flight after K, in a few seeded subsets. */
		if (k % 2 == 0 || k == nflush) {
			u64 s = seed * 1000 + k;
			assert_int_equal(ubt_crash_materialize(cd, k, UBT_CRASH_RANDOM, s, crashed, &applied), 0);
			verify_image(k, "random subset of in-flight writes", false);
			subsets++;
		}
		if (k % 3 == 1) {
			assert_int_equal(ubt_crash_materialize(cd, k, UBT_CRASH_ALL, 0, crashed, &applied), 0);
			verify_image(k, "all in-flight writes", false);
			subsets++;
		}
	}
	printf("checked %u flush points, %u in-flight variants and %u read-write remounts (%u durable states "
	       "compared) in %.1f s: %u violations\n",
	       points, subsets, remounts, compared, now() - t1, violations);
	ubt_crash_free(cd);
	assert_int_equal(violations, 0);
}

/*
 * A write error in the middle of a commit: the commit fails, the filesystem refuses changes
 * (-EROFS), and the image as the device holds it (the failed write never landed) is the last
 * committed state, which passes check and holds every synced file.
 */
static void test_write_error(void **state)
{
	static const u64 at[] = { 0, 1, 3, 8 };
	unsigned counts[7] = { 0 };

	(void)state;
	for (size_t t = 0; t < sizeof(at) / sizeof(at[0]); t++) {
		struct ubt_crash_dev *cd;
		struct stat st;
		ubt_ino ino;
		ubt_fs *fs;
		int ret;

		rng_state = (0xfa17 + t) | 1;
		violations = 0;
		model_reset();
		make_image();
		fs = mount_recorded(&cd);
	cur_cd = cd;
		workload(fs, cd, 40, counts);
		op_sync(fs, cd);
		/* Changes written back (data on the device), then the commit's writes fail. */
		for (int n = 0; n < 6; n++) {
			int i = (int)rnd_below(NFILES);
			if (model[i].exists)
				op_write(fs, i);
			else
				op_create(fs, i);
		}
		assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, "after", S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
		ubt_forget(fs, ino, 1);
		for (int i = 0; i < NFILES; i++) {
			ubt_file *f;
			if (!model[i].exists)
				continue;
			f = open_name(fs, i, &ino);
			assert_int_equal(ubt_flush(f), 0);
			close_name(fs, f, ino);
		}
		ubt_crash_fail_writes(cd, ubt_crash_nr_writes(cd) + at[t], UINT64_MAX / 2);
		ret = ubt_sync(fs);
		printf("write error at commit write %llu: sync %s\n", (unsigned long long)at[t], ubt_strerror(ret));
		assert_int_not_equal(ret, 0);
		ret = ubt_mknod(fs, UBT_ROOT_INO, "refused", S_IFREG | 0644, 0, 0, 0, &ino, &st);
		assert_int_equal(ret, -EROFS);
		ubt_unmount(fs);
		/* The device's final content is the last flush point plus every write that succeeded. */
		assert_int_equal(ubt_crash_materialize(cd, ubt_crash_nr_flushes(cd), UBT_CRASH_ALL, 0, crashed, NULL), 0);
		verify_image(ubt_crash_nr_flushes(cd), "after the write error", false);
		ubt_crash_free(cd);
		assert_int_equal(violations, 0);
	}
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ubt-crash-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(image, sizeof(image), "%s/img", tmpdir);
	snprintf(crashed, sizeof(crashed), "%s/crashed", tmpdir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (!violations)
		ufs_run("rm -rf %s", tmpdir);
	else
		printf("images kept in %s\n", tmpdir);
	model_free();
	return 0;
}

/* Create /NAME with @len bytes of @seed's pattern (and close it); fsync when @durable. */
static void write_file(ubt_fs *fs, const char *name, size_t len, unsigned seed, bool durable)
{
	static u8 buf[1 << 20];
	struct stat st;
	ubt_ino ino;
	ubt_file *f;

	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	ubt_forget(fs, ino, 1);
	for (size_t off = 0; off < len; off += sizeof(buf)) {
		size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = (u8)((off + i) * 31 + seed);
		assert_int_equal(ubt_pwrite(f, buf, n, off), (ssize_t)n);
	}
	if (durable)
		assert_int_equal(ubt_fsync(f, 0), 0);
	assert_int_equal(ubt_close(f), 0);
}

static unsigned count_chunks(const char *img)
{
	char cmd[512];
	unsigned n = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "btrfs inspect-internal dump-tree -t chunk %s | grep -c CHUNK_ITEM", img);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (fscanf(p, "%u", &n) != 1)
		n = 0;
	pclose(p);
	return n;
}

/*
 * Power loss around the removal of empty block groups: data fills new chunks, is deleted and
 * synced (the emptied groups go in that commit), then a small file is fsync'd. At every flush
 * point, and with random and all in-flight writes, the image must pass `btrfs check` and mount;
 * from the fsync on, the small file must be there with its bytes.
 */
static void test_chunk_removal_power_loss(void **state)
{
	static u8 buf[1 << 20];
	struct ubt_mount_opts ro = { .flags = UBT_MOUNT_RDONLY };
	unsigned chunks_full, chunks_after, bad = 0;
	u32 nflush, small_durable;
	struct ubt_crash_dev *cd;
	ubt_fs *fs;

	(void)state;
	violations = 0;
	make_image();
	fs = mount_recorded(&cd);
	cur_cd = cd;
	write_file(fs, "a", 48 << 20, 1, false);
	write_file(fs, "b", 48 << 20, 2, false);
	assert_int_equal(ubt_sync(fs), 0);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "a"), 0);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "b"), 0);
	assert_int_equal(ubt_sync(fs), 0);
	write_file(fs, "small", 300000, 3, true);
	small_durable = ubt_crash_nr_flushes(cd);
	assert_int_equal(ubt_unmount(fs), 0);
	nflush = ubt_crash_nr_flushes(cd);

	/* The filled state had more chunks than the end state: groups were removed. */
	assert_int_equal(ubt_crash_materialize(cd, nflush, UBT_CRASH_FLUSHED, 0, crashed, NULL), 0);
	chunks_after = count_chunks(crashed);
	chunks_full = 0;
	for (u32 k = 0; k <= nflush; k++) {
		for (int variant = 0; variant < 3; variant++) {
			int how = variant == 0 ? UBT_CRASH_FLUSHED : variant == 1 ? UBT_CRASH_RANDOM : UBT_CRASH_ALL;
			ubt_fs *rfs;
			ubt_ino ino;
			struct stat st;
			int ret;

			if (variant && k % 2)
				continue;
			assert_int_equal(ubt_crash_materialize(cd, k, how, 1000 + k, crashed, NULL), 0);
			if (variant == 0) {
				unsigned c = count_chunks(crashed);

				if (c > chunks_full)
					chunks_full = c;
			}
			if (!btrfs_check(crashed)) {
				violation(k, "chunk removal", "btrfs check failed (variant %d)", variant);
				ufs_run("head -30 %s/check.log", tmpdir);
				bad++;
				continue;
			}
			ret = ubt_mount(crashed, &ro, &rfs);
			if (ret) {
				violation(k, "chunk removal", "read-only mount: %s", ubt_strerror(ret));
				bad++;
				continue;
			}
			ret = ubt_lookup(rfs, UBT_ROOT_INO, "small", &ino, &st);
			if (k >= small_durable && variant == 0) {
				ubt_file *f = NULL;

				if (ret || st.st_size != 300000 || ubt_open(rfs, ino, O_RDONLY, &f) ||
				    ubt_pread(f, buf, sizeof(buf), 0) != 300000) {
					violation(k, "chunk removal", "the fsync'd file is missing or short");
					bad++;
				} else {
					for (size_t i = 0; i < 300000; i++)
						if (buf[i] != (u8)(i * 31 + 3)) {
							violation(k, "chunk removal", "the fsync'd file differs at %zu", i);
							bad++;
							break;
						}
				}
				if (f)
					ubt_close(f);
			}
			assert_int_equal(ubt_unmount(rfs), 0);
		}
	}
	printf("chunk removal: %u flush points, %u chunks when full, %u at the end, %u violations\n", nflush + 1,
	       chunks_full, chunks_after, bad);
	ubt_crash_free(cd);
	assert_true(chunks_after < chunks_full);
	assert_int_equal(violations, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_power_loss),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_chunk_removal_power_loss),
	};

	if (system("command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null") != 0) {
		printf("mkfs.btrfs/btrfs not installed: skipping\n");
		return 0;
	}
	ubt_set_log_level(0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
