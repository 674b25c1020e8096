/*
 * test_ctree.c — the copy-on-write B-tree against an in-memory model: thousands of random inserts,
 * deletes, extends and truncates in one private tree, with leaf/node splits, merges and root
 * shrinking; every block is written out and read back through the tree checker. A bump allocator
 * stands in for alloc/ so that this tests ctree alone. Also: extending an item of a full leaf,
 * at its first, middle and last slot, which needs a split that keeps the item (the split that once
 * moved the item away from its key and failed the extend with EUCLEAN).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctree/ctree-write.h"
#include "ctree/disk-io.h"
#include "ctree/eb-cache.h"
#include "device/bdev.h"
#include "transaction/transaction.h"
#include "volumes/volumes.h"

struct model_item {
	struct ubt_key key;
	u32 size;
	u8 *data;
};

static struct {
	char dir[64];
	char img[128];
	struct ubt_fs_info *fs_info;
	u64 next_block, block_end;
	u64 freed;
	struct model_item *items;
	size_t nr, cap;
	struct ubt_root root;
} T;

/* ---- bump allocator in the (empty) tail of the metadata chunk ---- */
static struct extent_buffer *fake_alloc(struct ubt_trans_handle *h, struct ubt_root *root, u64 parent, int level,
					const struct ubt_key *first, u64 hint)
{
	struct ubt_fs_info *fi = h->fs_info;
	struct extent_buffer *eb;
	struct btrfs_header *hd;

	(void)parent;
	(void)first;
	(void)hint;
	if (T.next_block + fi->nodesize > T.block_end)
		return ERR_PTR(-ENOSPC);
	eb = ubt_eb_alloc(T.next_block, fi->nodesize);
	T.next_block += fi->nodesize;
	memset(eb->data, 0, eb->len);
	hd = (struct btrfs_header *)eb->data;
	hd->bytenr = htole64(eb->start);
	hd->generation = htole64(h->transid);
	hd->owner = htole64(root->objectid);
	hd->level = (u8)level;
	hd->flags = htole64(BTRFS_MIXED_BACKREF_REV << BTRFS_BACKREF_REV_SHIFT);
	memcpy(hd->fsid, fi->metadata_uuid, BTRFS_FSID_SIZE);
	eb = ubt_eb_cache_insert_new(fi->eb_cache, eb);
	ubt_mark_buffer_dirty(h, eb);
	return eb;
}
static int fake_free(struct ubt_trans_handle *h, struct ubt_root *r, struct extent_buffer *eb, u64 p, bool last)
{
	(void)h; (void)r; (void)eb; (void)p; (void)last;
	T.freed++;
	return 0;
}
static int fake_ref(struct ubt_trans_handle *h, struct ubt_root *r, struct extent_buffer *eb, bool full)
{
	(void)h; (void)r; (void)eb; (void)full;
	return 0;
}
static int fake_info(struct ubt_trans_handle *h, u64 b, int l, u64 *refs, u64 *flags)
{
	(void)h; (void)b; (void)l;
	*refs = 1;
	*flags = 0;
	return 0;
}
static int fake_flags(struct ubt_trans_handle *h, struct extent_buffer *eb, u64 f)
{
	(void)h; (void)eb; (void)f;
	return 0;
}
static const struct ubt_extent_ops fake_ops = {
	.alloc_tree_block = fake_alloc, .free_tree_block = fake_free, .inc_ref = fake_ref, .dec_ref = fake_ref,
	.lookup_extent_info = fake_info, .set_extent_flags = fake_flags,
};

/* ---- model ---- */
static ssize_t model_find(const struct ubt_key *k, bool *exact)
{
	size_t lo = 0, hi = T.nr;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = ubt_key_cmp(&T.items[mid].key, k);
		if (c < 0)
			lo = mid + 1;
		else if (c > 0)
			hi = mid;
		else {
			*exact = true;
			return (ssize_t)mid;
		}
	}
	*exact = false;
	return (ssize_t)lo;
}

static void verify_tree(void)
{
	struct ubt_key zero = { 0 };
	struct ubt_path path;
	size_t i = 0;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(&T.root, &zero, &path);
	while (ret == 0) {
		struct ubt_key k;
		ubt_item_key(path.nodes[0], path.slots[0], &k);
		assert_true(i < T.nr);
		assert_int_equal(ubt_key_cmp(&k, &T.items[i].key), 0);
		assert_int_equal(ubt_item_size(path.nodes[0], path.slots[0]), T.items[i].size);
		assert_memory_equal(ubt_item_ptr(path.nodes[0], path.slots[0]), T.items[i].data, T.items[i].size ? T.items[i].size : 1 ? T.items[i].size : 0);
		i++;
		ret = ubt_next_item(&T.root, &path);
	}
	assert_int_equal(ret, 1);
	assert_int_equal(i, T.nr);
	ubt_path_release(&path);
}

static void fill(u8 *d, u32 n, u32 seed)
{
	for (u32 i = 0; i < n; i++)
		d[i] = (u8)(seed * 31 + i * 7);
}

