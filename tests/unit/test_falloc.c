/*
 * test_falloc.c — fallocate (prealloc, KEEP_SIZE, punch hole, zero range), writes into
 * preallocated ranges, NOCOW in-place overwrites (and copy-on-write over a snapshot's shared
 * extent), inode flags (round trip, inheritance, nodatacow mount option) and the immutable /
 * append-only rules, on fresh mkfs.btrfs images. Random operations run against an in-memory
 * model; file extent layouts are read back with `btrfs inspect-internal dump-tree`; after each
 * scenario `btrfs check --readonly` must pass and (as root) the kernel must read the same bytes.
 *
 * UBT_FALLOC_SEED and UBT_FALLOC_OPS override the seed and the number of random operations.
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
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ubtrfs.h>

#include "unit_fs.h"

#define FL_COMPR 0x4u
#define FL_IMMUTABLE 0x10u
#define FL_APPEND 0x20u
#define FL_NOATIME 0x80u
#define FL_NOCOMP 0x400u
#define FL_NOCOW 0x800000u
#define MAX_FILE (2u << 20)
#define NFILES 3

static char mnt[300];
static ubt_fs *fs;
static bool kernel_ok;

static uint64_t rng_state;
static uint64_t rng(void) { return ufs_xorshift(&rng_state); }
static uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }

static void mount_lib(unsigned flags)
{
	struct ubt_mount_opts o = { .flags = flags };

	fs = ufs_mount(&o);
}

static void unmount_check(void)
{
	assert_int_equal(ubt_unmount(fs), 0);
	fs = NULL;
	ufs_check_image();
}

static ubt_ino create(ubt_ino dir, const char *name, struct stat *st)
{
	ubt_ino ino;
	struct stat s;

	assert_int_equal(ubt_mknod(fs, dir, name, S_IFREG | 0644, 0, 0, 0, &ino, st ? st : &s), 0);
	return ino;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rng() >> 24);
}

/* ---- file extents from dump-tree ---- */

struct fx {
	uint64_t key, type, disk, disk_nr, off, nr;
};

/* The EXTENT_DATA items of @objectid in tree @tree (committed state of the image). */
static int dump_extents(const char *tree, uint64_t objectid, struct fx *out, int max)
{
	char cmd[1024], line[512];
	FILE *p;
	int n = -1;
	bool mine = false;

	snprintf(cmd, sizeof(cmd), "btrfs inspect-internal dump-tree -t %s %s 2>/dev/null", tree, ufs_img);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p)) {
		unsigned long long a, b, c;
		char *k = strstr(line, " key (");

		if (k) {
			mine = sscanf(k, " key (%llu EXTENT_DATA %llu)", &a, &b) == 2 && a == objectid;
			if (mine && n + 1 < max) {
				n++;
				memset(&out[n], 0, sizeof(out[n]));
				out[n].key = b;
			} else {
				mine = false;
			}
			continue;
		}
		if (!mine)
			continue;
		if (sscanf(line, " generation %llu type %llu", &a, &b) == 2)
			out[n].type = b;
		else if (sscanf(line, " extent data disk byte %llu nr %llu", &a, &b) == 2 ||
			 sscanf(line, " prealloc data disk byte %llu nr %llu", &a, &b) == 2) {
			out[n].disk = a;
			out[n].disk_nr = b;
		} else if (sscanf(line, " extent data offset %llu nr %llu ram %llu", &a, &b, &c) == 3 ||
			   sscanf(line, " prealloc data offset %llu nr %llu", &a, &b) == 2) {
			out[n].off = a;
			out[n].nr = b;
		}
	}
	pclose(p);
	return n + 1;
}

/* ---- the kernel's view ---- */

static bool kernel_mount(void)
{
	if (!kernel_ok)
		return false;
	if (ufs_run("mount -o loop,ro %s %s", ufs_img, mnt) != 0) {
		print_message("kernel comparison skipped (loop mount failed)\n");
		return false;
	}
	return true;
}

