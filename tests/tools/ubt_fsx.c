/*
 * ubt_fsx — a seeded, model-checked random exerciser of libubtrfs's data path (in the spirit of
 * fsx; written from scratch for ubtrfs).
 *
 *   ubt_fsx IMG [-s SEED] [-n OPS] [-f FILES] [--compress ALG] [--compress-force]
 *           [--max-size BYTES] [--huge BYTES] [-w OP=WEIGHT,...] [--commit SECS]
 *           [--dump DIR] [--record FILE] [--replay FILE] [--shrink] [-v] [--log-level N]
 *
 * FILES regular files /fsx0 .. /fsxN-1 (created, or truncated to 0) are changed at random through
 * the public API while an in-memory model holds each file's bytes and size:
 *   read / dread        ubt_pread / ubt_pread_direct, every byte compared with the model
 *   write / dwrite      ubt_pwrite / ubt_pwrite_direct: random, unaligned, extending, huge
 *   mapwrite / mapsync  ubt_mmap of a page-aligned window (checked against the model), random
 *                       bytes changed, ubt_munmap (mapsync: ubt_msync, more changes, ubt_munmap);
 *                       only bytes below EOF change the file
 *   truncate            ubt_setattr(UBT_SET_SIZE) up and down
 *   falloc / fallockeep / punch / zero / zerokeep
 *                       ubt_fallocate with 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE,
 *                       ZERO_RANGE|KEEP_SIZE (-ENOSPC is allowed and changes nothing)
 *   flush / fsync / sync  ubt_flush / ubt_fsync / ubt_sync
 *   remount             close everything, ubt_unmount, ubt_mount, sizes and one file compared
 *   recreate            close, ubt_unlink and ubt_mknod the file again: it must be new and empty
 *                       (whatever the cache held of the deleted one must not show)
 *   check               one whole file compared
 * An op whose library function is missing from this build (weak reference) or returns -ENOSYS or
 * -EOPNOTSUPP on its first call is disabled with one line; the end prints how often each op ran.
 * The last 200 ops are kept in a ring and printed on any failure (exit 1), in the --replay format.
 * At the end every file is compared, the filesystem unmounted, mounted read-only and compared
 * again, unmounted; --dump DIR then writes the model's files as DIR/fsxN for the shell to compare
 * with the kernel's view.
 *
 * --record FILE writes every op as a line "NAME FILE OFF LEN AUX PAT"; --replay FILE runs such
 * lines instead of random ops. --shrink (with --replay) keeps IMG pristine and runs each candidate
 * op list in a child on a copy (IMG.shrink), delta-debugging the list to a minimal failing one,
 * written to FILE.min; a candidate counts only when it fails the same way (the first words of
 * the message), unless --shrink-any. --model-bug plants an error in the model (a write at an offset that is
 * 123 modulo 4096 is remembered with its first bit flipped) to test the checks and the shrinker.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "ubtrfs.h"

/* Calls that may not be in this build yet: a missing one disables its ops, clearly. */
#pragma weak ubt_fallocate
#pragma weak ubt_pwrite_direct
#pragma weak ubt_pread_direct
#pragma weak ubt_mmap
#pragma weak ubt_msync
#pragma weak ubt_munmap
#pragma weak ubt_flush

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE 4096ULL
#define RING 200
#define MAX_FILES 16

enum op_kind {
	OP_READ,
	OP_WRITE,
	OP_DREAD,
	OP_DWRITE,
	OP_MAPWRITE,
	OP_MAPSYNC,
	OP_TRUNCATE,
	OP_FALLOC,
	OP_FALLOC_KEEP,
	OP_PUNCH,
	OP_ZERO,
	OP_ZERO_KEEP,
	OP_FLUSH,
	OP_FSYNC,
	OP_SYNC,
	OP_REMOUNT,
	OP_RECREATE,
	OP_CHECK,
	OP_NR
};

static const struct {
	const char *name;
	unsigned weight; /* default */
	const char *fn;  /* the library call that may be missing */
} op_info[OP_NR] = {
	[OP_READ] = { "read", 170, "ubt_pread" },
	[OP_WRITE] = { "write", 250, "ubt_pwrite" },
	[OP_DREAD] = { "dread", 40, "ubt_pread_direct" },
	[OP_DWRITE] = { "dwrite", 50, "ubt_pwrite_direct" },
	[OP_MAPWRITE] = { "mapwrite", 30, "ubt_mmap/ubt_munmap" },
	[OP_MAPSYNC] = { "mapsync", 20, "ubt_mmap/ubt_msync" },
	[OP_TRUNCATE] = { "truncate", 50, "ubt_setattr" },
	[OP_FALLOC] = { "falloc", 20, "ubt_fallocate" },
	[OP_FALLOC_KEEP] = { "fallockeep", 20, "ubt_fallocate" },
	[OP_PUNCH] = { "punch", 30, "ubt_fallocate" },
	[OP_ZERO] = { "zero", 20, "ubt_fallocate" },
	[OP_ZERO_KEEP] = { "zerokeep", 15, "ubt_fallocate" },
	[OP_FLUSH] = { "flush", 15, "ubt_flush" },
	[OP_FSYNC] = { "fsync", 12, "ubt_fsync" },
	[OP_SYNC] = { "sync", 4, "ubt_sync" },
	[OP_REMOUNT] = { "remount", 1, "ubt_unmount/ubt_mount" },
	[OP_RECREATE] = { "recreate", 2, "ubt_unlink/ubt_mknod" },
	[OP_CHECK] = { "check", 3, "ubt_pread" },
};

