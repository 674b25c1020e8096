/*
 * extent-tree.c — the extent tree's items and backrefs, through delayed references.
 *
 * Every reference change (a new tree block, a COW's inc/dec of a node's children or a leaf's file
 * extents, a data ref added or dropped by the inode layer) is queued in memory, merged per extent
 * (struct ubt_dhead) and per backref (struct ubt_dref), and applied by ubt_run_delayed_refs at
 * commit: inserting EXTENT_ITEM / METADATA_ITEM with inline refs, adding refs inline when they fit
 * (else as keyed items), dropping refs, and deleting an extent with its last ref (space pinned
 * until commit, block group usage and the free space tree updated, data checksums deleted).
 *
 * Inline ref order (the kernel's tree checker): types ascending; within a type, descending by
 * "sequence" — the root id (TREE_BLOCK_REF), the parent (SHARED_*), or the data ref hash.
 */
#include <stdlib.h>

#include "../codec/csum.h"
#include "../ctree/eb-cache.h"
#include "../util/messages.h"
#include "alloc-internal.h"

struct tree_block_info {
	struct btrfs_disk_key key;
	u8 level;
} __attribute__((packed));

#define EXTENT_ITEM_SIZE ((u32)sizeof(struct btrfs_extent_item))
#define DATA_REF_SIZE 28u /* root, objectid, offset, count */

u64 ubt_hash_extent_data_ref(u64 root, u64 owner, u64 offset)
{
	u32 high = ~(u32)0, low = ~(u32)0;
	u64 le;

	le = htole64(root);
	high = ubt_crc32c(high, &le, sizeof(le));
	le = htole64(owner);
	low = ubt_crc32c(low, &le, sizeof(le));
	le = htole64(offset);
	low = ubt_crc32c(low, &le, sizeof(le));
	return ((u64)high << 31) ^ (u64)low;
}

static u32 inline_ref_size(u8 type)
{
	switch (type) {
	case BTRFS_TREE_BLOCK_REF_KEY:
	case BTRFS_SHARED_BLOCK_REF_KEY:
		return 9;
	case BTRFS_EXTENT_DATA_REF_KEY:
		return 1 + DATA_REF_SIZE;
	case BTRFS_SHARED_DATA_REF_KEY:
		return 13;
	default:
		return 0;
	}
}

static u64 dref_seq(const struct ubt_dref *r)
{
	if (r->type == BTRFS_EXTENT_DATA_REF_KEY)
		return ubt_hash_extent_data_ref(r->root, r->owner, r->offset);
	return r->root;
}

/* Sequence of the inline ref at @p (validated type). */
static u64 iref_seq(const u8 *p)
{
	if (p[0] == BTRFS_EXTENT_DATA_REF_KEY)
		return ubt_hash_extent_data_ref(get_le64(p + 1), get_le64(p + 9), get_le64(p + 17));
	return get_le64(p + 1);
}

static bool iref_matches(const u8 *p, const struct ubt_dref *r)
{
	if (p[0] != r->type)
		return false;
	if (r->type == BTRFS_EXTENT_DATA_REF_KEY)
		return get_le64(p + 1) == r->root && get_le64(p + 9) == r->owner && get_le64(p + 17) == r->offset;
	return get_le64(p + 1) == r->root;
}

static u64 iref_count(const u8 *p)
{
	if (p[0] == BTRFS_EXTENT_DATA_REF_KEY)
		return get_le32(p + 25);
	if (p[0] == BTRFS_SHARED_DATA_REF_KEY)
		return get_le32(p + 9);
	return 1;
}

static void iref_set_count(u8 *p, u64 n)
{
	if (p[0] == BTRFS_EXTENT_DATA_REF_KEY)
		put_le32(p + 25, (u32)n);
	else if (p[0] == BTRFS_SHARED_DATA_REF_KEY)
		put_le32(p + 9, (u32)n);
}

static void iref_write(u8 *p, const struct ubt_dref *r, u64 count)
{
	p[0] = r->type;
	put_le64(p + 1, r->root);
	if (r->type == BTRFS_EXTENT_DATA_REF_KEY) {
		put_le64(p + 9, r->owner);
		put_le64(p + 17, r->offset);
		put_le32(p + 25, (u32)count);
	} else if (r->type == BTRFS_SHARED_DATA_REF_KEY) {
		put_le32(p + 9, (u32)count);
	}
}

