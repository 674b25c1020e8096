/*
 * ctree-write.c — changing a B-tree inside a transaction: copy-on-write of blocks (with btrfs's
 * reference bookkeeping for blocks shared with snapshots), search with intent to insert or delete
 * (preemptive node splits, leaf splits), item insertion, deletion, resizing, parent key fix-ups,
 * removal of emptied blocks and merging of underfull leaves, the dirty-block list, and writing
 * dirty blocks out at commit.
 *
 * Leaf layout reminder: item headers grow forward from the block header; item data grows backward
 * from the end of the block, item 0's data last. Offsets in item headers are relative to the end
 * of the block header. Everything here keeps that packing exact (the tree checker insists).
 */
#include "ctree-write.h"

#include <stdlib.h>

#include "../codec/csum.h"
#include "../device/bdev.h"
#include "../util/messages.h"
#include "../volumes/volumes.h"
#include "disk-io.h"
#include "eb-cache.h"

#define LEAF_DATA(eb) ((eb)->data + sizeof(struct btrfs_header))

static inline u32 leaf_data_size(const struct extent_buffer *eb)
{
	return eb->len - (u32)sizeof(struct btrfs_header);
}

static inline u32 max_ptrs(const struct extent_buffer *eb)
{
	return leaf_data_size(eb) / (u32)sizeof(struct btrfs_key_ptr);
}

static inline struct btrfs_header *hdr(struct extent_buffer *eb)
{
	return (struct btrfs_header *)eb->data;
}

static inline struct btrfs_item *item_w(struct extent_buffer *eb, int slot)
{
	return (struct btrfs_item *)(eb->data + sizeof(struct btrfs_header)) + slot;
}

static inline struct btrfs_key_ptr *kp_w(struct extent_buffer *eb, int slot)
{
	return (struct btrfs_key_ptr *)(eb->data + sizeof(struct btrfs_header)) + slot;
}

static inline u32 item_off(const struct extent_buffer *eb, int slot) { return le32toh(ubt_eb_item(eb, slot)->offset); }
static inline void set_item_off(struct extent_buffer *eb, int slot, u32 v) { item_w(eb, slot)->offset = htole32(v); }
static inline void set_item_size(struct extent_buffer *eb, int slot, u32 v) { item_w(eb, slot)->size = htole32(v); }
static inline void set_nritems(struct extent_buffer *eb, u32 n) { hdr(eb)->nritems = htole32(n); }

/* Offset where item data ends toward the front (lowest data offset), or data size when empty. */
static u32 leaf_data_end(const struct extent_buffer *eb)
{
	u32 n = ubt_eb_nritems(eb);
	return n ? item_off(eb, (int)n - 1) : leaf_data_size(eb);
}

u32 ubt_leaf_free_space(const struct extent_buffer *leaf)
{
	u32 n = ubt_eb_nritems(leaf);
	return leaf_data_end(leaf) - n * (u32)sizeof(struct btrfs_item);
}

void ubt_mark_buffer_dirty(struct ubt_trans_handle *h, struct extent_buffer *eb)
{
	struct ubt_fs_info *fs_info = h->fs_info;

	if (eb->dirty)
		return;
	eb->dirty = true;
	ubt_eb_get(eb);
	eb->dirty_next = fs_info->dirty_list;
	fs_info->dirty_list = eb;
	fs_info->nr_dirty++;
}

static bool should_cow(struct ubt_trans_handle *h, const struct extent_buffer *eb)
{
	return !(ubt_eb_generation(eb) == h->transid && eb->dirty);
}

static bool root_is_shareable(const struct ubt_root *root)
{
	return root->objectid == BTRFS_FS_TREE_OBJECTID ||
	       (root->objectid >= BTRFS_FIRST_FREE_OBJECTID && root->objectid <= BTRFS_LAST_FREE_OBJECTID);
}

static bool block_can_be_shared(const struct ubt_root *root, const struct extent_buffer *eb)
{
	if (!root_is_shareable(root) || eb->start == root->bytenr)
		return false;
	return ubt_eb_generation(eb) <= le64toh(root->root_item.last_snapshot) ||
	       (le64toh(ubt_eb_header(eb)->flags) & BTRFS_HEADER_FLAG_RELOC);
}

/*
 * Reference bookkeeping when @buf is replaced by @cow for @root (the kernel's rules): a block
 * shared with a snapshot keeps its children referenced — by @root through @cow, and by a full
 * (parent) backref from @buf when @buf is this root's own block — and an unshared full-backref
 * block hands its children's references over to @cow.
 */
static int update_ref_for_cow(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *buf,
			      struct extent_buffer *cow, bool *last_ref)
{
	const struct ubt_extent_ops *ops = h->fs_info->extent_ops;
	u64 refs = 1, flags = 0, owner = ubt_eb_owner(buf);
	int ret;

