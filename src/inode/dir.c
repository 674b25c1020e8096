/*
 * dir.c — directories: the packed btrfs_dir_item parser (shared with xattr.c), name lookup through
 * DIR_ITEM (keyed by the name hash, collisions packed into one item) and iteration in DIR_INDEX
 * order.
 */
#include "inode-internal.h"

#include "../codec/csum.h"

int ubt_dir_entry_next(const struct ubt_root *root, u64 ino, const struct ubt_key *key, const u8 *item,
		       u32 item_size, u32 *cursor, struct ubt_dir_entry *ent)
{
	const struct btrfs_dir_item *di;
	u32 cur = *cursor;
	u32 need;

	if (cur >= item_size)
		return 1;
	if (item_size - cur < sizeof(*di)) {
		ubt_inode_corrupt(root, ino, key, "dir item header at %u overruns item of %u bytes", cur, item_size);
		return -EUCLEAN;
	}
	di = (const struct btrfs_dir_item *)(item + cur);
	ent->name_len = get_le16(&di->name_len);
	ent->data_len = get_le16(&di->data_len);
	need = (u32)sizeof(*di) + ent->name_len + ent->data_len;
	if (item_size - cur < need) {
		ubt_inode_corrupt(root, ino, key, "dir item at %u (name %u, data %u) overruns item of %u bytes", cur,
				  ent->name_len, ent->data_len, item_size);
		return -EUCLEAN;
	}
	if (ent->name_len == 0 || ent->name_len > BTRFS_NAME_LEN) {
		ubt_inode_corrupt(root, ino, key, "dir item at %u has name length %u", cur, ent->name_len);
		return -EUCLEAN;
	}
	ubt_disk_key_to_cpu(&ent->location, &di->location);
	ent->type = di->type;
	ent->name = (const char *)(di + 1);
	ent->data = (const u8 *)ent->name + ent->name_len;
	*cursor = cur + need;
	return 0;
}

/* Check what a directory entry points at. 0 or -EUCLEAN (logged). */
static int check_dir_entry(const struct ubt_root *root, u64 dir, const struct ubt_key *key,
			   const struct ubt_dir_entry *ent)
{
	if (ent->type == BTRFS_FT_XATTR || ent->type >= BTRFS_FT_MAX) {
		ubt_inode_corrupt(root, dir, key, "dir entry of type %u", ent->type);
		return -EUCLEAN;
	}
	if (ent->location.type != BTRFS_INODE_ITEM_KEY && ent->location.type != BTRFS_ROOT_ITEM_KEY) {
		ubt_inode_corrupt(root, dir, key, "dir entry location of key type %u", ent->location.type);
		return -EUCLEAN;
	}
	return 0;
}

int ubt_find_named_entry(struct ubt_root *root, u64 ino, u8 type, const char *name, size_t name_len,
			 struct ubt_path *path, struct ubt_key *key, struct ubt_dir_entry *ent)
{
	struct extent_buffer *leaf;
	u32 size, cursor = 0;
	int slot, ret;

	key->objectid = ino;
	key->type = type;
	key->offset = ubt_name_hash(name, name_len);
	ret = ubt_search_slot(root, key, path);
	if (ret)
		return ret;
	leaf = ubt_path_leaf(path);
	slot = ubt_path_slot(path);
	size = ubt_item_size(leaf, slot);
	for (;;) {
		ret = ubt_dir_entry_next(root, ino, key, ubt_item_ptr(leaf, slot), size, &cursor, ent);
		if (ret)
			return ret;
		if (ent->name_len == name_len && memcmp(ent->name, name, name_len) == 0)
			return 0;
	}
}

int ubt_dir_lookup(struct ubt_root *root, u64 dir, const char *name, size_t name_len,
		   struct ubt_key *location, u8 *type)
{
	struct ubt_path path;
	struct ubt_key key;
	struct ubt_dir_entry ent;
	int ret;

	if (name_len > BTRFS_NAME_LEN)
		return -ENAMETOOLONG;
	if (name_len == 0)
		return -ENOENT;
	ubt_path_init(&path);
	ret = ubt_find_named_entry(root, dir, BTRFS_DIR_ITEM_KEY, name, name_len, &path, &key, &ent);
	if (ret > 0)
		ret = -ENOENT;
	if (ret < 0)
		goto out;
	ret = check_dir_entry(root, dir, &key, &ent);
	if (ret < 0)
		goto out;
	*location = ent.location;
	*type = ent.type;
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_dir_iterate(struct ubt_root *root, u64 dir, u64 start_index, ubt_dir_cb cb, void *ctx)
{
	struct ubt_path path;
	struct ubt_key key = { .objectid = dir, .type = BTRFS_DIR_INDEX_KEY, .offset = start_index };
	struct ubt_dir_entry ent;
	struct extent_buffer *leaf;
	u32 size, cursor;
	int slot;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(root, &key, &path);
	while (ret == 0) {
		leaf = ubt_path_leaf(&path);
		slot = ubt_path_slot(&path);
		ubt_item_key(leaf, slot, &key);
		if (key.objectid != dir || key.type != BTRFS_DIR_INDEX_KEY)
			break;
		size = ubt_item_size(leaf, slot);
		cursor = 0;
		ret = ubt_dir_entry_next(root, dir, &key, ubt_item_ptr(leaf, slot), size, &cursor, &ent);
		if (ret > 0) {
			ubt_inode_corrupt(root, dir, &key, "empty dir index item");
			ret = -EUCLEAN;
		}
		if (ret < 0)
			goto out;
		if (cursor != size) {
			ubt_inode_corrupt(root, dir, &key, "dir index item holds %u bytes after its entry",
					  size - cursor);
			ret = -EUCLEAN;
			goto out;
		}
		ret = check_dir_entry(root, dir, &key, &ent);
		if (ret < 0)
			goto out;
		ret = cb(ctx, key.offset, ent.name, ent.name_len, &ent.location, ent.type);
		if (ret != 0)
			goto out;
		ret = ubt_next_item(root, &path);
	}
	if (ret > 0)
		ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}