static u32 max_extent_item_size(struct ubt_fs_info *fs_info)
{
	return ((fs_info->nodesize - (u32)sizeof(struct btrfs_header)) >> 4) - (u32)sizeof(struct btrfs_item);
}

/* ---- delayed ref queue ---- */

static size_t head_bucket(u64 bytenr)
{
	return (size_t)((bytenr >> 12) * 0x9E3779B97F4A7C15ULL >> 40) & (UBT_DHEAD_BUCKETS - 1);
}

struct ubt_dhead *ubt_find_head(struct ubt_alloc_info *ai, u64 bytenr)
{
	for (struct ubt_dhead *hd = ai->heads[head_bucket(bytenr)]; hd; hd = hd->hash_next)
		if (hd->bytenr == bytenr)
			return hd;
	return NULL;
}

struct ubt_dhead *ubt_get_head(struct ubt_alloc_info *ai, u64 bytenr, u64 num_bytes, bool is_data, int level)
{
	struct ubt_dhead *hd = ubt_find_head(ai, bytenr);
	size_t b;

	if (hd)
		return hd;
	hd = calloc(1, sizeof(*hd));
	if (!hd)
		return NULL;
	hd->bytenr = bytenr;
	hd->num_bytes = num_bytes;
	hd->is_data = is_data;
	hd->level = level;
	b = head_bucket(bytenr);
	hd->hash_next = ai->heads[b];
	ai->heads[b] = hd;
	ai->nr_heads++;
	return hd;
}

static void free_head(struct ubt_dhead *hd)
{
	struct ubt_dref *r, *next;

	for (r = hd->refs; r; r = next) {
		next = r->next;
		free(r);
	}
	free(hd);
}

void ubt_drop_all_heads(struct ubt_alloc_info *ai)
{
	for (size_t b = 0; b < UBT_DHEAD_BUCKETS; b++) {
		struct ubt_dhead *hd, *next;

		for (hd = ai->heads[b]; hd; hd = next) {
			next = hd->hash_next;
			free_head(hd);
		}
		ai->heads[b] = NULL;
	}
	ai->nr_heads = 0;
}

static int add_dref(struct ubt_dhead *hd, u8 type, u64 root, u64 owner, u64 offset, s64 mod)
{
	struct ubt_dref **pp, *r;

	for (pp = &hd->refs; *pp; pp = &(*pp)->next) {
		r = *pp;
		if (r->type == type && r->root == root && r->owner == owner && r->offset == offset) {
			r->mod += mod;
			if (!r->mod) {
				*pp = r->next;
				free(r);
			}
			return 0;
		}
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->type = type;
	r->root = root;
	r->owner = owner;
	r->offset = offset;
	r->mod = mod;
	r->next = hd->refs;
	hd->refs = r;
	return 0;
}

int ubt_queue_ref(struct ubt_fs_info *fs_info, u64 bytenr, u64 num_bytes, bool is_data, int level, u8 type,
		  u64 root, u64 owner, u64 offset, s64 mod)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_dhead *hd;

	if (ai->broken)
		return -EROFS;
	hd = ubt_get_head(ai, bytenr, num_bytes, is_data, level);
	if (!hd)
		return -ENOMEM;
	if (hd->is_data != is_data || hd->num_bytes != num_bytes) {
		ubt_err("extent %llu: conflicting reference changes (%s %llu bytes, then %s %llu bytes)",
			(unsigned long long)bytenr, hd->is_data ? "data" : "tree block",
			(unsigned long long)hd->num_bytes, is_data ? "data" : "tree block", (unsigned long long)num_bytes);
		return -EUCLEAN;
	}
	if (is_data && mod > 0 && !hd->must_insert) {
		bool fresh;

		pthread_mutex_lock(&ai->lock);
		fresh = rs_contains(&ai->reserved_data, bytenr, num_bytes);
		if (fresh)
			rs_remove(&ai->reserved_data, bytenr, num_bytes);
		pthread_mutex_unlock(&ai->lock);
		if (fresh)
			hd->must_insert = true;
	}
	return add_dref(hd, type, root, owner, offset, mod);
}

/* ---- extent item access ---- */