	*last_ref = false;
	if (block_can_be_shared(root, buf)) {
		ret = ops->lookup_extent_info(h, buf->start, ubt_eb_level(buf), &refs, &flags);
		if (ret)
			return ret;
		if (refs == 0) {
			ubt_err("tree block %llu has no references in the extent tree", (unsigned long long)buf->start);
			return -EUCLEAN;
		}
	} else {
		flags = owner == root->objectid ? 0 : BTRFS_BLOCK_FLAG_FULL_BACKREF;
	}

	if (refs > 1) {
		if (owner == root->objectid && !(flags & BTRFS_BLOCK_FLAG_FULL_BACKREF)) {
			ret = ops->inc_ref(h, root, buf, true);
			if (ret)
				return ret;
			ret = ops->set_extent_flags(h, buf, flags | BTRFS_BLOCK_FLAG_FULL_BACKREF);
		} else {
			ret = ops->inc_ref(h, root, cow, false);
		}
		return ret;
	}
	if (flags & BTRFS_BLOCK_FLAG_FULL_BACKREF) {
		ret = ops->inc_ref(h, root, cow, false);
		if (ret)
			return ret;
		ret = ops->dec_ref(h, root, buf, true);
		if (ret)
			return ret;
	}
	*last_ref = true;
	return 0;
}

int ubt_cow_block(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb,
		  struct extent_buffer *parent, int parent_slot, struct extent_buffer **out)
{
	const struct ubt_extent_ops *ops = h->fs_info->extent_ops;
	struct extent_buffer *cow;
	struct ubt_key first = { 0 };
	bool last_ref;
	int level = ubt_eb_level(eb);
	u64 flags;
	int ret;

	if (h->error)
		return h->error;
	if (!should_cow(h, eb)) {
		ubt_eb_get(eb);
		*out = eb;
		return 0;
	}
	if (!ops) {
		ubt_err("copy-on-write without an allocator (read-only mount?)");
		return -EROFS;
	}
	if (ubt_eb_nritems(eb)) {
		if (level == 0)
			ubt_item_key(eb, 0, &first);
		else
			ubt_node_key(eb, 0, &first);
	}
	cow = ops->alloc_tree_block(h, root, 0, level, &first, eb->start);
	if (IS_ERR(cow))
		return (int)PTR_ERR(cow);
	memcpy(cow->data + BTRFS_CSUM_SIZE, eb->data + BTRFS_CSUM_SIZE, eb->len - BTRFS_CSUM_SIZE);
	hdr(cow)->bytenr = htole64(cow->start);
	hdr(cow)->generation = htole64(h->transid);
	hdr(cow)->owner = htole64(root->objectid);
	flags = le64toh(hdr(cow)->flags);
	flags &= ~((0xffULL << BTRFS_BACKREF_REV_SHIFT) | BTRFS_HEADER_FLAG_WRITTEN | BTRFS_HEADER_FLAG_RELOC);
	flags |= BTRFS_MIXED_BACKREF_REV << BTRFS_BACKREF_REV_SHIFT;
	hdr(cow)->flags = htole64(flags);

	ret = update_ref_for_cow(h, root, eb, cow, &last_ref);
	if (ret)
		goto fail;
	if (!parent) {
		root->bytenr = cow->start;
		root->generation = h->transid;
		root->level = (u8)level;
		root->dirty = true;
	} else {
		struct btrfs_key_ptr *kp = kp_w(parent, parent_slot);
		kp->blockptr = htole64(cow->start);
		kp->generation = htole64(h->transid);
		ubt_mark_buffer_dirty(h, parent);
	}
	ret = ops->free_tree_block(h, root, eb, 0, last_ref);
	if (ret)
		goto fail;
	*out = cow;
	return 0;
fail:
	ubt_eb_put(cow);
	h->error = ret;
	return ret;
}

int ubt_cow_root_node(struct ubt_trans_handle *h, struct ubt_root *root)
{
	struct extent_buffer *eb, *cow;
	int ret;

	eb = ubt_read_tree_block(h->fs_info, root->bytenr, root->generation, root->level, NULL);
	if (IS_ERR(eb))
		return (int)PTR_ERR(eb);
	ret = ubt_cow_block(h, root, eb, NULL, 0, &cow);
	ubt_eb_put(eb);
	if (!ret)
		ubt_eb_put(cow);
	return ret;
}

/* Update the key of the first slot in the parents as far up as the slot stays 0. */
static void fixup_low_keys(struct ubt_trans_handle *h, struct ubt_path *path, const struct ubt_key *key, int level)
{
	for (int i = level; i < BTRFS_MAX_LEVEL; i++) {
		struct extent_buffer *node = path->nodes[i];

		if (!node)
			break;
		ubt_cpu_key_to_disk(&kp_w(node, path->slots[i])->key, key);
		ubt_mark_buffer_dirty(h, node);
		if (path->slots[i] != 0)
			break;
	}
}