/* One operation, concrete: replaying it needs nothing else. */
struct op {
	int kind;
	int file;
	uint64_t off, len;
	uint64_t aux; /* data seed (writes, mapped changes), datasync (fsync) */
	unsigned pat; /* data pattern (writes) */
};

struct model {
	char name[16];
	ubt_ino ino;
	ubt_file *f;
	uint8_t *data; /* max_size bytes; always zero past size */
	uint64_t size;
};

static struct {
	const char *image;
	uint64_t seed, nops;
	int nfiles;
	const char *compress;
	int compress_force;
	uint64_t max_size, huge;
	unsigned commit;
	const char *dump, *record, *replay;
	bool shrink, verbose, model_bug;
} cfg = { .seed = 1, .nops = 10000, .nfiles = 4, .max_size = 8ULL << 20, .huge = 4ULL << 20 };

static ubt_fs *fs;
static struct model files[MAX_FILES];
static unsigned weights[OP_NR];
static bool disabled[OP_NR];
static uint64_t calls[OP_NR], ran[OP_NR], enospc[OP_NR];
static uint64_t opno;    /* 1-based number of the op running */
static uint64_t ops_run; /* ops run (not skipped as disabled) */
static char ring[RING][192];
static uint64_t ring_n;
static uint8_t *wbuf, *rbuf; /* max_size bytes each, page aligned */
static FILE *record_fp;
static bool in_child; /* a --shrink trial: quiet failures */

/* ---- failure ---- */