/* Find the extent item of @hd (skinny or fat form). 0 found, -ENOENT, <0. */
static int find_extent_item(struct ubt_trans_handle *h, const struct ubt_dhead *hd, struct ubt_path *path,
			    int ins_len, bool *skinny_out)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	bool skinny = !hd->is_data && ainfo(fs_info)->skinny;
	int ret;

	for (int attempt = 0; attempt < (hd->is_data ? 1 : 2); attempt++) {
		struct ubt_key key = { hd->bytenr, skinny ? BTRFS_METADATA_ITEM_KEY : BTRFS_EXTENT_ITEM_KEY,
				       skinny ? (u64)hd->level : hd->num_bytes };

		ubt_path_init(path);
		ret = ubt_search_slot_write(h, &fs_info->extent_root, &key, path, ins_len);
		if (ret <= 0) {
			*skinny_out = skinny;
			return ret;
		}
		ubt_path_release(path);
		skinny = !skinny;
	}
	return -ENOENT;
}

/* Offset of the first inline ref and a validation of the whole item. */
static int parse_extent_item(const struct ubt_dhead *hd, const u8 *item, u32 size, bool skinny, u32 *refs_off)
{
	u64 flags;
	u32 off = EXTENT_ITEM_SIZE;

	if (size < EXTENT_ITEM_SIZE)
		goto bad;
	flags = get_le64(item + 16);
	if (flags & BTRFS_EXTENT_FLAG_TREE_BLOCK) {
		if (hd->is_data)
			goto bad;
		if (!skinny)
			off += (u32)sizeof(struct tree_block_info);
	} else if (!(flags & BTRFS_EXTENT_FLAG_DATA) || !hd->is_data) {
		goto bad;
	}
	*refs_off = off;
	while (off < size) {
		u32 isz = inline_ref_size(item[off]);

		if (!isz || off + isz > size)
			goto bad;
		off += isz;
	}
	if (off != size)
		goto bad;
	return 0;
bad:
	ubt_err("extent item %llu is malformed (%u bytes)", (unsigned long long)hd->bytenr, size);
	return -EUCLEAN;
}

/* Walk the inline refs for @r: *pos is the match, or where it would be inserted. */
static bool find_inline(const u8 *item, u32 size, u32 refs_off, const struct ubt_dref *r, u32 *pos)
{
	u64 seq = dref_seq(r);
	u32 off = refs_off;

	while (off < size) {
		u8 t = item[off];

		if (t > r->type)
			break;
		if (t == r->type) {
			if (iref_matches(item + off, r)) {
				*pos = off;
				return true;
			}
			if (iref_seq(item + off) < seq)
				break;
		}
		off += inline_ref_size(t);
	}
	*pos = off;
	return false;
}

static struct ubt_key keyed_ref_key(const struct ubt_dhead *hd, const struct ubt_dref *r)
{
	struct ubt_key key = { hd->bytenr, r->type, r->root };

	if (r->type == BTRFS_EXTENT_DATA_REF_KEY)
		key.offset = ubt_hash_extent_data_ref(r->root, r->owner, r->offset);
	return key;
}

static bool keyed_matches(const struct extent_buffer *leaf, int slot, const struct ubt_dref *r)
{
	const u8 *p = ubt_item_ptr(leaf, slot);

	if (r->type != BTRFS_EXTENT_DATA_REF_KEY)
		return true;
	if (ubt_item_size(leaf, slot) < DATA_REF_SIZE)
		return false;
	return get_le64(p) == r->root && get_le64(p + 8) == r->owner && get_le64(p + 16) == r->offset;
}

static u32 keyed_size(u8 type)
{
	return type == BTRFS_EXTENT_DATA_REF_KEY ? DATA_REF_SIZE : type == BTRFS_SHARED_DATA_REF_KEY ? 4 : 0;
}

static u64 keyed_count(const struct extent_buffer *leaf, int slot, u8 type)
{
	const u8 *p = ubt_item_ptr(leaf, slot);
	u32 size = ubt_item_size(leaf, slot);

	if (type == BTRFS_EXTENT_DATA_REF_KEY)
		return size >= DATA_REF_SIZE ? get_le32(p + 24) : 0;
	if (type == BTRFS_SHARED_DATA_REF_KEY)
		return size >= 4 ? get_le32(p) : 0;
	return 1;
}

static void keyed_set_count(struct extent_buffer *leaf, int slot, u8 type, u64 n)
{
	u8 *p = ubt_item_ptr(leaf, slot);

	if (type == BTRFS_EXTENT_DATA_REF_KEY)
		put_le32(p + 24, (u32)n);
	else if (type == BTRFS_SHARED_DATA_REF_KEY)
		put_le32(p, (u32)n);
}

