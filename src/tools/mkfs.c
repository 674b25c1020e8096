/*
 * mkfs.c — `ubtrfs mkfs`: create a fresh btrfs filesystem on an image file or a block device.
 *
 * Owns the command line (options as users know them from mkfs.btrfs), the device checks (existing
 * signatures, devices in use, minimum size), the chunk layout of a fresh single-device filesystem,
 * and the direct construction of every initial tree block and superblock. It does not go through
 * the B-tree write path: everything a fresh filesystem holds is known up front, so each tree is
 * bulk-loaded from a sorted item list into packed leaves (and nodes above them when one leaf is
 * not enough, e.g. the root tree at nodesize 4096).
 *
 * The one circularity — the extent tree, free space tree and block group tree describe where the
 * tree blocks are, and their own size decides how many tree blocks there are — is solved by a
 * fixed point: allocate with the current block counts, rebuild those trees, re-plan, repeat until
 * no count changes (counts only grow, so this ends after a few rounds).
 *
 * Layout (single device; S = 8 MiB system stripe, M = metadata stripe, D = data chunk):
 *   physical [0, 1 MiB) reserved (superblock at 64 KiB), then
 *   system DUP   logical 1 MiB,       stripes at 1 MiB, 1 MiB + S
 *   metadata DUP logical 1 MiB + S,   stripes after the system stripes
 *   data SINGLE  logical after metadata, stripe after the metadata stripes
 * Chunk sizes follow btrfs-progs' rules for a fresh filesystem (facts, not code).
 *
 * --rootdir then mounts the new image through the library (ubt_mount, read-write) and copies the
 * directory with the public namespace and data calls; see the --rootdir section below.
 */
#include "mkfs.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "codec/csum.h"
#include "device/bdev.h"
#include "format/ondisk.h"
#include "ubtrfs.h"
#include "util/messages.h"

enum { MK_EXIT_OK = 0, MK_EXIT_FAIL = 1, MK_EXIT_USAGE = 2 };

#define SZ_1K 1024ULL
#define SZ_1M (1024ULL * 1024)
#define SZ_1G (1024ULL * 1024 * 1024)

#define MK_GENERATION 1ULL
#define MK_RESERVED_START SZ_1M     /* no chunk below this: boot area and primary superblock */
#define MK_ZERO_END (2 * SZ_1M)     /* wiped at the end of the device (old GPT copies, md, ...) */
#define MK_SYS_GROUP_SIZE (4 * SZ_1M) /* mkfs.btrfs' initial system group: used by the min size rule */
#define MK_MAX_STRIPES 2
#define MK_MAX_CHUNKS 3
#define MK_MAX_TREES 12
#define MK_MAX_ROUNDS 32

/* Not (yet) in format/ondisk.h. */
#define MK_EXTENT_FLAG_TREE_BLOCK (1ULL << 1)
#define MK_DEV_STAT_VALUES 5
#define MK_FREE_SPACE_INFO_SIZE 8
#define MK_TREE_BLOCK_INFO_SIZE (sizeof(struct btrfs_disk_key) + 1)
#define MK_INLINE_TREE_REF_SIZE 9

/* ---- Configuration from the command line ---- */

struct mk_config {
	const char *path;
	const char *label;
	const char *rootdir;
	u32 nodesize;
	u32 sectorsize;
	u16 csum_type;
	u64 byte_count;      /* 0: whole device */
	u64 meta_profile;    /* 0 (single) or BTRFS_BLOCK_GROUP_DUP */
	u64 data_profile;
	u64 incompat;
	u64 compat_ro;
	bool force;
	bool quiet;
	bool have_fsid;
	u8 fsid[BTRFS_FSID_SIZE];
};