void ubt_set_item_key(struct ubt_trans_handle *h, struct ubt_path *path, const struct ubt_key *key)
{
	struct extent_buffer *leaf = path->nodes[0];
	int slot = path->slots[0];

	ubt_cpu_key_to_disk(&item_w(leaf, slot)->key, key);
	ubt_mark_buffer_dirty(h, leaf);
	if (slot == 0)
		fixup_low_keys(h, path, key, 1);
}

static struct extent_buffer *alloc_block(struct ubt_trans_handle *h, struct ubt_root *root, int level,
					 const struct ubt_key *first, u64 hint)
{
	struct extent_buffer *eb = h->fs_info->extent_ops->alloc_tree_block(h, root, 0, level, first, hint);

	if (IS_ERR(eb))
		h->error = (int)PTR_ERR(eb);
	return eb;
}

/* Give the tree a new root node above the current root block (which is path->nodes[level]). */
static int insert_new_root(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level)
{
	struct extent_buffer *lower = path->nodes[level], *c;
	struct ubt_key first = { 0 };
	struct btrfs_key_ptr *kp;

	if (level + 1 >= BTRFS_MAX_LEVEL)
		return -EOVERFLOW;
	if (ubt_eb_nritems(lower)) {
		if (level == 0)
			ubt_item_key(lower, 0, &first);
		else
			ubt_node_key(lower, 0, &first);
	}
	c = alloc_block(h, root, level + 1, &first, lower->start);
	if (IS_ERR(c))
		return (int)PTR_ERR(c);
	set_nritems(c, 1);
	kp = kp_w(c, 0);
	ubt_cpu_key_to_disk(&kp->key, &first);
	kp->blockptr = htole64(lower->start);
	kp->generation = htole64(ubt_eb_generation(lower));
	ubt_mark_buffer_dirty(h, c);
	root->bytenr = c->start;
	root->level = (u8)(level + 1);
	root->generation = h->transid;
	root->dirty = true;
	path->nodes[level + 1] = c; /* the path takes alloc's reference */
	path->slots[level + 1] = 0;
	return 0;
}

/* Insert a key pointer at @slot of node path->nodes[level] (room guaranteed by preemptive splits). */
static int insert_ptr(struct ubt_trans_handle *h, struct ubt_path *path, int level, int slot,
		      const struct ubt_key *key, u64 bytenr, u64 gen)
{
	struct extent_buffer *node = path->nodes[level];
	u32 n = ubt_eb_nritems(node);
	struct btrfs_key_ptr *kp;

	if (n >= max_ptrs(node)) {
		ubt_err("internal: node %llu full on insert", (unsigned long long)node->start);
		return -EUCLEAN;
	}
	memmove(kp_w(node, slot + 1), kp_w(node, slot), (n - (u32)slot) * sizeof(struct btrfs_key_ptr));
	kp = kp_w(node, slot);
	ubt_cpu_key_to_disk(&kp->key, key);
	kp->blockptr = htole64(bytenr);
	kp->generation = htole64(gen);
	set_nritems(node, n + 1);
	ubt_mark_buffer_dirty(h, node);
	if (slot == 0)
		fixup_low_keys(h, path, key, level + 1);
	return 0;
}

/* Split node path->nodes[level] in two; the path is invalid afterwards (callers re-search). */
static int split_node(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level)
{
	struct extent_buffer *c = path->nodes[level], *split;
	u32 n = ubt_eb_nritems(c), mid = n / 2;
	struct ubt_key first;
	int ret;

	if (!path->nodes[level + 1]) {
		ret = insert_new_root(h, root, path, level);
		if (ret)
			return ret;
	}
	ubt_node_key(c, (int)mid, &first);
	split = alloc_block(h, root, level, &first, c->start);
	if (IS_ERR(split))
		return (int)PTR_ERR(split);
	memcpy(kp_w(split, 0), kp_w(c, (int)mid), (n - mid) * sizeof(struct btrfs_key_ptr));
	set_nritems(split, n - mid);
	set_nritems(c, mid);
	ubt_mark_buffer_dirty(h, c);
	ubt_mark_buffer_dirty(h, split);
	ret = insert_ptr(h, path, level + 1, path->slots[level + 1] + 1, &first, split->start, h->transid);
	ubt_eb_put(split);
	return ret;
}

/*
 * Move items [@from, n) of @left into the empty leaf @right (same order). Data offsets in @right
 * are recomputed from the end of its data area.
 */