static void print_ring(void)
{
	uint64_t first = ring_n > RING ? ring_n - RING : 0;

	fprintf(stderr, "last %" PRIu64 " ops (replay format; #N is the op number):\n", ring_n - first);
	for (uint64_t i = first; i < ring_n; i++)
		fprintf(stderr, "  %s\n", ring[i % RING]);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	if (!in_child)
		print_ring();
	fprintf(stderr, "ubt_fsx: FAIL at op %" PRIu64 " (seed %" PRIu64 "): ", opno, cfg.seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	/* No unmount: the image stays as the failure left it (an unmount would commit more). */
	_exit(1);
}

static void *xalloc(size_t n)
{
	void *p = aligned_alloc(PAGE, (n + PAGE - 1) / PAGE * PAGE);

	if (!p) {
		fprintf(stderr, "ubt_fsx: out of memory (%zu bytes)\n", n);
		exit(2);
	}
	return p;
}

/* ---- random numbers (xoshiro256**), seeded by splitmix64 ---- */

static uint64_t rs[4];

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void rng_seed(uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		rs[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng(void)
{
	uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;

	rs[2] ^= rs[0];
	rs[3] ^= rs[1];
	rs[1] ^= rs[2];
	rs[0] ^= rs[3];
	rs[2] ^= t;
	rs[3] = rotl(rs[3], 45);
	return r;
}

static uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }
static uint64_t rnd_range(uint64_t lo, uint64_t hi) { return lo + rnd(hi - lo + 1); } /* [lo, hi] */

/*
 * Data of a write: a function of (seed, pattern) so a replay writes the same bytes. Patterns:
 * 0 random, 1 runs of one byte (compressible), 2 text-like small alphabet, 3 zeros with sparse
 * noise.
 */
static void fill_data(uint8_t *buf, uint64_t len, uint64_t seed, unsigned pat)
{
	uint64_t x = seed ^ 0x5DEECE66DULL;

	switch (pat) {
	case 0:
		for (uint64_t i = 0; i < len; i += 8) {
			uint64_t v = splitmix(&x);

			memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
		}
		break;
	case 1:
		for (uint64_t i = 0; i < len;) {
			uint64_t v = splitmix(&x), run = 1 + (v >> 8) % 600;

			if (run > len - i)
				run = len - i;
			memset(buf + i, (int)(v & 0xff), run);
			i += run;
		}
		break;
	case 2:
		for (uint64_t i = 0; i < len; i++)
			buf[i] = (uint8_t)("etaoin shrdlu\n"[splitmix(&x) % 14]);
		break;
	default:
		memset(buf, 0, len);
		for (uint64_t i = 0; i < len; i += 1 + splitmix(&x) % 3000)
			buf[i] = (uint8_t)(1 + (x & 0x7f));
		break;
	}
}

/* ---- op names, log ---- */

static int op_by_name(const char *name)
{
	for (int k = 0; k < OP_NR; k++)
		if (!strcmp(op_info[k].name, name))
			return k;
	return -1;
}

static void op_format(const struct op *op, char *out, size_t size)
{
	snprintf(out, size, "%s %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %u", op_info[op->kind].name, op->file,
		 op->off, op->len, op->aux, op->pat);
}

static void log_op(const struct op *op)
{
	char s[128];

	op_format(op, s, sizeof(s));
	snprintf(ring[ring_n % RING], sizeof(ring[0]), "#%" PRIu64 " %s", opno, s);
	ring_n++;
	if (record_fp) {
		fprintf(record_fp, "%s\n", s);
		fflush(record_fp);
	}
}

/* Append the result to the op's ring entry. */
static void log_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_result(const char *fmt, ...)
{
	char *e = ring[(ring_n - 1) % RING];
	size_t used = strlen(e);
	va_list ap;

	if (used + 5 >= sizeof(ring[0]))
		return;
	memcpy(e + used, "  # ", 4);
	va_start(ap, fmt);
	vsnprintf(e + used + 4, sizeof(ring[0]) - used - 4, fmt, ap);
	va_end(ap);
}

static int parse_op(const char *line, struct op *op)
{
	char name[32];
	const char *p = line;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '#') { /* a ring log line: "#N NAME ..." */
		while (*p && *p != ' ')
			p++;
	}
	if (sscanf(p, "%31s %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %u", name, &op->file, &op->off, &op->len,
		   &op->aux, &op->pat) != 6)
		return -EINVAL;
	op->kind = op_by_name(name);
	if (op->kind < 0 || op->file < 0 || op->file >= cfg.nfiles || op->off > cfg.max_size ||
	    op->len > cfg.max_size - op->off)
		return -EINVAL;
	return 0;
}

/* ---- checks ---- */

static void mismatch(const struct model *m, const char *what, uint64_t off, const uint8_t *got, uint64_t len)
{
	const uint8_t *exp = m->data + off;
	uint64_t first = UINT64_MAX, last = 0, bad = 0;

	for (uint64_t i = 0; i < len; i++) {
		if (got[i] != exp[i]) {
			if (first == UINT64_MAX)
				first = i;
			last = i;
			bad++;
		}
	}
	if (!bad)
		return;
	print_ring();
	fprintf(stderr, "%s %s [%" PRIu64 ", +%" PRIu64 ") of size %" PRIu64 ": %" PRIu64
			" bytes differ, first at offset %" PRIu64 " (0x%" PRIx64 "), last at %" PRIu64 "\n",
		what, m->name, off, len, m->size, bad, off + first, off + first, off + last);
	for (uint64_t row = first & ~15ULL; row < len && row < (first & ~15ULL) + 64; row += 16) {
		fprintf(stderr, "  %10" PRIu64 " expected", off + row);
		for (uint64_t i = row; i < row + 16 && i < len; i++)
			fprintf(stderr, " %02x", exp[i]);
		fprintf(stderr, "\n  %10s      got", "");
		for (uint64_t i = row; i < row + 16 && i < len; i++)
			fprintf(stderr, i >= first && got[i] != exp[i] ? "*%02x" : " %02x", got[i]);
		fputc('\n', stderr);
	}
	in_child = true; /* the ring is printed already */
	fail("%s: data mismatch at offset %" PRIu64 ": expected 0x%02x, got 0x%02x", m->name, off + first,
	     exp[first], got[first]);
}

static void check_size(struct model *m, const char *when)
{
	struct stat st;
	int ret = ubt_getattr(fs, m->ino, &st);

	if (ret)
		fail("%s: getattr %s: %s", m->name, when, ubt_strerror(ret));
	if ((uint64_t)st.st_size != m->size)
		fail("%s: size %" PRIu64 " %s, model says %" PRIu64, m->name, (uint64_t)st.st_size, when, m->size);
}

/* Read [off, off+len) in full (short reads continue) and compare; past EOF the read must stop. */
static void read_compare(struct model *m, uint64_t off, uint64_t len, bool direct, const char *what)
{
	uint64_t want = off >= m->size ? 0 : (len < m->size - off ? len : m->size - off), got = 0;

	while (got < len) {
		ssize_t n = direct ? ubt_pread_direct(m->f, rbuf + got, len - got, off + got)
				   : ubt_pread(m->f, rbuf + got, len - got, off + got);

		if (n < 0)
			fail("%s %s off %" PRIu64 " len %" PRIu64 ": %s", what, m->name, off + got, len - got,
			     ubt_strerror((int)n));
		if (n == 0)
			break;
		if ((uint64_t)n > len - got)
			fail("%s %s: returned %zd for %" PRIu64 " bytes", what, m->name, n, len - got);
		got += (uint64_t)n;
	}
	if (got != want)
		fail("%s %s off %" PRIu64 " len %" PRIu64 ": %" PRIu64 " bytes read, expected %" PRIu64
		     " (size %" PRIu64 ")",
		     what, m->name, off, len, got, want, m->size);
	mismatch(m, what, off, rbuf, got);
}

static void check_file(struct model *m, const char *when)
{
	check_size(m, when);
	read_compare(m, 0, m->size + 1 <= cfg.max_size ? m->size + 1 : m->size, false, when);
}

/* ---- mount, files ---- */

static void do_mount(bool rdonly)
{
	struct ubt_mount_opts o = {
		.flags = rdonly ? UBT_MOUNT_RDONLY : 0,
		.compress = cfg.compress,
		.compress_force = cfg.compress_force,
		.commit_interval = cfg.commit,
	};
	int ret = ubt_mount(cfg.image, &o, &fs);

	if (ret) {
		fs = NULL;
		fail("%s: mount%s: %s", cfg.image, rdonly ? " read-only" : "", ubt_strerror(ret));
	}
}

static void do_unmount(const char *when)
{
	int ret = ubt_unmount(fs);

	fs = NULL;
	if (ret)
		fail("unmount %s: %s", when, ubt_strerror(ret));
}

static void open_files(bool create, bool rdonly)
{
	for (int i = 0; i < cfg.nfiles; i++) {
		struct model *m = &files[i];
		struct stat st;
		int ret = ubt_lookup(fs, UBT_ROOT_INO, m->name, &m->ino, &st);

		if (ret == -ENOENT && create)
			ret = ubt_mknod(fs, UBT_ROOT_INO, m->name, S_IFREG | 0644, 0, 0, 0, &m->ino, &st);
		if (ret)
			fail("%s: lookup/create: %s", m->name, ubt_strerror(ret));
		ret = ubt_open(fs, m->ino, rdonly ? O_RDONLY : O_RDWR, &m->f);
		if (!rdonly)
			ubt_forget(fs, m->ino, 1); /* the open handle holds the inode now */
		if (ret)
			fail("%s: open: %s", m->name, ubt_strerror(ret));
		if (create && st.st_size) {
			struct stat a = { .st_size = 0 };

			ret = ubt_setattr(fs, m->ino, &a, UBT_SET_SIZE, NULL);
			if (ret)
				fail("%s: truncate to 0 at start: %s", m->name, ubt_strerror(ret));
		}
	}
}

static void close_files(void)
{
	for (int i = 0; i < cfg.nfiles; i++) {
		int ret = ubt_close(files[i].f);

		files[i].f = NULL;
		if (ret)
			fail("%s: close: %s", files[i].name, ubt_strerror(ret));
	}
}

/* ---- op generation ---- */

static uint64_t clamp_max(uint64_t v) { return v > cfg.max_size ? cfg.max_size : v; }

static uint64_t gen_off(const struct model *m)
{
	uint64_t sz = m->size;

	switch (rnd(10)) {
	case 0:
		return rnd(4096);                              /* inline-extent territory */
	case 1:
	case 2:
		return sz > 8192 ? rnd_range(sz - 8192, sz + 8192) : rnd(sz + 8192); /* around EOF */
	case 3:
		return rnd(sz / PAGE + 17) * PAGE;             /* page aligned */
	case 4:
		return rnd(cfg.max_size);                      /* anywhere */
	default:
		return rnd(sz + sz / 8 + 4096);                /* mostly inside */
	}
}

static uint64_t gen_len(bool may_be_huge)
{
	if (may_be_huge && rnd(100) == 0)
		return rnd_range(1, cfg.huge);
	switch (rnd(10)) {
	case 0:
	case 1:
		return rnd_range(1, 64);
	case 2:
	case 3:
		return rnd_range(1, 4096);
	case 4:
		return PAGE * rnd_range(1, 64);
	default:
		return rnd_range(1, 128 * 1024);
	}
}

/* Page-align an offset and length (direct IO), most of the time. */
static void maybe_align(struct op *op)
{
	if (rnd(10) < 7) {
		op->off &= ~(PAGE - 1);
		op->len = (op->len + PAGE - 1) & ~(PAGE - 1);
	}
}

static void fit(struct op *op)
{
	if (op->off >= cfg.max_size)
		op->off = rnd(cfg.max_size);
	if (op->len == 0)
		op->len = 1;
	if (op->len > cfg.max_size - op->off)
		op->len = cfg.max_size - op->off;
}

static int pick_kind(void)
{
	uint64_t total = 0, r;

	for (int k = 0; k < OP_NR; k++)
		total += disabled[k] ? 0 : weights[k];
	if (!total)
		return -1;
	r = rnd(total);
	for (int k = 0; k < OP_NR; k++) {
		if (disabled[k])
			continue;
		if (r < weights[k])
			return k;
		r -= weights[k];
	}
	return -1;
}

static void gen_op(struct op *op, int kind)
{
	const struct model *m;

	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->file = (int)rnd((uint64_t)cfg.nfiles);
	op->aux = rng();
	m = &files[op->file];
	switch (kind) {
	case OP_READ:
	case OP_WRITE:
	case OP_DREAD:
	case OP_DWRITE:
		op->off = gen_off(m);
		op->len = gen_len(kind == OP_WRITE || kind == OP_DWRITE || rnd(4) == 0);
		op->pat = (unsigned)rnd(4);
		if (kind == OP_DREAD || kind == OP_DWRITE)
			maybe_align(op);
		break;
	case OP_MAPWRITE:
	case OP_MAPSYNC:
		op->off = gen_off(m);
		op->len = rnd(4) ? PAGE * rnd_range(1, 32) : rnd_range(1, 64 * 1024);
		fit(op);
		op->off &= ~(PAGE - 1); /* still below max_size, and the window fits */
		return;
	case OP_TRUNCATE:
		switch (rnd(6)) {
		case 0:
			op->off = 0;
			break;
		case 1:
			op->off = rnd(4096);
			break;
		case 2:
			op->off = rnd(m->size + 1);
			break;
		case 3:
			op->off = m->size + rnd(256 * 1024);
			break;
		default:
			op->off = rnd(m->size + m->size / 4 + 65536);
			break;
		}
		op->off = clamp_max(op->off);
		return;
	case OP_FALLOC:
	case OP_FALLOC_KEEP:
	case OP_PUNCH:
	case OP_ZERO:
	case OP_ZERO_KEEP:
		op->off = gen_off(m);
		op->len = gen_len(rnd(4) == 0);
		if (rnd(2))
			maybe_align(op);
		break;
	case OP_FSYNC:
		op->aux = rnd(2); /* datasync */
		return;
	default:
		return;
	}
	fit(op);
}

/* ---- op execution ---- */

/* -ENOSYS/-EOPNOTSUPP on an op's first call: not in this build; disable it. */
static bool unavailable(const struct op *op, int ret)
{
	if ((ret == -ENOSYS || ret == -EOPNOTSUPP) && calls[op->kind] == 1) {
		disabled[op->kind] = true;
		printf("op %s disabled: %s returned %s on its first call\n", op_info[op->kind].name,
		       op_info[op->kind].fn, ret == -ENOSYS ? "-ENOSYS" : "-EOPNOTSUPP");
		log_result("unavailable");
		return true;
	}
	return false;
}

static void apply_write(struct model *m, uint64_t off, const uint8_t *buf, uint64_t len)
{
	memcpy(m->data + off, buf, len);
	if (off + len > m->size)
		m->size = off + len;
}

static void set_size(struct model *m, uint64_t size)
{
	if (size < m->size)
		memset(m->data + size, 0, m->size - size);
	m->size = size;
}

static void zero_range(struct model *m, uint64_t off, uint64_t len)
{
	if (off < m->size)
		memset(m->data + off, 0, (len < m->size - off ? len : m->size - off));
}

static void op_write(const struct op *op, struct model *m)
{
	bool direct = op->kind == OP_DWRITE;
	ssize_t n;

	fill_data(wbuf, op->len, op->aux, op->pat);
	n = direct ? ubt_pwrite_direct(m->f, wbuf, op->len, op->off) : ubt_pwrite(m->f, wbuf, op->len, op->off);
	if (n < 0 && unavailable(op, (int)n))
		return;
	if (n < 0)
		fail("%s %s off %" PRIu64 " len %" PRIu64 ": %s", op_info[op->kind].name, m->name, op->off, op->len,
		     ubt_strerror((int)n));
	if ((uint64_t)n != op->len)
		fail("%s %s off %" PRIu64 " len %" PRIu64 ": short write of %zd bytes", op_info[op->kind].name,
		     m->name, op->off, op->len, n);
	if (cfg.model_bug && op->off % PAGE == 123 && op->len > 1) /* --model-bug: a planted error */
		wbuf[0] ^= 1;
	apply_write(m, op->off, wbuf, op->len);
	ran[op->kind]++;
}

static void op_read(const struct op *op, struct model *m)
{
	bool direct = op->kind == OP_DREAD;

	if (direct && calls[op->kind] == 1) { /* probe availability without failing */
		ssize_t n = ubt_pread_direct(m->f, rbuf, op->len, op->off);

		if (n < 0 && unavailable(op, (int)n))
			return;
	}
	check_size(m, "before a read");
	read_compare(m, op->off, op->len, direct, op_info[op->kind].name);
	ran[op->kind]++;
}

/* Change a few random bytes or runs of the window @map of [off, off+len); the model follows. */
static void scribble(struct model *m, uint8_t *map, uint64_t off, uint64_t len, uint64_t *x)
{
	uint64_t n = 1 + splitmix(x) % 24;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = splitmix(x), pos = v % len, run = (v >> 40) % 4 == 0 ? 1 + (v >> 20) % 300 : 1;

		if (run > len - pos)
			run = len - pos;
		for (uint64_t j = pos; j < pos + run; j++) {
			uint8_t b = (uint8_t)(splitmix(x) | 1);

			map[j] = b;
			if (off + j < m->size)
				m->data[off + j] = b;
		}
	}
}

