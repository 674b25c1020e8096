/*
 * tree-log.c — replay of btrfs's fsync log at mount.
 *
 * The kernel answers fsync by writing the inode's items into a per-subvolume log tree (found via
 * the log root tree at super.log_root: ROOT_ITEMs keyed (TREE_LOG, ROOT_ITEM, subvolume id)) instead
 * of committing. Replay, in the order the format requires:
 *   0. keep out of allocation every log tree block, and claim the data extents the log references
 *      that the extent tree does not know (they were written after the last commit);
 *   per log tree, in one transaction:
 *   1. inode items: stale xattrs and (for directories) names inside the log's DIR_LOG_INDEX ranges
 *      but absent from the log are removed, the inode item is copied (nbytes kept, a directory's
 *      size kept and then adjusted by each name added or removed), a file is cut at its logged size;
 *   2. DIR_INDEX items: names are added unless an inode ref in the log will add them (step 3);
 *   3. xattrs are copied; INODE_REF/EXTREF items add their names (removing conflicting names) and
 *      then replace the subvolume's ref item; EXTENT_DATA items replace the file range they cover,
 *      taking a data reference (a claimed extent gets its extent item) and the log's checksums;
 *   4. the link count of every inode touched is recounted from its refs; an inode left without
 *      links gets an orphan item (a directory's entries are removed first).
 * Then super.log_root is cleared and the transaction commits; orphan cleanup deletes the inodes
 * left without links. Times the kernel sets to "now" while it replays are not changed here: the
 * logged inode items are authoritative.
 */
#include "tree-log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../alloc/alloc.h"
#include "../codec/csum.h"
#include "../util/messages.h"
#include "inode-internal.h"
#include "inode-write.h"

struct btrfs_dir_log_item {
	ule64 end;
} __attribute__((packed));

/* A sorted set of u64 (inode numbers, extent starts). */
struct u64set {
	u64 *v;
	size_t nr, cap;
};