static void kernel_compare(const char *name, const uint8_t *data, size_t size)
{
	char path[400];
	uint8_t *buf = malloc(size + 1);
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", mnt, name);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = pread(fd, buf, size + 1, 0);
	close(fd);
	assert_int_equal(n, (ssize_t)size);
	assert_memory_equal(buf, data, size);
	free(buf);
}

static unsigned kernel_flags(const char *name)
{
	char path[400];
	int fd, fl = 0;

	snprintf(path, sizeof(path), "%s/%s", mnt, name);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(ioctl(fd, _IOR('f', 1, long), &fl), 0);
	close(fd);
	return (unsigned)fl;
}

/* ---- random modes against a model ---- */

struct mfile {
	ubt_ino ino;
	ubt_file *f;
	uint8_t *data;
	uint64_t size;
	char name[16];
};

static void model_compare(struct mfile *m, uint8_t *buf)
{
	struct stat st;
	ssize_t n;

	assert_int_equal(ubt_getattr(fs, m->ino, &st), 0);
	assert_int_equal((uint64_t)st.st_size, m->size);
	n = ubt_pread(m->f, buf, MAX_FILE, 0);
	assert_int_equal(n, (ssize_t)m->size);
	assert_memory_equal(buf, m->data, m->size);
}

static uint64_t rand_off(void)
{
	switch (rnd(4)) {
	case 0:
		return rnd(MAX_FILE / 4096) * 4096;
	case 1:
		return rnd(MAX_FILE / 2);
	default:
		return rnd(MAX_FILE - 8192);
	}
}

static uint64_t rand_len(uint64_t off)
{
	uint64_t room = MAX_FILE - off, len;

	switch (rnd(4)) {
	case 0:
		len = 1 + rnd(4096);
		break;
	case 1:
		len = (1 + rnd(16)) * 4096;
		break;
	default:
		len = 1 + rnd(256 * 1024);
	}
	return len > room ? room : len;
}