static void op_map(const struct op *op, struct model *m)
{
	const char *name = op_info[op->kind].name;
	uint64_t x = op->aux;
	uint8_t *map;
	int ret;

	errno = 0;
	map = ubt_mmap(m->f, op->off, op->len);
	if (!map) {
		int err = errno ? -errno : -EIO;

		if (unavailable(op, err))
			return;
		fail("%s %s: ubt_mmap off %" PRIu64 " len %" PRIu64 ": %s", name, m->name, op->off, op->len,
		     ubt_strerror(err));
	}
	/* The window shows the file: model bytes below EOF, zeros past it. */
	if (op->off < m->size)
		mismatch(m, "mapped window of", op->off, map,
			 op->len < m->size - op->off ? op->len : m->size - op->off);
	for (uint64_t i = op->off < m->size ? m->size - op->off : 0; i < op->len; i++)
		if (map[i])
			fail("%s %s: mapped byte at %" PRIu64 " past EOF %" PRIu64 " is 0x%02x, not 0", name, m->name,
			     op->off + i, m->size, map[i]);
	scribble(m, map, op->off, op->len, &x);
	if (op->kind == OP_MAPSYNC) {
		ret = ubt_msync(m->f, map, op->len);
		if (ret && unavailable(op, ret)) {
			/* Nothing was handed back; the munmap below does it (the model has it already). */
		} else if (ret) {
			fail("%s %s: ubt_msync: %s", name, m->name, ubt_strerror(ret));
		} else {
			scribble(m, map, op->off, op->len, &x);
		}
	}
	ret = ubt_munmap(m->f, map, op->len);
	if (ret && op->kind == OP_MAPWRITE && unavailable(op, ret))
		fail("%s: ubt_munmap not available but ubt_mmap is: the model cannot follow", name);
	if (ret)
		fail("%s %s: ubt_munmap: %s", name, m->name, ubt_strerror(ret));
	ran[op->kind]++;
}