static int setup(void **state)
{
	char cmd[512];
	struct ubt_bdev *bdev;
	struct ubt_chunk_map *m;

	(void)state;
	snprintf(T.dir, sizeof(T.dir), "/tmp/ubt-ctree-XXXXXX");
	assert_non_null(mkdtemp(T.dir));
	snprintf(T.img, sizeof(T.img), "%s/img", T.dir);
	snprintf(cmd, sizeof(cmd), "truncate -s 512M %s && mkfs.btrfs -q -f -n 4096 %s >/dev/null 2>&1", T.img, T.img);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(ubt_bdev_open_file(T.img, false, &bdev), 0);
	assert_int_equal(ubt_open_ctree(bdev, 0, 4 << 20, &T.fs_info), 0);
	m = T.fs_info->chunk_map;
	for (size_t i = 0; i < m->nr; i++) {
		if (m->chunks[i]->type & BTRFS_BLOCK_GROUP_METADATA) {
			/* mkfs uses the first few blocks; take the second half of the chunk. */
			T.next_block = m->chunks[i]->logical + m->chunks[i]->length / 2;
			T.block_end = m->chunks[i]->logical + m->chunks[i]->length;
		}
	}
	assert_true(T.next_block != 0);
	T.fs_info->extent_ops = &fake_ops;
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	ubt_close_ctree(T.fs_info);
	for (size_t i = 0; i < T.nr; i++)
		free(T.items[i].data);
	free(T.items);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", T.dir);
	return system(cmd) == 0 ? 0 : -1;
}

/*
 * A fresh tree whose single leaf holds items of @sizes (keys 1, 2, ...; contents from fill()); then
 * item @target is extended by @extra bytes the way callers do it (search with ins_len = extra plus
 * an item header, then ubt_extend_item). Every item must read back whole and in order.
 */
static void extend_in_full_leaf(u64 objectid, const u32 *sizes, int nr, int target, u32 extra)
{
	struct ubt_trans_handle h;
	struct ubt_root root = { 0 };
	struct extent_buffer *leaf;
	struct ubt_path path;
	struct ubt_key k = { 0, BTRFS_EXTENT_CSUM_KEY, 0 };
	u8 *buf = malloc(4096);
	u32 old;
	int ret;

	assert_non_null(buf);
	assert_int_equal(ubt_trans_start(T.fs_info, &h), 0);
	root.fs_info = T.fs_info;
	root.objectid = objectid;
	leaf = fake_alloc(&h, &root, 0, 0, NULL, 0);
	root.bytenr = leaf->start;
	root.generation = h.transid;
	root.level = 0;
	ubt_eb_put(leaf);
	for (int i = 0; i < nr; i++) {
		k.objectid = (u64)i + 1;
		fill(buf, sizes[i], (u32)i);
		assert_int_equal(ubt_insert_item(&h, &root, &k, buf, sizes[i]), 0);
	}
	/* All in one leaf, and too full to take @extra more bytes. */
	assert_int_equal(root.level, 0);
	ubt_path_init(&path);
	k.objectid = (u64)target + 1;
	ret = ubt_search_slot_write(&h, &root, &k, &path, (int)(extra + sizeof(struct btrfs_item)));
	assert_int_equal(ret, 0);
	assert_true(root.level > 0); /* it did split */
	leaf = path.nodes[0];
	old = ubt_item_size(leaf, path.slots[0]);
	assert_int_equal(old, sizes[target]);
	ubt_extend_item(&h, &path, extra);
	memset((u8 *)ubt_item_ptr(leaf, path.slots[0]) + old, 0xa5, extra);
	ubt_mark_buffer_dirty(&h, leaf);
	ubt_path_release(&path);

	for (int i = 0; i < nr; i++) {
		u32 want = sizes[i] + (i == target ? extra : 0);
		const u8 *p;

		k.objectid = (u64)i + 1;
		assert_int_equal(ubt_search_slot(&root, &k, &path), 0);
		assert_int_equal(ubt_item_size(path.nodes[0], path.slots[0]), want);
		p = ubt_item_ptr(path.nodes[0], path.slots[0]);
		fill(buf, sizes[i], (u32)i);
		assert_memory_equal(p, buf, sizes[i]);
		for (u32 j = sizes[i]; j < want; j++)
			assert_int_equal(p[j], 0xa5);
		ubt_path_release(&path);
	}
	assert_int_equal(ubt_trans_end(&h), 0);
	free(buf);
}

static void test_extend_in_full_leaf(void **state)
{
	/* Leaf data of a 4 KiB node: 3995 bytes; each item also takes a 25-byte header. */
	static const u32 first[] = { 1000, 1400, 700, 700 };  /* the left half has no room */
	static const u32 middle[] = { 1200, 1200, 1200 };     /* neither side has room: two splits */
	static const u32 last[] = { 1200, 1200, 1200 };

	(void)state;
	extend_in_full_leaf(301, first, 4, 0, 1600);
	extend_in_full_leaf(302, middle, 3, 1, 1500);
	extend_in_full_leaf(303, last, 3, 2, 1500);
	extend_in_full_leaf(304, first, 4, 3, 2500);
}