static void move_items_right(struct extent_buffer *left, struct extent_buffer *right, int from)
{
	u32 n = ubt_eb_nritems(left), nr = n - (u32)from;
	u32 data_start = item_off(left, (int)n - 1);                            /* lowest */
	u32 data_end = item_off(left, from) + ubt_item_size(left, from);        /* highest */
	u32 bytes = data_end - data_start, shift = leaf_data_size(right) - data_end;

	memcpy(LEAF_DATA(right) + data_start + shift, LEAF_DATA(left) + data_start, bytes);
	memcpy(item_w(right, 0), item_w(left, from), nr * sizeof(struct btrfs_item));
	for (u32 i = 0; i < nr; i++)
		set_item_off(right, (int)i, item_off(right, (int)i) + shift);
	set_nritems(right, nr);
	set_nritems(left, (u32)from);
}

/*
 * Where to split a leaf so that the item at @slot (which exists: the caller extends it) gets
 * @ins_len more bytes: it becomes the first item of the right half, or the last of the left one,
 * whichever side then has room; when neither does, it is cut off on one side now and the re-search
 * splits again, until it sits in a leaf of its own. -EOVERFLOW when it cannot grow that much at all.
 */
static int split_point_for_extend(const struct extent_buffer *l, int slot, u32 ins_len, int *split_at)
{
	u32 n = ubt_eb_nritems(l), left_used = 0, right_used = 0;

	for (int i = 0; i < (int)n; i++) {
		u32 sz = ubt_item_size(l, i) + (u32)sizeof(struct btrfs_item);

		if (i <= slot)
			left_used += sz;
		if (i >= slot)
			right_used += sz;
	}
	if (slot > 0 && right_used + ins_len <= leaf_data_size(l))
		*split_at = slot;
	else if (slot + 1 < (int)n && left_used + ins_len <= leaf_data_size(l))
		*split_at = slot + 1;
	else if (slot > 0)
		*split_at = slot;
	else if (slot + 1 < (int)n)
		*split_at = slot + 1;
	else {
		ubt_err("internal: item of %u bytes in leaf %llu cannot grow by %u bytes", ubt_item_size(l, slot),
			(unsigned long long)l->start, ins_len);
		return -EOVERFLOW;
	}
	return 0;
}

/*
 * Make room for @ins_len bytes at path->slots[0]: for a new item there when !@exact, or to extend
 * the item there when @exact. The leaf is split at a point that leaves room on the side the item
 * goes to (or is); the path is invalid afterwards (callers re-search).
 */
static int split_leaf(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
		      struct ubt_path *path, u32 ins_len, bool exact)
{
	struct extent_buffer *l = path->nodes[0], *right;
	u32 n = ubt_eb_nritems(l);
	int slot = path->slots[0], split_at;
	struct ubt_key rkey;
	int ret;

	if (ins_len > leaf_data_size(l)) {
		ubt_err("internal: item of %u bytes cannot fit in a leaf", ins_len);
		return -EOVERFLOW;
	}
	if (exact) {
		ret = split_point_for_extend(l, slot, ins_len, &split_at);
		if (ret)
			return ret;
	}
	if (!path->nodes[1]) {
		ret = insert_new_root(h, root, path, 0);
		if (ret)
			return ret;
	}
	if (exact) {
		/* 0 < split_at < n: both halves keep items, the right one starts at a real key. */
		ubt_item_key(l, split_at, &rkey);
		goto split;
	}
	/*
	 * Appending at the end (sequential inserts): a fresh right leaf, so leaves fill up completely.
	 * Otherwise prefer a middle split when it leaves room for the new item; else split at the slot.
	 */
	split_at = slot >= (int)n ? (int)n : (int)n / 2;
	if (split_at < (int)n) {
		u32 left_used = 0, right_used = 0;
		for (int i = 0; i < (int)n; i++) {
			u32 sz = ubt_item_size(l, i) + (u32)sizeof(struct btrfs_item);
			if (i < split_at)
				left_used += sz;
			else
				right_used += sz;
		}
		bool goes_left = slot < split_at || (slot == split_at && left_used <= right_used);
		u32 used = goes_left ? left_used : right_used;
		if (n < 2 || used + ins_len > leaf_data_size(l))
			split_at = slot;
	}
	if (split_at >= (int)n) {
		/* Appending: a fresh leaf for the new key. */
		rkey = *key;
	} else {
		ubt_item_key(l, split_at, &rkey);
		if (split_at == 0) {
			/* Inserting before everything: move all items right; the new key lands in @l. */
			rkey = *key;
		}
	}
split:
	right = alloc_block(h, root, 0, &rkey, l->start);
	if (IS_ERR(right))
		return (int)PTR_ERR(right);
	if (split_at < (int)n) {
		if (split_at == 0) {
			struct ubt_key old_first;
			ubt_item_key(l, 0, &old_first);
			move_items_right(l, right, 0);
			/* @l keeps its parent slot (key fixed up when the item is inserted); right follows. */
			ret = insert_ptr(h, path, 1, path->slots[1] + 1, &old_first, right->start, h->transid);
			ubt_mark_buffer_dirty(h, l);
			ubt_mark_buffer_dirty(h, right);
			ubt_eb_put(right);
			return ret;
		}
		move_items_right(l, right, split_at);
	}
	ubt_mark_buffer_dirty(h, l);
	ubt_mark_buffer_dirty(h, right);
	ret = insert_ptr(h, path, 1, path->slots[1] + 1, &rkey, right->start, h->transid);
	ubt_eb_put(right);
	return ret;
}