static void op_truncate(const struct op *op, struct model *m)
{
	struct stat a = { .st_size = (off_t)op->off }, out;
	int ret = ubt_setattr(fs, m->ino, &a, UBT_SET_SIZE, &out);

	if (ret)
		fail("truncate %s to %" PRIu64 ": %s", m->name, op->off, ubt_strerror(ret));
	set_size(m, op->off);
	if ((uint64_t)out.st_size != op->off)
		fail("truncate %s to %" PRIu64 ": setattr reports size %" PRIu64, m->name, op->off,
		     (uint64_t)out.st_size);
	ran[op->kind]++;
}

static void op_fallocate(const struct op *op, struct model *m)
{
	static const int modes[OP_NR] = {
		[OP_FALLOC] = 0,
		[OP_FALLOC_KEEP] = UBT_FALLOC_KEEP_SIZE,
		[OP_PUNCH] = UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_KEEP_SIZE,
		[OP_ZERO] = UBT_FALLOC_ZERO_RANGE,
		[OP_ZERO_KEEP] = UBT_FALLOC_ZERO_RANGE | UBT_FALLOC_KEEP_SIZE,
	};
	int mode = modes[op->kind];
	int ret = ubt_fallocate(m->f, mode, op->off, op->len);

	if (ret && unavailable(op, ret))
		return;
	if (ret == -ENOSPC) {
		enospc[op->kind]++;
		log_result("ENOSPC");
		return;
	}
	if (ret)
		fail("%s %s mode 0x%x off %" PRIu64 " len %" PRIu64 ": %s", op_info[op->kind].name, m->name, mode,
		     op->off, op->len, ubt_strerror(ret));
	if (mode & (UBT_FALLOC_PUNCH_HOLE | UBT_FALLOC_ZERO_RANGE))
		zero_range(m, op->off, op->len);
	if (!(mode & UBT_FALLOC_KEEP_SIZE) && op->off + op->len > m->size)
		m->size = op->off + op->len;
	ran[op->kind]++;
}