/* Add @n to the keyed backref @r (creating it). */
static int keyed_add(struct ubt_trans_handle *h, const struct ubt_dhead *hd, const struct ubt_dref *r, u64 n)
{
	struct ubt_root *root = &h->fs_info->extent_root;
	struct ubt_key key = keyed_ref_key(hd, r);
	u32 size = keyed_size(r->type);
	struct ubt_path path;
	int ret;

	for (;;) {
		ubt_path_init(&path);
		ret = ubt_search_slot_write(h, root, &key, &path, (int)(size + sizeof(struct btrfs_item)));
		if (ret < 0)
			goto out;
		if (ret == 0) {
			if (!keyed_matches(path.nodes[0], path.slots[0], r)) {
				/* Hash collision: the kernel moves on to the next offset. */
				ubt_path_release(&path);
				key.offset++;
				continue;
			}
			if (!keyed_size(r->type)) {
				ubt_err("extent %llu: backref (%u %llu) added twice", (unsigned long long)hd->bytenr,
					r->type, (unsigned long long)r->root);
				ret = -EUCLEAN;
				goto out;
			}
			keyed_set_count(path.nodes[0], path.slots[0], r->type,
					keyed_count(path.nodes[0], path.slots[0], r->type) + n);
			ubt_mark_buffer_dirty(h, path.nodes[0]);
			goto out;
		}
		break;
	}
	ret = ubt_insert_empty_items(h, root, &path, &key, &size, 1);
	if (!ret && size) {
		u8 *p = ubt_item_ptr(path.nodes[0], path.slots[0]);

		if (r->type == BTRFS_EXTENT_DATA_REF_KEY) {
			put_le64(p, r->root);
			put_le64(p + 8, r->owner);
			put_le64(p + 16, r->offset);
			put_le32(p + 24, (u32)n);
		} else {
			put_le32(p, (u32)n);
		}
		ubt_mark_buffer_dirty(h, path.nodes[0]);
	}
out:
	ubt_path_release(&path);
	return ret;
}

static int keyed_drop(struct ubt_trans_handle *h, const struct ubt_dhead *hd, const struct ubt_dref *r, u64 n)
{
	struct ubt_root *root = &h->fs_info->extent_root;
	struct ubt_key key = keyed_ref_key(hd, r);
	struct ubt_path path;
	u64 cnt;
	int ret;

	for (;;) {
		ubt_path_init(&path);
		ret = ubt_search_slot_write(h, root, &key, &path, -1);
		if (ret < 0)
			goto out;
		if (ret > 0) {
			ubt_err("extent %llu: backref (%u %llu) to drop does not exist", (unsigned long long)hd->bytenr,
				r->type, (unsigned long long)r->root);
			ret = -EUCLEAN;
			goto out;
		}
		if (keyed_matches(path.nodes[0], path.slots[0], r))
			break;
		ubt_path_release(&path);
		key.offset++;
	}
	cnt = keyed_count(path.nodes[0], path.slots[0], r->type);
	if (cnt < n) {
		ubt_err("extent %llu: dropping %llu references from a backref holding %llu",
			(unsigned long long)hd->bytenr, (unsigned long long)n, (unsigned long long)cnt);
		ret = -EUCLEAN;
	} else if (cnt == n) {
		ret = ubt_del_items(h, root, &path, path.slots[0], 1);
	} else {
		keyed_set_count(path.nodes[0], path.slots[0], r->type, cnt - n);
		ubt_mark_buffer_dirty(h, path.nodes[0]);
	}
out:
	ubt_path_release(&path);
	return ret;
}

/* Are there keyed backrefs for @bytenr? (Then new refs are keyed too, as the kernel does.) */
static int has_keyed_refs(struct ubt_fs_info *fs_info, u64 bytenr)
{
	struct ubt_key key = { bytenr, BTRFS_METADATA_ITEM_KEY + 1, 0 }, k;
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->extent_root, &key, &path);
	if (ret == 0) {
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &k);
		ret = k.objectid == bytenr && k.type < BTRFS_BLOCK_GROUP_ITEM_KEY;
	} else if (ret > 0) {
		ret = 0;
	}
	ubt_path_release(&path);
	return ret;
}

/* ---- applying a head ---- */

static int free_extent_space(struct ubt_trans_handle *h, const struct ubt_dhead *hd, bool on_disk);