static void random_modes(const char *mkfs_opts)
{
	const char *s = getenv("UBT_FALLOC_SEED"), *o = getenv("UBT_FALLOC_OPS");
	uint64_t seed = s ? strtoull(s, NULL, 0) : 0xfa11cULL;
	int nops = o ? atoi(o) : 600;
	struct mfile files[NFILES];
	uint8_t *buf = malloc(MAX_FILE + 1), *wbuf = malloc(MAX_FILE);
	int counts[8] = { 0 };

	rng_state = seed | 1;
	print_message("mkfs '%s', seed 0x%llx, %d operations\n", mkfs_opts, (unsigned long long)seed, nops);
	ufs_fresh_image("512M", mkfs_opts);
	mount_lib(0);
	for (int i = 0; i < NFILES; i++) {
		struct mfile *m = &files[i];

		snprintf(m->name, sizeof(m->name), "f%d", i);
		m->ino = create(UBT_ROOT_INO, m->name, NULL);
		if (i == 2)
			assert_int_equal(ubt_set_flags(fs, m->ino, FL_NOCOW), 0);
		assert_int_equal(ubt_open(fs, m->ino, O_RDWR, &m->f), 0);
		m->data = calloc(1, MAX_FILE);
		m->size = 0;
	}
	for (int op = 0; op < nops; op++) {
		struct mfile *m = &files[rnd(NFILES)];
		uint64_t off = rand_off(), len = rand_len(off), end = off + len;
		int kind = (int)rnd(8);
		int mode = 0, ret;

		counts[kind]++;
		switch (kind) {
		case 0:
		case 1: /* write */
			fill_random(wbuf, len);
			assert_int_equal(ubt_pwrite(m->f, wbuf, len, off), (ssize_t)len);
			memcpy(m->data + off, wbuf, len);
			if (end > m->size)
				m->size = end;
			break;
		case 2: /* preallocate */
		case 3:
			mode = kind == 3 ? UBT_FALLOC_KEEP_SIZE : 0;
			assert_int_equal(ubt_fallocate(m->f, mode, off, len), 0);
			if (!mode && end > m->size)
				m->size = end;
			break;
		case 4: /* punch */
			assert_int_equal(ubt_fallocate(m->f, UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_KEEP_SIZE, off, len), 0);
			if (off < m->size)
				memset(m->data + off, 0, (end < m->size ? end : m->size) - off);
			break;
		case 5: /* zero range */
			mode = UBT_FALLOC_ZERO_RANGE | (rnd(2) ? UBT_FALLOC_KEEP_SIZE : 0);
			assert_int_equal(ubt_fallocate(m->f, mode, off, len), 0);
			if (off < m->size)
				memset(m->data + off, 0, (end < m->size ? end : m->size) - off);
			if (!(mode & UBT_FALLOC_KEEP_SIZE) && end > m->size)
				m->size = end;
			break;
		case 6: { /* truncate */
			struct stat attr = { .st_size = (off_t)rnd(MAX_FILE) };

			assert_int_equal(ubt_setattr(fs, m->ino, &attr, UBT_SET_SIZE, NULL), 0);
			if ((uint64_t)attr.st_size < m->size)
				memset(m->data + attr.st_size, 0, m->size - (uint64_t)attr.st_size);
			m->size = (uint64_t)attr.st_size;
			break;
		}
		default:
			ret = ubt_sync(fs);
			assert_int_equal(ret, 0);
			break;
		}
		model_compare(m, buf);
	}
	print_message("writes %d, prealloc %d, keep-size %d, punch %d, zero %d, truncate %d, sync %d\n",
		      counts[0] + counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7]);
	for (int i = 0; i < NFILES; i++)
		assert_int_equal(ubt_close(files[i].f), 0);
	unmount_check();
	/* A fresh mount reads the same. */
	mount_lib(UBT_MOUNT_RDONLY);
	for (int i = 0; i < NFILES; i++) {
		assert_int_equal(ubt_open(fs, files[i].ino, O_RDONLY, &files[i].f), 0);
		model_compare(&files[i], buf);
		ubt_close(files[i].f);
	}
	ubt_unmount(fs);
	fs = NULL;
	if (kernel_mount()) {
		for (int i = 0; i < NFILES; i++)
			kernel_compare(files[i].name, files[i].data, files[i].size);
		ufs_run("umount %s", mnt);
	}
	for (int i = 0; i < NFILES; i++)
		free(files[i].data);
	free(buf);
	free(wbuf);
}

static void test_random_modes(void **state)
{
	(void)state;
	random_modes("");
}

static void test_random_modes_holes(void **state)
{
	(void)state;
	random_modes("-O ^no-holes");
}

/* ---- prealloc then write: the split btrfs makes ---- */