int ubt_search_slot_write(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
			  struct ubt_path *path, int ins_len)
{
	struct extent_buffer *eb, *cow;
	int ret, restarts = 0;

	if (h->error)
		return h->error;
again:
	ubt_path_release(path);
	if (++restarts > 64) {
		ubt_err("internal: search for insertion did not converge in tree %llu", (unsigned long long)root->objectid);
		return -EUCLEAN;
	}
	eb = ubt_read_tree_block(h->fs_info, root->bytenr, root->generation, root->level, NULL);
	if (IS_ERR(eb))
		return (int)PTR_ERR(eb);
	ret = ubt_cow_block(h, root, eb, NULL, 0, &cow);
	ubt_eb_put(eb);
	if (ret)
		return ret;
	eb = cow;
	for (;;) {
		int level = ubt_eb_level(eb);
		bool exact;
		int slot = ubt_bin_search(eb, key, &exact);

		path->nodes[level] = eb;
		if (level == 0) {
			path->slots[0] = slot;
			if (ins_len > 0 && ubt_leaf_free_space(eb) < (u32)ins_len) {
				ret = split_leaf(h, root, key, path, (u32)ins_len, exact);
				if (ret)
					goto fail;
				goto again;
			}
			return exact ? 0 : 1;
		}
		if (!exact && slot > 0)
			slot--;
		path->slots[level] = slot;
		if (ins_len > 0 && ubt_eb_nritems(eb) >= max_ptrs(eb) - 3) {
			ret = split_node(h, root, path, level);
			if (ret)
				goto fail;
			goto again;
		}
		{
			const struct btrfs_key_ptr *kp = ubt_eb_key_ptr(eb, slot);
			struct ubt_key first;
			struct extent_buffer *child;

			ubt_disk_key_to_cpu(&first, &kp->key);
			child = ubt_read_tree_block(h->fs_info, le64toh(kp->blockptr), le64toh(kp->generation), level - 1,
						    &first);
			if (IS_ERR(child)) {
				ret = (int)PTR_ERR(child);
				goto fail;
			}
			ret = ubt_cow_block(h, root, child, eb, slot, &cow);
			ubt_eb_put(child);
			if (ret)
				goto fail;
			eb = cow;
		}
	}
fail:
	ubt_path_release(path);
	if (!h->error)
		h->error = ret;
	return ret;
}

int ubt_insert_empty_items(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path,
			   const struct ubt_key *keys, const u32 *data_sizes, int nr)
{
	struct extent_buffer *leaf = path->nodes[0];
	int slot = path->slots[0];
	u32 n = ubt_eb_nritems(leaf), total_data = 0, data_end, old_end;

	(void)root;
	for (int i = 0; i < nr; i++)
		total_data += data_sizes[i];
	if (ubt_leaf_free_space(leaf) < total_data + (u32)nr * (u32)sizeof(struct btrfs_item)) {
		ubt_err("internal: leaf %llu has no room for %d items", (unsigned long long)leaf->start, nr);
		return -EUCLEAN;
	}
	old_end = slot == 0 ? leaf_data_size(leaf) : item_off(leaf, slot - 1);
	data_end = leaf_data_end(leaf);
	if ((u32)slot < n) {
		/* Slide the data of items [slot, n) down, then their headers right. */
		memmove(LEAF_DATA(leaf) + data_end - total_data, LEAF_DATA(leaf) + data_end, old_end - data_end);
		for (u32 i = (u32)slot; i < n; i++)
			set_item_off(leaf, (int)i, item_off(leaf, (int)i) - total_data);
		memmove(item_w(leaf, slot + nr), item_w(leaf, slot), (n - (u32)slot) * sizeof(struct btrfs_item));
	}
	for (int i = 0; i < nr; i++) {
		ubt_cpu_key_to_disk(&item_w(leaf, slot + i)->key, &keys[i]);
		old_end -= data_sizes[i];
		set_item_off(leaf, slot + i, old_end);
		set_item_size(leaf, slot + i, data_sizes[i]);
	}
	set_nritems(leaf, n + (u32)nr);
	ubt_mark_buffer_dirty(h, leaf);
	if (slot == 0)
		fixup_low_keys(h, path, &keys[0], 1);
	return 0;
}