static int dref_cmp(const void *a, const void *b)
{
	const struct ubt_dref *x = *(const struct ubt_dref *const *)a, *y = *(const struct ubt_dref *const *)b;
	u64 sx, sy;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	sx = dref_seq(x);
	sy = dref_seq(y);
	if (sx != sy)
		return sx > sy ? -1 : 1; /* descending within a type */
	return 0;
}

static int insert_new_extent(struct ubt_trans_handle *h, struct ubt_dhead *hd)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_dref **v = NULL;
	struct ubt_block_group *bg;
	size_t n = 0, ninline;
	u64 refs = 0, flags;
	u32 size, max = max_extent_item_size(fs_info);
	bool skinny = !hd->is_data && ai->skinny;
	struct ubt_key key;
	u8 *buf = NULL;
	int ret = 0;

	for (struct ubt_dref *r = hd->refs; r; r = r->next) {
		if (r->mod < 0 || (!hd->is_data && r->mod != 1)) {
			ubt_err("new extent %llu: invalid reference change %lld", (unsigned long long)hd->bytenr,
				(long long)r->mod);
			return -EUCLEAN;
		}
		refs += (u64)r->mod;
		n++;
	}
	if (!refs)
		return free_extent_space(h, hd, false); /* allocated and freed before it reached the tree */
	v = malloc(n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	n = 0;
	for (struct ubt_dref *r = hd->refs; r; r = r->next)
		v[n++] = r;
	qsort(v, n, sizeof(*v), dref_cmp);

	size = EXTENT_ITEM_SIZE + (hd->is_data || skinny ? 0 : (u32)sizeof(struct tree_block_info));
	for (ninline = 0; ninline < n && size + inline_ref_size(v[ninline]->type) < max; ninline++)
		size += inline_ref_size(v[ninline]->type);
	if (!ninline)
		size += inline_ref_size(v[ninline++]->type); /* the first always goes inline */
	buf = calloc(1, size);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	flags = hd->is_data ? BTRFS_EXTENT_FLAG_DATA : (BTRFS_EXTENT_FLAG_TREE_BLOCK | hd->set_flags);
	put_le64(buf, refs);
	put_le64(buf + 8, h->transid);
	put_le64(buf + 16, flags);
	{
		u32 off = EXTENT_ITEM_SIZE;

		if (!hd->is_data && !skinny) {
			struct tree_block_info tbi;

			ubt_cpu_key_to_disk(&tbi.key, &hd->first_key);
			tbi.level = (u8)hd->level;
			memcpy(buf + off, &tbi, sizeof(tbi));
			off += (u32)sizeof(tbi);
		}
		for (size_t i = 0; i < ninline; i++) {
			iref_write(buf + off, v[i], (u64)v[i]->mod);
			off += inline_ref_size(v[i]->type);
		}
	}
	if (hd->is_data)
		key = (struct ubt_key){ hd->bytenr, BTRFS_EXTENT_ITEM_KEY, hd->num_bytes };
	else if (skinny)
		key = (struct ubt_key){ hd->bytenr, BTRFS_METADATA_ITEM_KEY, (u64)hd->level };
	else
		key = (struct ubt_key){ hd->bytenr, BTRFS_EXTENT_ITEM_KEY, hd->num_bytes };
	ret = ubt_insert_item(h, &fs_info->extent_root, &key, buf, size);
	if (ret == -EEXIST) {
		ubt_err("extent item %llu already exists for a newly allocated extent", (unsigned long long)hd->bytenr);
		ret = -EUCLEAN;
	}
	for (size_t i = ninline; !ret && i < n; i++)
		ret = keyed_add(h, hd, v[i], (u64)v[i]->mod);
	if (ret)
		goto out;
	pthread_mutex_lock(&ai->lock);
	bg = ubt_bg_lookup(ai, hd->bytenr);
	if (!bg) {
		pthread_mutex_unlock(&ai->lock);
		ret = -EUCLEAN;
		goto out;
	}
	bg->used += hd->num_bytes;
	pthread_mutex_unlock(&ai->lock);
	ret = ubt_fst_remove(h, bg, hd->bytenr, hd->num_bytes);
out:
	free(buf);
	free(v);
	return ret;
}

