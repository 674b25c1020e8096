/*
 * dir-write.c — directory entries on the write side: the next DIR_INDEX of a directory, adding a
 * name (DIR_ITEM keyed by the name hash, sharing the item on collision, plus DIR_INDEX), removing
 * one, the parent's i_size (btrfs counts each name twice), and the ancestor test rename needs.
 */
#include "inode-write.h"

#include <inttypes.h>
#include <stdlib.h>

#include "../codec/csum.h"
#include "../ctree/disk-io.h"
#include "../util/messages.h"
#include "inode-internal.h"

int ubt_dir_next_index(struct ubt_root *root, u64 dir, u64 *index)
{
	struct ubt_key key = { .objectid = dir, .type = BTRFS_DIR_INDEX_KEY, .offset = (u64)-1 };
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_le(root, &key, &path);
	if (ret < 0)
		goto out;
	*index = UBT_DIR_START_INDEX;
	if (ret == 0) {
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &key);
		if (key.objectid == dir && key.type == BTRFS_DIR_INDEX_KEY) {
			if (key.offset >= (u64)-2) {
				ret = -EOVERFLOW;
				goto out;
			}
			*index = ubt_max(key.offset + 1, UBT_DIR_START_INDEX);
		}
	}
	ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}

static u32 build_entry(struct ubt_trans_handle *h, u8 *buf, const char *name, size_t len,
		       const struct ubt_key *location, u8 type)
{
	struct btrfs_dir_item *di = (struct btrfs_dir_item *)buf;

	memset(di, 0, sizeof(*di));
	ubt_cpu_key_to_disk(&di->location, location);
	put_le64(&di->transid, h->transid);
	put_le16(&di->data_len, 0);
	put_le16(&di->name_len, (u16)len);
	di->type = type;
	memcpy(buf + sizeof(*di), name, len);
	return (u32)(sizeof(*di) + len);
}

static void dir_size_add(struct btrfs_inode_item *dir_ii, s64 delta)
{
	u64 size = get_le64(&dir_ii->size);

	put_le64(&dir_ii->size, delta < 0 && (u64)-delta > size ? 0 : size + (u64)delta);
	ubt_inode_touch(dir_ii, true);
}

int ubt_dir_add_entry(struct ubt_trans_handle *h, struct ubt_root *root, u64 dir, struct btrfs_inode_item *dir_ii,
		      const char *name, size_t len, const struct ubt_key *location, u8 type, u64 index)
{
	u8 buf[sizeof(struct btrfs_dir_item) + BTRFS_NAME_LEN];
	struct ubt_key key = { .objectid = dir, .type = BTRFS_DIR_ITEM_KEY, .offset = ubt_name_hash(name, len) };
	u32 size = build_entry(h, buf, name, len, location, type);
	int ret;

	ret = ubt_item_insert_or_extend(h, root, &key, buf, size, ubt_max_item_size(root->fs_info));
	if (ret < 0)
		return ret;
	key.type = BTRFS_DIR_INDEX_KEY;
	key.offset = index;
	ret = ubt_insert_item(h, root, &key, buf, size);
	if (ret < 0)
		return ret;
	dir_size_add(dir_ii, 2 * (s64)len);
	return 0;
}

int ubt_dir_del_entry(struct ubt_trans_handle *h, struct ubt_root *root, u64 dir, struct btrfs_inode_item *dir_ii,
		      const char *name, size_t len, u64 index)
{
	struct ubt_key key = { .objectid = dir, .type = BTRFS_DIR_ITEM_KEY, .offset = ubt_name_hash(name, len) };
	struct ubt_dir_entry ent;
	struct ubt_path path;
	struct extent_buffer *leaf;
	const u8 *item;
	u32 size, cursor = 0, start = 0;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot(root, &key, &path);
	if (ret > 0)
		ret = -ENOENT;
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	item = ubt_item_ptr(leaf, ubt_path_slot(&path));
	size = ubt_item_size(leaf, ubt_path_slot(&path));
	for (;;) {
		start = cursor;
		ret = ubt_dir_entry_next(root, dir, &key, item, size, &cursor, &ent);
		if (ret > 0)
			ret = -ENOENT;
		if (ret < 0)
			goto out;
		if (ent.name_len == len && memcmp(ent.name, name, len) == 0)
			break;
	}
	ubt_path_release(&path);
	ret = ubt_item_cut(h, root, &key, start, cursor - start);
	if (ret < 0)
		goto out;
	key.type = BTRFS_DIR_INDEX_KEY;
	key.offset = index;
	ret = ubt_item_delete(h, root, &key);
	if (ret == -ENOENT) {
		ubt_inode_corrupt(root, dir, &key, "no dir index for name '%.*s'", (int)len, name);
		ret = -EUCLEAN;
	}
	if (ret < 0)
		goto out;
	dir_size_add(dir_ii, -2 * (s64)len);
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_dir_is_ancestor(struct ubt_root *root, u64 ino, u64 dir, bool *result)
{
	u64 top = le64toh(root->root_item.root_dirid);
	u64 cur = dir, parent;
	int ret;

	if (!top)
		top = BTRFS_FIRST_FREE_OBJECTID;
	for (u32 depth = 0; depth < 65536; depth++) {
		if (cur == ino) {
			*result = true;
			return 0;
		}
		if (cur == top) {
			*result = false;
			return 0;
		}
		ret = ubt_inode_parent(root, cur, &parent);
		if (ret == -ENOENT) {
			*result = false;
			return 0;
		}
		if (ret < 0)
			return ret;
		if (parent == cur) {
			*result = false;
			return 0;
		}
		cur = parent;
	}
	ubt_err("root %" PRIu64 " dir %" PRIu64 ": parent chain does not end (a loop?)", root->objectid, dir);
	return -EUCLEAN;
}
