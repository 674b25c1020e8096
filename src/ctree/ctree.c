/*
 * ctree.c — searching and walking a btrfs B-tree (read side): binary search in nodes and leaves,
 * descent with per-pointer verification (generation, level, first key), and moving a path to the
 * next or previous item across leaves.
 */
#include "ctree.h"

#include "../util/messages.h"
#include "disk-io.h"

void ubt_path_release(struct ubt_path *p)
{
	for (int i = 0; i < BTRFS_MAX_LEVEL; i++) {
		if (p->nodes[i])
			ubt_eb_put(p->nodes[i]);
		p->nodes[i] = NULL;
		p->slots[i] = 0;
	}
}

int ubt_bin_search(const struct extent_buffer *eb, const struct ubt_key *key, bool *exact)
{
	int lo = 0, hi = (int)ubt_eb_nritems(eb);
	bool leaf = ubt_eb_level(eb) == 0;

	*exact = false;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		struct ubt_key k;
		int c;

		if (leaf)
			ubt_item_key(eb, mid, &k);
		else
			ubt_node_key(eb, mid, &k);
		c = ubt_key_cmp(&k, key);
		if (c < 0) {
			lo = mid + 1;
		} else if (c > 0) {
			hi = mid;
		} else {
			*exact = true;
			return mid;
		}
	}
	return lo;
}

static struct extent_buffer *read_child(struct ubt_root *root, struct extent_buffer *parent, int slot)
{
	const struct btrfs_key_ptr *kp = ubt_eb_key_ptr(parent, slot);
	struct ubt_key first;

	ubt_disk_key_to_cpu(&first, &kp->key);
	return ubt_read_tree_block(root->fs_info, le64toh(kp->blockptr), le64toh(kp->generation),
				   ubt_eb_level(parent) - 1, &first);
}

int ubt_search_slot(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path)
{
	struct extent_buffer *eb;
	int level;

	ubt_path_release(path);
	eb = ubt_read_tree_block(root->fs_info, root->bytenr, root->generation, root->level, NULL);
	if (IS_ERR(eb)) {
		ubt_err("cannot read the root block of tree %llu", (unsigned long long)root->objectid);
		return (int)PTR_ERR(eb);
	}
	for (;;) {
		bool exact;
		int slot = ubt_bin_search(eb, key, &exact);

		level = ubt_eb_level(eb);
		path->nodes[level] = eb;
		if (level == 0) {
			path->slots[0] = slot;
			return exact ? 0 : 1;
		}
		if (!exact && slot > 0)
			slot--;
		path->slots[level] = slot;
		eb = read_child(root, eb, slot);
		if (IS_ERR(eb)) {
			ubt_path_release(path);
			return (int)PTR_ERR(eb);
		}
	}
}

static int next_leaf(struct ubt_root *root, struct ubt_path *path)
{
	int level = 1;

	for (;;) {
		if (level >= BTRFS_MAX_LEVEL || !path->nodes[level])
			return 1;
		if (path->slots[level] + 1 < (int)ubt_eb_nritems(path->nodes[level]))
			break;
		level++;
	}
	path->slots[level]++;
	while (level > 0) {
		struct extent_buffer *child = read_child(root, path->nodes[level], path->slots[level]);

		if (IS_ERR(child))
			return (int)PTR_ERR(child);
		level--;
		ubt_eb_put(path->nodes[level]);
		path->nodes[level] = child;
		path->slots[level] = 0;
	}
	return 0;
}

static int prev_leaf(struct ubt_root *root, struct ubt_path *path)
{
	int level = 1;

	for (;;) {
		if (level >= BTRFS_MAX_LEVEL || !path->nodes[level])
			return 1;
		if (path->slots[level] > 0)
			break;
		level++;
	}
	path->slots[level]--;
	while (level > 0) {
		struct extent_buffer *child = read_child(root, path->nodes[level], path->slots[level]);

		if (IS_ERR(child))
			return (int)PTR_ERR(child);
		level--;
		ubt_eb_put(path->nodes[level]);
		path->nodes[level] = child;
		path->slots[level] = (int)ubt_eb_nritems(child) - 1;
	}
	return 0;
}

int ubt_next_item(struct ubt_root *root, struct ubt_path *path)
{
	struct extent_buffer *leaf = path->nodes[0];
	int ret;

	if (!leaf)
		return 1;
	if (path->slots[0] < (int)ubt_eb_nritems(leaf)) {
		path->slots[0]++;
		if (path->slots[0] < (int)ubt_eb_nritems(leaf))
			return 0;
	}
	/* Leaves other than an empty root are never empty, but walk past any that are. */
	do {
		ret = next_leaf(root, path);
	} while (ret == 0 && ubt_eb_nritems(path->nodes[0]) == 0);
	return ret;
}

int ubt_prev_item(struct ubt_root *root, struct ubt_path *path)
{
	struct extent_buffer *leaf = path->nodes[0];
	int ret;

	if (!leaf)
		return 1;
	if (path->slots[0] > (int)ubt_eb_nritems(leaf))
		path->slots[0] = (int)ubt_eb_nritems(leaf);
	if (path->slots[0] > 0) {
		path->slots[0]--;
		return 0;
	}
	do {
		ret = prev_leaf(root, path);
	} while (ret == 0 && ubt_eb_nritems(path->nodes[0]) == 0);
	return ret;
}

int ubt_search_le(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path)
{
	int ret = ubt_search_slot(root, key, path);

	if (ret <= 0)
		return ret;
	ret = ubt_prev_item(root, path);
	if (ret)
		ubt_path_release(path);
	return ret;
}

int ubt_root_load_highest_objectid(struct ubt_root *root)
{
	struct ubt_key key = { .objectid = BTRFS_LAST_FREE_OBJECTID, .type = 0xff, .offset = (u64)-1 };
	struct ubt_path path;
	u64 highest = BTRFS_FIRST_FREE_OBJECTID - 1;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_le(root, &key, &path);
	if (ret == 0) {
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &key);
		if (key.objectid > highest)
			highest = key.objectid;
	}
	ubt_path_release(&path);
	if (ret < 0)
		return ret;
	root->highest_objectid = highest;
	return 0;
}

int ubt_search_ge(struct ubt_root *root, const struct ubt_key *key, struct ubt_path *path)
{
	int ret = ubt_search_slot(root, key, path);

	if (ret <= 0)
		return ret;
	if (path->slots[0] < (int)ubt_eb_nritems(path->nodes[0]))
		return 0;
	ret = ubt_next_item(root, path);
	if (ret)
		ubt_path_release(path);
	return ret;
}