static int add_ref(struct ubt_trans_handle *h, struct ubt_dhead *hd, const struct ubt_dref *r)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	u32 isz = inline_ref_size(r->type), size, refs_off, pos;
	struct ubt_path path;
	bool skinny, keyed;
	struct extent_buffer *leaf;
	u8 *item;
	int ret;

	ret = has_keyed_refs(fs_info, hd->bytenr);
	if (ret < 0)
		return ret;
	keyed = ret;
	ret = find_extent_item(h, hd, &path, (int)(isz + sizeof(struct btrfs_item)), &skinny);
	if (ret)
		goto notfound;
	leaf = path.nodes[0];
	size = ubt_item_size(leaf, path.slots[0]);
	item = ubt_item_ptr(leaf, path.slots[0]);
	ret = parse_extent_item(hd, item, size, skinny, &refs_off);
	if (ret)
		goto out;
	put_le64(item, get_le64(item) + (u64)r->mod);
	if (find_inline(item, size, refs_off, r, &pos)) {
		if (!keyed_size(r->type)) {
			ubt_err("extent %llu: backref (%u %llu) added twice", (unsigned long long)hd->bytenr, r->type,
				(unsigned long long)r->root);
			ret = -EUCLEAN;
			goto out;
		}
		iref_set_count(item + pos, iref_count(item + pos) + (u64)r->mod);
		ubt_mark_buffer_dirty(h, leaf);
		goto out;
	}
	if (!keyed && size + isz < max_extent_item_size(fs_info) && ubt_leaf_free_space(leaf) >= isz) {
		ubt_extend_item(h, &path, isz);
		item = ubt_item_ptr(leaf, path.slots[0]);
		memmove(item + pos + isz, item + pos, size - pos);
		iref_write(item + pos, r, (u64)r->mod);
		ubt_mark_buffer_dirty(h, leaf);
		goto out;
	}
	ubt_mark_buffer_dirty(h, leaf);
	ubt_path_release(&path);
	return keyed_add(h, hd, r, (u64)r->mod);
notfound:
	if (ret == -ENOENT) {
		ubt_err("extent %llu: adding a reference to an extent that is not in the extent tree",
			(unsigned long long)hd->bytenr);
		ret = -EUCLEAN;
	}
out:
	ubt_path_release(&path);
	return ret;
}

/* Drop -@r->mod references; *@gone when the extent item was deleted. */
static int drop_ref(struct ubt_trans_handle *h, struct ubt_dhead *hd, const struct ubt_dref *r, bool *gone)
{
	u64 n = (u64)-r->mod, refs;
	u32 size, refs_off, pos;
	struct ubt_path path;
	struct extent_buffer *leaf;
	bool skinny, inl;
	u8 *item;
	int ret;

	*gone = false;
	ret = find_extent_item(h, hd, &path, -1, &skinny);
	if (ret)
		goto notfound;
	leaf = path.nodes[0];
	size = ubt_item_size(leaf, path.slots[0]);
	item = ubt_item_ptr(leaf, path.slots[0]);
	ret = parse_extent_item(hd, item, size, skinny, &refs_off);
	if (ret)
		goto out;
	refs = get_le64(item);
	if (refs < n) {
		ubt_err("extent %llu: dropping %llu references, it has %llu", (unsigned long long)hd->bytenr,
			(unsigned long long)n, (unsigned long long)refs);
		ret = -EUCLEAN;
		goto out;
	}
	inl = find_inline(item, size, refs_off, r, &pos);
	if (inl) {
		u64 cnt = iref_count(item + pos);
		u32 isz = inline_ref_size(r->type);

		if (cnt < n) {
			ubt_err("extent %llu: dropping %llu references from an inline backref holding %llu",
				(unsigned long long)hd->bytenr, (unsigned long long)n, (unsigned long long)cnt);
			ret = -EUCLEAN;
			goto out;
		}
		if (cnt > n) {
			iref_set_count(item + pos, cnt - n);
		} else if (refs > n) {
			memmove(item + pos, item + pos + isz, size - pos - isz);
			ubt_truncate_item(h, &path, size - isz, true);
			item = ubt_item_ptr(leaf, path.slots[0]);
		}
	}
	if (refs == n) {
		ret = ubt_del_items(h, &h->fs_info->extent_root, &path, path.slots[0], 1);
		*gone = true;
	} else {
		put_le64(item, refs - n);
		ubt_mark_buffer_dirty(h, leaf);
	}
	ubt_path_release(&path);
	if (!ret && !inl)
		ret = keyed_drop(h, hd, r, n);
	return ret;
notfound:
	if (ret == -ENOENT) {
		ubt_err("extent %llu: dropping a reference of an extent that is not in the extent tree",
			(unsigned long long)hd->bytenr);
		ret = -EUCLEAN;
	}
out:
	ubt_path_release(&path);
	return ret;
}