static void test_prealloc_split(void **state)
{
	struct fx fx[16];
	struct stat st;
	ubt_file *f;
	ubt_ino ino;
	uint8_t *data = calloc(1, 1 << 20), blk[4096], buf[4096];
	int n;

	(void)state;
	ufs_fresh_image("512M", "");
	mount_lib(0);
	ino = create(UBT_ROOT_INO, "p", &st);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	assert_int_equal(ubt_fallocate(f, 0, 0, 1 << 20), 0);
	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(st.st_blocks, (1 << 20) / 512);
	assert_int_equal(ubt_sync(fs), 0);
	n = dump_extents("5", st.st_ino, fx, 16);
	assert_int_equal(n, 1);
	assert_int_equal(fx[0].type, 2);
	/* A write in the middle: prealloc | regular | prealloc, one disk extent, written in place. */
	fill_random(blk, sizeof(blk));
	assert_int_equal(ubt_pwrite(f, blk, sizeof(blk), 512 * 1024), 4096);
	memcpy(data + 512 * 1024, blk, sizeof(blk));
	assert_int_equal(ubt_sync(fs), 0);
	{
		struct fx want[3] = { { 0, 2, fx[0].disk, 1 << 20, 0, 512 * 1024 },
				      { 512 * 1024, 1, fx[0].disk, 1 << 20, 512 * 1024, 4096 },
				      { 528384, 2, fx[0].disk, 1 << 20, 528384, 520192 } };

		n = dump_extents("5", st.st_ino, fx, 16);
		assert_int_equal(n, 3);
		for (int i = 0; i < 3; i++)
			assert_memory_equal(&fx[i], &want[i], sizeof(want[i]));
	}
	/* Sequential writes after it join the regular part; the rest stays prealloc. */
	for (int i = 1; i <= 3; i++) {
		fill_random(blk, sizeof(blk));
		assert_int_equal(ubt_pwrite(f, blk, sizeof(blk), 512 * 1024 + i * 4096), 4096);
		memcpy(data + 512 * 1024 + i * 4096, blk, sizeof(blk));
	}
	/* An unaligned write at the start: read-modify-write of the sector, in place. */
	assert_int_equal(ubt_pwrite(f, "hello", 5, 100), 5);
	memcpy(data + 100, "hello", 5);
	assert_int_equal(ubt_sync(fs), 0);
	n = dump_extents("5", st.st_ino, fx, 16);
	assert_int_equal(n, 4);
	assert_int_equal(fx[0].type, 1);
	assert_int_equal(fx[0].nr, 4096);
	assert_int_equal(fx[1].type, 2);
	assert_int_equal(fx[2].type, 1);
	assert_int_equal(fx[2].nr, 4 * 4096);
	assert_int_equal(fx[3].type, 2);
	assert_int_equal(fx[3].key, 512 * 1024 + 4 * 4096);
	for (int i = 0; i < n; i++)
		assert_int_equal(fx[i].disk, fx[0].disk);
	assert_int_equal(ubt_pread(f, buf, sizeof(buf), 512 * 1024), 4096);
	assert_memory_equal(buf, data + 512 * 1024, 4096);
	/* KEEP_SIZE past EOF: size stays, blocks grow; a later write there converts. */
	assert_int_equal(ubt_fallocate(f, UBT_FALLOC_KEEP_SIZE, 2 << 20, 64 * 1024), 0);
	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(st.st_blocks, ((1 << 20) + 64 * 1024) / 512);
	/* ENOSPC up front, nothing changed. */
	assert_int_equal(ubt_fallocate(f, 0, 0, 4ULL << 30), -ENOSPC);
	assert_int_equal(ubt_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
	unmount_check();
	if (kernel_mount()) {
		kernel_compare("p", data, 1 << 20);
		assert_int_equal(ufs_run("[ \"$(stat -c %%b %s/p)\" = %d ]", mnt, ((1 << 20) + 64 * 1024) / 512), 0);
		ufs_run("umount %s", mnt);
	}
	free(data);
}

/* ---- NOCOW: in place when unshared, copy-on-write over a snapshot ---- */

static void test_nocow(void **state)
{
	const size_t sz = 256 * 1024, fsz = sz + 64 * 1024;
	uint8_t *data = calloc(1, fsz), *old = calloc(1, fsz), *buf = malloc(sz);
	struct fx fx[16], fx2[16];
	unsigned fl;
	struct stat st;
	ubt_file *f;
	ubt_ino ino;
	int n;

	(void)state;
	ufs_fresh_image("512M", "");
	mount_lib(0);
	ino = create(UBT_ROOT_INO, "n", &st);
	assert_int_equal(ubt_set_flags(fs, ino, FL_NOCOW), 0);
	assert_int_equal(ubt_get_flags(fs, ino, &fl), 0);
	assert_int_equal(fl, FL_NOCOW);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	fill_random(data, sz);
	assert_int_equal(ubt_pwrite(f, data, sz, 0), (ssize_t)sz);
	assert_int_equal(ubt_sync(fs), 0);
	n = dump_extents("5", st.st_ino, fx, 16);
	assert_int_equal(n, 1);
	/* Overwrites (aligned and not) land in the same extent; no checksums for it. */
	fill_random(data + 8192, 8192);
	assert_int_equal(ubt_pwrite(f, data + 8192, 8192, 8192), 8192);
	memcpy(data + 100000, "nocow", 5);
	assert_int_equal(ubt_pwrite(f, "nocow", 5, 100000), 5);
	assert_int_equal(ubt_sync(fs), 0);
	n = dump_extents("5", st.st_ino, fx2, 16);
	assert_int_equal(n, 1);
	assert_memory_equal(&fx[0], &fx2[0], sizeof(fx[0]));
	assert_int_equal(ufs_run("btrfs inspect-internal dump-tree -t csum %s 2>/dev/null | grep -q 'EXTENT_CSUM %llu'",
				 ufs_img, (unsigned long long)fx[0].disk),
			 1);
	assert_int_equal(ubt_pread(f, buf, sz, 0), (ssize_t)sz);
	assert_memory_equal(buf, data, sz);
	/* A NOCOW file's prealloc is written in place and becomes regular. */
	assert_int_equal(ubt_fallocate(f, 0, sz, 64 * 1024), 0);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
	unmount_check();
	if (!kernel_ok) {
		print_message("snapshot case skipped (needs root and the kernel's btrfs)\n");
		goto out;
	}
	/* The kernel snapshots the subvolume: the extent is now shared through the snapshot. */
	assert_int_equal(ufs_run("mount -o loop %s %s && btrfs -q subvolume snapshot %s %s/snap && umount %s", ufs_img,
				 mnt, mnt, mnt, mnt),
			 0);
	memcpy(old, data, fsz);
	mount_lib(0);
	assert_int_equal(ubt_resolve(fs, "/n", &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, O_RDWR, &f), 0);
	fill_random(data + 65536, 4096);
	assert_int_equal(ubt_pwrite(f, data + 65536, 4096, 65536), 4096);
	/* Now unshared (a new extent): the next overwrite of it is in place again. */
	fill_random(data + 65536, 4096);
	assert_int_equal(ubt_pwrite(f, data + 65536, 4096, 65536), 4096);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, ino, 1);
	assert_int_equal(ubt_sync(fs), 0);
	n = dump_extents("5", st.st_ino, fx2, 16);
	assert_int_equal(n, 4);
	assert_int_equal(fx2[0].disk, fx[0].disk);
	assert_int_not_equal(fx2[1].disk, fx[0].disk);
	assert_int_equal(fx2[1].key, 65536);
	assert_int_equal(fx2[1].type, 1);
	assert_int_equal(fx2[2].disk, fx[0].disk);
	assert_int_equal(fx2[3].key, sz);
	assert_int_equal(fx2[3].type, 2);
	unmount_check();
	if (kernel_mount()) {
		kernel_compare("n", data, fsz);
		kernel_compare("snap/n", old, fsz);
		ufs_run("umount %s", mnt);
	}
out:
	free(data);
	free(old);
	free(buf);
}