int ubt_insert_item(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, const void *data,
		    u32 data_size)
{
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, key, &path, (int)(data_size + sizeof(struct btrfs_item)));
	if (ret == 0)
		ret = -EEXIST;
	if (ret < 0)
		goto out;
	ret = ubt_insert_empty_items(h, root, &path, key, &data_size, 1);
	if (ret)
		goto out;
	if (data_size)
		memcpy(ubt_item_ptr(path.nodes[0], path.slots[0]), data, data_size);
out:
	ubt_path_release(&path);
	return ret;
}

/* Remove the pointer at @slot of path->nodes[level]; empties propagate upward. */
static int del_ptr(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level, int slot);

static int remove_block(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level)
{
	struct extent_buffer *eb = path->nodes[level];
	int ret;

	ret = del_ptr(h, root, path, level + 1, path->slots[level + 1]);
	if (ret)
		return ret;
	ret = h->fs_info->extent_ops->free_tree_block(h, root, eb, 0, true);
	if (ret)
		h->error = ret;
	return ret;
}

static int del_ptr(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level, int slot)
{
	struct extent_buffer *node = path->nodes[level];
	u32 n = ubt_eb_nritems(node);

	memmove(kp_w(node, slot), kp_w(node, slot + 1), (n - (u32)slot - 1) * sizeof(struct btrfs_key_ptr));
	set_nritems(node, n - 1);
	ubt_mark_buffer_dirty(h, node);
	if (n - 1 == 0) {
		if (!path->nodes[level + 1]) {
			/* The root node lost its last child: the tree becomes an empty leaf. */
			struct extent_buffer *leaf = alloc_block(h, root, 0, NULL, node->start);
			int ret;

			if (IS_ERR(leaf))
				return (int)PTR_ERR(leaf);
			root->bytenr = leaf->start;
			root->level = 0;
			root->generation = h->transid;
			root->dirty = true;
			ret = h->fs_info->extent_ops->free_tree_block(h, root, node, 0, true);
			ubt_eb_put(leaf);
			return ret;
		}
		return remove_block(h, root, path, level);
	}
	if (slot == 0) {
		struct ubt_key k;
		ubt_node_key(node, 0, &k);
		fixup_low_keys(h, path, &k, level + 1);
	}
	return 0;
}

/* Collapse a root node with a single child into that child (keeps the tree height minimal). */
static int shrink_root(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path)
{
	for (;;) {
		struct extent_buffer *top = path->nodes[root->level], *child, *cow;
		int ret;

		if (root->level == 0 || !top || top->start != root->bytenr || ubt_eb_nritems(top) != 1)
			return 0;
		child = ubt_read_tree_block(h->fs_info, le64toh(ubt_eb_key_ptr(top, 0)->blockptr),
					    le64toh(ubt_eb_key_ptr(top, 0)->generation), root->level - 1, NULL);
		if (IS_ERR(child))
			return (int)PTR_ERR(child);
		ret = ubt_cow_block(h, root, child, top, 0, &cow);
		ubt_eb_put(child);
		if (ret)
			return ret;
		root->bytenr = cow->start;
		root->level--;
		root->generation = h->transid;
		root->dirty = true;
		ret = h->fs_info->extent_ops->free_tree_block(h, root, top, 0, true);
		path->nodes[root->level + 1] = NULL;
		ubt_eb_put(top);
		ubt_eb_put(cow);
		if (ret)
			return ret;
		/* The path below is stale now; callers release it. */
		return 0;
	}
}

/* Move all items of leaf @right onto the end of leaf @left (caller checked the room). */
static void merge_leaf_into(struct extent_buffer *left, struct extent_buffer *right)
{
	u32 ln = ubt_eb_nritems(left), rn = ubt_eb_nritems(right);
	u32 l_end = leaf_data_end(left);
	u32 r_lo = leaf_data_end(right), r_bytes = leaf_data_size(right) - r_lo;
	u32 shift = leaf_data_size(right) - l_end; /* how far right's data moves down */

	memcpy(LEAF_DATA(left) + r_lo - shift, LEAF_DATA(right) + r_lo, r_bytes);
	memcpy(item_w(left, (int)ln), item_w(right, 0), rn * sizeof(struct btrfs_item));
	for (u32 i = 0; i < rn; i++)
		set_item_off(left, (int)(ln + i), item_off(left, (int)(ln + i)) - shift);
	set_nritems(left, ln + rn);
	set_nritems(right, 0);
}

/*
 * After a deletion: if the leaf is under a quarter full and fits together with a sibling, merge
 * the right one of the pair into the left one and drop the emptied leaf.
 */