static int set_flags_on_disk(struct ubt_trans_handle *h, struct ubt_dhead *hd)
{
	struct ubt_path path;
	bool skinny;
	u8 *item;
	int ret;

	ret = find_extent_item(h, hd, &path, 0, &skinny);
	if (ret == -ENOENT) {
		ubt_err("extent %llu: setting flags on an extent that is not in the extent tree",
			(unsigned long long)hd->bytenr);
		ret = -EUCLEAN;
	}
	if (!ret) {
		item = ubt_item_ptr(path.nodes[0], path.slots[0]);
		if (ubt_item_size(path.nodes[0], path.slots[0]) < EXTENT_ITEM_SIZE) {
			ret = -EUCLEAN;
		} else {
			put_le64(item + 16, get_le64(item + 16) | hd->set_flags);
			ubt_mark_buffer_dirty(h, path.nodes[0]);
		}
	}
	ubt_path_release(&path);
	return ret;
}

/* Delete the checksums of [bytenr, +len) from the csum tree, splitting items as needed. */
static int del_csums(struct ubt_trans_handle *h, u64 bytenr, u64 len)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_root *root = &fs_info->csum_root;
	u32 ss = fs_info->sectorsize, cs = (u32)fs_info->csum_size;
	u64 end = bytenr + len;
	int ret = 0;

	while (end > bytenr) {
		struct ubt_key key = { BTRFS_EXTENT_CSUM_OBJECTID, BTRFS_EXTENT_CSUM_KEY, end - 1 }, k;
		struct extent_buffer *leaf;
		struct ubt_path path;
		u64 cend;
		u32 isize;

		ubt_path_init(&path);
		ret = ubt_search_slot_write(h, root, &key, &path, -1);
		if (ret < 0)
			break;
		if (ret > 0) {
			if (path.slots[0] == 0) {
				ret = 0;
				ubt_path_release(&path);
				break;
			}
			path.slots[0]--;
		}
		ret = 0;
		leaf = path.nodes[0];
		ubt_item_key(leaf, path.slots[0], &k);
		isize = ubt_item_size(leaf, path.slots[0]);
		cend = k.offset + (u64)(isize / cs) * ss;
		if (k.objectid != BTRFS_EXTENT_CSUM_OBJECTID || k.type != BTRFS_EXTENT_CSUM_KEY || cend <= bytenr) {
			ubt_path_release(&path);
			break;
		}
		if (k.offset >= bytenr) {
			if (cend <= end) {
				ret = ubt_del_items(h, root, &path, path.slots[0], 1);
			} else {
				struct ubt_key nk = k;

				ubt_truncate_item(h, &path, (u32)((cend - end) / ss) * cs, false);
				nk.offset = end;
				ubt_set_item_key(h, &path, &nk);
			}
			end = k.offset;
			ubt_path_release(&path);
			if (ret)
				break;
			continue;
		}
		/* The item starts before the range: keep its head, and its tail if it reaches past the end. */
		if (cend <= end) {
			ubt_truncate_item(h, &path, (u32)((bytenr - k.offset) / ss) * cs, true);
			ubt_path_release(&path);
		} else {
			u32 toff = (u32)((end - k.offset) / ss) * cs, tlen = isize - toff;
			struct ubt_key nk = { BTRFS_EXTENT_CSUM_OBJECTID, BTRFS_EXTENT_CSUM_KEY, end };
			u8 *tail = malloc(tlen);

			if (!tail) {
				ubt_path_release(&path);
				ret = -ENOMEM;
				break;
			}
			memcpy(tail, (u8 *)ubt_item_ptr(leaf, path.slots[0]) + toff, tlen);
			ubt_truncate_item(h, &path, (u32)((bytenr - k.offset) / ss) * cs, true);
			ubt_path_release(&path);
			ret = ubt_insert_item(h, root, &nk, tail, tlen);
			free(tail);
		}
		break;
	}
	return ret;
}

int ubt_alloc_del_csums(struct ubt_trans_handle *h, u64 bytenr, u64 len)
{
	return del_csums(h, bytenr, len);
}