static void remount(void)
{
	close_files();
	do_unmount("in a remount op");
	do_mount(false);
	open_files(false, false);
	for (int i = 0; i < cfg.nfiles; i++)
		check_size(&files[i], "after a remount");
}

static void recreate(struct model *m)
{
	struct stat st;
	int ret = ubt_close(m->f);

	m->f = NULL;
	if (ret)
		fail("%s: close before recreate: %s", m->name, ubt_strerror(ret));
	ret = ubt_unlink(fs, UBT_ROOT_INO, m->name);
	if (ret)
		fail("%s: unlink: %s", m->name, ubt_strerror(ret));
	ret = ubt_mknod(fs, UBT_ROOT_INO, m->name, S_IFREG | 0644, 0, 0, 0, &m->ino, &st);
	if (ret)
		fail("%s: create again: %s", m->name, ubt_strerror(ret));
	ret = ubt_open(fs, m->ino, O_RDWR, &m->f);
	ubt_forget(fs, m->ino, 1);
	if (ret)
		fail("%s: open after recreate: %s", m->name, ubt_strerror(ret));
	memset(m->data, 0, m->size);
	m->size = 0;
	if (st.st_size != 0)
		fail("%s: recreated with size %lld", m->name, (long long)st.st_size);
	check_size(m, "after recreate");
}

static void run_op(const struct op *op)
{
	struct model *m = &files[op->file];
	int ret = 0;

	log_op(op);
	calls[op->kind]++;
	switch (op->kind) {
	case OP_READ:
	case OP_DREAD:
		op_read(op, m);
		return;
	case OP_WRITE:
	case OP_DWRITE:
		op_write(op, m);
		return;
	case OP_MAPWRITE:
	case OP_MAPSYNC:
		op_map(op, m);
		return;
	case OP_TRUNCATE:
		op_truncate(op, m);
		return;
	case OP_FALLOC:
	case OP_FALLOC_KEEP:
	case OP_PUNCH:
	case OP_ZERO:
	case OP_ZERO_KEEP:
		op_fallocate(op, m);
		return;
	case OP_FLUSH:
		ret = ubt_flush(m->f);
		break;
	case OP_FSYNC:
		ret = ubt_fsync(m->f, (int)op->aux);
		break;
	case OP_SYNC:
		ret = ubt_sync(fs);
		break;
	case OP_REMOUNT:
		remount();
		check_file(m, "after a remount");
		break;
	case OP_RECREATE:
		recreate(m);
		check_file(m, "after recreate");
		break;
	case OP_CHECK:
		check_file(m, "check");
		break;
	}
	if (ret && unavailable(op, ret))
		return;
	if (ret)
		fail("%s %s: %s", op_info[op->kind].name, m->name, ubt_strerror(ret));
	ran[op->kind]++;
}

/* ---- one run: setup, ops (random or a list), the final checks ---- */

static void setup(void)
{
	bool have[OP_NR];

	for (int k = 0; k < OP_NR; k++)
		have[k] = true;
	have[OP_FALLOC] = have[OP_FALLOC_KEEP] = have[OP_PUNCH] = have[OP_ZERO] = have[OP_ZERO_KEEP] =
		ubt_fallocate != NULL;
	have[OP_DWRITE] = ubt_pwrite_direct != NULL;
	have[OP_DREAD] = ubt_pread_direct != NULL;
	have[OP_MAPWRITE] = ubt_mmap != NULL && ubt_munmap != NULL;
	have[OP_MAPSYNC] = have[OP_MAPWRITE] && ubt_msync != NULL;
	have[OP_FLUSH] = ubt_flush != NULL;
	for (int k = 0; k < OP_NR; k++) {
		if (!have[k] && weights[k]) {
			disabled[k] = true;
			if (!in_child)
				printf("op %s disabled: %s is not in this build\n", op_info[k].name, op_info[k].fn);
		}
	}
	for (int i = 0; i < cfg.nfiles; i++) {
		snprintf(files[i].name, sizeof(files[i].name), "fsx%d", i);
		files[i].data = calloc(1, cfg.max_size);
		if (!files[i].data) {
			fprintf(stderr, "ubt_fsx: out of memory\n");
			exit(2);
		}
		files[i].size = 0;
	}
	wbuf = xalloc(cfg.max_size);
	rbuf = xalloc(cfg.max_size + PAGE);
	do_mount(false);
	open_files(true, false);
}

static void finish(void)
{
	for (int i = 0; i < cfg.nfiles; i++)
		check_file(&files[i], "final check");
	close_files();
	do_unmount("at the end");
	do_mount(true);
	open_files(false, true);
	for (int i = 0; i < cfg.nfiles; i++)
		check_file(&files[i], "read-only mount after the run");
	close_files();
	do_unmount("of the read-only mount");
}

static void dump_model(void)
{
	mkdir(cfg.dump, 0755);
	for (int i = 0; i < cfg.nfiles; i++) {
		char path[4096];
		FILE *fp;

		snprintf(path, sizeof(path), "%s/%s", cfg.dump, files[i].name);
		fp = fopen(path, "wb");
		if (!fp || fwrite(files[i].data, 1, files[i].size, fp) != files[i].size || fclose(fp)) {
			fprintf(stderr, "ubt_fsx: writing %s: %s\n", path, strerror(errno));
			exit(2);
		}
	}
}