static size_t set_pos(const struct u64set *s, u64 x)
{
	size_t lo = 0, hi = s->nr;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (s->v[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool set_has(const struct u64set *s, u64 x)
{
	size_t i = set_pos(s, x);

	return i < s->nr && s->v[i] == x;
}

static int set_add(struct u64set *s, u64 x)
{
	size_t i = set_pos(s, x);

	if (i < s->nr && s->v[i] == x)
		return 0;
	if (s->nr == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		u64 *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	memmove(s->v + i + 1, s->v + i, (s->nr - i) * sizeof(*s->v));
	s->v[i] = x;
	s->nr++;
	return 0;
}

/* A data extent claimed from free space for the log (step 0). */
struct claimed {
	u64 bytenr, len;
	bool referenced;
};

struct replay {
	struct ubt_fs_info *fs_info;
	struct ubt_trans_handle *h;
	struct ubt_root *root; /* the subvolume replayed into */
	struct ubt_root *log;  /* its log tree */
	struct u64set fixup;   /* inodes whose link count is recounted at the end */
	u64 ignore_ino;        /* logged with nlink 0 (an O_TMPFILE): its items are skipped */
	struct u64set blocks;  /* log tree blocks kept out of allocation */
	struct claimed *claimed;
	size_t nr_claimed, cap_claimed;
};

static int log_corrupt(const struct replay *rp, const struct ubt_key *key, const char *what)
{
	ubt_err("log tree of root %" PRIu64 ": item (%" PRIu64 " %u %" PRIu64 "): %s", rp->root->objectid,
		key->objectid, key->type, key->offset, what);
	return -EUCLEAN;
}

/* ---- step 0: log tree blocks and logged data extents ---- */

static struct claimed *find_claimed(struct replay *rp, u64 bytenr)
{
	size_t lo = 0, hi = rp->nr_claimed;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (rp->claimed[mid].bytenr < bytenr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < rp->nr_claimed && rp->claimed[lo].bytenr == bytenr ? &rp->claimed[lo] : NULL;
}

/* Is there an EXTENT_ITEM for [bytenr, +len)? 1 yes, 0 no, <0. */
static int data_extent_exists(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_key key = { bytenr, BTRFS_EXTENT_ITEM_KEY, len };
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot(&fs_info->extent_root, &key, &path);
	ubt_path_release(&path);
	return ret < 0 ? ret : !ret;
}

static int claim_leaf_extents(struct replay *rp, const struct extent_buffer *leaf)
{
	u32 nr = ubt_eb_nritems(leaf);

	for (u32 i = 0; i < nr; i++) {
		const struct btrfs_file_extent_item *fe;
		struct ubt_key k;
		u64 bytenr, len;
		int ret;

		ubt_item_key(leaf, (int)i, &k);
		if (k.type != BTRFS_EXTENT_DATA_KEY)
			continue;
		fe = ubt_item_ptr(leaf, (int)i);
		if (ubt_item_size(leaf, (int)i) < BTRFS_FILE_EXTENT_INLINE_DATA_START) {
			ubt_err("log tree block %" PRIu64 " slot %u: file extent item too small", leaf->start, i);
			return -EUCLEAN;
		}
		if (fe->type == BTRFS_FILE_EXTENT_INLINE)
			continue;
		if (ubt_item_size(leaf, (int)i) < sizeof(*fe)) {
			ubt_err("log tree block %" PRIu64 " slot %u: file extent item too small", leaf->start, i);
			return -EUCLEAN;
		}
		bytenr = le64toh(fe->disk_bytenr);
		len = le64toh(fe->disk_num_bytes);
		if (!bytenr)
			continue;
		if (find_claimed(rp, bytenr))
			continue;
		ret = data_extent_exists(rp->fs_info, bytenr, len);
		if (ret < 0)
			return ret;
		if (ret)
			continue;
		ret = ubt_alloc_claim_data_extent(rp->fs_info, bytenr, len);
		if (ret)
			return ret;
		if (rp->nr_claimed == rp->cap_claimed) {
			size_t cap = rp->cap_claimed ? 2 * rp->cap_claimed : 32;
			struct claimed *c = realloc(rp->claimed, cap * sizeof(*c));

			if (!c) {
				ubt_alloc_unclaim_data_extent(rp->fs_info, bytenr, len);
				return -ENOMEM;
			}
			rp->claimed = c;
			rp->cap_claimed = cap;
		}
		{
			size_t pos = rp->nr_claimed;

			while (pos > 0 && rp->claimed[pos - 1].bytenr > bytenr)
				pos--;
			memmove(rp->claimed + pos + 1, rp->claimed + pos, (rp->nr_claimed - pos) * sizeof(*rp->claimed));
			rp->claimed[pos] = (struct claimed){ .bytenr = bytenr, .len = len };
			rp->nr_claimed++;
		}
	}
	return 0;
}

/*
 * Walk every block of the tree at @bytenr: exclude it from allocation; for leaves of log trees
 * (@data) claim the data extents, for the log root tree's leaf call @roots_cb.
 */
static int pin_tree(struct replay *rp, u64 bytenr, u64 gen, int level, const struct ubt_key *first_key, bool data,
		    int depth)
{
	struct ubt_fs_info *fs_info = rp->fs_info;
	struct extent_buffer *eb;
	int ret = 0;

	if (depth > BTRFS_MAX_LEVEL)
		return -EUCLEAN;
	if (set_has(&rp->blocks, bytenr)) {
		ubt_err("log tree block %" PRIu64 " is referenced twice", bytenr);
		return -EUCLEAN;
	}
	eb = ubt_read_tree_block(fs_info, bytenr, gen, level, first_key);
	if (IS_ERR(eb))
		return (int)PTR_ERR(eb);
	ret = ubt_alloc_exclude_range(fs_info, bytenr, fs_info->nodesize);
	if (ret)
		goto out;
	ret = set_add(&rp->blocks, bytenr);
	if (ret) {
		ubt_alloc_unexclude_range(fs_info, bytenr, fs_info->nodesize);
		goto out;
	}
	if (ubt_eb_level(eb) == 0) {
		if (data)
			ret = claim_leaf_extents(rp, eb);
		goto out;
	}
	for (u32 i = 0; i < ubt_eb_nritems(eb) && !ret; i++) {
		const struct btrfs_key_ptr *kp = ubt_eb_key_ptr(eb, (int)i);
		struct ubt_key k;

		ubt_node_key(eb, (int)i, &k);
		ret = pin_tree(rp, le64toh(kp->blockptr), le64toh(kp->generation), ubt_eb_level(eb) - 1, &k, data,
			       depth + 1);
	}
out:
	ubt_eb_put(eb);
	return ret;
}

/* ---- small tree helpers ---- */

/* Item @key of @root copied into a fresh buffer. 0, 1 absent, <0. */
static int get_item(struct ubt_root *root, const struct ubt_key *key, u8 **data, u32 *size)
{
	struct ubt_path path;
	int ret;

	*data = NULL;
	*size = 0;
	ubt_path_init(&path);
	ret = ubt_search_slot(root, key, &path);
	if (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);

		*size = ubt_item_size(leaf, ubt_path_slot(&path));
		*data = malloc(*size ? *size : 1);
		if (!*data)
			ret = -ENOMEM;
		else
			memcpy(*data, ubt_item_ptr(leaf, ubt_path_slot(&path)), *size);
	}
	ubt_path_release(&path);
	return ret;
}

/* Set item @key of the subvolume to exactly @data (insert, or resize and overwrite). */
static int put_item(struct replay *rp, const struct ubt_key *key, const void *data, u32 size)
{
	struct ubt_path path;
	struct extent_buffer *leaf;
	u32 old;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(rp->h, rp->root, key, &path, (int)(size + sizeof(struct btrfs_item)));
	if (ret < 0)
		goto out;
	if (ret > 0) {
		ubt_path_release(&path);
		ret = ubt_insert_item(rp->h, rp->root, key, data, size);
		goto out;
	}
	leaf = ubt_path_leaf(&path);
	old = ubt_item_size(leaf, ubt_path_slot(&path));
	if (old == size && !memcmp(ubt_item_ptr(leaf, ubt_path_slot(&path)), data, size))
		goto out;
	if (old > size)
		ubt_truncate_item(rp->h, &path, size, true);
	else if (old < size)
		ubt_extend_item(rp->h, &path, size - old);
	memcpy(ubt_item_ptr(leaf, ubt_path_slot(&path)), data, size);
	ubt_mark_buffer_dirty(rp->h, leaf);
	ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}

/* Write an inode item back as is (no transid/sequence bump: replay restores logged state). */
static int put_inode(struct replay *rp, u64 ino, const struct btrfs_inode_item *ii)
{
	struct ubt_key key = { ino, BTRFS_INODE_ITEM_KEY, 0 };

	return put_item(rp, &key, ii, sizeof(*ii));
}

static int inode_exists(struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii)
{
	struct btrfs_inode_item tmp;
	int ret = ubt_inode_read(root, ino, ii ? ii : &tmp);

	return ret == -ENOENT ? 0 : ret < 0 ? ret : 1;
}

/*
 * Find entry @name in a DIR_ITEM/DIR_INDEX/XATTR item @key of @root. Returns 0 with @loc/@type
 * (when not NULL) filled, 1 absent, <0.
 */
static int find_entry(struct ubt_root *root, const struct ubt_key *key, const char *name, size_t len,
		      struct ubt_key *loc, u8 *type)
{
	struct ubt_dir_entry ent;
	u8 *item;
	u32 size, cursor = 0;
	int ret;

	ret = get_item(root, key, &item, &size);
	if (ret)
		return ret;
	for (;;) {
		ret = ubt_dir_entry_next(root, key->objectid, key, item, size, &cursor, &ent);
		if (ret)
			break;
		if (ent.name_len == len && !memcmp(ent.name, name, len)) {
			if (loc)
				*loc = ent.location;
			if (type)
				*type = ent.type;
			break;
		}
	}
	free(item);
	return ret;
}

/* Does ref item @key of @root hold (@parent, @name)? 0 yes (index in *@index), 1 no, <0. */
static int find_ref(struct ubt_root *root, const struct ubt_key *key, u64 parent, const char *name, size_t len,
		    u64 *index)
{
	const bool ext = key->type == BTRFS_INODE_EXTREF_KEY;
	const u32 hdr = ext ? sizeof(struct btrfs_inode_extref) : sizeof(struct btrfs_inode_ref);
	u8 *item;
	u32 size, cur = 0;
	int ret;

	ret = get_item(root, key, &item, &size);
	if (ret)
		return ret;
	ret = 1;
	while (cur < size) {
		const u8 *e = item + cur;
		u64 p = ext ? get_le64(e) : key->offset;
		u16 nlen;

		if (size - cur < hdr ||
		    size - cur - hdr < (nlen = get_le16(e + hdr - 2))) {
			ubt_inode_corrupt(root, key->objectid, key, "ref entry at %u overruns the item", cur);
			ret = -EUCLEAN;
			break;
		}
		if (p == parent && nlen == len && !memcmp(e + hdr, name, len)) {
			if (index)
				*index = get_le64(e + (ext ? 8 : 0));
			ret = 0;
			break;
		}
		cur += hdr + nlen;
	}
	free(item);
	return ret;
}

/* Is (@parent, @name) a name of @ino in @log (INODE_REF or INODE_EXTREF)? 1 yes, 0 no, <0. */
static int ref_in_log(struct ubt_root *log, u64 ino, u64 parent, const char *name, size_t len)
{
	struct ubt_key key = { ino, BTRFS_INODE_REF_KEY, parent };
	int ret = find_ref(log, &key, parent, name, len, NULL);

	if (ret != 1)
		return ret < 0 ? ret : 1;
	key.type = BTRFS_INODE_EXTREF_KEY;
	key.offset = ubt_extref_hash(parent, name, len);
	ret = find_ref(log, &key, parent, name, len, NULL);
	return ret < 0 ? ret : !ret;
}

/* ---- names ---- */

static u32 build_dir_entry(struct replay *rp, u8 *buf, const char *name, size_t len, const struct ubt_key *loc,
			   u8 type)
{
	struct btrfs_dir_item *di = (struct btrfs_dir_item *)buf;

	memset(di, 0, sizeof(*di));
	ubt_cpu_key_to_disk(&di->location, loc);
	put_le64(&di->transid, rp->h->transid);
	put_le16(&di->name_len, (u16)len);
	di->type = type;
	memcpy(buf + sizeof(*di), name, len);
	return (u32)(sizeof(*di) + len);
}

static void dir_size_add(struct btrfs_inode_item *ii, s64 delta)
{
	u64 size = get_le64(&ii->size);

	put_le64(&ii->size, delta < 0 && (u64)-delta > size ? 0 : size + (u64)delta);
}

/*
 * Remove name (@dir, @name) of @ino: its back reference, DIR_ITEM entry and DIR_INDEX @index
 * (found through the back reference when @index is (u64)-1), whichever exist; the directory's
 * size shrinks accordingly and @ino's link count is recounted at the end.
 */
static int unlink_name(struct replay *rp, u64 dir, u64 ino, const char *name, size_t len, u64 index)
{
	struct ubt_key key = { ino, BTRFS_INODE_REF_KEY, dir };
	struct btrfs_inode_item dir_ii;
	struct ubt_key loc;
	u64 ref_index;
	s64 delta = 0;
	int ret;

	ret = ubt_inode_read(rp->root, dir, &dir_ii);
	if (ret < 0)
		return ret;
	ret = find_ref(rp->root, &key, dir, name, len, &ref_index);
	if (ret == 1) {
		key.type = BTRFS_INODE_EXTREF_KEY;
		key.offset = ubt_extref_hash(dir, name, len);
		ret = find_ref(rp->root, &key, dir, name, len, &ref_index);
	}
	if (ret < 0)
		return ret;
	if (ret == 0) {
		if (index == (u64)-1)
			index = ref_index;
		ret = ubt_inode_del_ref(rp->h, rp->root, ino, dir, name, len, &ref_index);
		if (ret < 0)
			return ret;
	}
	key = (struct ubt_key){ dir, BTRFS_DIR_ITEM_KEY, ubt_name_hash(name, len) };
	ret = find_entry(rp->root, &key, name, len, &loc, NULL);
	if (ret < 0)
		return ret;
	if (ret == 0 && loc.objectid == ino) {
		/* Cut this entry out of the (possibly shared) DIR_ITEM. */
		struct ubt_dir_entry ent;
		u8 *item;
		u32 size, cursor = 0, start;

		ret = get_item(rp->root, &key, &item, &size);
		if (ret)
			return ret < 0 ? ret : -EUCLEAN;
		for (;;) {
			start = cursor;
			ret = ubt_dir_entry_next(rp->root, dir, &key, item, size, &cursor, &ent);
			if (ret)
				break;
			if (ent.name_len == len && !memcmp(ent.name, name, len))
				break;
		}
		free(item);
		if (ret > 0)
			ret = -EUCLEAN;
		if (ret < 0)
			return ret;
		ret = ubt_item_cut(rp->h, rp->root, &key, start, cursor - start);
		if (ret < 0)
			return ret;
		delta -= (s64)len;
	}
	if (index != (u64)-1) {
		key = (struct ubt_key){ dir, BTRFS_DIR_INDEX_KEY, index };
		ret = find_entry(rp->root, &key, name, len, &loc, NULL);
		if (ret < 0)
			return ret;
		if (ret == 0 && loc.objectid == ino) {
			ret = ubt_item_delete(rp->h, rp->root, &key);
			if (ret < 0)
				return ret;
			delta -= (s64)len;
		}
	}
	if (delta) {
		dir_size_add(&dir_ii, delta);
		ret = put_inode(rp, dir, &dir_ii);
		if (ret < 0)
			return ret;
	}
	return set_add(&rp->fixup, ino);
}

/*
 * Add name (@dir, @name) -> @ino at @index: DIR_ITEM and DIR_INDEX entries that are missing, and
 * the back reference when @add_ref. Returns 1 when something was added, 0, <0.
 */
static int add_name(struct replay *rp, u64 dir, u64 ino, const char *name, size_t len, u8 type, u64 index,
		    bool add_ref)
{
	struct ubt_key loc = { ino, BTRFS_INODE_ITEM_KEY, 0 };
	struct ubt_key key = { dir, BTRFS_DIR_ITEM_KEY, ubt_name_hash(name, len) };
	u8 buf[sizeof(struct btrfs_dir_item) + BTRFS_NAME_LEN];
	struct btrfs_inode_item dir_ii;
	u32 size;
	s64 delta = 0;
	int ret;

	if (len == 0 || len > BTRFS_NAME_LEN)
		return -EUCLEAN;
	ret = ubt_inode_read(rp->root, dir, &dir_ii);
	if (ret < 0)
		return ret;
	size = build_dir_entry(rp, buf, name, len, &loc, type);
	ret = find_entry(rp->root, &key, name, len, NULL, NULL);
	if (ret < 0)
		return ret;
	if (ret == 1) {
		ret = ubt_item_insert_or_extend(rp->h, rp->root, &key, buf, size, ubt_max_item_size(rp->fs_info));
		if (ret < 0)
			return ret;
		delta += (s64)len;
	}
	key = (struct ubt_key){ dir, BTRFS_DIR_INDEX_KEY, index };
	ret = ubt_insert_item(rp->h, rp->root, &key, buf, size);
	if (ret < 0 && ret != -EEXIST)
		return ret;
	if (ret == 0)
		delta += (s64)len;
	if (add_ref) {
		struct ubt_key rk = { ino, BTRFS_INODE_REF_KEY, dir };
		u64 idx;

		ret = find_ref(rp->root, &rk, dir, name, len, &idx);
		if (ret == 1) {
			rk.type = BTRFS_INODE_EXTREF_KEY;
			rk.offset = ubt_extref_hash(dir, name, len);
			ret = find_ref(rp->root, &rk, dir, name, len, &idx);
		}
		if (ret < 0)
			return ret;
		if (ret == 1) {
			ret = ubt_inode_add_ref(rp->h, rp->root, ino, dir, name, len, index);
			if (ret < 0)
				return ret;
		}
	}
	if (delta) {
		dir_size_add(&dir_ii, delta);
		ret = put_inode(rp, dir, &dir_ii);
		if (ret < 0)
			return ret;
	}
	ret = set_add(&rp->fixup, ino);
	return ret < 0 ? ret : delta != 0;
}

/* Remove the name a DIR_ITEM/DIR_INDEX entry (@dir, @name -> @loc) stands for, with its index. */
static int drop_entry(struct replay *rp, u64 dir, const char *name, size_t len, const struct ubt_key *loc,
		      u64 index)
{
	if (loc->type != BTRFS_INODE_ITEM_KEY)
		return 0; /* a subvolume link: left alone */
	return unlink_name(rp, dir, loc->objectid, name, len, index);
}

/* ---- step 1: inode items ---- */

/* Remove xattrs of @ino that the log does not have. */
static int replay_xattr_deletes(struct replay *rp, u64 ino)
{
	struct ubt_key key = { ino, BTRFS_XATTR_ITEM_KEY, 0 };
	struct ubt_path path;
	char (*names)[BTRFS_NAME_LEN + 1] = NULL;
	size_t nr = 0, cap = 0;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(rp->root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		struct ubt_dir_entry ent;
		struct ubt_key k;
		u32 cursor = 0;

		ubt_item_key(leaf, slot, &k);
		if (k.objectid != ino || k.type != BTRFS_XATTR_ITEM_KEY)
			break;
		for (;;) {
			int r = ubt_dir_entry_next(rp->root, ino, &k, ubt_item_ptr(leaf, slot), ubt_item_size(leaf, slot),
						   &cursor, &ent);
			struct ubt_key lk = k;

			if (r) {
				ret = r < 0 ? r : 0;
				break;
			}
			lk.offset = ubt_name_hash(ent.name, ent.name_len);
			r = find_entry(rp->log, &lk, ent.name, ent.name_len, NULL, NULL);
			if (r < 0) {
				ret = r;
				break;
			}
			if (r == 0)
				continue;
			if (nr == cap) {
				size_t ncap = cap ? 2 * cap : 8;
				void *v = realloc(names, ncap * sizeof(*names));

				if (!v) {
					ret = -ENOMEM;
					break;
				}
				names = v;
				cap = ncap;
			}
			memcpy(names[nr], ent.name, ent.name_len);
			names[nr][ent.name_len] = '\0';
			nr++;
		}
		if (ret)
			break;
		ret = ubt_next_item(rp->root, &path);
	}
	ubt_path_release(&path);
	if (ret > 0)
		ret = 0;
	for (size_t i = 0; i < nr && !ret; i++) {
		bool changed;

		if (strlen(names[i]) == 0)
			continue; /* a name with a NUL byte cannot go through the xattr API */
		ret = ubt_xattr_set(rp->h, rp->root, ino, names[i], NULL, 0, 0, &changed);
		if (ret == -ENODATA)
			ret = 0;
	}
	free(names);
	return ret;
}

struct dentry_copy {
	u64 index;
	struct ubt_key loc;
	u16 len;
	char name[BTRFS_NAME_LEN];
};

/*
 * Remove names of directory @dir that lie in a range the log is authoritative for (DIR_LOG_INDEX
 * items) but are not in the log; every name when @del_all.
 */
static int replay_dir_deletes(struct replay *rp, u64 dir, bool del_all)
{
	struct ubt_path path;
	struct dentry_copy *ents = NULL;
	struct ubt_range_ { u64 start, end; } *ranges = NULL;
	size_t nr = 0, cap = 0, nr_ranges = 0, cap_ranges = 0;
	struct ubt_key key;
	int ret;

	ret = inode_exists(rp->root, dir, NULL);
	if (ret <= 0)
		return ret;
	ubt_path_init(&path);
	if (del_all) {
		ranges = malloc(sizeof(*ranges));
		if (!ranges)
			return -ENOMEM;
		ranges[0].start = 0;
		ranges[0].end = (u64)-1;
		nr_ranges = 1;
	} else {
		/* The ranges of dir indexes the log is authoritative for. */
		key = (struct ubt_key){ dir, BTRFS_DIR_LOG_INDEX_KEY, 0 };
		ret = ubt_search_ge(rp->log, &key, &path);
		while (ret == 0) {
			struct extent_buffer *leaf = ubt_path_leaf(&path);
			int slot = ubt_path_slot(&path);

			ubt_item_key(leaf, slot, &key);
			if (key.objectid != dir || key.type != BTRFS_DIR_LOG_INDEX_KEY)
				break;
			if (ubt_item_size(leaf, slot) < sizeof(struct btrfs_dir_log_item)) {
				ret = log_corrupt(rp, &key, "dir log item too small");
				break;
			}
			if (nr_ranges == cap_ranges) {
				size_t ncap = cap_ranges ? 2 * cap_ranges : 4;
				void *v = realloc(ranges, ncap * sizeof(*ranges));

				if (!v) {
					ret = -ENOMEM;
					break;
				}
				ranges = v;
				cap_ranges = ncap;
			}
			ranges[nr_ranges].start = key.offset;
			ranges[nr_ranges].end = get_le64(ubt_item_ptr(leaf, slot));
			if (ranges[nr_ranges].end < key.offset) {
				ret = log_corrupt(rp, &key, "dir log range ends before it starts");
				break;
			}
			nr_ranges++;
			ret = ubt_next_item(rp->log, &path);
		}
		ubt_path_release(&path);
		if (ret < 0)
			goto out;
		ret = 0;
	}
	/* Names of the subvolume's directory inside those ranges. */
	for (size_t r = 0; r < nr_ranges && !ret; r++) {
		key = (struct ubt_key){ dir, BTRFS_DIR_INDEX_KEY, ranges[r].start };
		ret = ubt_search_ge(rp->root, &key, &path);
		while (ret == 0) {
			struct extent_buffer *leaf = ubt_path_leaf(&path);
			int slot = ubt_path_slot(&path);
			struct ubt_dir_entry ent;
			u32 cursor = 0;

			ubt_item_key(leaf, slot, &key);
			if (key.objectid != dir || key.type != BTRFS_DIR_INDEX_KEY || key.offset > ranges[r].end)
				break;
			ret = ubt_dir_entry_next(rp->root, dir, &key, ubt_item_ptr(leaf, slot), ubt_item_size(leaf, slot),
						 &cursor, &ent);
			if (ret > 0)
				ret = -EUCLEAN;
			if (ret < 0)
				break;
			if (nr == cap) {
				size_t ncap = cap ? 2 * cap : 16;
				void *v = realloc(ents, ncap * sizeof(*ents));

				if (!v) {
					ret = -ENOMEM;
					break;
				}
				ents = v;
				cap = ncap;
			}
			ents[nr].index = key.offset;
			ents[nr].loc = ent.location;
			ents[nr].len = ent.name_len;
			memcpy(ents[nr].name, ent.name, ent.name_len);
			nr++;
			ret = ubt_next_item(rp->root, &path);
		}
		ubt_path_release(&path);
		if (ret > 0)
			ret = 0;
	}
	for (size_t i = 0; i < nr && !ret; i++) {
		key = (struct ubt_key){ dir, BTRFS_DIR_INDEX_KEY, ents[i].index };
		if (!del_all) {
			ret = find_entry(rp->log, &key, ents[i].name, ents[i].len, NULL, NULL);
			if (ret <= 0)
				continue; /* in the log (0), or an error (<0) ends the loop */
		}
		ret = drop_entry(rp, dir, ents[i].name, ents[i].len, &ents[i].loc, ents[i].index);
	}
out:
	ubt_path_release(&path);
	free(ents);
	free(ranges);
	return ret;
}

/* Copy a logged inode item over the subvolume's, keeping what replay recomputes. */
static int overwrite_inode(struct replay *rp, u64 ino, const struct btrfs_inode_item *logged)
{
	struct btrfs_inode_item ii = *logged, cur;
	bool is_dir = S_ISDIR(le32toh(logged->mode));
	int ret;

	ret = inode_exists(rp->root, ino, &cur);
	if (ret < 0)
		return ret;
	if (ret) {
		if (!memcmp(&cur, logged, sizeof(cur)))
			return 0;
		if (!logged->generation) {
			/* Logged only to say the inode exists: keep it, except a regular file's new size. */
			if (S_ISREG(le32toh(logged->mode)) && S_ISREG(le32toh(cur.mode)) && logged->size) {
				cur.size = logged->size;
				return put_inode(rp, ino, &cur);
			}
			return 0;
		}
		ii.nbytes = cur.nbytes;
		if (is_dir)
			ii.size = S_ISDIR(le32toh(cur.mode)) ? cur.size : 0;
	} else {
		ii.nbytes = 0;
		if (is_dir)
			ii.size = 0;
	}
	if (!ii.generation)
		put_le64(&ii.generation, rp->h->transid);
	return put_inode(rp, ino, &ii);
}

static int replay_inode(struct replay *rp, const struct ubt_key *key, const u8 *data, u32 size)
{
	const struct btrfs_inode_item *logged = (const void *)data;
	struct btrfs_inode_item ii;
	u32 mode;
	int ret;

	if (size < sizeof(*logged))
		return log_corrupt(rp, key, "inode item too small");
	if (!logged->nlink) {
		rp->ignore_ino = key->objectid;
		return 0;
	}
	mode = le32toh(logged->mode);
	ret = replay_xattr_deletes(rp, key->objectid);
	if (!ret && S_ISDIR(mode))
		ret = replay_dir_deletes(rp, key->objectid, false);
	if (!ret)
		ret = overwrite_inode(rp, key->objectid, logged);
	if (ret)
		return ret;
	if (S_ISREG(mode)) {
		/* Extents past the logged size go now (prealloc beyond EOF comes back with the log). */
		u64 nbytes, from;

		ret = ubt_inode_read(rp->root, key->objectid, &ii);
		if (ret)
			return ret;
		nbytes = get_le64(&ii.nbytes);
		from = ALIGN_UP(get_le64(&ii.size), (u64)rp->fs_info->sectorsize);
		ret = ubt_file_drop_extents(rp->h, rp->root, key->objectid, from, (u64)-1, &nbytes);
		if (ret)
			return ret;
		if (nbytes != get_le64(&ii.nbytes)) {
			put_le64(&ii.nbytes, nbytes);
			ret = put_inode(rp, key->objectid, &ii);
			if (ret)
				return ret;
		}
	}
	return set_add(&rp->fixup, key->objectid);
}

/* ---- step 2: names from DIR_INDEX items ---- */

static int replay_dir_index(struct replay *rp, const struct ubt_key *key, const u8 *data, u32 size)
{
	struct ubt_key ikey, found;
	struct ubt_dir_entry ent;
	u32 cursor = 0;
	bool exists, item_ok = false, index_ok = false;
	u8 ftype;
	int ret;

	ret = ubt_dir_entry_next(rp->log, key->objectid, key, data, size, &cursor, &ent);
	if (ret > 0)
		ret = log_corrupt(rp, key, "empty dir index item");
	if (ret < 0)
		return ret;
	ret = inode_exists(rp->root, key->objectid, NULL);
	if (ret < 0)
		return ret;
	if (!ret)
		return log_corrupt(rp, key, "name logged for a directory that does not exist");
	exists = false;
	if (ent.location.type == BTRFS_INODE_ITEM_KEY) {
		ret = inode_exists(rp->root, ent.location.objectid, NULL);
		if (ret < 0)
			return ret;
		exists = ret;
	}
	/* A different entry with this name (DIR_ITEM), or at this index with this name (DIR_INDEX). */
	ikey = (struct ubt_key){ key->objectid, BTRFS_DIR_ITEM_KEY, ubt_name_hash(ent.name, ent.name_len) };
	ret = find_entry(rp->root, &ikey, ent.name, ent.name_len, &found, &ftype);
	if (ret < 0)
		return ret;
	if (ret == 0) {
		item_ok = !ubt_key_cmp(&found, &ent.location) && ftype == ent.type;
		if (!item_ok && exists) {
			ret = drop_entry(rp, key->objectid, ent.name, ent.name_len, &found, (u64)-1);
			if (ret)
				return ret;
		}
	}
	ret = find_entry(rp->root, key, ent.name, ent.name_len, &found, &ftype);
	if (ret < 0)
		return ret;
	if (ret == 0) {
		index_ok = !ubt_key_cmp(&found, &ent.location) && ftype == ent.type;
		if (!index_ok && exists) {
			ret = drop_entry(rp, key->objectid, ent.name, ent.name_len, &found, key->offset);
			if (ret)
				return ret;
		}
	}
	if (item_ok && index_ok)
		return 0;
	if (ent.location.type != BTRFS_INODE_ITEM_KEY || !exists)
		return 0; /* names of inodes that were not logged are not replayed */
	/* A logged back reference adds the name in step 3. */
	ret = ref_in_log(rp->log, ent.location.objectid, key->objectid, ent.name, ent.name_len);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = add_name(rp, key->objectid, ent.location.objectid, ent.name, ent.name_len, ent.type, key->offset, true);
	return ret < 0 ? ret : 0;
}

/* ---- step 3: back references, xattrs, file extents ---- */

struct ref_entry {
	u64 parent, index;
	const char *name;
	u16 len;
};

/* Split a ref item into entries (pointers into @data). */
static int parse_refs(struct replay *rp, const struct ubt_key *key, const u8 *data, u32 size, struct ref_entry **out,
		      size_t *nr)
{
	const bool ext = key->type == BTRFS_INODE_EXTREF_KEY;
	const u32 hdr = ext ? sizeof(struct btrfs_inode_extref) : sizeof(struct btrfs_inode_ref);
	struct ref_entry *v = NULL;
	size_t n = 0, cap = 0;
	u32 cur = 0;

	while (cur < size) {
		const u8 *e = data + cur;
		u16 nlen;

		if (size - cur < hdr || size - cur - hdr < (nlen = get_le16(e + hdr - 2)) || !nlen ||
		    nlen > BTRFS_NAME_LEN) {
			free(v);
			return log_corrupt(rp, key, "malformed inode ref");
		}
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 4;
			struct ref_entry *nv = realloc(v, ncap * sizeof(*nv));

			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = ncap;
		}
		v[n].parent = ext ? get_le64(e) : key->offset;
		v[n].index = get_le64(e + (ext ? 8 : 0));
		v[n].name = (const char *)e + hdr;
		v[n].len = nlen;
		n++;
		cur += hdr + nlen;
	}
	if (!n) {
		free(v);
		return log_corrupt(rp, key, "empty inode ref");
	}
	*out = v;
	*nr = n;
	return 0;
}

/*
 * Names of @ino in the subvolume's ref item @key that @in_log does not list are unlinked. With
 * @only_parent, only entries of that parent (extref items mix parents).
 */
static int unlink_refs_not_in(struct replay *rp, u64 ino, const struct ubt_key *key, const struct ref_entry *in_log,
			      size_t nr_log, u64 only_parent, bool log_lookup)
{
	for (int rounds = 0; rounds < 65536; rounds++) {
		struct ref_entry *cur = NULL;
		size_t nr = 0, i;
		u8 *item;
		u32 size;
		int ret;

		ret = get_item(rp->root, key, &item, &size);
		if (ret)
			return ret < 0 ? ret : 0;
		ret = parse_refs(rp, key, item, size, &cur, &nr);
		if (ret) {
			free(item);
			return ret;
		}
		for (i = 0; i < nr; i++) {
			bool keep = false;

			if (only_parent != (u64)-1 && cur[i].parent != only_parent) {
				keep = true;
			} else if (log_lookup) {
				ret = ref_in_log(rp->log, ino, cur[i].parent, cur[i].name, cur[i].len);
				if (ret < 0)
					break;
				keep = ret;
			} else {
				for (size_t j = 0; j < nr_log && !keep; j++)
					keep = in_log[j].parent == cur[i].parent && in_log[j].len == cur[i].len &&
					       !memcmp(in_log[j].name, cur[i].name, cur[i].len);
			}
			if (!keep)
				break;
		}
		if (ret >= 0 && i < nr)
			ret = unlink_name(rp, cur[i].parent, ino, cur[i].name, cur[i].len, cur[i].index);
		else if (ret >= 0)
			ret = 1; /* nothing left to unlink */
		free(cur);
		free(item);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	return -EUCLEAN;
}

static u8 ftype_of(const struct btrfs_inode_item *ii)
{
	return ubt_mode_to_ftype(le32toh(ii->mode));
}

static int replay_inode_ref(struct replay *rp, const struct ubt_key *key, const u8 *data, u32 size)
{
	const u64 ino = key->objectid;
	struct btrfs_inode_item ii;
	struct ref_entry *refs = NULL;
	size_t nr = 0;
	int ret;

	ret = parse_refs(rp, key, data, size, &refs, &nr);
	if (ret)
		return ret;
	ret = inode_exists(rp->root, ino, &ii);
	if (ret <= 0) {
		if (!ret)
			ret = log_corrupt(rp, key, "back reference of an inode that does not exist");
		goto out;
	}
	for (size_t i = 0; i < nr; i++) {
		const struct ref_entry *r = &refs[i];
		struct ubt_key k, loc;
		u8 type;
		bool in_dir = false;

		/* A parent that was not logged and does not exist: the name cannot be added. */
		ret = inode_exists(rp->root, r->parent, NULL);
		if (ret <= 0)
			goto out;
		if (r->parent == ino) {
			ret = 0; /* the subvolume's root directory */
			goto out;
		}
		k = (struct ubt_key){ r->parent, BTRFS_DIR_INDEX_KEY, r->index };
		ret = find_entry(rp->root, &k, r->name, r->len, &loc, &type);
		if (ret < 0)
			goto out;
		if (ret == 0 && loc.objectid == ino) {
			k = (struct ubt_key){ r->parent, BTRFS_DIR_ITEM_KEY, ubt_name_hash(r->name, r->len) };
			ret = find_entry(rp->root, &k, r->name, r->len, &loc, &type);
			if (ret < 0)
				goto out;
			in_dir = ret == 0 && loc.objectid == ino;
		}
		if (in_dir)
			continue;
		/* Other names of @ino in this directory that the log does not have go. */
		k = (struct ubt_key){ ino, BTRFS_INODE_REF_KEY, r->parent };
		ret = unlink_refs_not_in(rp, ino, &k, NULL, 0, (u64)-1, true);
		if (!ret) {
			k = (struct ubt_key){ ino, BTRFS_INODE_EXTREF_KEY, ubt_extref_hash(r->parent, r->name, r->len) };
			ret = unlink_refs_not_in(rp, ino, &k, NULL, 0, r->parent, true);
		}
		if (ret)
			goto out;
		/* Whatever holds this index or this name in the directory goes. */
		k = (struct ubt_key){ r->parent, BTRFS_DIR_INDEX_KEY, r->index };
		ret = find_entry(rp->root, &k, r->name, r->len, &loc, &type);
		if (ret == 0)
			ret = drop_entry(rp, r->parent, r->name, r->len, &loc, r->index);
		if (ret < 0)
			goto out;
		k = (struct ubt_key){ r->parent, BTRFS_DIR_ITEM_KEY, ubt_name_hash(r->name, r->len) };
		ret = find_entry(rp->root, &k, r->name, r->len, &loc, &type);
		if (ret == 0)
			ret = drop_entry(rp, r->parent, r->name, r->len, &loc, (u64)-1);
		if (ret < 0)
			goto out;
		ret = add_name(rp, r->parent, ino, r->name, r->len, ftype_of(&ii), r->index, false);
		if (ret < 0)
			goto out;
	}
	/* Names in the subvolume's item with this key that the logged item does not have go. */
	ret = unlink_refs_not_in(rp, ino, key, refs, nr, (u64)-1, false);
	if (!ret)
		ret = put_item(rp, key, data, size);
	if (!ret)
		ret = set_add(&rp->fixup, ino);
out:
	free(refs);
	return ret;
}

/*
 * Copy the log's checksums of disk range [@start, +@len) into the csum tree, replacing what the
 * csum tree has for the sectors the log covers (an extent can be referenced whole by one file
 * extent item and in part by another: no overlapping csum items).
 */
static int copy_csums(struct replay *rp, u64 start, u64 len)
{
	struct ubt_fs_info *fs_info = rp->fs_info;
	const u32 ss = fs_info->sectorsize, cs = (u32)fs_info->csum_size;
	const u64 nsec = len / ss;
	struct ubt_key key = { BTRFS_EXTENT_CSUM_OBJECTID, BTRFS_EXTENT_CSUM_KEY, start };
	struct ubt_path path;
	u8 *sums;
	bool *have;
	int ret;

	if (!nsec)
		return 0;
	sums = calloc(nsec, cs);
	have = calloc(nsec, sizeof(*have));
	if (!sums || !have) {
		ret = -ENOMEM;
		goto out_free;
	}
	ubt_path_init(&path);
	ret = ubt_search_le(rp->log, &key, &path);
	if (ret == 1)
		ret = ubt_search_ge(rp->log, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		struct ubt_key k;
		u32 n;

		ubt_item_key(leaf, slot, &k);
		if (k.objectid > BTRFS_EXTENT_CSUM_OBJECTID ||
		    (k.objectid == BTRFS_EXTENT_CSUM_OBJECTID && k.type > BTRFS_EXTENT_CSUM_KEY) ||
		    (k.objectid == BTRFS_EXTENT_CSUM_OBJECTID && k.type == BTRFS_EXTENT_CSUM_KEY &&
		     k.offset >= start + len))
			break;
		if (k.objectid == BTRFS_EXTENT_CSUM_OBJECTID && k.type == BTRFS_EXTENT_CSUM_KEY) {
			const u8 *p = ubt_item_ptr(leaf, slot);

			if (!IS_ALIGNED(k.offset, (u64)ss) || ubt_item_size(leaf, slot) % cs) {
				ret = log_corrupt(rp, &k, "misaligned checksum item");
				break;
			}
			n = ubt_item_size(leaf, slot) / cs;
			for (u32 i = 0; i < n; i++) {
				u64 at = k.offset + (u64)i * ss;

				if (at < start || at >= start + len)
					continue;
				memcpy(sums + (at - start) / ss * cs, p + (size_t)i * cs, cs);
				have[(at - start) / ss] = true;
			}
		}
		ret = ubt_next_item(rp->log, &path);
	}
	ubt_path_release(&path);
	if (ret > 0)
		ret = 0;
	for (u64 i = 0; i < nsec && !ret;) {
		u64 j = i;

		if (!have[i]) {
			i++;
			continue;
		}
		while (j < nsec && have[j])
			j++;
		ret = ubt_alloc_del_csums(rp->h, start + i * ss, (j - i) * ss);
		if (!ret)
			ret = ubt_csum_insert_sums(rp->h, start + i * ss, sums + i * cs, j - i);
		i = j;
	}
out_free:
	free(sums);
	free(have);
	return ret;
}

static int replay_extent(struct replay *rp, const struct ubt_key *key, const u8 *data, u32 size)
{
	const struct btrfs_file_extent_item *fe = (const void *)data;
	const u64 ino = key->objectid, start = key->offset;
	struct btrfs_inode_item ii;
	u64 end, add, nbytes;
	bool regular;
	int ret;

	if (size < BTRFS_FILE_EXTENT_INLINE_DATA_START)
		return log_corrupt(rp, key, "file extent item too small");
	regular = fe->type == BTRFS_FILE_EXTENT_REG || fe->type == BTRFS_FILE_EXTENT_PREALLOC;
	if (regular) {
		if (size != sizeof(*fe))
			return log_corrupt(rp, key, "file extent item has the wrong size");
		add = le64toh(fe->num_bytes);
		if (!add || !IS_ALIGNED(start | add, (u64)rp->fs_info->sectorsize) || start + add < start)
			return log_corrupt(rp, key, "file extent range is not sector aligned");
		end = start + add;
		if (fe->disk_bytenr) {
			u64 dlen = le64toh(fe->disk_num_bytes);

			if (!dlen || dlen > UBT_MAX_EXTENT_SIZE ||
			    (!fe->compression && (le64toh(fe->offset) > dlen || add > dlen - le64toh(fe->offset))))
				return log_corrupt(rp, key, "file extent outside its disk extent");
		} else {
			add = 0;
		}
	} else if (fe->type == BTRFS_FILE_EXTENT_INLINE) {
		add = le64toh(fe->ram_bytes);
		if (start != 0 || add > rp->fs_info->sectorsize)
			return log_corrupt(rp, key, "inline extent not at offset 0 or too large");
		end = ALIGN_UP(start + add, (u64)rp->fs_info->sectorsize);
	} else {
		return 0;
	}
	ret = inode_exists(rp->root, ino, &ii);
	if (ret <= 0)
		return ret < 0 ? ret : log_corrupt(rp, key, "file extent of an inode that does not exist");
	if (regular) {
		u8 *cur;
		u32 cur_size;

		ret = get_item(rp->root, key, &cur, &cur_size);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			bool same = cur_size == size && !memcmp(cur, data, size);

			free(cur);
			if (same)
				return 0;
		}
	}
	nbytes = get_le64(&ii.nbytes);
	ret = ubt_file_drop_extents(rp->h, rp->root, ino, start, end, &nbytes);
	if (ret)
		return ret;
	if (regular && !fe->disk_bytenr && (rp->fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES)) {
		/* A hole: nothing to insert. */
	} else {
		ret = ubt_insert_item(rp->h, rp->root, key, data, size);
		if (ret)
			return ret;
	}
	if (regular && fe->disk_bytenr) {
		u64 bytenr = le64toh(fe->disk_bytenr), len = le64toh(fe->disk_num_bytes);
		struct claimed *c = find_claimed(rp, bytenr);

		ret = ubt_add_data_ref(rp->h, bytenr, len, rp->root->objectid, ino, start - le64toh(fe->offset), 0);
		if (ret)
			return ret;
		if (c) {
			if (c->len != len)
				return log_corrupt(rp, key, "data extent referenced with two different lengths");
			c->referenced = true;
		}
		if (fe->compression)
			ret = copy_csums(rp, bytenr, len);
		else
			ret = copy_csums(rp, bytenr + le64toh(fe->offset), le64toh(fe->num_bytes));
		if (ret)
			return ret;
	}
	/* Re-read: dropping extents does not touch the inode item, but be exact about the rest. */
	ret = ubt_inode_read(rp->root, ino, &ii);
	if (ret)
		return ret;
	put_le64(&ii.nbytes, nbytes + add);
	return put_inode(rp, ino, &ii);
}

/* ---- step 4: link counts ---- */

static int count_refs(struct replay *rp, u64 ino, u32 *nlink)
{
	struct ubt_key key = { ino, BTRFS_INODE_REF_KEY, 0 };
	struct ubt_path path;
	int ret;

	*nlink = 0;
	ubt_path_init(&path);
	ret = ubt_search_ge(rp->root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		const u8 *p = ubt_item_ptr(leaf, slot);
		u32 size = ubt_item_size(leaf, slot), cur = 0, hdr;

		ubt_item_key(leaf, slot, &key);
		if (key.objectid != ino || key.type > BTRFS_INODE_EXTREF_KEY)
			break;
		if (key.type != BTRFS_INODE_REF_KEY && key.type != BTRFS_INODE_EXTREF_KEY) {
			ret = ubt_next_item(rp->root, &path);
			continue;
		}
		hdr = key.type == BTRFS_INODE_EXTREF_KEY ? sizeof(struct btrfs_inode_extref)
							 : sizeof(struct btrfs_inode_ref);
		while (cur < size) {
			u16 nlen;

			if (size - cur < hdr || size - cur - hdr < (nlen = get_le16(p + cur + hdr - 2))) {
				ubt_inode_corrupt(rp->root, ino, &key, "ref entry at %u overruns the item", cur);
				ret = -EUCLEAN;
				goto out;
			}
			(*nlink)++;
			cur += hdr + nlen;
		}
		ret = ubt_next_item(rp->root, &path);
	}
out:
	ubt_path_release(&path);
	return ret < 0 ? ret : 0;
}

static int fixup_link_counts(struct replay *rp)
{
	while (rp->fixup.nr) {
		u64 ino = rp->fixup.v[--rp->fixup.nr];
		struct btrfs_inode_item ii;
		u32 nlink;
		int ret;

		ret = inode_exists(rp->root, ino, &ii);
		if (ret < 0)
			return ret;
		if (!ret)
			continue;
		ret = count_refs(rp, ino, &nlink);
		if (ret)
			return ret;
		if (nlink != le32toh(ii.nlink)) {
			put_le32(&ii.nlink, nlink);
			ret = put_inode(rp, ino, &ii);
			if (ret)
				return ret;
		}
		if (nlink == 0) {
			if (S_ISDIR(le32toh(ii.mode))) {
				ret = replay_dir_deletes(rp, ino, true);
				if (ret)
					return ret;
			}
			ret = ubt_orphan_add(rp->h, rp->root, ino);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* ---- driver ---- */

enum stage { STAGE_INODES, STAGE_DIR_INDEX, STAGE_ALL };

static int replay_item(struct replay *rp, enum stage stage, const struct ubt_key *key, const u8 *data, u32 size)
{
	if (key->objectid < BTRFS_FIRST_FREE_OBJECTID || key->objectid > BTRFS_LAST_FREE_OBJECTID)
		return 0; /* checksums and other non-inode items */
	if (key->type == BTRFS_INODE_ITEM_KEY && stage == STAGE_INODES)
		return replay_inode(rp, key, data, size);
	if (key->objectid == rp->ignore_ino)
		return 0;
	switch (stage) {
	case STAGE_INODES:
		return 0;
	case STAGE_DIR_INDEX:
		return key->type == BTRFS_DIR_INDEX_KEY ? replay_dir_index(rp, key, data, size) : 0;
	case STAGE_ALL:
		switch (key->type) {
		case BTRFS_XATTR_ITEM_KEY:
			return put_item(rp, key, data, size);
		case BTRFS_INODE_REF_KEY:
		case BTRFS_INODE_EXTREF_KEY:
			return replay_inode_ref(rp, key, data, size);
		case BTRFS_EXTENT_DATA_KEY:
			return replay_extent(rp, key, data, size);
		default:
			return 0;
		}
	}
	return 0;
}

/* Walk every item of the log tree in key order, each copied out of the leaf first. */
static int replay_stage(struct replay *rp, enum stage stage)
{
	struct ubt_key key = { 0, 0, 0 };
	struct ubt_path path;
	u8 *buf = NULL;
	size_t cap = 0;
	int ret;

	rp->ignore_ino = 0;
	ubt_path_init(&path);
	ret = ubt_search_ge(rp->log, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		u32 size = ubt_item_size(leaf, slot);

		ubt_item_key(leaf, slot, &key);
		if (size > cap) {
			u8 *nb = realloc(buf, size);

			if (!nb) {
				ret = -ENOMEM;
				break;
			}
			buf = nb;
			cap = size;
		}
		memcpy(buf, ubt_item_ptr(leaf, slot), size);
		ret = replay_item(rp, stage, &key, buf, size);
		if (ret)
			break;
		ret = ubt_next_item(rp->log, &path);
	}
	ubt_path_release(&path);
	free(buf);
	return ret < 0 ? ret : 0;
}

struct log_ref {
	u64 subvol;
	struct ubt_root log;
};

static int collect_logs(struct ubt_fs_info *fs_info, struct ubt_root *log_root_tree, struct log_ref **out,
			size_t *nr_out)
{
	struct ubt_key key = { BTRFS_TREE_LOG_OBJECTID, BTRFS_ROOT_ITEM_KEY, 0 };
	struct ubt_path path;
	struct log_ref *v = NULL;
	size_t nr = 0, cap = 0;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(log_root_tree, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		struct btrfs_root_item ri;
		u32 size = ubt_item_size(leaf, slot);

		ubt_item_key(leaf, slot, &key);
		if (key.objectid != BTRFS_TREE_LOG_OBJECTID || key.type != BTRFS_ROOT_ITEM_KEY)
			break;
		if (size < BTRFS_ROOT_ITEM_V1_SIZE) {
			ubt_err("log root tree: root item of subvolume %" PRIu64 " too small", key.offset);
			ret = -EUCLEAN;
			break;
		}
		memset(&ri, 0, sizeof(ri));
		memcpy(&ri, ubt_item_ptr(leaf, slot), ubt_min(size, (u32)sizeof(ri)));
		if (!ri.bytenr || ri.level >= BTRFS_MAX_LEVEL) {
			ubt_err("log root tree: invalid log root for subvolume %" PRIu64, key.offset);
			ret = -EUCLEAN;
			break;
		}
		if (nr == cap) {
			size_t ncap = cap ? 2 * cap : 4;
			struct log_ref *nv = realloc(v, ncap * sizeof(*nv));

			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		memset(&v[nr], 0, sizeof(v[nr]));
		v[nr].subvol = key.offset;
		v[nr].log.fs_info = fs_info;
		v[nr].log.objectid = BTRFS_TREE_LOG_OBJECTID;
		v[nr].log.bytenr = le64toh(ri.bytenr);
		v[nr].log.generation = le64toh(ri.generation);
		v[nr].log.level = ri.level;
		nr++;
		ret = ubt_next_item(log_root_tree, &path);
	}
	ubt_path_release(&path);
	if (ret < 0) {
		free(v);
		return ret;
	}
	*out = v;
	*nr_out = nr;
	return 0;
}

int ubt_replay_log(struct ubt_fs_info *fs_info)
{
	struct btrfs_super_block *sb = &fs_info->super;
	struct ubt_root log_root_tree = { 0 };
	struct replay rp = { .fs_info = fs_info };
	struct ubt_trans_handle h;
	struct log_ref *logs = NULL;
	struct ubt_root **roots = NULL;
	size_t nr_logs = 0, pinned_blocks;
	bool in_trans = false;
	int ret;

	if (!le64toh(sb->log_root))
		return 0;
	if (!fs_info->alloc_info)
		return -EROFS;
	log_root_tree.fs_info = fs_info;
	log_root_tree.objectid = BTRFS_TREE_LOG_OBJECTID;
	log_root_tree.bytenr = le64toh(sb->log_root);
	log_root_tree.level = sb->log_root_level;
	ubt_info("replaying the log tree (changes fsync'd after generation %" PRIu64 ")", fs_info->generation);

	/* Step 0: the log root tree's blocks, then each log tree's blocks and new data extents. */
	ret = pin_tree(&rp, log_root_tree.bytenr, 0, log_root_tree.level, NULL, false, 0);
	if (ret)
		goto out;
	ret = collect_logs(fs_info, &log_root_tree, &logs, &nr_logs);
	if (ret)
		goto out;
	roots = calloc(nr_logs ? nr_logs : 1, sizeof(*roots));
	if (!roots) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nr_logs; i++) {
		ret = pin_tree(&rp, logs[i].log.bytenr, logs[i].log.generation, logs[i].log.level, NULL, true, 0);
		if (ret)
			goto out;
	}

	ret = ubt_trans_start(fs_info, &h);
	if (ret)
		goto out;
	in_trans = true;
	rp.h = &h;
	for (size_t i = 0; i < nr_logs; i++) {
		ret = ubt_read_fs_root(fs_info, logs[i].subvol, &roots[i]);
		if (ret == -ENOENT) {
			ubt_warn("log tree of subvolume %" PRIu64 " skipped: the subvolume no longer exists", logs[i].subvol);
			roots[i] = NULL;
			ret = 0;
			continue;
		}
		if (ret)
			goto out;
		rp.root = roots[i];
		rp.log = &logs[i].log;
		ret = replay_stage(&rp, STAGE_INODES);
		if (!ret)
			ret = replay_stage(&rp, STAGE_DIR_INDEX);
		if (!ret)
			ret = replay_stage(&rp, STAGE_ALL);
		if (!ret)
			ret = fixup_link_counts(&rp);
		if (ret) {
			ubt_err("log replay into subvolume %" PRIu64 " failed: %s", logs[i].subvol, strerror(-ret));
			goto out;
		}
	}
	/* Claimed extents nobody referenced, and the log's own blocks, are free after this commit. */
	for (size_t i = 0; i < rp.nr_claimed; i++) {
		if (rp.claimed[i].referenced)
			continue;
		ret = ubt_alloc_unclaim_data_extent(fs_info, rp.claimed[i].bytenr, rp.claimed[i].len);
		if (ret)
			goto out;
	}
	rp.nr_claimed = 0;
	pinned_blocks = rp.blocks.nr;
	for (size_t i = 0; i < pinned_blocks; i++) {
		ret = ubt_alloc_unexclude_range(fs_info, rp.blocks.v[i], fs_info->nodesize);
		if (ret)
			goto out;
		rp.blocks.v[i] = 0;
	}
	rp.blocks.nr = 0;
	sb->log_root = 0;
	sb->log_root_level = 0;
	in_trans = false;
	ret = ubt_trans_commit(&h);
	if (ret) {
		ubt_err("log replay: commit failed: %s", strerror(-ret));
		goto out;
	}
	/* Inodes the log left without links. */
	for (size_t i = 0; i < nr_logs; i++) {
		if (!roots[i])
			continue;
		ret = ubt_orphan_cleanup(roots[i]);
		if (ret)
			goto out;
	}
	ubt_info("log tree replayed: %zu subvolume log(s)", nr_logs);
out:
	if (in_trans) {
		if (!h.error)
			h.error = ret;
		ubt_trans_end(&h); /* aborts: nothing of the replay reaches the disk */
	} else if (ret && rp.blocks.nr) {
		for (size_t i = 0; i < rp.blocks.nr; i++)
			ubt_alloc_unexclude_range(fs_info, rp.blocks.v[i], fs_info->nodesize);
	}
	if (!in_trans && ret)
		for (size_t i = 0; i < rp.nr_claimed; i++)
			if (!rp.claimed[i].referenced)
				ubt_alloc_unclaim_data_extent(fs_info, rp.claimed[i].bytenr, rp.claimed[i].len);
	free(rp.fixup.v);
	free(rp.blocks.v);
	free(rp.claimed);
	free(logs);
	free(roots);
	return ret;
}