/* The extent left the extent tree (@on_disk) or never reached it: its space is pinned till commit. */
static int free_extent_space(struct ubt_trans_handle *h, const struct ubt_dhead *hd, bool on_disk)
{
	struct ubt_alloc_info *ai = ainfo(h->fs_info);
	struct ubt_block_group *bg;
	int ret;

	pthread_mutex_lock(&ai->lock);
	bg = ubt_bg_lookup(ai, hd->bytenr); /* groups are never freed while open; the array may grow */
	pthread_mutex_unlock(&ai->lock);
	if (!bg || hd->bytenr + hd->num_bytes > bg->start + bg->length) {
		ubt_err("extent %llu+%llu is outside every block group", (unsigned long long)hd->bytenr,
			(unsigned long long)hd->num_bytes);
		return -EUCLEAN;
	}
	pthread_mutex_lock(&ai->lock);
	if (on_disk)
		bg->used -= ubt_min(bg->used, hd->num_bytes);
	ret = rs_add(&bg->pinned, hd->bytenr, hd->num_bytes);
	pthread_mutex_unlock(&ai->lock);
	if (ret) {
		ubt_err("extent %llu freed twice", (unsigned long long)hd->bytenr);
		return ret == -EEXIST ? -EUCLEAN : ret;
	}
	/* Checksums go with the data even when the extent never reached the extent tree. */
	if (hd->is_data)
		ret = del_csums(h, hd->bytenr, hd->num_bytes);
	if (!on_disk || ret)
		return ret;
	return ubt_fst_add(h, bg, hd->bytenr, hd->num_bytes);
}

static int run_head(struct ubt_trans_handle *h, struct ubt_dhead *hd)
{
	bool gone = false;
	int ret = 0;

	if (hd->must_insert)
		return insert_new_extent(h, hd);
	for (struct ubt_dref *r = hd->refs; r && !ret; r = r->next)
		if (r->mod > 0)
			ret = add_ref(h, hd, r);
	for (struct ubt_dref *r = hd->refs; r && !ret; r = r->next) {
		if (r->mod >= 0)
			continue;
		if (gone) {
			ubt_err("extent %llu: reference dropped after the last one", (unsigned long long)hd->bytenr);
			return -EUCLEAN;
		}
		ret = drop_ref(h, hd, r, &gone);
	}
	if (ret)
		return ret;
	if (gone)
		return free_extent_space(h, hd, true);
	if (hd->set_flags)
		ret = set_flags_on_disk(h, hd);
	return ret;
}

static int head_cmp(const void *a, const void *b)
{
	const struct ubt_dhead *x = *(const struct ubt_dhead *const *)a, *y = *(const struct ubt_dhead *const *)b;

	return x->bytenr < y->bytenr ? -1 : x->bytenr > y->bytenr;
}

/* Take every queued head, in bytenr order (the extent tree is then walked mostly sequentially). */
static struct ubt_dhead **take_heads(struct ubt_alloc_info *ai, size_t *nr)
{
	struct ubt_dhead **v = malloc(ai->nr_heads * sizeof(*v));
	size_t n = 0;

	if (!v)
		return NULL;
	for (size_t b = 0; b < UBT_DHEAD_BUCKETS; b++) {
		for (struct ubt_dhead *hd = ai->heads[b]; hd; hd = hd->hash_next)
			v[n++] = hd;
		ai->heads[b] = NULL;
	}
	ai->nr_heads = 0;
	qsort(v, n, sizeof(*v), head_cmp);
	*nr = n;
	return v;
}

int ubt_run_delayed_refs(struct ubt_trans_handle *h)
{
	struct ubt_alloc_info *ai = ainfo(h->fs_info);
	int did = 0, ret;

	if (ai->broken)
		return -EROFS;
	for (;;) {
		struct ubt_dhead **v;
		size_t n = 0, i;

		ret = ubt_create_pending_bgs(h);
		if (ret < 0)
			return ret;
		did |= ret;
		if (!ai->nr_heads)
			break;
		/* New heads queued while this batch runs wait for the next round. */
		v = take_heads(ai, &n);
		if (!v)
			return -ENOMEM;
		for (i = 0, ret = 0; i < n && ret >= 0; i++) {
			ret = ai->have_pending_bgs ? ubt_create_pending_bgs(h) : 0;
			if (ret >= 0)
				ret = run_head(h, v[i]);
			free_head(v[i]);
		}
		for (; i < n; i++)
			free_head(v[i]);
		free(v);
		if (ret < 0)
			return ret;
		did = 1;
	}
	return did;
}