static int maybe_merge_leaf(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path)
{
	struct extent_buffer *leaf = path->nodes[0], *parent = path->nodes[1], *sib, *cow;
	u32 used = leaf_data_size(leaf) - ubt_leaf_free_space(leaf);
	int pslot = path->slots[1], sslot, ret;
	const struct btrfs_key_ptr *kp;
	struct ubt_key first;

	if (!parent || used >= leaf_data_size(leaf) / 4)
		return 0;
	/*
	 * Only the right sibling is merged in: the path then stays valid for a caller that goes on
	 * walking from it (the current leaf keeps its slot, the parent its slot).
	 */
	for (int dir = 1; dir >= 1; dir -= 2) {
		sslot = pslot + dir;
		if (sslot < 0 || sslot >= (int)ubt_eb_nritems(parent))
			continue;
		kp = ubt_eb_key_ptr(parent, sslot);
		ubt_disk_key_to_cpu(&first, &kp->key);
		sib = ubt_read_tree_block(h->fs_info, le64toh(kp->blockptr), le64toh(kp->generation), 0, &first);
		if (IS_ERR(sib))
			return (int)PTR_ERR(sib);
		if (leaf_data_size(sib) - ubt_leaf_free_space(sib) + used > leaf_data_size(sib)) {
			ubt_eb_put(sib);
			continue;
		}
		ret = ubt_cow_block(h, root, sib, parent, sslot, &cow);
		ubt_eb_put(sib);
		if (ret)
			return ret;
		if (dir == 1) {
			/* leaf <- right sibling; drop the sibling's pointer. */
			merge_leaf_into(leaf, cow);
			ubt_mark_buffer_dirty(h, leaf);
			ret = del_ptr(h, root, path, 1, sslot);
			if (!ret)
				ret = h->fs_info->extent_ops->free_tree_block(h, root, cow, 0, true);
		} else {
			/* left sibling <- leaf; drop this leaf's pointer. */
			merge_leaf_into(cow, leaf);
			ubt_mark_buffer_dirty(h, cow);
			ret = del_ptr(h, root, path, 1, pslot);
			if (!ret)
				ret = h->fs_info->extent_ops->free_tree_block(h, root, leaf, 0, true);
		}
		ubt_eb_put(cow);
		if (!ret)
			ret = shrink_root(h, root, path);
		return ret;
	}
	return 0;
}

/*
 * After a deletion: a node at @level under a quarter full takes in its right sibling when both
 * fit in one block with room to spare (the emptied sibling is dropped). The path stays valid.
 */
static int maybe_merge_node(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int level)
{
	struct extent_buffer *node = path->nodes[level], *parent, *sib, *cow;
	const struct btrfs_key_ptr *kp;
	struct ubt_key first;
	u32 n, sn;
	int pslot, ret;

	if (level >= BTRFS_MAX_LEVEL - 1 || !node || !(parent = path->nodes[level + 1]))
		return 0;
	n = ubt_eb_nritems(node);
	pslot = path->slots[level + 1];
	if (n >= max_ptrs(node) / 4 || pslot + 1 >= (int)ubt_eb_nritems(parent))
		return 0;
	kp = ubt_eb_key_ptr(parent, pslot + 1);
	ubt_disk_key_to_cpu(&first, &kp->key);
	sib = ubt_read_tree_block(h->fs_info, le64toh(kp->blockptr), le64toh(kp->generation), level, &first);
	if (IS_ERR(sib))
		return (int)PTR_ERR(sib);
	sn = ubt_eb_nritems(sib);
	if (n + sn > max_ptrs(node) - 4) {
		ubt_eb_put(sib);
		return 0;
	}
	ret = ubt_cow_block(h, root, sib, parent, pslot + 1, &cow);
	ubt_eb_put(sib);
	if (ret)
		return ret;
	memcpy(kp_w(node, (int)n), kp_w(cow, 0), sn * sizeof(struct btrfs_key_ptr));
	set_nritems(node, n + sn);
	set_nritems(cow, 0);
	ubt_mark_buffer_dirty(h, node);
	ret = del_ptr(h, root, path, level + 1, pslot + 1);
	if (!ret)
		ret = h->fs_info->extent_ops->free_tree_block(h, root, cow, 0, true);
	ubt_eb_put(cow);
	if (!ret)
		ret = shrink_root(h, root, path);
	return ret;
}

