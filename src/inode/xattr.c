/*
 * xattr.c — extended attributes: XATTR_ITEM items keyed (ino, XATTR_ITEM, name hash), each a run
 * of packed btrfs_dir_item entries carrying the name then the value. getxattr/listxattr semantics.
 */
#include "inode-internal.h"

#include "../codec/csum.h"

ssize_t ubt_xattr_get(struct ubt_root *root, u64 ino, const char *name, void *buf, size_t size)
{
	struct ubt_path path;
	struct ubt_key key;
	struct ubt_dir_entry ent;
	size_t name_len = strlen(name);
	ssize_t ret;

	if (name_len > BTRFS_NAME_LEN)
		return -ERANGE;
	if (name_len == 0)
		return -ENODATA;
	ubt_path_init(&path);
	ret = ubt_find_named_entry(root, ino, BTRFS_XATTR_ITEM_KEY, name, name_len, &path, &key, &ent);
	if (ret > 0)
		ret = -ENODATA;
	if (ret < 0)
		goto out;
	ret = ent.data_len;
	if (size == 0)
		goto out;
	if (size < ent.data_len) {
		ret = -ERANGE;
		goto out;
	}
	memcpy(buf, ent.data, ent.data_len);
out:
	ubt_path_release(&path);
	return ret;
}

ssize_t ubt_xattr_list(struct ubt_root *root, u64 ino, char *buf, size_t size)
{
	struct ubt_path path;
	struct ubt_key key = { .objectid = ino, .type = BTRFS_XATTR_ITEM_KEY, .offset = 0 };
	struct ubt_dir_entry ent;
	struct extent_buffer *leaf;
	size_t total = 0;
	u32 item_size, cursor;
	int slot;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(root, &key, &path);
	while (ret == 0) {
		leaf = ubt_path_leaf(&path);
		slot = ubt_path_slot(&path);
		ubt_item_key(leaf, slot, &key);
		if (key.objectid != ino || key.type != BTRFS_XATTR_ITEM_KEY)
			break;
		item_size = ubt_item_size(leaf, slot);
		cursor = 0;
		while ((ret = ubt_dir_entry_next(root, ino, &key, ubt_item_ptr(leaf, slot), item_size, &cursor,
						 &ent)) == 0) {
			if (size != 0) {
				if (total + ent.name_len + 1 > size) {
					ret = -ERANGE;
					goto out;
				}
				memcpy(buf + total, ent.name, ent.name_len);
				buf[total + ent.name_len] = '\0';
			}
			total += ent.name_len + 1;
		}
		if (ret < 0)
			goto out;
		ret = ubt_next_item(root, &path);
	}
	if (ret > 0)
		ret = 0;
out:
	ubt_path_release(&path);
	return ret < 0 ? ret : (ssize_t)total;
}
