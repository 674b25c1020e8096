/*
 * xattr-write.c — setting and removing extended attributes: XATTR_ITEM (ino, XATTR_ITEM, name
 * hash) items in dir-item format carrying name and value, several names per item on a hash
 * collision; create/replace semantics and btrfs's size limit (one leaf item).
 */
#include "inode-write.h"

#include <stdlib.h>

#include "../codec/csum.h"
#include "../ctree/disk-io.h"
#include "inode-internal.h"

int ubt_xattr_set(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const char *name, const void *value,
		  size_t size, int flags, bool *changed)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	size_t name_len = strlen(name);
	struct ubt_key key = { .objectid = ino, .type = BTRFS_XATTR_ITEM_KEY };
	struct ubt_dir_entry ent;
	struct ubt_path path;
	struct extent_buffer *leaf;
	struct btrfs_dir_item *di;
	bool found = false;
	u32 item_size = 0, cursor = 0, start = 0, old_len = 0;
	u8 *buf = NULL;
	u32 entry;
	int ret;

	*changed = false;
	if (name_len == 0 || name_len > BTRFS_NAME_LEN)
		return -ERANGE;
	if (value && name_len + size > ubt_max_xattr_size(fs_info))
		return -ENOSPC;
	key.offset = ubt_name_hash(name, name_len);

	ubt_path_init(&path);
	ret = ubt_search_slot(root, &key, &path);
	if (ret < 0)
		goto out;
	if (ret == 0) {
		leaf = ubt_path_leaf(&path);
		item_size = ubt_item_size(leaf, ubt_path_slot(&path));
		for (;;) {
			start = cursor;
			ret = ubt_dir_entry_next(root, ino, &key, ubt_item_ptr(leaf, ubt_path_slot(&path)), item_size,
						 &cursor, &ent);
			if (ret < 0)
				goto out;
			if (ret > 0)
				break;
			if (ent.name_len == name_len && memcmp(ent.name, name, name_len) == 0) {
				found = true;
				old_len = cursor - start;
				break;
			}
		}
	}
	ubt_path_release(&path);
	if (found && (flags & UBT_XATTR_CREATE)) {
		ret = -EEXIST;
		goto out;
	}
	if (!found && ((flags & UBT_XATTR_REPLACE) || !value)) {
		ret = -ENODATA;
		goto out;
	}
	entry = (u32)(sizeof(*di) + name_len + (value ? size : 0));
	/* The collision item must still fit after the change. */
	if (value && item_size - old_len + entry > ubt_max_item_size(fs_info)) {
		ret = -ENOSPC;
		goto out;
	}
	if (value) {
		buf = calloc(1, entry);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
	}
	*changed = true;
	if (found) {
		ret = ubt_item_cut(h, root, &key, start, old_len);
		if (ret < 0 || !value)
			goto out;
	}
	di = (struct btrfs_dir_item *)buf;
	/* An xattr entry's location is a zero key. */
	put_le64(&di->transid, h->transid);
	put_le16(&di->data_len, (u16)size);
	put_le16(&di->name_len, (u16)name_len);
	di->type = BTRFS_FT_XATTR;
	memcpy(buf + sizeof(*di), name, name_len);
	if (size)
		memcpy(buf + sizeof(*di) + name_len, value, size);
	ret = ubt_item_insert_or_extend(h, root, &key, buf, entry, ubt_max_item_size(fs_info));
out:
	ubt_path_release(&path);
	free(buf);
	return ret;
}