static void report(double secs)
{
	printf("ops:");
	for (int k = 0; k < OP_NR; k++) {
		printf(" %s=%" PRIu64, op_info[k].name, ran[k]);
		if (enospc[k])
			printf("(+%" PRIu64 " ENOSPC)", enospc[k]);
		if (disabled[k])
			printf("(disabled)");
	}
	printf("\n");
	for (int i = 0; i < cfg.nfiles; i++)
		printf("file %s size %" PRIu64 " xxh64 %016llx\n", files[i].name, files[i].size,
		       (unsigned long long)XXH64(files[i].data, files[i].size, 0));
	printf("ubt_fsx: %" PRIu64 " ops, seed %" PRIu64 ", compress %s, %.1f s (%.0f ops/s): PASS\n", ops_run,
	       cfg.seed, cfg.compress ? cfg.compress : "none", secs, secs > 0 ? (double)ops_run / secs : 0.0);
}

static struct op *read_ops(const char *path, uint64_t *n)
{
	FILE *fp = fopen(path, "r");
	struct op *ops = NULL;
	size_t cap = 0;
	char line[512];

	*n = 0;
	if (!fp) {
		fprintf(stderr, "ubt_fsx: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	while (fgets(line, sizeof(line), fp)) {
		struct op op;

		if (line[0] == '\n' || !line[0])
			continue;
		if (parse_op(line, &op)) {
			fprintf(stderr, "ubt_fsx: %s: bad op line: %s", path, line);
			exit(2);
		}
		if (*n == cap) {
			cap = cap ? 2 * cap : 1024;
			ops = realloc(ops, cap * sizeof(*ops));
			if (!ops) {
				fprintf(stderr, "ubt_fsx: out of memory\n");
				exit(2);
			}
		}
		ops[(*n)++] = op;
	}
	fclose(fp);
	return ops;
}

/* Run @ops (or cfg.nops random ones when NULL); returns only on success. */
static void run(const struct op *ops, uint64_t nops)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rng_seed(cfg.seed);
	setup();
	for (opno = 1; opno <= nops; opno++) {
		struct op op;

		if (ops) {
			op = ops[opno - 1];
			if (disabled[op.kind])
				continue;
		} else {
			int kind = pick_kind();

			if (kind < 0) {
				fprintf(stderr, "ubt_fsx: every op is disabled\n");
				exit(2);
			}
			gen_op(&op, kind);
		}
		run_op(&op);
		ops_run++;
		if (cfg.verbose && opno % 10000 == 0) {
			clock_gettime(CLOCK_MONOTONIC, &t1);
			printf("  %" PRIu64 " ops, %.1f s\n", opno,
			       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
			fflush(stdout);
		}
	}
	finish();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!in_child) {
		if (cfg.dump)
			dump_model();
		report((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	}
}

/* ---- --shrink: delta debugging over an op list, each trial on a fresh copy of the image ---- */

/*
 * What a failure is about: the first three words of its message without digits ("fsx: data
 * mismatch", "fsx: size"), so shrinking keeps chasing the same failure and not another one.
 */
static void failure_signature(const char *errfile, char *sig, size_t size)
{
	FILE *fp = fopen(errfile, "r");
	char line[1024], *msg = NULL;
	size_t o = 0;
	int words = 0;

	sig[0] = 0;
	if (!fp)
		return;
	while (fgets(line, sizeof(line), fp)) {
		char *p = strstr(line, "FAIL at op ");

		if (p && (p = strstr(p, "): "))) {
			msg = p + 3;
			break;
		}
	}
	fclose(fp);
	for (; msg && *msg && *msg != '\n' && o + 1 < size; msg++) {
		if (*msg == ' ' && ++words == 3)
			break;
		if (*msg < '0' || *msg > '9')
			sig[o++] = *msg;
	}
	sig[o] = 0;
}

static char shrink_sig[128];
static bool shrink_any;

static bool trial_fails(const char *pristine, const char *copy, const struct op *ops, uint64_t n)
{
	char cmd[8192], errfile[4096], sig[128];
	pid_t pid;
	int st;

	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", pristine, copy);
	if (system(cmd) != 0) {
		fprintf(stderr, "ubt_fsx: %s failed\n", cmd);
		exit(2);
	}
	snprintf(errfile, sizeof(errfile), "%s.err", copy);
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		int err = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (devnull >= 0)
			dup2(devnull, 1);
		if (err >= 0)
			dup2(err, 2);
		in_child = true;
		cfg.image = copy;
		run(ops, n);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) < 0) {
		perror("waitpid");
		exit(2);
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return false;
	failure_signature(errfile, sig, sizeof(sig));
	if (!shrink_sig[0]) {
		snprintf(shrink_sig, sizeof(shrink_sig), "%s", sig[0] ? sig : "?");
		printf("shrink: the failure to keep: \"%s\"%s\n", shrink_sig, shrink_any ? " (or any other)" : "");
		return true;
	}
	return shrink_any || !strcmp(sig, shrink_sig);
}

static int shrink(void)
{
	char copy[4096], out[4096];
	uint64_t n, chunk;
	struct op *ops = read_ops(cfg.replay, &n), *tmp;
	FILE *fp;

	snprintf(copy, sizeof(copy), "%s.shrink", cfg.image);
	snprintf(out, sizeof(out), "%s.min", cfg.replay);
	if (!trial_fails(cfg.image, copy, ops, n)) {
		printf("shrink: the %" PRIu64 " ops do not fail; nothing to shrink\n", n);
		unlink(copy);
		return 1;
	}
	tmp = malloc(n * sizeof(*ops) + 1);
	if (!tmp)
		return 2;
	/* Cut the tail first (ops after the failure do not matter), then ddmin-style chunk removal. */
	for (chunk = n / 2; chunk >= 1; chunk /= 2) {
		bool progress = true;

		while (progress) {
			progress = false;
			for (uint64_t start = 0; start < n; start += chunk) {
				uint64_t end = start + chunk < n ? start + chunk : n, m = 0;

				for (uint64_t i = 0; i < n; i++)
					if (i < start || i >= end)
						tmp[m++] = ops[i];
				if (m && trial_fails(cfg.image, copy, tmp, m)) {
					memcpy(ops, tmp, m * sizeof(*ops));
					n = m;
					progress = true;
					printf("shrink: %" PRIu64 " ops (chunk %" PRIu64 ")\n", n, chunk);
					fflush(stdout);
				}
			}
		}
		if (chunk == 1)
			break;
	}
	fp = fopen(out, "w");
	if (!fp)
		return 2;
	for (uint64_t i = 0; i < n; i++) {
		char s[128];

		op_format(&ops[i], s, sizeof(s));
		fprintf(fp, "%s\n", s);
		printf("  %s\n", s);
	}
	fclose(fp);
	printf("shrink: %" PRIu64 " ops still fail; written to %s (image copy left at %s)\n", n, out, copy);
	free(tmp);
	free(ops);
	return 0;
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: ubt_fsx IMG [-s SEED] [-n OPS] [-f FILES] [--compress ALG] [--compress-force]\n"
		"               [--max-size BYTES] [--huge BYTES] [-w OP=WEIGHT,...] [--commit SECS]\n"
		"               [--dump DIR] [--record FILE] [--replay FILE [--shrink|--shrink-any]] [--model-bug] [-v]\n"
		"               [--log-level 0-3]\n"
		"ops and default weights:");
	for (int k = 0; k < OP_NR; k++)
		fprintf(stderr, " %s=%u", op_info[k].name, op_info[k].weight);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		usage();
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	}
	if (*end)
		usage();
	return v;
}