static void test_random_ops(void **state)
{
	struct ubt_trans_handle h;
	struct extent_buffer *leaf;
	u32 seed = 12345;
	int ret;

	(void)state;
	assert_int_equal(ubt_trans_start(T.fs_info, &h), 0);
	T.root.fs_info = T.fs_info;
	T.root.objectid = 300;
	leaf = fake_alloc(&h, &T.root, 0, 0, NULL, 0);
	T.root.bytenr = leaf->start;
	T.root.generation = h.transid;
	T.root.level = 0;
	ubt_eb_put(leaf);

	for (int op = 0; op < 30000; op++) {
		struct ubt_path path;
		struct ubt_key k;
		bool exact;
		ssize_t idx;
		u32 r;

		seed = seed * 1103515245 + 12345;
		r = (seed >> 8) % 100;
		ubt_path_init(&path);
		if (r < 62 || T.nr < 50) {
			u32 size;
			seed = seed * 1103515245 + 12345;
			k.objectid = (seed >> 4) % 5000;
			k.type = (u8)((seed >> 16) % 4 + 1);
			seed = seed * 1103515245 + 12345;
			k.offset = seed % 1000;
			size = (seed >> 12) % 5 == 0 ? (seed >> 4) % 1800 : (seed >> 4) % 120;
			idx = model_find(&k, &exact);
			u8 *d = malloc(size ? size : 1);
			fill(d, size, seed);
			ret = ubt_insert_item(&h, &T.root, &k, d, size);
			if (exact) {
				assert_int_equal(ret, -EEXIST);
				free(d);
				h.error = 0;
				continue;
			}
			assert_int_equal(ret, 0);
			if (T.nr == T.cap) {
				T.cap = T.cap ? T.cap * 2 : 1024;
				T.items = realloc(T.items, T.cap * sizeof(*T.items));
			}
			memmove(&T.items[idx + 1], &T.items[idx], (T.nr - (size_t)idx) * sizeof(*T.items));
			T.items[idx] = (struct model_item){ k, size, d };
			T.nr++;
		} else if (r < 85) {
			/* delete 1..3 consecutive items */
			size_t i = (seed >> 3) % T.nr;
			int nr = 1 + (int)((seed >> 9) % 3);
			ret = ubt_search_slot_write(&h, &T.root, &T.items[i].key, &path, -1);
			assert_int_equal(ret, 0);
			if (path.slots[0] + nr > (int)ubt_eb_nritems(path.nodes[0]))
				nr = (int)ubt_eb_nritems(path.nodes[0]) - path.slots[0];
			assert_int_equal(ubt_del_items(&h, &T.root, &path, path.slots[0], nr), 0);
			for (int j = 0; j < nr; j++)
				free(T.items[i + (size_t)j].data);
			memmove(&T.items[i], &T.items[i + (size_t)nr], (T.nr - i - (size_t)nr) * sizeof(*T.items));
			T.nr -= (size_t)nr;
		} else if (r < 93) {
			size_t i = (seed >> 3) % T.nr;
			u32 extra = (seed >> 11) % 200 + 1;
			ret = ubt_search_slot_write(&h, &T.root, &T.items[i].key, &path, (int)extra);
			assert_int_equal(ret, 0);
			ubt_extend_item(&h, &path, extra);
			T.items[i].data = realloc(T.items[i].data, T.items[i].size + extra);
			fill(T.items[i].data + T.items[i].size, extra, seed);
			memcpy((u8 *)ubt_item_ptr(path.nodes[0], path.slots[0]) + T.items[i].size,
			       T.items[i].data + T.items[i].size, extra);
			T.items[i].size += extra;
		} else {
			size_t i = (seed >> 3) % T.nr;
			bool from_end = (seed >> 7) & 1;
			u32 ns;
			if (!T.items[i].size)
				continue;
			ns = (seed >> 11) % T.items[i].size;
			ret = ubt_search_slot_write(&h, &T.root, &T.items[i].key, &path, 0);
			assert_int_equal(ret, 0);
			ubt_truncate_item(&h, &path, ns, from_end);
			if (!from_end)
				memmove(T.items[i].data, T.items[i].data + T.items[i].size - ns, ns);
			T.items[i].size = ns;
		}
		ubt_path_release(&path);
		if (op % 5000 == 4999)
			verify_tree();
	}
	verify_tree();
	printf("items %zu, tree level %u, blocks freed %llu\n", T.nr, T.root.level, (unsigned long long)T.freed);
	assert_true(T.root.level >= 2);
	assert_true(T.freed > 0);

	/* Write everything, drop the cache, and read it all back through the tree checker. */
	assert_int_equal(ubt_write_dirty_blocks(T.fs_info), 0);
	pthread_rwlock_unlock(&T.fs_info->tree_lock);
	ubt_eb_cache_destroy(T.fs_info->eb_cache);
	assert_int_equal(ubt_eb_cache_init(T.fs_info->eb_cache, 1 << 20, T.fs_info->nodesize), 0);
	verify_tree();
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_extend_in_full_leaf),
					    cmocka_unit_test(test_random_ops) };
	return cmocka_run_group_tests(tests, setup, teardown);
}