static void mk_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mk_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("ubtrfs mkfs: error: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void mk_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mk_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("ubtrfs mkfs: warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- In-memory model of the filesystem being built ---- */

struct mk_chunk {
	u64 type;                   /* BTRFS_BLOCK_GROUP_* type | profile */
	u64 logical;
	u64 length;                 /* logical length = length of each stripe */
	int num_stripes;
	u64 phys[MK_MAX_STRIPES];
	u64 cursor;                 /* next logical address the block allocator tries */
};

struct mk_key {
	u64 objectid;
	u8 type;
	u64 offset;
};

struct mk_item {
	struct mk_key key;
	u32 size;
	u8 *data;                   /* owned; NULL when size is 0 */
};

struct mk_tree {
	u64 objectid;
	struct mk_chunk *chunk;     /* where its blocks live */
	bool dynamic;               /* content depends on the block allocation */
	struct mk_item *items;
	size_t nr_items, cap_items;
	/* Plan: leaves first, then each level of nodes; the root is the last block. */
	size_t nr_leaves;
	size_t *leaf_first;         /* nr_leaves + 1 entries: first item index of each leaf */
	size_t level_count[BTRFS_MAX_LEVEL];
	int nr_levels;
	size_t nr_blocks;
	u64 *bytenr;                /* nr_blocks addresses, from the allocator */
	size_t nr_alloc;            /* blocks the current allocation round reserved */
};

struct mk_fs {
	const struct mk_config *cfg;
	struct ubt_bdev *bdev;
	u64 total_bytes;
	u64 now;
	u8 dev_uuid[BTRFS_UUID_SIZE];
	u8 chunk_uuid[BTRFS_UUID_SIZE];
	u8 fs_root_uuid[BTRFS_UUID_SIZE];
	struct mk_chunk chunks[MK_MAX_CHUNKS];
	int nr_chunks;
	struct mk_chunk *sys, *meta, *data;
	struct mk_tree trees[MK_MAX_TREES];
	int nr_trees;
	u64 dev_bytes_used;
};

static bool mk_has_fst(const struct mk_fs *fs)
{
	return fs->cfg->compat_ro & BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE;
}

static bool mk_has_bgt(const struct mk_fs *fs)
{
	return fs->cfg->compat_ro & BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE;
}

static bool mk_skinny(const struct mk_fs *fs)
{
	return fs->cfg->incompat & BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA;
}

static u32 mk_leaf_room(const struct mk_fs *fs)
{
	return fs->cfg->nodesize - (u32)sizeof(struct btrfs_header);
}

static u32 mk_node_ptrs(const struct mk_fs *fs)
{
	return mk_leaf_room(fs) / (u32)sizeof(struct btrfs_key_ptr);
}

static struct mk_tree *mk_tree_get(struct mk_fs *fs, u64 objectid)
{
	for (int i = 0; i < fs->nr_trees; i++) {
		if (fs->trees[i].objectid == objectid)
			return &fs->trees[i];
	}
	return NULL;
}

static struct mk_tree *mk_tree_new(struct mk_fs *fs, u64 objectid, struct mk_chunk *chunk, bool dynamic)
{
	struct mk_tree *t = &fs->trees[fs->nr_trees++];

	UBT_ASSERT(fs->nr_trees <= MK_MAX_TREES);
	memset(t, 0, sizeof(*t));
	t->objectid = objectid;
	t->chunk = chunk;
	t->dynamic = dynamic;
	/* Until its first plan, a tree is one leaf. */
	t->nr_blocks = 1;
	t->nr_leaves = 1;
	t->level_count[0] = 1;
	t->nr_levels = 1;
	return t;
}

static void mk_tree_clear_items(struct mk_tree *t)
{
	for (size_t i = 0; i < t->nr_items; i++)
		free(t->items[i].data);
	t->nr_items = 0;
}

static void mk_tree_free(struct mk_tree *t)
{
	mk_tree_clear_items(t);
	free(t->items);
	free(t->leaf_first);
	free(t->bytenr);
	memset(t, 0, sizeof(*t));
}

/* Append an item (copied); the tree is sorted before it is planned. */
static int mk_add_item(struct mk_tree *t, u64 objectid, u8 type, u64 offset, const void *data, u32 size)
{
	struct mk_item *it;

	if (t->nr_items == t->cap_items) {
		size_t cap = t->cap_items ? t->cap_items * 2 : 16;
		struct mk_item *n = realloc(t->items, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		t->items = n;
		t->cap_items = cap;
	}
	it = &t->items[t->nr_items];
	it->key = (struct mk_key){ objectid, type, offset };
	it->size = size;
	it->data = NULL;
	if (size) {
		it->data = malloc(size);
		if (!it->data)
			return -ENOMEM;
		memcpy(it->data, data, size);
	}
	t->nr_items++;
	return 0;
}

static int mk_key_cmp(const struct mk_key *a, const struct mk_key *b)
{
	if (a->objectid != b->objectid)
		return a->objectid < b->objectid ? -1 : 1;
	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return 0;
}

static int mk_item_cmp(const void *a, const void *b)
{
	return mk_key_cmp(&((const struct mk_item *)a)->key, &((const struct mk_item *)b)->key);
}

static void mk_disk_key(struct btrfs_disk_key *dk, const struct mk_key *k)
{
	dk->objectid = htole64(k->objectid);
	dk->type = k->type;
	dk->offset = htole64(k->offset);
}

/* ---- Planning: how many leaves and nodes a tree needs ---- */

/*
 * Test hook: UBT_MKFS_FANOUT=N caps items per leaf and pointers per node at N, so that small
 * filesystems get multi-level trees and the node-building path is exercised by the oracles.
 * N >= 3: with 2 the extent tree grows as fast as the blocks it describes and never converges.
 */
static size_t mk_test_fanout(void)
{
	const char *s = getenv("UBT_MKFS_FANOUT");
	unsigned long v = s ? strtoul(s, NULL, 10) : 0;

	return v >= 3 ? (size_t)v : SIZE_MAX;
}

static int mk_tree_plan(struct mk_fs *fs, struct mk_tree *t)
{
	u32 room = mk_leaf_room(fs);
	size_t fanout = mk_test_fanout();
	size_t ptrs = ubt_min((size_t)mk_node_ptrs(fs), fanout);
	size_t *first;
	size_t nr = 0, count;
	u32 used = 0;

	if (t->nr_items)
		qsort(t->items, t->nr_items, sizeof(*t->items), mk_item_cmp);
	for (size_t i = 1; i < t->nr_items; i++) {
		if (!mk_key_cmp(&t->items[i - 1].key, &t->items[i].key)) {
			mk_err("internal: duplicate key (%llu %u %llu) in tree %lld",
			       (unsigned long long)t->items[i].key.objectid, t->items[i].key.type,
			       (unsigned long long)t->items[i].key.offset, (long long)t->objectid);
			return -EUCLEAN;
		}
	}
	first = realloc(t->leaf_first, (t->nr_items + 2) * sizeof(*first));
	if (!first)
		return -ENOMEM;
	t->leaf_first = first;
	first[nr++] = 0;
	for (size_t i = 0; i < t->nr_items; i++) {
		u32 need = (u32)sizeof(struct btrfs_item) + t->items[i].size;

		if (need > room)
			return -E2BIG;
		if (used + need > room || i - first[nr - 1] == fanout) {
			first[nr++] = i;
			used = 0;
		}
		used += need;
	}
	t->nr_leaves = nr;
	first[nr] = t->nr_items;

	memset(t->level_count, 0, sizeof(t->level_count));
	t->nr_levels = 0;
	t->nr_blocks = 0;
	count = nr;
	for (;;) {
		if (t->nr_levels == BTRFS_MAX_LEVEL)
			return -E2BIG;
		t->level_count[t->nr_levels++] = count;
		t->nr_blocks += count;
		if (count == 1)
			break;
		count = (count + ptrs - 1) / ptrs;
	}
	return 0;
}

/* Level and index within the level of block @idx (leaves first). */
static int mk_block_level(const struct mk_tree *t, size_t idx, size_t *in_level)
{
	int l = 0;

	while (idx >= t->level_count[l]) {
		idx -= t->level_count[l];
		l++;
	}
	if (in_level)
		*in_level = idx;
	return l;
}

static size_t mk_level_base(const struct mk_tree *t, int level)
{
	size_t base = 0;

	for (int l = 0; l < level; l++)
		base += t->level_count[l];
	return base;
}

/* Children of node @j at @level: [*start, *end) indexes within level - 1 (evenly spread). */
static void mk_node_children(const struct mk_tree *t, int level, size_t j, size_t *start, size_t *end)
{
	size_t c = t->level_count[level - 1], n = t->level_count[level];

	*start = j * c / n;
	*end = (j + 1) * c / n;
}

/* First key stored under block @idx; a zero key for an empty leaf. */
static struct mk_key mk_block_first_key(const struct mk_tree *t, size_t idx)
{
	size_t in_level, start, end;
	int level = mk_block_level(t, idx, &in_level);

	while (level > 0) {
		mk_node_children(t, level, in_level, &start, &end);
		in_level = start;
		level--;
	}
	if (t->leaf_first[in_level] < t->nr_items)
		return t->items[t->leaf_first[in_level]].key;
	return (struct mk_key){ 0, 0, 0 };
}

/* The root is the last block allocated to the tree. */
static u64 mk_tree_root(const struct mk_tree *t)
{
	return t->bytenr[t->nr_alloc - 1];
}

static int mk_tree_level(const struct mk_tree *t)
{
	return t->nr_levels - 1;
}

/* ---- Block allocation inside the system and metadata chunks ---- */

/* True when [phys, phys + len) overlaps a superblock copy (where btrfs never puts tree blocks). */
static bool mk_hits_super(u64 phys, u64 len)
{
	for (int i = 0; i < BTRFS_SUPER_MIRROR_MAX; i++) {
		u64 sb = btrfs_sb_offset(i);

		if (phys < sb + BTRFS_SUPER_INFO_SIZE && sb < phys + len)
			return true;
	}
	return false;
}

static int mk_alloc_block(struct mk_fs *fs, struct mk_chunk *c, u64 *out)
{
	u32 ns = fs->cfg->nodesize;

	while (c->cursor + ns <= c->logical + c->length) {
		u64 at = c->cursor;
		bool bad = false;

		c->cursor += ns;
		for (int s = 0; s < c->num_stripes; s++)
			bad |= mk_hits_super(c->phys[s] + (at - c->logical), ns);
		if (!bad) {
			*out = at;
			return 0;
		}
	}
	mk_err("the %s chunk is too small for the initial tree blocks",
	       (c->type & BTRFS_BLOCK_GROUP_SYSTEM) ? "system" : "metadata");
	return -ENOSPC;
}

static int mk_allocate(struct mk_fs *fs)
{
	int ret;

	for (int i = 0; i < fs->nr_chunks; i++)
		fs->chunks[i].cursor = fs->chunks[i].logical;
	for (int i = 0; i < fs->nr_trees; i++) {
		struct mk_tree *t = &fs->trees[i];
		u64 *b = realloc(t->bytenr, t->nr_blocks * sizeof(*b));

		if (!b)
			return -ENOMEM;
		t->bytenr = b;
		for (size_t j = 0; j < t->nr_blocks; j++) {
			ret = mk_alloc_block(fs, t->chunk, &t->bytenr[j]);
			if (ret)
				return ret;
		}
		t->nr_alloc = t->nr_blocks;
	}
	return 0;
}

/* Tree-block bytes allocated inside chunk @c. */
static u64 mk_chunk_used(const struct mk_fs *fs, const struct mk_chunk *c)
{
	u64 used = 0;

	for (int i = 0; i < fs->nr_trees; i++) {
		if (fs->trees[i].chunk == c)
			used += fs->trees[i].nr_alloc * fs->cfg->nodesize;
	}
	return used;
}

/* ---- Chunk layout ---- */

/*
 * Stripe size of a fresh chunk of @type on a filesystem of @total bytes (btrfs-progs' rules):
 * SINGLE chunks start at 8 MiB; DUP system 8 MiB; DUP metadata 256 MiB (1 GiB above 50 GiB);
 * DUP data 1 GiB; no chunk over 10% of the filesystem, no stripe under the type's minimum.
 */
static u64 mk_stripe_size(u64 type, u64 total)
{
	u64 stripe, max_chunk, min_stripe;
	int nstripes = (type & BTRFS_BLOCK_GROUP_DUP) ? 2 : 1;

	if (!(type & BTRFS_BLOCK_GROUP_PROFILE_MASK)) {
		stripe = 8 * SZ_1M;
		max_chunk = 32 * SZ_1M;
		min_stripe = SZ_1M;
	} else if (type & BTRFS_BLOCK_GROUP_SYSTEM) {
		stripe = 8 * SZ_1M;
		max_chunk = 16 * SZ_1M;
		min_stripe = SZ_1M;
	} else if (type & BTRFS_BLOCK_GROUP_DATA) {
		stripe = SZ_1G;
		max_chunk = 10 * SZ_1G;
		min_stripe = 64 * SZ_1M;
	} else {
		max_chunk = total > 50 * SZ_1G ? SZ_1G : 256 * SZ_1M;
		stripe = max_chunk;
		min_stripe = 32 * SZ_1M;
	}
	max_chunk = ubt_min(max_chunk, total / 10);
	if (stripe > max_chunk)
		stripe = ALIGN_DOWN(max_chunk / (u64)nstripes, BTRFS_STRIPE_LEN);
	stripe = ubt_max(stripe, min_stripe);
	return ALIGN_DOWN(stripe, BTRFS_STRIPE_LEN);
}

/* The smallest device mkfs accepts for these profiles (the same bound mkfs.btrfs uses). */
static u64 mk_min_dev_size(u64 meta_profile, u64 data_profile)
{
	u64 size = MK_RESERVED_START + MK_SYS_GROUP_SIZE + 2 * 8 * SZ_1M;
	u64 meta_copies = (meta_profile & BTRFS_BLOCK_GROUP_DUP) ? 2 : 1;
	u64 data_copies = (data_profile & BTRFS_BLOCK_GROUP_DUP) ? 2 : 1;

	size += meta_copies * (8 * SZ_1M + (meta_profile ? 32 * SZ_1M : 8 * SZ_1M));
	size += data_copies * (data_profile ? 64 * SZ_1M : 8 * SZ_1M);
	return size;
}

static int mk_layout_chunks(struct mk_fs *fs)
{
	const struct mk_config *cfg = fs->cfg;
	const u64 types[MK_MAX_CHUNKS] = {
		BTRFS_BLOCK_GROUP_SYSTEM | cfg->meta_profile,
		BTRFS_BLOCK_GROUP_METADATA | cfg->meta_profile,
		BTRFS_BLOCK_GROUP_DATA | cfg->data_profile,
	};
	u64 phys = MK_RESERVED_START, logical = MK_RESERVED_START;

	for (int i = 0; i < MK_MAX_CHUNKS; i++) {
		struct mk_chunk *c = &fs->chunks[i];

		c->type = types[i];
		c->length = mk_stripe_size(c->type, fs->total_bytes);
		c->num_stripes = (c->type & BTRFS_BLOCK_GROUP_DUP) ? 2 : 1;
		c->logical = logical;
		logical += c->length;
		for (int s = 0; s < c->num_stripes; s++) {
			c->phys[s] = phys;
			phys += c->length;
		}
		fs->dev_bytes_used += c->length * (u64)c->num_stripes;
	}
	fs->nr_chunks = MK_MAX_CHUNKS;
	fs->sys = &fs->chunks[0];
	fs->meta = &fs->chunks[1];
	fs->data = &fs->chunks[2];
	if (phys > fs->total_bytes) {
		mk_err("%llu bytes are too few for the initial chunks (%llu bytes needed)",
		       (unsigned long long)fs->total_bytes, (unsigned long long)phys);
		return -ENOSPC;
	}
	return 0;
}

static void mk_random_uuid(u8 uuid[BTRFS_UUID_SIZE])
{
	size_t got = 0;

	while (got < BTRFS_UUID_SIZE) {
		ssize_t n = getrandom(uuid + got, BTRFS_UUID_SIZE - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* No entropy source at all: fall back to time and pid (still unique enough). */
			u64 a = (u64)time(NULL) ^ ((u64)getpid() << 32), b = (u64)clock();
			memcpy(uuid, &a, 8);
			memcpy(uuid + 8, &b, 8);
			break;
		}
		got += (size_t)n;
	}
	uuid[6] = (u8)((uuid[6] & 0x0f) | 0x40); /* version 4 */
	uuid[8] = (u8)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static void mk_uuid_str(const u8 u[BTRFS_UUID_SIZE], char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static int mk_parse_uuid(const char *s, u8 out[BTRFS_UUID_SIZE])
{
	int n = 0;

	for (const char *p = s; *p; p++) {
		int hi, lo;

		if (*p == '-' && (p - s == 8 || p - s == 13 || p - s == 18 || p - s == 23))
			continue;
		if (n == BTRFS_UUID_SIZE || !isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]))
			return -EINVAL;
		hi = isdigit((unsigned char)p[0]) ? p[0] - '0' : tolower((unsigned char)p[0]) - 'a' + 10;
		lo = isdigit((unsigned char)p[1]) ? p[1] - '0' : tolower((unsigned char)p[1]) - 'a' + 10;
		out[n++] = (u8)(hi << 4 | lo);
		p++;
	}
	return n == BTRFS_UUID_SIZE && strlen(s) == 36 ? 0 : -EINVAL;
}

/* ---- Item builders ---- */

static void mk_inode_item(struct mk_fs *fs, struct btrfs_inode_item *ii, u64 generation)
{
	memset(ii, 0, sizeof(*ii));
	ii->generation = htole64(generation);
	ii->nbytes = htole64(fs->cfg->nodesize);
	ii->nlink = htole32(1);
	ii->mode = htole32(S_IFDIR | 0755);
	ii->atime.sec = ii->ctime.sec = ii->mtime.sec = ii->otime.sec = htole64(fs->now);
}

/* The top directory (inode 256) of a subvolume tree, or ROOT_TREE_DIR in the root tree. */
static int mk_add_root_dir(struct mk_fs *fs, struct mk_tree *t, u64 ino)
{
	struct btrfs_inode_item ii;
	u8 ref[sizeof(struct btrfs_inode_ref) + 2];
	struct btrfs_inode_ref *r = (struct btrfs_inode_ref *)ref;
	int ret;

	mk_inode_item(fs, &ii, MK_GENERATION);
	ret = mk_add_item(t, ino, BTRFS_INODE_ITEM_KEY, 0, &ii, sizeof(ii));
	if (ret)
		return ret;
	r->index = 0;
	r->name_len = htole16(2);
	memcpy(ref + sizeof(*r), "..", 2);
	return mk_add_item(t, ino, BTRFS_INODE_REF_KEY, ino, ref, sizeof(ref));
}

static int mk_build_chunk_tree(struct mk_fs *fs, struct mk_tree *t)
{
	const struct mk_config *cfg = fs->cfg;
	struct btrfs_dev_item di = { 0 };
	u8 buf[sizeof(struct btrfs_chunk) + (MK_MAX_STRIPES - 1) * sizeof(struct btrfs_stripe)];
	int ret;

	di.devid = htole64(1);
	di.total_bytes = htole64(fs->total_bytes);
	di.bytes_used = htole64(fs->dev_bytes_used);
	di.io_align = di.io_width = di.sector_size = htole32(cfg->sectorsize);
	memcpy(di.uuid, fs->dev_uuid, BTRFS_UUID_SIZE);
	memcpy(di.fsid, cfg->fsid, BTRFS_UUID_SIZE);
	ret = mk_add_item(t, BTRFS_DEV_ITEMS_OBJECTID, BTRFS_DEV_ITEM_KEY, 1, &di, sizeof(di));
	if (ret)
		return ret;
	for (int i = 0; i < fs->nr_chunks; i++) {
		const struct mk_chunk *c = &fs->chunks[i];
		struct btrfs_chunk *ch = (struct btrfs_chunk *)buf;
		struct btrfs_stripe *st = &ch->stripe;

		memset(buf, 0, sizeof(buf));
		ch->length = htole64(c->length);
		ch->owner = htole64(BTRFS_EXTENT_TREE_OBJECTID);
		ch->stripe_len = htole64(BTRFS_STRIPE_LEN);
		ch->type = htole64(c->type);
		ch->io_align = ch->io_width = htole32(BTRFS_STRIPE_LEN);
		ch->sector_size = htole32(cfg->sectorsize);
		ch->num_stripes = htole16((u16)c->num_stripes);
		ch->sub_stripes = htole16(1);
		for (int s = 0; s < c->num_stripes; s++) {
			st[s].devid = htole64(1);
			st[s].offset = htole64(c->phys[s]);
			memcpy(st[s].dev_uuid, fs->dev_uuid, BTRFS_UUID_SIZE);
		}
		ret = mk_add_item(t, BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, c->logical, buf,
				  (u32)btrfs_chunk_item_size(c->num_stripes));
		if (ret)
			return ret;
	}
	return 0;
}

static int mk_build_dev_tree(struct mk_fs *fs, struct mk_tree *t)
{
	u64 stats[MK_DEV_STAT_VALUES] = { 0 };
	int ret;

	ret = mk_add_item(t, BTRFS_DEV_STATS_OBJECTID, BTRFS_PERSISTENT_ITEM_KEY, 1, stats, sizeof(stats));
	if (ret)
		return ret;
	for (int i = 0; i < fs->nr_chunks; i++) {
		const struct mk_chunk *c = &fs->chunks[i];

		for (int s = 0; s < c->num_stripes; s++) {
			struct btrfs_dev_extent de = { 0 };

			de.chunk_tree = htole64(BTRFS_CHUNK_TREE_OBJECTID);
			de.chunk_objectid = htole64(BTRFS_FIRST_CHUNK_TREE_OBJECTID);
			de.chunk_offset = htole64(c->logical);
			de.length = htole64(c->length);
			memcpy(de.chunk_tree_uuid, fs->chunk_uuid, BTRFS_UUID_SIZE);
			ret = mk_add_item(t, 1, BTRFS_DEV_EXTENT_KEY, c->phys[s], &de, sizeof(de));
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int mk_build_uuid_tree(struct mk_fs *fs, struct mk_tree *t)
{
	u64 subvol = htole64(BTRFS_FS_TREE_OBJECTID);

	return mk_add_item(t, get_le64(fs->fs_root_uuid), BTRFS_UUID_KEY_SUBVOL, get_le64(fs->fs_root_uuid + 8),
			   &subvol, sizeof(subvol));
}

static int mk_add_root_item(struct mk_fs *fs, struct mk_tree *root_tree, const struct mk_tree *t)
{
	struct btrfs_root_item ri;
	bool subvol = t->objectid == BTRFS_FS_TREE_OBJECTID || t->objectid == BTRFS_DATA_RELOC_TREE_OBJECTID;

	memset(&ri, 0, sizeof(ri));
	ri.inode.generation = htole64(1);
	ri.inode.size = htole64(3);
	ri.inode.nlink = htole32(1);
	ri.inode.nbytes = htole64(fs->cfg->nodesize);
	ri.inode.mode = htole32(S_IFDIR | 0755);
	if (subvol)
		ri.inode.flags = htole64(BTRFS_INODE_ROOT_ITEM_INIT);
	ri.generation = htole64(MK_GENERATION);
	ri.root_dirid = htole64(subvol ? BTRFS_FIRST_FREE_OBJECTID : 0);
	ri.bytenr = htole64(mk_tree_root(t));
	ri.bytes_used = htole64((u64)t->nr_alloc * fs->cfg->nodesize);
	ri.refs = htole32(1);
	ri.level = (u8)mk_tree_level(t);
	ri.generation_v2 = htole64(MK_GENERATION);
	if (t->objectid == BTRFS_FS_TREE_OBJECTID) {
		memcpy(ri.uuid, fs->fs_root_uuid, BTRFS_UUID_SIZE);
		ri.ctime.sec = ri.otime.sec = htole64(fs->now);
	}
	return mk_add_item(root_tree, t->objectid, BTRFS_ROOT_ITEM_KEY, 0, &ri, sizeof(ri));
}

/* Root tree: ROOT_ITEMs of every tree but itself and the chunk tree, and the "default" entry. */
static int mk_build_root_tree(struct mk_fs *fs, struct mk_tree *t)
{
	static const char name[] = "default";
	const u16 len = sizeof(name) - 1;
	u8 ref[sizeof(struct btrfs_inode_ref) + sizeof(name)];
	u8 dir[sizeof(struct btrfs_dir_item) + sizeof(name)];
	struct btrfs_inode_ref *r = (struct btrfs_inode_ref *)ref;
	struct btrfs_dir_item *d = (struct btrfs_dir_item *)dir;
	int ret;

	for (int i = 0; i < fs->nr_trees; i++) {
		const struct mk_tree *o = &fs->trees[i];

		if (o->objectid == BTRFS_ROOT_TREE_OBJECTID || o->objectid == BTRFS_CHUNK_TREE_OBJECTID)
			continue;
		ret = mk_add_root_item(fs, t, o);
		if (ret)
			return ret;
	}
	ret = mk_add_root_dir(fs, t, BTRFS_ROOT_TREE_DIR_OBJECTID);
	if (ret)
		return ret;

	memset(ref, 0, sizeof(ref));
	r->name_len = htole16(len);
	memcpy(ref + sizeof(*r), name, len);
	ret = mk_add_item(t, BTRFS_FS_TREE_OBJECTID, BTRFS_INODE_REF_KEY, BTRFS_ROOT_TREE_DIR_OBJECTID, ref,
			  (u32)(sizeof(*r) + len));
	if (ret)
		return ret;

	memset(dir, 0, sizeof(dir));
	mk_disk_key(&d->location, &(struct mk_key){ BTRFS_FS_TREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, (u64)-1 });
	d->name_len = htole16(len);
	d->type = BTRFS_FT_DIR;
	memcpy(dir + sizeof(*d), name, len);
	return mk_add_item(t, BTRFS_ROOT_TREE_DIR_OBJECTID, BTRFS_DIR_ITEM_KEY, ubt_name_hash(name, len), dir,
			   (u32)(sizeof(*d) + len));
}

static int mk_add_block_group_item(struct mk_fs *fs, struct mk_tree *t, const struct mk_chunk *c)
{
	struct btrfs_block_group_item bg;

	bg.used = htole64(mk_chunk_used(fs, c));
	bg.chunk_objectid = htole64(BTRFS_FIRST_CHUNK_TREE_OBJECTID);
	bg.flags = htole64(c->type);
	return mk_add_item(t, c->logical, BTRFS_BLOCK_GROUP_ITEM_KEY, c->length, &bg, sizeof(bg));
}

/*
 * Extent tree: one METADATA_ITEM (EXTENT_ITEM without skinny-metadata) with an inline
 * TREE_BLOCK_REF per tree block, and the block group items unless they live in tree 11.
 */
static int mk_build_extent_tree(struct mk_fs *fs, struct mk_tree *t)
{
	u8 buf[sizeof(struct btrfs_extent_item) + MK_TREE_BLOCK_INFO_SIZE + MK_INLINE_TREE_REF_SIZE];
	int ret;

	for (int i = 0; i < fs->nr_trees; i++) {
		const struct mk_tree *o = &fs->trees[i];

		for (size_t j = 0; j < o->nr_alloc; j++) {
			struct btrfs_extent_item *ei = (struct btrfs_extent_item *)buf;
			int level = mk_block_level(o, ubt_min(j, o->nr_blocks - 1), NULL);
			u8 *p = buf + sizeof(*ei);

			memset(buf, 0, sizeof(buf));
			ei->refs = htole64(1);
			ei->generation = htole64(MK_GENERATION);
			ei->flags = htole64(MK_EXTENT_FLAG_TREE_BLOCK);
			if (!mk_skinny(fs)) {
				/* tree_block_info: first key (filled in by mk_fill_block_info) and level */
				p[sizeof(struct btrfs_disk_key)] = (u8)level;
				p += MK_TREE_BLOCK_INFO_SIZE;
			}
			p[0] = BTRFS_TREE_BLOCK_REF_KEY;
			put_le64(p + 1, o->objectid);
			p += MK_INLINE_TREE_REF_SIZE;
			if (mk_skinny(fs))
				ret = mk_add_item(t, o->bytenr[j], BTRFS_METADATA_ITEM_KEY, (u64)level, buf,
						  (u32)(p - buf));
			else
				ret = mk_add_item(t, o->bytenr[j], BTRFS_EXTENT_ITEM_KEY, fs->cfg->nodesize, buf,
						  (u32)(p - buf));
			if (ret)
				return ret;
		}
	}
	if (!mk_has_bgt(fs)) {
		for (int i = 0; i < fs->nr_chunks; i++) {
			ret = mk_add_block_group_item(fs, t, &fs->chunks[i]);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static int mk_build_bg_tree(struct mk_fs *fs, struct mk_tree *t)
{
	int ret;

	for (int i = 0; i < fs->nr_chunks; i++) {
		ret = mk_add_block_group_item(fs, t, &fs->chunks[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int mk_u64_cmp(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/* Free space tree: per block group an INFO item and one EXTENT item per unused range. */
static int mk_build_fst(struct mk_fs *fs, struct mk_tree *t)
{
	u32 ns = fs->cfg->nodesize;
	u64 *used = NULL;
	int ret = 0;

	for (int i = 0; i < fs->nr_chunks; i++) {
		const struct mk_chunk *c = &fs->chunks[i];
		size_t n = 0, cap = 0, extents = 0;
		u8 info[MK_FREE_SPACE_INFO_SIZE];
		u64 pos = c->logical, end = c->logical + c->length;

		for (int k = 0; k < fs->nr_trees; k++) {
			if (fs->trees[k].chunk == c)
				cap += fs->trees[k].nr_alloc;
		}
		free(used);
		used = malloc((cap + 1) * sizeof(*used));
		if (!used)
			return -ENOMEM;
		for (int k = 0; k < fs->nr_trees; k++) {
			const struct mk_tree *o = &fs->trees[k];

			if (o->chunk != c)
				continue;
			for (size_t j = 0; j < o->nr_alloc; j++)
				used[n++] = o->bytenr[j];
		}
		if (n)
			qsort(used, n, sizeof(*used), mk_u64_cmp);
		for (size_t j = 0; j <= n; j++) {
			u64 next = j < n ? used[j] : end;

			if (next > pos) {
				ret = mk_add_item(t, pos, BTRFS_FREE_SPACE_EXTENT_KEY, next - pos, NULL, 0);
				if (ret)
					goto out;
				extents++;
			}
			if (j < n)
				pos = used[j] + ns;
		}
		put_le32(info, (u32)extents);
		put_le32(info + 4, 0);
		ret = mk_add_item(t, c->logical, BTRFS_FREE_SPACE_INFO_KEY, c->length, info, sizeof(info));
		if (ret)
			goto out;
	}
out:
	free(used);
	return ret;
}

static int mk_build_static_trees(struct mk_fs *fs)
{
	int ret;

	ret = mk_build_chunk_tree(fs, mk_tree_get(fs, BTRFS_CHUNK_TREE_OBJECTID));
	if (!ret)
		ret = mk_build_dev_tree(fs, mk_tree_get(fs, BTRFS_DEV_TREE_OBJECTID));
	if (!ret)
		ret = mk_add_root_dir(fs, mk_tree_get(fs, BTRFS_FS_TREE_OBJECTID), BTRFS_FIRST_FREE_OBJECTID);
	if (!ret)
		ret = mk_add_root_dir(fs, mk_tree_get(fs, BTRFS_DATA_RELOC_TREE_OBJECTID), BTRFS_FIRST_FREE_OBJECTID);
	if (!ret)
		ret = mk_build_uuid_tree(fs, mk_tree_get(fs, BTRFS_UUID_TREE_OBJECTID));
	for (int i = 0; !ret && i < fs->nr_trees; i++) {
		if (!fs->trees[i].dynamic)
			ret = mk_tree_plan(fs, &fs->trees[i]);
	}
	return ret;
}

static int mk_build_dynamic_tree(struct mk_fs *fs, struct mk_tree *t)
{
	mk_tree_clear_items(t);
	switch (t->objectid) {
	case BTRFS_ROOT_TREE_OBJECTID:
		return mk_build_root_tree(fs, t);
	case BTRFS_EXTENT_TREE_OBJECTID:
		return mk_build_extent_tree(fs, t);
	case BTRFS_FREE_SPACE_TREE_OBJECTID:
		return mk_build_fst(fs, t);
	case BTRFS_BLOCK_GROUP_TREE_OBJECTID:
		return mk_build_bg_tree(fs, t);
	}
	return -EINVAL;
}

/* Allocate, rebuild the allocation-dependent trees and re-plan until no block count changes. */
static int mk_converge(struct mk_fs *fs)
{
	int ret;

	for (int round = 0; round < MK_MAX_ROUNDS; round++) {
		bool changed = false;

		ret = mk_allocate(fs);
		if (ret)
			return ret;
		for (int i = 0; i < fs->nr_trees; i++) {
			struct mk_tree *t = &fs->trees[i];

			if (!t->dynamic)
				continue;
			ret = mk_build_dynamic_tree(fs, t);
			if (!ret)
				ret = mk_tree_plan(fs, t);
			if (ret)
				return ret;
			if (t->nr_blocks != t->nr_alloc)
				changed = true;
		}
		if (!changed)
			return 0;
	}
	mk_err("internal: the tree block layout did not converge");
	return -EDEADLK;
}

/* Without skinny-metadata, each EXTENT_ITEM carries its block's first key. */
static void mk_fill_block_info(struct mk_fs *fs)
{
	struct mk_tree *ext = mk_tree_get(fs, BTRFS_EXTENT_TREE_OBJECTID);

	if (mk_skinny(fs))
		return;
	for (size_t i = 0; i < ext->nr_items; i++) {
		struct mk_item *it = &ext->items[i];

		if (it->key.type != BTRFS_EXTENT_ITEM_KEY)
			continue;
		for (int k = 0; k < fs->nr_trees; k++) {
			const struct mk_tree *o = &fs->trees[k];

			for (size_t j = 0; j < o->nr_blocks; j++) {
				if (o->bytenr[j] == it->key.objectid) {
					struct mk_key fk = mk_block_first_key(o, j);

					mk_disk_key((struct btrfs_disk_key *)(it->data + sizeof(struct btrfs_extent_item)),
						    &fk);
				}
			}
		}
	}
}

/* ---- Writing ---- */

static const struct mk_chunk *mk_chunk_of(const struct mk_fs *fs, u64 logical)
{
	for (int i = 0; i < fs->nr_chunks; i++) {
		const struct mk_chunk *c = &fs->chunks[i];

		if (logical >= c->logical && logical < c->logical + c->length)
			return c;
	}
	return NULL;
}

static int mk_write_block(struct mk_fs *fs, u8 *buf, u64 bytenr)
{
	const struct mk_chunk *c = mk_chunk_of(fs, bytenr);
	u8 csum[UBT_CSUM_MAX];
	int ret;

	ret = ubt_csum(fs->cfg->csum_type, buf + BTRFS_CSUM_SIZE, fs->cfg->nodesize - BTRFS_CSUM_SIZE, csum);
	if (ret)
		return ret;
	memcpy(buf, csum, BTRFS_CSUM_SIZE);
	for (int s = 0; s < c->num_stripes; s++) {
		ret = ubt_bdev_write(fs->bdev, buf, fs->cfg->nodesize, c->phys[s] + (bytenr - c->logical));
		if (ret) {
			mk_err("cannot write tree block at %llu: %s", (unsigned long long)bytenr, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void mk_header(struct mk_fs *fs, u8 *buf, const struct mk_tree *t, u64 bytenr, u32 nritems, int level)
{
	struct btrfs_header *h = (struct btrfs_header *)buf;

	memset(buf, 0, fs->cfg->nodesize);
	memcpy(h->fsid, fs->cfg->fsid, BTRFS_FSID_SIZE);
	h->bytenr = htole64(bytenr);
	h->flags = htole64(BTRFS_HEADER_FLAG_WRITTEN | (BTRFS_MIXED_BACKREF_REV << BTRFS_BACKREF_REV_SHIFT));
	memcpy(h->chunk_tree_uuid, fs->chunk_uuid, BTRFS_UUID_SIZE);
	h->generation = htole64(MK_GENERATION);
	h->owner = htole64(t->objectid);
	h->nritems = htole32(nritems);
	h->level = (u8)level;
}

static int mk_write_tree(struct mk_fs *fs, struct mk_tree *t, u8 *buf)
{
	u32 room = mk_leaf_room(fs);
	int ret;

	for (size_t l = 0; l < t->nr_leaves; l++) {
		size_t first = t->leaf_first[l], last = t->leaf_first[l + 1];
		u32 end = room;

		mk_header(fs, buf, t, t->bytenr[l], (u32)(last - first), 0);
		for (size_t i = first; i < last; i++) {
			const struct mk_item *it = &t->items[i];
			struct btrfs_item *bi = (struct btrfs_item *)(buf + sizeof(struct btrfs_header)) + (i - first);

			end -= it->size;
			mk_disk_key(&bi->key, &it->key);
			bi->offset = htole32(end);
			bi->size = htole32(it->size);
			if (it->size)
				memcpy(buf + sizeof(struct btrfs_header) + end, it->data, it->size);
		}
		ret = mk_write_block(fs, buf, t->bytenr[l]);
		if (ret)
			return ret;
	}
	for (int level = 1; level < t->nr_levels; level++) {
		size_t base = mk_level_base(t, level), child_base = mk_level_base(t, level - 1);

		for (size_t j = 0; j < t->level_count[level]; j++) {
			size_t start, end;

			mk_node_children(t, level, j, &start, &end);
			mk_header(fs, buf, t, t->bytenr[base + j], (u32)(end - start), level);
			for (size_t c = start; c < end; c++) {
				struct btrfs_key_ptr *kp =
					(struct btrfs_key_ptr *)(buf + sizeof(struct btrfs_header)) + (c - start);
				struct mk_key fk = mk_block_first_key(t, child_base + c);

				mk_disk_key(&kp->key, &fk);
				kp->blockptr = htole64(t->bytenr[child_base + c]);
				kp->generation = htole64(MK_GENERATION);
			}
			ret = mk_write_block(fs, buf, t->bytenr[base + j]);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static void mk_fill_super(struct mk_fs *fs, struct btrfs_super_block *sb)
{
	const struct mk_config *cfg = fs->cfg;
	const struct mk_tree *root = mk_tree_get(fs, BTRFS_ROOT_TREE_OBJECTID);
	const struct mk_tree *chunk = mk_tree_get(fs, BTRFS_CHUNK_TREE_OBJECTID);
	const struct mk_tree *ext = mk_tree_get(fs, BTRFS_EXTENT_TREE_OBJECTID);
	const struct mk_tree *fst = mk_tree_get(fs, BTRFS_FS_TREE_OBJECTID);
	const struct mk_tree *dev = mk_tree_get(fs, BTRFS_DEV_TREE_OBJECTID);
	const struct mk_tree *csum = mk_tree_get(fs, BTRFS_CSUM_TREE_OBJECTID);
	const struct mk_item *di = &chunk->items[0];
	struct btrfs_root_backup *bk = &sb->super_roots[0];
	u64 bytes_used = 0;
	u8 *p = sb->sys_chunk_array;

	for (int i = 0; i < fs->nr_trees; i++)
		bytes_used += (u64)fs->trees[i].nr_alloc * cfg->nodesize;

	memset(sb, 0, sizeof(*sb));
	memcpy(sb->fsid, cfg->fsid, BTRFS_FSID_SIZE);
	sb->flags = htole64(BTRFS_HEADER_FLAG_WRITTEN);
	sb->magic = htole64(BTRFS_MAGIC);
	sb->generation = htole64(MK_GENERATION);
	sb->root = htole64(mk_tree_root(root));
	sb->chunk_root = htole64(mk_tree_root(chunk));
	sb->total_bytes = htole64(fs->total_bytes);
	sb->bytes_used = htole64(bytes_used);
	sb->root_dir_objectid = htole64(BTRFS_ROOT_TREE_DIR_OBJECTID);
	sb->num_devices = htole64(1);
	sb->sectorsize = htole32(cfg->sectorsize);
	sb->nodesize = sb->unused_leafsize = htole32(cfg->nodesize);
	sb->stripesize = htole32(cfg->sectorsize);
	sb->chunk_root_generation = htole64(MK_GENERATION);
	sb->compat_ro_flags = htole64(cfg->compat_ro);
	sb->incompat_flags = htole64(cfg->incompat);
	sb->csum_type = htole16(cfg->csum_type);
	sb->root_level = (u8)mk_tree_level(root);
	sb->chunk_root_level = (u8)mk_tree_level(chunk);
	UBT_ASSERT(di->key.type == BTRFS_DEV_ITEM_KEY);
	memcpy(&sb->dev_item, di->data, sizeof(sb->dev_item));
	if (cfg->label)
		strncpy(sb->label, cfg->label, BTRFS_LABEL_SIZE - 1);
	/* No v1 space cache: 0 with the free space tree, "invalid" without it. */
	sb->cache_generation = htole64(mk_has_fst(fs) ? 0 : (u64)-1);

	/* The system chunk, which the chunk tree itself lives in. */
	for (size_t i = 0; i < chunk->nr_items; i++) {
		const struct mk_item *it = &chunk->items[i];

		if (it->key.type != BTRFS_CHUNK_ITEM_KEY || it->key.offset != fs->sys->logical)
			continue;
		mk_disk_key((struct btrfs_disk_key *)p, &it->key);
		p += sizeof(struct btrfs_disk_key);
		memcpy(p, it->data, it->size);
		p += it->size;
	}
	sb->sys_chunk_array_size = htole32((u32)(p - sb->sys_chunk_array));

	/* Backup slot 0 describes this (only) commit, as a kernel commit would. */
	bk->tree_root = htole64(mk_tree_root(root));
	bk->chunk_root = htole64(mk_tree_root(chunk));
	bk->extent_root = htole64(mk_tree_root(ext));
	bk->fs_root = htole64(mk_tree_root(fst));
	bk->dev_root = htole64(mk_tree_root(dev));
	bk->csum_root = htole64(mk_tree_root(csum));
	bk->tree_root_gen = bk->chunk_root_gen = bk->extent_root_gen = htole64(MK_GENERATION);
	bk->fs_root_gen = bk->dev_root_gen = bk->csum_root_gen = htole64(MK_GENERATION);
	bk->total_bytes = htole64(fs->total_bytes);
	bk->bytes_used = htole64(bytes_used);
	bk->num_devices = htole64(1);
	bk->tree_root_level = (u8)mk_tree_level(root);
	bk->chunk_root_level = (u8)mk_tree_level(chunk);
	bk->extent_root_level = (u8)mk_tree_level(ext);
	bk->fs_root_level = (u8)mk_tree_level(fst);
	bk->dev_root_level = (u8)mk_tree_level(dev);
	bk->csum_root_level = (u8)mk_tree_level(csum);
}

static int mk_write_supers(struct mk_fs *fs)
{
	struct btrfs_super_block *sb;
	int ret = 0;

	sb = aligned_alloc(4096, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	mk_fill_super(fs, sb);
	/* Mirrors first, the primary last: until it lands the device has no valid primary. */
	for (int i = BTRFS_SUPER_MIRROR_MAX - 1; i >= 0; i--) {
		u64 off = btrfs_sb_offset(i);
		u8 csum[UBT_CSUM_MAX];

		if (off + BTRFS_SUPER_INFO_SIZE > fs->total_bytes)
			continue;
		sb->bytenr = htole64(off);
		ret = ubt_csum(fs->cfg->csum_type, (u8 *)sb + BTRFS_CSUM_SIZE,
			       BTRFS_SUPER_INFO_SIZE - BTRFS_CSUM_SIZE, csum);
		if (ret)
			break;
		memcpy(sb->csum, csum, BTRFS_CSUM_SIZE);
		ret = ubt_bdev_write(fs->bdev, sb, BTRFS_SUPER_INFO_SIZE, off);
		if (ret) {
			mk_err("cannot write the superblock at %llu: %s", (unsigned long long)off, strerror(-ret));
			break;
		}
	}
	free(sb);
	return ret;
}

/* Zero [off, off + len), skipping blocks that already read as zero (keeps sparse images sparse). */
static int mk_zero_range(struct ubt_bdev *bdev, u64 off, u64 len)
{
	const size_t chunk = 256 * 1024;
	u8 *buf = malloc(chunk), *zero = calloc(1, chunk);
	int ret = 0;

	if (!buf || !zero) {
		ret = -ENOMEM;
		goto out;
	}
	while (len) {
		size_t n = (size_t)ubt_min((u64)chunk, len);

		ret = ubt_bdev_read(bdev, buf, n, off);
		if (ret || memcmp(buf, zero, n))
			ret = ubt_bdev_write(bdev, zero, n, off);
		if (ret) {
			mk_err("cannot clear %s at %llu: %s", bdev->name, (unsigned long long)off, strerror(-ret));
			goto out;
		}
		off += n;
		len -= n;
	}
out:
	free(buf);
	free(zero);
	return ret;
}

static int mk_wipe(struct mk_fs *fs)
{
	u64 end = fs->total_bytes, start, alloc_end = 0;
	int ret;

	/* The reserved first MiB holds boot sectors, partition tables and old superblocks. */
	ret = mk_zero_range(fs->bdev, 0, MK_RESERVED_START);
	if (ret)
		return ret;
	/* Old superblock mirrors inside the filesystem are overwritten by ours; wipe the tail. */
	for (int i = 0; i < fs->nr_chunks; i++) {
		for (int s = 0; s < fs->chunks[i].num_stripes; s++)
			alloc_end = ubt_max(alloc_end, fs->chunks[i].phys[s] + fs->chunks[i].length);
	}
	start = end > MK_ZERO_END ? end - MK_ZERO_END : 0;
	start = ubt_max(start, alloc_end);
	if (start < end)
		ret = mk_zero_range(fs->bdev, start, end - start);
	return ret;
}

static int mk_write_fs(struct mk_fs *fs)
{
	u8 *buf;
	int ret;

	ret = mk_wipe(fs);
	if (ret)
		return ret;
	buf = aligned_alloc(4096, fs->cfg->nodesize);
	if (!buf)
		return -ENOMEM;
	for (int i = 0; i < fs->nr_trees; i++) {
		ret = mk_write_tree(fs, &fs->trees[i], buf);
		if (ret)
			goto out;
	}
	/* Tree blocks are stable before any superblock points at them. */
	ret = ubt_bdev_flush(fs->bdev);
	if (ret) {
		mk_err("cannot flush %s: %s", fs->bdev->name, strerror(-ret));
		goto out;
	}
	ret = mk_write_supers(fs);
	if (ret)
		goto out;
	ret = ubt_bdev_flush(fs->bdev);
	if (ret)
		mk_err("cannot flush %s: %s", fs->bdev->name, strerror(-ret));
out:
	free(buf);
	return ret;
}

/* Build the whole filesystem model (chunks, trees, allocation) for @total_bytes. */
static int mk_build(struct mk_fs *fs)
{
	struct mk_chunk *sys, *meta;
	int ret;

	ret = mk_layout_chunks(fs);
	if (ret)
		return ret;
	sys = fs->sys;
	meta = fs->meta;
	/* Order of the trees = order of their blocks in the metadata chunk. */
	mk_tree_new(fs, BTRFS_ROOT_TREE_OBJECTID, meta, true);
	mk_tree_new(fs, BTRFS_EXTENT_TREE_OBJECTID, meta, true);
	mk_tree_new(fs, BTRFS_CHUNK_TREE_OBJECTID, sys, false);
	mk_tree_new(fs, BTRFS_DEV_TREE_OBJECTID, meta, false);
	mk_tree_new(fs, BTRFS_FS_TREE_OBJECTID, meta, false);
	mk_tree_new(fs, BTRFS_CSUM_TREE_OBJECTID, meta, false);
	mk_tree_new(fs, BTRFS_UUID_TREE_OBJECTID, meta, false);
	if (mk_has_fst(fs))
		mk_tree_new(fs, BTRFS_FREE_SPACE_TREE_OBJECTID, meta, true);
	if (mk_has_bgt(fs))
		mk_tree_new(fs, BTRFS_BLOCK_GROUP_TREE_OBJECTID, meta, true);
	mk_tree_new(fs, BTRFS_DATA_RELOC_TREE_OBJECTID, meta, false);

	ret = mk_build_static_trees(fs);
	if (ret)
		return ret;
	ret = mk_converge(fs);
	if (ret)
		return ret;
	mk_fill_block_info(fs);
	return 0;
}

/* ---- Device checks ---- */

struct mk_magic {
	const char *name;
	u64 off;
	const char *magic;
	size_t len;
};

/* Signatures of what mkfs must not silently destroy (a subset of what blkid knows). */
static const struct mk_magic mk_magics[] = {
	{ "btrfs", BTRFS_SUPER_INFO_OFFSET + 0x40, "_BHRfS_M", 8 },
	{ "ext2/ext3/ext4", 0x438, "\x53\xef", 2 },
	{ "xfs", 0, "XFSB", 4 },
	{ "swap", 4096 - 10, "SWAPSPACE2", 10 },
	{ "swap", 4096 - 10, "SWAP-SPACE", 10 },
	{ "LUKS", 0, "LUKS\xba\xbe", 6 },
	{ "LVM2 physical volume", 512 + 0, "LABELONE", 8 },
	{ "GPT partition table", 512, "EFI PART", 8 },
	{ "ntfs", 3, "NTFS    ", 8 },
	{ "vfat", 0x36, "FAT1", 4 },
	{ "vfat", 0x52, "FAT32   ", 8 },
	{ "iso9660", 0x8001, "CD001", 5 },
	{ "squashfs", 0, "hsqs", 4 },
	{ "f2fs", 0x400, "\x10\x20\xf5\xf2", 4 },
	{ "jfs", 0x8000, "JFS1", 4 },
	{ "reiserfs", 0x10034, "ReIsEr", 6 },
	{ "bcachefs", 0x1018, "\xc6\x85\x73\xf6\x4e\x1a\x45\xca", 8 },
	{ "DOS partition table or boot sector", 510, "\x55\xaa", 2 },
};

/* Name of a known signature on @bdev, or NULL. */
static const char *mk_find_signature(struct ubt_bdev *bdev)
{
	static const size_t span = 0x11000;
	const char *found = NULL;
	u8 *buf = calloc(1, span);
	size_t n = (size_t)ubt_min((u64)span, bdev->size);

	if (!buf)
		return NULL;
	/* Read what exists; a short device simply has fewer signatures. */
	n = ALIGN_DOWN(n, 512);
	if (!n || ubt_bdev_read(bdev, buf, n, 0))
		goto out;
	for (size_t i = 0; i < ARRAY_SIZE(mk_magics); i++) {
		const struct mk_magic *m = &mk_magics[i];

		if (m->off + m->len <= n && !memcmp(buf + m->off, m->magic, m->len)) {
			found = m->name;
			break;
		}
	}
out:
	free(buf);
	return found;
}

/* A regular file that backs a mounted loop device must not be reformatted underneath it. */
static int mk_check_loop_backing(const char *path)
{
	char real[PATH_MAX], line[PATH_MAX + 2];
	glob_t g;
	int ret = 0;

	if (!realpath(path, real))
		return 0;
	if (glob("/sys/block/loop*/loop/backing_file", 0, NULL, &g))
		return 0;
	for (size_t i = 0; i < g.gl_pathc && !ret; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		char dev[64];
		const char *name;
		int fd;

		if (!f)
			continue;
		if (fgets(line, sizeof(line), f)) {
			line[strcspn(line, "\n")] = 0;
			name = g.gl_pathv[i] + strlen("/sys/block/");
			if (!strcmp(line, real) && sscanf(name, "%63[^/]", dev) == 1) {
				char devpath[80];

				snprintf(devpath, sizeof(devpath), "/dev/%s", dev);
				fd = open(devpath, O_RDONLY | O_EXCL | O_CLOEXEC);
				if (fd < 0 && errno == EBUSY) {
					mk_err("%s is in use through %s (mounted?)", path, devpath);
					ret = -EBUSY;
				}
				if (fd >= 0)
					close(fd);
			}
		}
		fclose(f);
	}
	globfree(&g);
	return ret;
}

/* Open (creating/extending an image file when asked) and check the target. */
static int mk_open_device(const struct mk_config *cfg, struct ubt_bdev **out)
{
	struct ubt_bdev *bdev = NULL;
	struct stat st;
	int ret, fd;

	if (stat(cfg->path, &st)) {
		if (errno != ENOENT || !cfg->byte_count) {
			mk_err("cannot open %s: %s%s", cfg->path, strerror(errno),
			       errno == ENOENT ? " (give -b SIZE to create an image file)" : "");
			return -errno;
		}
		fd = open(cfg->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			ret = -errno;
			mk_err("cannot create %s: %s", cfg->path, strerror(errno));
			return ret;
		}
		close(fd);
		if (stat(cfg->path, &st))
			return -errno;
	}
	if (S_ISBLK(st.st_mode)) {
		/* An exclusive open fails while the device is mounted or otherwise claimed. */
		fd = open(cfg->path, O_RDONLY | O_EXCL | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			mk_err("cannot open %s exclusively: %s%s", cfg->path, strerror(errno),
			       errno == EBUSY ? " (mounted or in use)" : "");
			return ret;
		}
		close(fd);
	} else if (S_ISREG(st.st_mode)) {
		ret = mk_check_loop_backing(cfg->path);
		if (ret)
			return ret;
	} else {
		mk_err("%s is neither a regular file nor a block device", cfg->path);
		return -ENODEV;
	}

	ret = ubt_bdev_open_file(cfg->path, false, &bdev);
	if (ret)
		return ret;
	if (cfg->byte_count > bdev->size) {
		if (!S_ISREG(st.st_mode)) {
			mk_err("%s has %llu bytes, fewer than the %llu requested", cfg->path,
			       (unsigned long long)bdev->size, (unsigned long long)cfg->byte_count);
			ret = -ENOSPC;
			goto fail;
		}
		if (truncate(cfg->path, (off_t)cfg->byte_count)) {
			ret = -errno;
			mk_err("cannot extend %s to %llu bytes: %s", cfg->path,
			       (unsigned long long)cfg->byte_count, strerror(errno));
			goto fail;
		}
		bdev->size = cfg->byte_count;
	}
	*out = bdev;
	return 0;
fail:
	ubt_bdev_close(bdev);
	return ret;
}

/* ---- --rootdir: copy a directory tree into the new filesystem ---- */

/*
 * The copy goes through the library's public read-write API on the freshly written image:
 * ubt_mount (read-write), then for each entry ubt_mkdir / ubt_mknod (+ ubt_open, ubt_pwrite for
 * the data, holes skipped) / ubt_symlink / ubt_link (hard links), ubt_setxattr, and ubt_setattr
 * for exact mode, owner and times (directories after their children); ubt_unmount commits.
 */

struct mk_hardlink {
	dev_t dev;
	ino_t ino;
	ubt_ino uino;
};

struct mk_copy {
	ubt_fs *fs;
	const struct mk_config *cfg;
	struct stat image_st;       /* the image itself is never copied into itself */
	bool have_image_st;
	struct mk_hardlink *links;  /* inodes with nlink > 1 already copied (held until the end) */
	size_t nr_links, cap_links;
	u64 total_bytes, done_bytes;
	u64 nr_entries;
	bool progress;
	int last_pct;
	char *buf;
	bool warned_xattr;
};

static void mk_progress(struct mk_copy *cp, bool final)
{
	int pct = cp->total_bytes ? (int)(cp->done_bytes * 100 / cp->total_bytes) : 100;
	char bar[41];

	if (!cp->progress || (!final && pct == cp->last_pct))
		return;
	cp->last_pct = pct;
	memset(bar, ' ', 40);
	memset(bar, '#', (size_t)(pct * 40 / 100));
	bar[40] = 0;
	fprintf(stderr, "\rCopying [%s] %3d%%  %llu/%llu MiB, %llu entries", bar, pct,
		(unsigned long long)(cp->done_bytes / SZ_1M), (unsigned long long)(cp->total_bytes / SZ_1M),
		(unsigned long long)cp->nr_entries);
	if (final)
		fputc('\n', stderr);
	fflush(stderr);
}

static int mk_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in directory @path, sorted (for a reproducible image); caller frees. */
static int mk_list_dir(const char *path, char ***names, size_t *nr)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char **v = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	if (!d)
		return -errno;
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n] = strdup(de->d_name);
		if (!v[n]) {
			ret = -ENOMEM;
			break;
		}
		n++;
	}
	if (!ret && errno)
		ret = -errno;
	closedir(d);
	if (ret) {
		while (n)
			free(v[--n]);
		free(v);
		return ret;
	}
	if (n)
		qsort(v, n, sizeof(*v), mk_name_cmp);
	*names = v;
	*nr = n;
	return 0;
}

static void mk_free_names(char **v, size_t n)
{
	while (n)
		free(v[--n]);
	free(v);
}

static char *mk_join(const char *dir, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* First pass: bytes of regular files, for the progress bar. */
static void mk_measure(struct mk_copy *cp, const char *path)
{
	char **names;
	size_t n;

	if (mk_list_dir(path, &names, &n))
		return;
	for (size_t i = 0; i < n; i++) {
		char *p = mk_join(path, names[i]);
		struct stat st;

		if (p && !lstat(p, &st)) {
			if (S_ISREG(st.st_mode))
				cp->total_bytes += (u64)st.st_size;
			else if (S_ISDIR(st.st_mode))
				mk_measure(cp, p);
		}
		free(p);
	}
	mk_free_names(names, n);
}

static int mk_copy_xattrs(struct mk_copy *cp, const char *path, ubt_ino ino)
{
	ssize_t len = llistxattr(path, NULL, 0);
	char *list = NULL, *val = NULL;
	int ret = 0;

	if (len <= 0)
		return 0;
	list = malloc((size_t)len);
	if (!list)
		return -ENOMEM;
	len = llistxattr(path, list, (size_t)len);
	for (ssize_t off = 0; len > 0 && off < len; off += (ssize_t)strlen(list + off) + 1) {
		const char *name = list + off;
		ssize_t vlen = lgetxattr(path, name, NULL, 0);

		if (vlen < 0)
			continue;
		free(val);
		val = malloc((size_t)vlen + 1);
		if (!val) {
			ret = -ENOMEM;
			break;
		}
		vlen = lgetxattr(path, name, val, (size_t)vlen);
		if (vlen < 0)
			continue;
		ret = ubt_setxattr(cp->fs, ino, name, val, (size_t)vlen, 0);
		if (ret == -EOPNOTSUPP || ret == -EPERM) {
			if (!cp->warned_xattr)
				mk_warn("%s: extended attribute %s not copied: %s", path, name, ubt_strerror(ret));
			cp->warned_xattr = true;
			ret = 0;
		}
		if (ret) {
			mk_err("%s: cannot copy extended attribute %s: %s", path, name, ubt_strerror(ret));
			break;
		}
	}
	free(val);
	free(list);
	return ret;
}

static int mk_copy_data(struct mk_copy *cp, const char *path, ubt_ino ino, const struct stat *st)
{
	const size_t bufsz = 1024 * 1024;
	ubt_file *f = NULL;
	int fd, ret;
	off_t pos = 0, end = st->st_size;

	if (!st->st_size)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		mk_err("cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	ret = ubt_open(cp->fs, ino, O_WRONLY, &f);
	if (ret) {
		mk_err("%s: cannot open the new file: %s", path, ubt_strerror(ret));
		goto out;
	}
	while (pos < end) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO) /* only a hole is left */
				break;
			data = pos; /* no SEEK_DATA support: copy everything */
		}
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		cp->done_bytes += (u64)(data - pos);
		for (pos = data; pos < hole;) {
			ssize_t n = pread(fd, cp->buf, (size_t)ubt_min((off_t)bufsz, hole - pos), pos);
			ssize_t w;

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				ret = n < 0 ? -errno : -EIO;
				mk_err("cannot read %s: %s", path, n < 0 ? strerror(errno) : "file shrank");
				goto out;
			}
			w = ubt_pwrite(f, cp->buf, (size_t)n, (u64)pos);
			if (w != n) {
				ret = w < 0 ? (int)w : -EIO;
				mk_err("%s: cannot write into the new filesystem: %s", path, ubt_strerror(ret));
				goto out;
			}
			pos += n;
			cp->done_bytes += (u64)n;
			mk_progress(cp, false);
		}
	}
	if (pos < end) {
		struct stat sz = { .st_size = end };

		cp->done_bytes += (u64)(end - pos);
		ret = ubt_setattr(cp->fs, ino, &sz, UBT_SET_SIZE, NULL);
		if (ret)
			mk_err("%s: cannot set the size: %s", path, ubt_strerror(ret));
	}
out:
	if (f) {
		int ret2 = ubt_close(f);

		if (!ret && ret2) {
			ret = ret2;
			mk_err("%s: %s", path, ubt_strerror(ret2));
		}
	}
	close(fd);
	return ret;
}

static int mk_copy_attrs(struct mk_copy *cp, const char *path, ubt_ino ino, const struct stat *st)
{
	unsigned set = UBT_SET_UID | UBT_SET_GID | UBT_SET_ATIME | UBT_SET_MTIME;
	int ret;

	if (!S_ISLNK(st->st_mode))
		set |= UBT_SET_MODE;
	ret = ubt_setattr(cp->fs, ino, st, set, NULL);
	if (ret)
		mk_err("%s: cannot set mode, owner and times: %s", path, ubt_strerror(ret));
	return ret;
}

static int mk_copy_dir(struct mk_copy *cp, const char *path, ubt_ino dir);

/* Create @name (found at @path, described by @st) in @dir and fill it in. */
static int mk_copy_entry(struct mk_copy *cp, const char *path, const char *name, const struct stat *st,
			 ubt_ino dir)
{
	struct mk_hardlink *hl = NULL;
	ubt_ino ino = 0;
	bool keep = false;
	int ret = 0;

	cp->nr_entries++;
	if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
		for (size_t i = 0; i < cp->nr_links; i++) {
			if (cp->links[i].dev == st->st_dev && cp->links[i].ino == st->st_ino)
				hl = &cp->links[i];
		}
		if (hl) {
			ret = ubt_link(cp->fs, hl->uino, dir, name, NULL);
			if (ret) {
				mk_err("%s: cannot create the hard link: %s", path, ubt_strerror(ret));
				return ret;
			}
			ubt_forget(cp->fs, hl->uino, 1);
			cp->done_bytes += S_ISREG(st->st_mode) ? (u64)st->st_size : 0;
			return 0;
		}
	}
	switch (st->st_mode & S_IFMT) {
	case S_IFDIR:
		ret = ubt_mkdir(cp->fs, dir, name, st->st_mode & 07777, st->st_uid, st->st_gid, &ino, NULL);
		break;
	case S_IFLNK: {
		char *target = malloc((size_t)st->st_size + 1);
		ssize_t n;

		if (!target)
			return -ENOMEM;
		n = readlink(path, target, (size_t)st->st_size + 1);
		if (n < 0 || n > st->st_size) {
			free(target);
			mk_err("cannot read the symlink %s", path);
			return n < 0 ? -errno : -EIO;
		}
		target[n] = 0;
		ret = ubt_symlink(cp->fs, dir, name, target, st->st_uid, st->st_gid, &ino, NULL);
		free(target);
		break;
	}
	case S_IFREG:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		ret = ubt_mknod(cp->fs, dir, name, st->st_mode, st->st_rdev, st->st_uid, st->st_gid, &ino, NULL);
		break;
	default:
		mk_warn("%s: unknown file type, skipped", path);
		return 0;
	}
	if (ret) {
		mk_err("%s: cannot create: %s", path, ubt_strerror(ret));
		return ret;
	}
	if (S_ISREG(st->st_mode))
		ret = mk_copy_data(cp, path, ino, st);
	else if (S_ISDIR(st->st_mode))
		ret = mk_copy_dir(cp, path, ino);
	if (!ret)
		ret = mk_copy_xattrs(cp, path, ino);
	if (!ret)
		ret = mk_copy_attrs(cp, path, ino, st);
	if (!ret && !S_ISDIR(st->st_mode) && st->st_nlink > 1) {
		if (cp->nr_links == cp->cap_links) {
			size_t cap = cp->cap_links ? cp->cap_links * 2 : 64;
			struct mk_hardlink *n = realloc(cp->links, cap * sizeof(*n));

			if (!n)
				ret = -ENOMEM;
			else {
				cp->links = n;
				cp->cap_links = cap;
			}
		}
		if (!ret) {
			cp->links[cp->nr_links++] = (struct mk_hardlink){ st->st_dev, st->st_ino, ino };
			keep = true; /* the lookup reference keeps the handle valid for later links */
		}
	}
	if (!keep)
		ubt_forget(cp->fs, ino, 1);
	return ret;
}

static int mk_copy_dir(struct mk_copy *cp, const char *path, ubt_ino dir)
{
	char **names;
	size_t n;
	int ret;

	ret = mk_list_dir(path, &names, &n);
	if (ret) {
		mk_err("cannot read the directory %s: %s", path, strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < n && !ret; i++) {
		char *p = mk_join(path, names[i]);
		struct stat st;

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		if (lstat(p, &st)) {
			ret = -errno;
			mk_err("cannot stat %s: %s", p, strerror(errno));
		} else if (cp->have_image_st && st.st_dev == cp->image_st.st_dev && st.st_ino == cp->image_st.st_ino) {
			mk_warn("%s is the image being created: not copied into itself", p);
		} else {
			ret = mk_copy_entry(cp, p, names[i], &st, dir);
		}
		free(p);
	}
	mk_free_names(names, n);
	return ret;
}

/* Mount the new filesystem and copy cfg->rootdir into its top directory. */
static int mk_populate(const struct mk_config *cfg)
{
	struct mk_copy cp = { .cfg = cfg, .last_pct = -1 };
	struct ubt_mount_opts opts = { 0 };
	struct stat st;
	int ret, ret2;

	cp.progress = !cfg->quiet && isatty(STDERR_FILENO);
	cp.have_image_st = !stat(cfg->path, &cp.image_st);
	cp.buf = malloc(1024 * 1024);
	if (!cp.buf)
		return -ENOMEM;
	if (lstat(cfg->rootdir, &st)) {
		ret = -errno;
		mk_err("cannot stat %s: %s", cfg->rootdir, strerror(errno));
		goto out_free;
	}
	if (cp.progress)
		mk_measure(&cp, cfg->rootdir);
	ret = ubt_mount(cfg->path, &opts, &cp.fs);
	if (ret) {
		mk_err("cannot mount the new filesystem to fill it: %s", ubt_strerror(ret));
		goto out_free;
	}
	ret = mk_copy_dir(&cp, cfg->rootdir, UBT_ROOT_INO);
	if (!ret)
		ret = mk_copy_xattrs(&cp, cfg->rootdir, UBT_ROOT_INO);
	if (!ret)
		ret = mk_copy_attrs(&cp, cfg->rootdir, UBT_ROOT_INO, &st);
	for (size_t i = 0; i < cp.nr_links; i++)
		ubt_forget(cp.fs, cp.links[i].uino, 1);
	mk_progress(&cp, true);
	ret2 = ubt_unmount(cp.fs);
	if (ret2) {
		mk_err("cannot commit the copied files: %s", ubt_strerror(ret2));
		ret = ret ? ret : ret2;
	}
out_free:
	free(cp.links);
	free(cp.buf);
	return ret;
}

/* ---- Command line ---- */

struct mk_feature {
	const char *name;
	const char *alias;
	u64 incompat;
	u64 compat_ro;
	bool supported;
	const char *desc;
};

static const struct mk_feature mk_features[] = {
	{ "mixed-bg", NULL, BTRFS_FEATURE_INCOMPAT_MIXED_GROUPS, 0, false, "mixed data and metadata block groups" },
	{ "quota", NULL, 0, 0, false, "hierarchical quota group support (qgroups)" },
	{ "extref", NULL, BTRFS_FEATURE_INCOMPAT_EXTENDED_IREF, 0, true,
	  "increased hardlink limit per file to 65536" },
	{ "raid56", NULL, BTRFS_FEATURE_INCOMPAT_RAID56, 0, false, "raid56 extended format" },
	{ "skinny-metadata", NULL, BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA, 0, true,
	  "reduced-size metadata extent refs" },
	{ "no-holes", NULL, BTRFS_FEATURE_INCOMPAT_NO_HOLES, 0, true, "no explicit hole extents for files" },
	{ "free-space-tree", "fst", 0,
	  BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE | BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE_VALID, true,
	  "free space tree, improved space tracking" },
	{ "raid1c34", NULL, BTRFS_FEATURE_INCOMPAT_RAID1C34, 0, false, "RAID1 with 3 or 4 copies" },
	{ "zoned", NULL, BTRFS_FEATURE_INCOMPAT_ZONED, 0, false, "support zoned (SMR/ZBC/ZNS) devices" },
	{ "extent-tree-v2", NULL, BTRFS_FEATURE_INCOMPAT_EXTENT_TREE_V2, 0, false, "new extent tree format" },
	{ "block-group-tree", "bgt", 0, BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE, true,
	  "block group items in a separate tree (faster mount)" },
	{ "raid-stripe-tree", "rst", BTRFS_FEATURE_INCOMPAT_RAID_STRIPE_TREE, 0, false, "raid stripe tree" },
	{ "squota", NULL, BTRFS_FEATURE_INCOMPAT_SIMPLE_QUOTA, 0, false,
	  "squota support (simple accounting qgroups)" },
};

#define MK_DEFAULT_INCOMPAT                                                                         \
	(BTRFS_FEATURE_INCOMPAT_MIXED_BACKREF | BTRFS_FEATURE_INCOMPAT_EXTENDED_IREF |                \
	 BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA | BTRFS_FEATURE_INCOMPAT_NO_HOLES)
#define MK_DEFAULT_COMPAT_RO \
	(BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE | BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE_VALID)

static void mk_list_features(void)
{
	printf("Filesystem features available:\n");
	for (size_t i = 0; i < ARRAY_SIZE(mk_features); i++) {
		const struct mk_feature *f = &mk_features[i];
		bool dflt = (f->incompat & MK_DEFAULT_INCOMPAT) || (f->compat_ro & MK_DEFAULT_COMPAT_RO);

		printf("%-20s- %s%s%s\n", f->name, f->desc, dflt ? " (default)" : "",
		       f->supported ? "" : " [not supported by ubtrfs mkfs]");
	}
}

/* Apply a comma-separated -O list; returns 1 when "list-all" was asked, <0 on error. */
static int mk_parse_features(struct mk_config *cfg, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		bool off = tok[0] == '^';
		const char *name = off ? tok + 1 : tok;
		const struct mk_feature *f = NULL;

		if (!strcmp(name, "list-all")) {
			ret = 1;
			continue;
		}
		for (size_t i = 0; i < ARRAY_SIZE(mk_features); i++) {
			if (!strcasecmp(name, mk_features[i].name) ||
			    (mk_features[i].alias && !strcasecmp(name, mk_features[i].alias)))
				f = &mk_features[i];
		}
		if (!f) {
			mk_err("unrecognized filesystem feature '%s' (see -O list-all)", name);
			ret = -EINVAL;
			break;
		}
		if (!f->supported && !off) {
			mk_err("feature '%s' is not supported by ubtrfs mkfs yet", f->name);
			ret = -EOPNOTSUPP;
			break;
		}
		if (off) {
			cfg->incompat &= ~f->incompat;
			cfg->compat_ro &= ~f->compat_ro;
		} else {
			cfg->incompat |= f->incompat;
			cfg->compat_ro |= f->compat_ro;
		}
	}
	free(copy);
	return ret;
}

/* "512M", "1g", "4096", "2GiB" -> bytes (binary units). */
static int mk_parse_size(const char *s, u64 *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (tolower((unsigned char)*end)) {
	case 'e': shift += 10; /* fall through */
	case 'p': shift += 10; /* fall through */
	case 't': shift += 10; /* fall through */
	case 'g': shift += 10; /* fall through */
	case 'm': shift += 10; /* fall through */
	case 'k': shift += 10; end++; break;
	case 'b': end++; break;
	}
	if (shift && (!strcasecmp(end, "ib") || !strcasecmp(end, "b")))
		end += strlen(end);
	if (*end)
		return -EINVAL;
	if (shift && v > (ULLONG_MAX >> shift))
		return -ERANGE;
	*out = (u64)v << shift;
	return 0;
}

static int mk_parse_profile(const char *s, u64 *out)
{
	if (!strcasecmp(s, "single")) {
		*out = 0;
		return 0;
	}
	if (!strcasecmp(s, "dup")) {
		*out = BTRFS_BLOCK_GROUP_DUP;
		return 0;
	}
	mk_err("profile '%s' is not supported on one device (use single or dup)", s);
	return -EINVAL;
}

void ubt_mkfs_usage(FILE *out)
{
	fprintf(out,
		"usage: ubtrfs mkfs [OPTIONS] DEVICE\n"
		"\n"
		"Create a btrfs filesystem on an image file or block device.\n"
		"\n"
		"Options:\n"
		"  -L|--label LABEL        filesystem label (up to 255 bytes)\n"
		"  -n|--nodesize SIZE      tree block size: 4096..65536, a power of 2 (default 16384)\n"
		"  -s|--sectorsize SIZE    data block size (only 4096)\n"
		"  --csum TYPE             checksum: crc32c (default), xxhash, sha256, blake2\n"
		"  -b|--byte-count SIZE    filesystem size (K/M/G/T suffixes); default the whole device;\n"
		"                          an image file is created or extended to SIZE\n"
		"  -m|--metadata PROFILE   metadata profile: dup (default) or single\n"
		"  -d|--data PROFILE       data profile: single (default) or dup\n"
		"  -O|--features LIST      comma-separated features, ^ disables (-O list-all to list)\n"
		"  -U|--uuid UUID          filesystem UUID\n"
		"  -f|--force              overwrite an existing filesystem or signature\n"
		"  -r|--rootdir DIR        copy DIR (files, links, xattrs, owners, times) into the filesystem\n"
		"  -K|--nodiscard          accepted for compatibility (ubtrfs mkfs never discards)\n"
		"  -q|--quiet              print nothing but errors\n"
		"  -V|--version            print the version\n"
		"  -h|--help               this help\n");
}

static int mk_parse_args(int argc, char **argv, struct mk_config *cfg, bool *done)
{
	enum { OPT_CSUM = 256, OPT_SHRINK };
	static const struct option opts[] = {
		{ "label", required_argument, NULL, 'L' },
		{ "nodesize", required_argument, NULL, 'n' },
		{ "sectorsize", required_argument, NULL, 's' },
		{ "csum", required_argument, NULL, OPT_CSUM },
		{ "checksum", required_argument, NULL, OPT_CSUM },
		{ "byte-count", required_argument, NULL, 'b' },
		{ "metadata", required_argument, NULL, 'm' },
		{ "data", required_argument, NULL, 'd' },
		{ "features", required_argument, NULL, 'O' },
		{ "runtime-features", required_argument, NULL, 'R' },
		{ "uuid", required_argument, NULL, 'U' },
		{ "force", no_argument, NULL, 'f' },
		{ "rootdir", required_argument, NULL, 'r' },
		{ "nodiscard", no_argument, NULL, 'K' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool list = false;
	u64 v;
	int c, ret;

	*done = false;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":L:n:s:b:m:d:O:R:U:fr:KqVh", opts, NULL)) != -1) {
		switch (c) {
		case 'L':
			if (strlen(optarg) >= BTRFS_LABEL_SIZE) {
				mk_err("label '%s' is too long (at most %d bytes)", optarg, BTRFS_LABEL_SIZE - 1);
				return -EINVAL;
			}
			cfg->label = optarg;
			break;
		case 'n':
		case 's':
			if (mk_parse_size(optarg, &v) || v > UINT32_MAX) {
				mk_err("invalid %s '%s'", c == 'n' ? "nodesize" : "sectorsize", optarg);
				return -EINVAL;
			}
			if (c == 'n')
				cfg->nodesize = (u32)v;
			else
				cfg->sectorsize = (u32)v;
			break;
		case OPT_CSUM:
			ret = ubt_csum_type_from_name(optarg);
			if (ret < 0) {
				mk_err("unknown checksum type '%s' (crc32c, xxhash, sha256 or blake2)", optarg);
				return -EINVAL;
			}
			cfg->csum_type = (u16)ret;
			break;
		case 'b':
			if (mk_parse_size(optarg, &v) || !v) {
				mk_err("invalid size '%s'", optarg);
				return -EINVAL;
			}
			cfg->byte_count = v;
			break;
		case 'm':
		case 'd':
			ret = mk_parse_profile(optarg, c == 'm' ? &cfg->meta_profile : &cfg->data_profile);
			if (ret)
				return ret;
			break;
		case 'O':
		case 'R':
			ret = mk_parse_features(cfg, optarg);
			if (ret < 0)
				return ret;
			list |= ret == 1;
			break;
		case 'U':
			if (mk_parse_uuid(optarg, cfg->fsid)) {
				mk_err("invalid UUID '%s'", optarg);
				return -EINVAL;
			}
			cfg->have_fsid = true;
			break;
		case 'f':
			cfg->force = true;
			break;
		case 'r':
			cfg->rootdir = optarg;
			break;
		case 'K':
			break;
		case 'q':
			cfg->quiet = true;
			break;
		case 'V':
			printf("ubtrfs mkfs, version %s\n", UBT_VERSION);
			*done = true;
			return 0;
		case 'h':
			ubt_mkfs_usage(stdout);
			*done = true;
			return 0;
		case ':':
			mk_err("option '%s' needs an argument", argv[optind - 1]);
			return -EINVAL;
		default:
			if (optopt)
				mk_err("unknown option '-%c'", optopt);
			else
				mk_err("unknown option '%s'", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (list) {
		mk_list_features();
		*done = true;
		return 0;
	}
	if (optind != argc - 1) {
		mk_err(optind >= argc ? "no device given" : "exactly one device is supported");
		return -EINVAL;
	}
	cfg->path = argv[optind];
	return 0;
}

/* Checks that need no device: sizes and feature combinations. */
static int mk_check_config(struct mk_config *cfg)
{
	if (cfg->sectorsize != 4096) {
		mk_err("sectorsize %u is not supported: ubtrfs mkfs only makes 4096-byte sectors", cfg->sectorsize);
		return -EINVAL;
	}
	if (cfg->nodesize < 4096 || cfg->nodesize > 65536 || (cfg->nodesize & (cfg->nodesize - 1)) ||
	    cfg->nodesize < cfg->sectorsize) {
		mk_err("invalid nodesize %u: a power of 2 from %u to 65536", cfg->nodesize, cfg->sectorsize);
		return -EINVAL;
	}
	if ((cfg->compat_ro & BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE) &&
	    (!(cfg->compat_ro & BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE) ||
	     !(cfg->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES))) {
		mk_warn("disabling block-group-tree: it needs the no-holes and free-space-tree features");
		cfg->compat_ro &= ~BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE;
	}
	/* The flag means nothing any more, but the kernel and mkfs.btrfs set it for such nodes. */
	if (cfg->nodesize > (u32)sysconf(_SC_PAGESIZE))
		cfg->incompat |= BTRFS_FEATURE_INCOMPAT_BIG_METADATA;
	if (cfg->rootdir) {
		struct stat st;

		if (stat(cfg->rootdir, &st)) {
			mk_err("--rootdir %s: %s", cfg->rootdir, strerror(errno));
			return -ENOENT;
		}
		if (!S_ISDIR(st.st_mode)) {
			mk_err("--rootdir %s: not a directory", cfg->rootdir);
			return -ENOTDIR;
		}
	}
	return 0;
}

static void mk_print_summary(const struct mk_fs *fs)
{
	const struct mk_config *cfg = fs->cfg;
	char uuid[37];
	const char *csum = ubt_csum_name(cfg->csum_type);

	mk_uuid_str(cfg->fsid, uuid);
	printf("ubtrfs mkfs %s\n\n", UBT_VERSION);
	printf("Label:              %s\n", cfg->label ? cfg->label : "(null)");
	printf("UUID:               %s\n", uuid);
	printf("Node size:          %u\n", cfg->nodesize);
	printf("Sector size:        %u\n", cfg->sectorsize);
	printf("Filesystem size:    %llu bytes (%.2f MiB)\n", (unsigned long long)fs->total_bytes,
	       (double)fs->total_bytes / (double)SZ_1M);
	printf("Block group profiles:\n");
	printf("  Data:             %-8s %10.2f MiB\n", cfg->data_profile ? "DUP" : "single",
	       (double)fs->data->length / (double)SZ_1M);
	printf("  Metadata:         %-8s %10.2f MiB\n", cfg->meta_profile ? "DUP" : "single",
	       (double)fs->meta->length / (double)SZ_1M);
	printf("  System:           %-8s %10.2f MiB\n", cfg->meta_profile ? "DUP" : "single",
	       (double)fs->sys->length / (double)SZ_1M);
	printf("Features:          ");
	for (size_t i = 0; i < ARRAY_SIZE(mk_features); i++) {
		const struct mk_feature *f = &mk_features[i];

		if ((f->incompat && (cfg->incompat & f->incompat)) ||
		    (f->compat_ro && (cfg->compat_ro & f->compat_ro)))
			printf(" %s", f->name);
	}
	printf("\nChecksum:           %s\n", csum ? csum : "?");
	printf("Device:             %s\n", cfg->path);
}

int ubt_cmd_mkfs(int argc, char **argv)
{
	struct mk_config cfg = {
		.nodesize = 16384,
		.sectorsize = 4096,
		.csum_type = BTRFS_CSUM_TYPE_CRC32,
		.meta_profile = BTRFS_BLOCK_GROUP_DUP,
		.data_profile = 0,
		.incompat = MK_DEFAULT_INCOMPAT,
		.compat_ro = MK_DEFAULT_COMPAT_RO,
	};
	struct mk_fs *fs = NULL;
	struct ubt_bdev *bdev = NULL;
	const char *sig;
	u64 min_size;
	bool done;
	int ret, status = MK_EXIT_FAIL;

	ret = mk_parse_args(argc, argv, &cfg, &done);
	if (ret || done) {
		if (ret)
			fprintf(stderr, "Run 'ubtrfs mkfs --help' for the options.\n");
		return ret ? MK_EXIT_USAGE : MK_EXIT_OK;
	}
	ret = mk_check_config(&cfg);
	if (ret)
		return ret == -EINVAL ? MK_EXIT_USAGE : MK_EXIT_FAIL;
	if (!cfg.have_fsid)
		mk_random_uuid(cfg.fsid);
	min_size = mk_min_dev_size(cfg.meta_profile, cfg.data_profile);
	if (cfg.byte_count && cfg.byte_count < min_size) {
		mk_err("size %llu is too small to make a usable filesystem (minimum %llu bytes)",
		       (unsigned long long)cfg.byte_count, (unsigned long long)min_size);
		return MK_EXIT_FAIL;
	}

	ret = mk_open_device(&cfg, &bdev);
	if (ret)
		return MK_EXIT_FAIL;
	fs = calloc(1, sizeof(*fs));
	if (!fs) {
		mk_err("out of memory");
		goto out;
	}
	fs->cfg = &cfg;
	fs->bdev = bdev;
	fs->total_bytes = ALIGN_DOWN(cfg.byte_count ? cfg.byte_count : bdev->size, (u64)cfg.sectorsize);
	if (fs->total_bytes < min_size) {
		mk_err("'%s' is too small to make a usable filesystem: %llu bytes, minimum %llu", cfg.path,
		       (unsigned long long)fs->total_bytes, (unsigned long long)min_size);
		goto out;
	}
	sig = mk_find_signature(bdev);
	if (sig && !cfg.force) {
		mk_err("%s appears to contain an existing filesystem or signature (%s)", cfg.path, sig);
		mk_err("use the -f option to force overwrite of %s", cfg.path);
		goto out;
	}
	{
		const char *sde = getenv("SOURCE_DATE_EPOCH");

		fs->now = sde && *sde ? strtoull(sde, NULL, 10) : (u64)time(NULL);
	}
	mk_random_uuid(fs->dev_uuid);
	mk_random_uuid(fs->chunk_uuid);
	mk_random_uuid(fs->fs_root_uuid);

	ret = mk_build(fs);
	if (ret) {
		if (ret != -ENOSPC && ret != -EDEADLK && ret != -EUCLEAN)
			mk_err("cannot lay out the filesystem: %s", strerror(-ret));
		goto out;
	}
	ret = mk_write_fs(fs);
	if (ret)
		goto out;
	if (!cfg.quiet)
		mk_print_summary(fs);
	if (cfg.rootdir) {
		/* The library takes its own (exclusive) hold of the device. */
		ubt_bdev_close(bdev);
		bdev = NULL;
		if (!cfg.quiet)
			printf("Rootdir:            %s\n", cfg.rootdir);
		ret = mk_populate(&cfg);
		if (ret) {
			mk_err("%s holds an empty or partly filled filesystem", cfg.path);
			goto out;
		}
	}
	status = MK_EXIT_OK;
out:
	if (fs) {
		for (int i = 0; i < fs->nr_trees; i++)
			mk_tree_free(&fs->trees[i]);
		free(fs);
	}
	ubt_bdev_close(bdev);
	return status;
}