static void parse_weights(char *s)
{
	for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
		char *eq = strchr(tok, '=');
		int k;

		if (!eq)
			usage();
		*eq = 0;
		k = op_by_name(tok);
		if (k < 0) {
			fprintf(stderr, "ubt_fsx: unknown op '%s'\n", tok);
			usage();
		}
		weights[k] = (unsigned)parse_u64(eq + 1);
	}
}

int main(int argc, char **argv)
{
	struct op *ops = NULL;
	uint64_t nops;

	for (int k = 0; k < OP_NR; k++)
		weights[k] = op_info[k].weight;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

#define ARG(s) (!strcmp(a, s) && (v || (usage(), 0)) && ++i)
		if (ARG("-s") || ARG("--seed"))
			cfg.seed = parse_u64(v);
		else if (ARG("-n") || ARG("--ops"))
			cfg.nops = parse_u64(v);
		else if (ARG("-f") || ARG("--files"))
			cfg.nfiles = (int)parse_u64(v);
		else if (ARG("--compress"))
			cfg.compress = v;
		else if (!strcmp(a, "--compress-force"))
			cfg.compress_force = 1;
		else if (ARG("--max-size"))
			cfg.max_size = parse_u64(v);
		else if (ARG("--huge"))
			cfg.huge = parse_u64(v);
		else if (ARG("-w") || ARG("--weights"))
			parse_weights(argv[i]);
		else if (ARG("--commit"))
			cfg.commit = (unsigned)parse_u64(v);
		else if (ARG("--dump"))
			cfg.dump = v;
		else if (ARG("--record"))
			cfg.record = v;
		else if (ARG("--replay"))
			cfg.replay = v;
		else if (!strcmp(a, "--shrink"))
			cfg.shrink = true;
		else if (!strcmp(a, "--shrink-any"))
			cfg.shrink = shrink_any = true;
		else if (!strcmp(a, "--model-bug"))
			cfg.model_bug = true;
		else if (!strcmp(a, "-v"))
			cfg.verbose = true;
		else if (ARG("--log-level"))
			ubt_set_log_level((int)parse_u64(v));
		else if (a[0] != '-' && !cfg.image)
			cfg.image = a;
		else
			usage();
#undef ARG
	}
	if (!cfg.image || cfg.nfiles < 1 || cfg.nfiles > MAX_FILES || cfg.max_size < 2 * PAGE ||
	    cfg.max_size % PAGE || (cfg.shrink && !cfg.replay))
		usage();
	if (cfg.huge > cfg.max_size)
		cfg.huge = cfg.max_size;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cfg.shrink) {
		if (!cfg.commit)
			cfg.commit = 3600; /* no timer commits: trials as deterministic as they can be */
		return shrink();
	}
	if (cfg.record) {
		record_fp = fopen(cfg.record, "w");
		if (!record_fp) {
			fprintf(stderr, "ubt_fsx: %s: %s\n", cfg.record, strerror(errno));
			return 2;
		}
	}
	nops = cfg.nops;
	if (cfg.replay)
		ops = read_ops(cfg.replay, &nops);
	printf("ubt_fsx: %s seed %" PRIu64 ", %" PRIu64 " ops, %d files up to %" PRIu64 " bytes, compress %s%s\n",
	       cfg.image, cfg.seed, nops, cfg.nfiles, cfg.max_size, cfg.compress ? cfg.compress : "none",
	       cfg.replay ? " (replay)" : "");
	run(ops, nops);
	if (record_fp)
		fclose(record_fp);
	free(ops);
	return 0;
}