int ubt_del_items(struct ubt_trans_handle *h, struct ubt_root *root, struct ubt_path *path, int slot, int nr)
{
	struct extent_buffer *leaf = path->nodes[0];
	u32 n = ubt_eb_nritems(leaf), dsize = 0, data_end = leaf_data_end(leaf);
	int last = slot + nr - 1, ret = 0;

	if (nr <= 0 || (u32)(slot + nr) > n)
		return -EINVAL;
	for (int i = slot; i <= last; i++)
		dsize += ubt_item_size(leaf, i);
	if ((u32)(last + 1) < n) {
		u32 top = item_off(leaf, last); /* data of later items lies below this */
		memmove(LEAF_DATA(leaf) + data_end + dsize, LEAF_DATA(leaf) + data_end, top - data_end);
		for (u32 i = (u32)last + 1; i < n; i++)
			set_item_off(leaf, (int)i, item_off(leaf, (int)i) + dsize);
		memmove(item_w(leaf, slot), item_w(leaf, last + 1), (n - (u32)last - 1) * sizeof(struct btrfs_item));
	}
	set_nritems(leaf, n - (u32)nr);
	ubt_mark_buffer_dirty(h, leaf);
	if (n - (u32)nr == 0) {
		if (path->nodes[1]) {
			ret = remove_block(h, root, path, 0);
			if (!ret)
				ret = shrink_root(h, root, path);
		}
		/* an empty root leaf is fine */
	} else {
		if (slot == 0) {
			struct ubt_key k;
			ubt_item_key(leaf, 0, &k);
			fixup_low_keys(h, path, &k, 1);
		}
		ret = maybe_merge_leaf(h, root, path);
		if (!ret)
			ret = maybe_merge_node(h, root, path, 1);
	}
	if (ret && !h->error)
		h->error = ret;
	return ret;
}

void ubt_extend_item(struct ubt_trans_handle *h, struct ubt_path *path, u32 extra)
{
	struct extent_buffer *leaf = path->nodes[0];
	int slot = path->slots[0];
	u32 n = ubt_eb_nritems(leaf), data_end = leaf_data_end(leaf);
	u32 top = item_off(leaf, slot) + ubt_item_size(leaf, slot);

	memmove(LEAF_DATA(leaf) + data_end - extra, LEAF_DATA(leaf) + data_end, top - data_end);
	for (u32 i = (u32)slot; i < n; i++)
		set_item_off(leaf, (int)i, item_off(leaf, (int)i) - extra);
	set_item_size(leaf, slot, ubt_item_size(leaf, slot) + extra);
	ubt_mark_buffer_dirty(h, leaf);
}

void ubt_truncate_item(struct ubt_trans_handle *h, struct ubt_path *path, u32 new_size, bool from_end)
{
	struct extent_buffer *leaf = path->nodes[0];
	int slot = path->slots[0];
	u32 n = ubt_eb_nritems(leaf), data_end = leaf_data_end(leaf);
	u32 off = item_off(leaf, slot), size = ubt_item_size(leaf, slot), d = size - new_size;
	u32 top = from_end ? off + new_size : off;

	if (new_size >= size)
		return;
	memmove(LEAF_DATA(leaf) + data_end + d, LEAF_DATA(leaf) + data_end, top - data_end);
	for (u32 i = (u32)slot; i < n; i++)
		set_item_off(leaf, (int)i, item_off(leaf, (int)i) + d);
	set_item_size(leaf, slot, new_size);
	ubt_mark_buffer_dirty(h, leaf);
}

int ubt_write_dirty_blocks(struct ubt_fs_info *fs_info)
{
	struct extent_buffer *eb, *next;
	int ret = 0;

	for (eb = fs_info->dirty_list; eb; eb = next) {
		int copies = ubt_num_copies(fs_info, eb->start);

		next = eb->dirty_next;
		if (!ret) {
			struct btrfs_header *h = (struct btrfs_header *)eb->data;
			u8 csum[UBT_CSUM_MAX];

			h->flags = htole64(le64toh(h->flags) | BTRFS_HEADER_FLAG_WRITTEN);
			ubt_csum(fs_info->csum_type, eb->data + BTRFS_CSUM_SIZE, eb->len - BTRFS_CSUM_SIZE, csum);
			memcpy(h->csum, csum, BTRFS_CSUM_SIZE);
			for (int m = 0; m < copies && !ret; m++) {
				u64 devid, physical, len;

				ret = ubt_chunk_map_lookup(fs_info->chunk_map, eb->start, m, &devid, &physical, &len);
				if (ret)
					break;
				if (devid != fs_info->devid)
					continue;
				if (len < eb->len) {
					ubt_err("tree block %llu crosses a stripe", (unsigned long long)eb->start);
					ret = -EUCLEAN;
					break;
				}
				ret = ubt_bdev_write(fs_info->bdev, eb->data, eb->len, physical);
				if (ret)
					ubt_err("writing tree block %llu failed: %s", (unsigned long long)eb->start,
						strerror(-ret));
			}
		}
		eb->dirty = false;
		eb->dirty_next = NULL;
		ubt_eb_put(eb);
	}
	fs_info->dirty_list = NULL;
	fs_info->nr_dirty = 0;
	return ret;
}