/* ---- flags: round trip, btrfs's rules, inheritance, mount option, enforcement ---- */

static void test_flags(void **state)
{
	struct stat st, attr;
	ubt_ino d, fc, fm, fn, fi, fa, big, fo;
	ubt_file *f;
	unsigned fl;

	(void)state;
	ufs_fresh_image("512M", "");
	mount_lib(0);
	assert_int_equal(ubt_mkdir(fs, UBT_ROOT_INO, "dc", 0755, 0, 0, &d, &st), 0);
	assert_int_equal(ubt_set_flags(fs, d, FL_NOCOW), 0);
	fn = create(d, "inherits-nocow", NULL);
	assert_int_equal(ubt_get_flags(fs, fn, &fl), 0);
	assert_int_equal(fl, FL_NOCOW);
	ubt_forget(fs, fn, 1);
	/* Compression and NOCOW exclude each other, on the new or the old flags. */
	assert_int_equal(ubt_set_flags(fs, d, FL_NOCOW | FL_COMPR), -EINVAL);
	assert_int_equal(ubt_set_flags(fs, d, FL_NOCOW | FL_NOCOMP), -EINVAL);
	assert_int_equal(ubt_set_flags(fs, d, FL_COMPR | FL_NOCOMP), -EINVAL);
	assert_int_equal(ubt_set_flags(fs, d, 0x80000000u), -EOPNOTSUPP);
	assert_int_equal(ubt_set_flags(fs, d, FL_COMPR | FL_NOATIME), -EINVAL); /* NOCOW still set */
	assert_int_equal(ubt_set_flags(fs, d, FL_NOATIME), 0);
	assert_int_equal(ubt_set_flags(fs, d, FL_COMPR | FL_NOATIME), 0);
	assert_int_equal(ubt_get_flags(fs, d, &fl), 0);
	assert_int_equal(fl, FL_COMPR | FL_NOATIME);
	fc = create(d, "inherits-compr", NULL);
	assert_int_equal(ubt_get_flags(fs, fc, &fl), 0);
	assert_int_equal(fl, FL_COMPR);
	assert_int_equal(ubt_open(fs, fc, O_RDWR, &f), 0);
	{
		uint8_t z[65536] = { 0 };
		assert_int_equal(ubt_pwrite(f, z, sizeof(z), 0), (ssize_t)sizeof(z));
	}
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_set_flags(fs, d, FL_NOCOMP | FL_NOATIME), 0);
	fm = create(d, "inherits-nocomp", NULL);
	assert_int_equal(ubt_get_flags(fs, fm, &fl), 0);
	assert_int_equal(fl, FL_NOCOMP);
	/* A file with data does not take NOCOW (silently, as btrfs). */
	big = create(UBT_ROOT_INO, "big", NULL);
	assert_int_equal(ubt_open(fs, big, O_RDWR, &f), 0);
	assert_int_equal(ubt_pwrite(f, "x", 1, 0), 1);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_set_flags(fs, big, FL_NOCOW), 0);
	assert_int_equal(ubt_get_flags(fs, big, &fl), 0);
	assert_int_equal(fl, 0);

	/* Immutable: no open for writing, no writes through an earlier handle, no name changes. */
	fi = create(UBT_ROOT_INO, "imm", NULL);
	assert_int_equal(ubt_open(fs, fi, O_RDWR, &f), 0);
	assert_int_equal(ubt_set_flags(fs, fi, FL_IMMUTABLE), 0);
	assert_int_equal(ubt_pwrite(f, "x", 1, 0), -EPERM);
	assert_int_equal(ubt_fallocate(f, 0, 0, 4096), -EPERM);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_open(fs, fi, O_WRONLY, &f), -EPERM);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "imm"), -EPERM);
	assert_int_equal(ubt_rename(fs, UBT_ROOT_INO, "imm", UBT_ROOT_INO, "imm2", 0), -EPERM);
	assert_int_equal(ubt_link(fs, fi, UBT_ROOT_INO, "imm-link", NULL), -EPERM);
	memset(&attr, 0, sizeof(attr));
	attr.st_mode = 0600;
	assert_int_equal(ubt_setattr(fs, fi, &attr, UBT_SET_MODE, NULL), -EPERM);
	assert_int_equal(ubt_setxattr(fs, fi, "user.a", "b", 1, 0), -EPERM);
	/* Append-only: appends and plain preallocation only. */
	fa = create(UBT_ROOT_INO, "app", NULL);
	assert_int_equal(ubt_set_flags(fs, fa, FL_APPEND), 0);
	assert_int_equal(ubt_open(fs, fa, O_WRONLY, &f), -EPERM);
	assert_int_equal(ubt_open(fs, fa, O_WRONLY | O_APPEND | O_TRUNC, &f), -EPERM);
	assert_int_equal(ubt_open(fs, fa, O_WRONLY | O_APPEND, &f), 0);
	assert_int_equal(ubt_pwrite(f, "abc", 3, 0), 3);
	assert_int_equal(ubt_pwrite(f, "def", 3, 0), 3);
	assert_int_equal(ubt_fallocate(f, UBT_FALLOC_KEEP_SIZE, 0, 8192), 0);
	assert_int_equal(ubt_fallocate(f, UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_KEEP_SIZE, 0, 1), -EPERM);
	assert_int_equal(ubt_fallocate(f, UBT_FALLOC_ZERO_RANGE, 0, 1), -EPERM);
	assert_int_equal(ubt_close(f), 0);
	attr.st_size = 0;
	assert_int_equal(ubt_setattr(fs, fa, &attr, UBT_SET_SIZE, NULL), -EPERM);
	assert_int_equal(ubt_setattr(fs, fa, &attr, UBT_SET_MTIME_NOW | UBT_SET_ATIME_NOW, NULL), 0);
	assert_int_equal(ubt_unlink(fs, UBT_ROOT_INO, "app"), -EPERM);
	/* Modes fallocate refuses. */
	assert_int_equal(ubt_open(fs, big, O_RDWR, &f), 0);
	assert_int_equal(ubt_fallocate(f, UBT_FALLOC_PUNCH_HOLE, 0, 1), -EOPNOTSUPP);
	assert_int_equal(ubt_fallocate(f, 0x08, 0, 1), -EOPNOTSUPP);
	assert_int_equal(ubt_fallocate(f, 0, 0, 0), -EINVAL);
	assert_int_equal(ubt_close(f), 0);
	ubt_forget(fs, fc, 1);
	ubt_forget(fs, fm, 1);
	ubt_forget(fs, big, 1);
	ubt_forget(fs, fi, 1);
	ubt_forget(fs, fa, 1);
	ubt_forget(fs, d, 1);
	unmount_check();

	/* The nodatacow mount option: new files get NOCOW (NODATACOW|NODATASUM). */
	mount_lib(UBT_MOUNT_NODATACOW);
	fo = create(UBT_ROOT_INO, "mount-nocow", NULL);
	assert_int_equal(ubt_get_flags(fs, fo, &fl), 0);
	assert_int_equal(fl, FL_NOCOW);
	ubt_forget(fs, fo, 1);
	unmount_check();

	if (kernel_mount()) {
		assert_int_equal(kernel_flags("dc"), FL_NOCOMP | FL_NOATIME);
		assert_int_equal(kernel_flags("dc/inherits-nocow"), FL_NOCOW);
		assert_int_equal(kernel_flags("dc/inherits-compr"), FL_COMPR);
		assert_int_equal(kernel_flags("dc/inherits-nocomp"), FL_NOCOMP);
		assert_int_equal(kernel_flags("big"), 0);
		assert_int_equal(kernel_flags("imm"), FL_IMMUTABLE);
		assert_int_equal(kernel_flags("app"), FL_APPEND);
		assert_int_equal(kernel_flags("mount-nocow"), FL_NOCOW);
		kernel_compare("app", (const uint8_t *)"abcdef", 6);
		ufs_run("umount %s", mnt);
	}
}

static int group_setup(void **state)
{
	(void)state;
	if (ufs_setup("falloc"))
		return -1;
	snprintf(mnt, sizeof(mnt), "%s/mnt", ufs_dir);
	mkdir(mnt, 0755);
	kernel_ok = getuid() == 0 && ufs_run("grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null") == 0;
	if (!kernel_ok)
		print_message("kernel comparison skipped (needs root and btrfs in the kernel)\n");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (fs)
		ubt_unmount(fs);
	ufs_teardown("mnt");
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prealloc_split),
		cmocka_unit_test(test_nocow),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_random_modes),
		cmocka_unit_test(test_random_modes_holes),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
