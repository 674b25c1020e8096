/*
 * disk-io.c — opening a filesystem: superblock selection (primary and mirrors, newest valid),
 * the feature gate, the chunk map, the root tree and the core trees; verified tree block reads
 * through the extent-buffer cache; logical reads through the chunk map; subvolume roots.
 */
#include "disk-io.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "../codec/csum.h"
#include "../device/bdev.h"
#include "../util/messages.h"
#include "../volumes/volumes.h"
#include "eb-cache.h"
#include "tree-checker.h"

#define UBT_DEFAULT_CACHE_BYTES (64u << 20)

int ubt_verify_csum(struct ubt_fs_info *fs_info, const void *data, size_t len, const u8 *csum)
{
	u8 got[UBT_CSUM_MAX];

	if (ubt_csum(fs_info->csum_type, data, len, got))
		return -EUCLEAN;
	return memcmp(got, csum, (size_t)fs_info->csum_size) ? -EIO : 0;
}

int ubt_num_copies(struct ubt_fs_info *fs_info, u64 logical)
{
	int n = ubt_chunk_map_num_copies(fs_info->chunk_map, logical);
	return n < 1 ? 1 : n;
}

/* Read from one specific copy. -EAGAIN when that copy lives on a device we do not have. */
static int read_logical_mirror(struct ubt_fs_info *fs_info, u64 logical, void *buf, size_t len, int mirror)
{
	u8 *p = buf;

	while (len) {
		u64 devid, physical, maplen;
		int ret = ubt_chunk_map_lookup(fs_info->chunk_map, logical, mirror, &devid, &physical, &maplen);

		if (ret == -EUCLEAN)
			ubt_err("logical address %llu is not mapped by any chunk", (unsigned long long)logical);
		if (ret)
			return ret;
		if (devid != fs_info->devid)
			return -EAGAIN;
		if (maplen > len)
			maplen = len;
		ret = ubt_bdev_read(fs_info->bdev, p, (size_t)maplen, physical);
		if (ret)
			return ret;
		p += maplen;
		logical += maplen;
		len -= (size_t)maplen;
	}
	return 0;
}

int ubt_read_logical(struct ubt_fs_info *fs_info, u64 logical, void *buf, size_t len, int mirror)
{
	int copies, ret = -EIO;

	if (mirror > 0)
		return read_logical_mirror(fs_info, logical, buf, len, mirror);
	copies = ubt_num_copies(fs_info, logical);
	for (int m = 0; m < copies; m++) {
		ret = read_logical_mirror(fs_info, logical, buf, len, m);
		if (ret != -EAGAIN && ret != -EIO)
			break;
	}
	if (ret == -EAGAIN) {
		ubt_err("logical address %llu: no copy on this device (a multi-device filesystem?)",
			(unsigned long long)logical);
		ret = -EIO;
	}
	return ret;
}

/* Checks from the parent pointer: they apply to cached blocks too. */
static int check_parent_expectations(struct extent_buffer *eb, u64 expected_gen, int expected_level,
				     const struct ubt_key *first_key)
{
	if (expected_gen && ubt_eb_generation(eb) != expected_gen) {
		ubt_err("tree block %llu: generation %llu, parent expects %llu (stale or misplaced block)",
			(unsigned long long)eb->start, (unsigned long long)ubt_eb_generation(eb),
			(unsigned long long)expected_gen);
		return -EUCLEAN;
	}
	if (expected_level >= 0 && ubt_eb_level(eb) != expected_level) {
		ubt_err("tree block %llu: level %u, parent expects %d", (unsigned long long)eb->start,
			ubt_eb_level(eb), expected_level);
		return -EUCLEAN;
	}
	if (first_key && ubt_eb_nritems(eb) > 0) {
		struct ubt_key k;

		if (ubt_eb_level(eb) == 0)
			ubt_item_key(eb, 0, &k);
		else
			ubt_node_key(eb, 0, &k);
		if (ubt_key_cmp(&k, first_key)) {
			ubt_err("tree block %llu: first key (%llu %u %llu) does not match the parent's (%llu %u %llu)",
				(unsigned long long)eb->start, (unsigned long long)k.objectid, k.type,
				(unsigned long long)k.offset, (unsigned long long)first_key->objectid,
				first_key->type, (unsigned long long)first_key->offset);
			return -EUCLEAN;
		}
	}
	return 0;
}

struct extent_buffer *ubt_read_tree_block(struct ubt_fs_info *fs_info, u64 bytenr, u64 expected_gen,
					  int expected_level, const struct ubt_key *first_key)
{
	struct extent_buffer *eb;
	int copies, ret = -EIO;

	if (!bytenr || !IS_ALIGNED(bytenr, fs_info->sectorsize)) {
		ubt_err("tree block pointer %llu is invalid", (unsigned long long)bytenr);
		return ERR_PTR(-EUCLEAN);
	}
	eb = ubt_eb_cache_lookup(fs_info->eb_cache, bytenr);
	if (eb)
		goto check;

	eb = ubt_eb_alloc(bytenr, fs_info->nodesize);
	if (!eb)
		return ERR_PTR(-ENOMEM);
	copies = ubt_num_copies(fs_info, bytenr);
	for (int m = 0; m < copies; m++) {
		bool last = m == copies - 1;

		ret = read_logical_mirror(fs_info, bytenr, eb->data, fs_info->nodesize, m);
		if (ret == -EAGAIN || ret == -EIO) {
			if (ret == -EIO)
				ubt_warn("tree block %llu: read error on copy %d", (unsigned long long)bytenr, m);
			ret = -EIO;
			continue;
		}
		if (ret)
			break;
		ret = ubt_check_tree_block(fs_info, eb->data, bytenr, !last);
		if (!ret) {
			if (m > 0)
				ubt_warn("tree block %llu: copy %d was bad, read copy %d", (unsigned long long)bytenr,
					 m - 1, m);
			break;
		}
		if (!last)
			ubt_warn("tree block %llu: copy %d is bad (%s), trying the next copy",
				 (unsigned long long)bytenr, m, ret == -EIO ? "checksum mismatch" : "corrupt");
	}
	if (ret) {
		ubt_eb_put(eb);
		return ERR_PTR(ret);
	}
	eb = ubt_eb_cache_insert(fs_info->eb_cache, eb);
check:
	ret = check_parent_expectations(eb, expected_gen, expected_level, first_key);
	if (ret) {
		ubt_eb_put(eb);
		return ERR_PTR(ret);
	}
	return eb;
}

static const char *const incompat_names[] = {
	"mixed_backref", "default_subvol", "mixed_groups", "compress_lzo", "compress_zstd",
	"big_metadata", "extended_iref", "raid56", "skinny_metadata", "no_holes", "metadata_uuid",
	"raid1c34", "zoned", "extent_tree_v2", "raid_stripe_tree", "(bit 15)", "simple_quota",
};
static const char *const compat_ro_names[] = { "free_space_tree", "free_space_tree_valid", "verity",
					       "block_group_tree" };

static void feature_names(char *buf, size_t size, u64 bits, const char *const *names, size_t nnames)
{
	size_t pos = 0;

	buf[0] = 0;
	for (int i = 0; i < 64 && pos < size; i++) {
		if (!(bits & (1ULL << i)))
			continue;
		if ((size_t)i < nnames)
			pos += (size_t)snprintf(buf + pos, size - pos, "%s%s", pos ? ", " : "", names[i]);
		else
			pos += (size_t)snprintf(buf + pos, size - pos, "%s(bit %d)", pos ? ", " : "", i);
	}
}

/* Validate one superblock copy read from @offset. Returns 0 or a negative errno (quietly). */
static int check_super(const struct btrfs_super_block *sb, u64 offset, const char **why)
{
	u16 csum_type = le16toh(sb->csum_type);
	u8 csum[UBT_CSUM_MAX];
	int csum_size;
	u32 sectorsize = le32toh(sb->sectorsize), nodesize = le32toh(sb->nodesize);

	if (le64toh(sb->magic) != BTRFS_MAGIC) {
		*why = "no btrfs magic";
		return -EINVAL;
	}
	csum_size = ubt_csum_size(csum_type);
	if (csum_size < 0) {
		*why = "unknown checksum type";
		return -EINVAL;
	}
	if (ubt_csum(csum_type, (const u8 *)sb + BTRFS_CSUM_SIZE, BTRFS_SUPER_INFO_SIZE - BTRFS_CSUM_SIZE, csum) ||
	    memcmp(csum, sb->csum, (size_t)csum_size)) {
		*why = "checksum mismatch";
		return -EIO;
	}
	if (le64toh(sb->bytenr) != offset) {
		*why = "bytenr does not match its location";
		return -EINVAL;
	}
	if (sectorsize != 4096) {
		*why = "sectorsize other than 4096 is not supported";
		return -EOPNOTSUPP;
	}
	if (nodesize < sectorsize || nodesize > 65536 || (nodesize & (nodesize - 1))) {
		*why = "invalid nodesize";
		return -EINVAL;
	}
	if (le32toh(sb->sys_chunk_array_size) > BTRFS_SYSTEM_CHUNK_ARRAY_SIZE || sb->root_level >= BTRFS_MAX_LEVEL ||
	    sb->chunk_root_level >= BTRFS_MAX_LEVEL || sb->log_root_level >= BTRFS_MAX_LEVEL ||
	    !le64toh(sb->root) || !le64toh(sb->chunk_root)) {
		*why = "invalid tree roots or sys_chunk_array";
		return -EINVAL;
	}
	return 0;
}

static int read_supers(struct ubt_fs_info *fs_info)
{
	struct btrfs_super_block *sb;
	bool found = false;
	int ret = -EINVAL, last_err = -EINVAL;

	sb = malloc(sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	for (int i = 0; i < BTRFS_SUPER_MIRROR_MAX; i++) {
		u64 off = btrfs_sb_offset(i);
		const char *why = NULL;

		if (off + BTRFS_SUPER_INFO_SIZE > fs_info->bdev->size)
			break;
		ret = ubt_bdev_read(fs_info->bdev, sb, sizeof(*sb), off);
		if (ret) {
			ubt_warn("%s: cannot read superblock copy %d at %llu", fs_info->bdev->name, i,
				 (unsigned long long)off);
			last_err = ret;
			continue;
		}
		ret = check_super(sb, off, &why);
		if (ret) {
			if (i == 0 || le64toh(sb->magic) == BTRFS_MAGIC)
				ubt_log(i == 0 ? UBT_LOG_WARN : UBT_LOG_INFO, "%s: superblock copy %d at %llu: %s",
					fs_info->bdev->name, i, (unsigned long long)off, why);
			last_err = ret;
			continue;
		}
		if (found && memcmp(sb->fsid, fs_info->super.fsid, BTRFS_FSID_SIZE)) {
			ubt_warn("%s: superblock copy %d belongs to another filesystem, ignored", fs_info->bdev->name, i);
			continue;
		}
		if (!found || le64toh(sb->generation) > fs_info->generation) {
			memcpy(&fs_info->super, sb, sizeof(*sb));
			fs_info->super_bytenr = off;
			fs_info->generation = le64toh(sb->generation);
			found = true;
		}
	}
	free(sb);
	if (!found) {
		ubt_err("%s: no valid btrfs superblock found", fs_info->bdev->name);
		return last_err == -EOPNOTSUPP ? -EOPNOTSUPP : -EINVAL;
	}
	if (fs_info->super_bytenr != BTRFS_SUPER_INFO_OFFSET)
		ubt_warn("%s: using superblock copy at %llu (the primary is bad or older)", fs_info->bdev->name,
			 (unsigned long long)fs_info->super_bytenr);
	return 0;
}

/* Load the tree root of @root from the ROOT_ITEM (@objectid, ROOT_ITEM, *) in the root tree. */
static int load_root_from_item(struct ubt_fs_info *fs_info, u64 objectid, struct ubt_root *root)
{
	struct ubt_key key = { objectid, BTRFS_ROOT_ITEM_KEY, 0 }, found;
	struct ubt_path path;
	struct extent_buffer *leaf;
	u32 size;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->tree_root, &key, &path);
	if (ret < 0)
		return ret;
	if (ret > 0)
		return -ENOENT;
	leaf = ubt_path_leaf(&path);
	ubt_item_key(leaf, ubt_path_slot(&path), &found);
	if (found.objectid != objectid || found.type != BTRFS_ROOT_ITEM_KEY) {
		ret = -ENOENT;
		goto out;
	}
	size = ubt_item_size(leaf, ubt_path_slot(&path));
	if (size < BTRFS_ROOT_ITEM_V1_SIZE) {
		ubt_err("root item of tree %llu is too small (%u bytes)", (unsigned long long)objectid, size);
		ret = -EUCLEAN;
		goto out;
	}
	memset(root, 0, sizeof(*root));
	memcpy(&root->root_item, ubt_item_ptr(leaf, ubt_path_slot(&path)), ubt_min(size, (u32)sizeof(root->root_item)));
	root->fs_info = fs_info;
	root->objectid = objectid;
	root->has_root_item = true;
	root->bytenr = le64toh(root->root_item.bytenr);
	root->generation = le64toh(root->root_item.generation);
	root->level = root->root_item.level;
	if (root->level >= BTRFS_MAX_LEVEL || !root->bytenr) {
		ubt_err("root item of tree %llu is invalid", (unsigned long long)objectid);
		ret = -EUCLEAN;
	}
out:
	ubt_path_release(&path);
	return ret;
}

static int load_chunk_tree(struct ubt_fs_info *fs_info)
{
	struct ubt_key key = { BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, 0 }, k;
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->chunk_root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);

		ubt_item_key(leaf, slot, &k);
		if (k.type == BTRFS_CHUNK_ITEM_KEY) {
			ret = ubt_chunk_map_add(fs_info->chunk_map, k.offset, ubt_item_ptr(leaf, slot),
						ubt_item_size(leaf, slot), fs_info->sectorsize);
			if (ret)
				break;
		}
		ret = ubt_next_item(&fs_info->chunk_root, &path);
	}
	ubt_path_release(&path);
	return ret < 0 ? ret : 0;
}

int ubt_open_ctree(struct ubt_bdev *bdev, unsigned flags, size_t cache_bytes, struct ubt_fs_info **out)
{
	struct ubt_fs_info *fs_info;
	struct btrfs_super_block *sb;
	char names[512];
	u64 unknown;
	int ret;

	fs_info = calloc(1, sizeof(*fs_info));
	if (!fs_info)
		return -ENOMEM;
	fs_info->bdev = bdev;
	fs_info->rdonly = flags & UBT_OPEN_RDONLY;
	pthread_mutex_init(&fs_info->roots_lock, NULL);
	pthread_rwlock_init(&fs_info->tree_lock, NULL);
	fs_info->chunk_map = calloc(1, sizeof(*fs_info->chunk_map));
	fs_info->eb_cache = calloc(1, sizeof(*fs_info->eb_cache));
	if (!fs_info->chunk_map || !fs_info->eb_cache) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = ubt_chunk_map_init(fs_info->chunk_map);
	if (ret)
		goto fail;

	ret = read_supers(fs_info);
	if (ret)
		goto fail;
	sb = &fs_info->super;
	fs_info->sectorsize = le32toh(sb->sectorsize);
	fs_info->nodesize = le32toh(sb->nodesize);
	fs_info->csum_type = le16toh(sb->csum_type);
	fs_info->csum_size = ubt_csum_size(fs_info->csum_type);
	fs_info->incompat = le64toh(sb->incompat_flags);
	fs_info->compat_ro = le64toh(sb->compat_ro_flags);
	memcpy(fs_info->fsid, sb->fsid, BTRFS_FSID_SIZE);
	if (fs_info->incompat & BTRFS_FEATURE_INCOMPAT_METADATA_UUID)
		memcpy(fs_info->metadata_uuid, sb->metadata_uuid, BTRFS_FSID_SIZE);
	else
		memcpy(fs_info->metadata_uuid, sb->fsid, BTRFS_FSID_SIZE);
	fs_info->devid = le64toh(sb->dev_item.devid);

	/* The feature gate, as the kernel applies it. */
	unknown = fs_info->incompat & ~UBT_SUPPORTED_INCOMPAT;
	if (unknown) {
		feature_names(names, sizeof(names), unknown, incompat_names, ARRAY_SIZE(incompat_names));
		ubt_err("%s: cannot mount: unsupported incompatible features: %s", bdev->name, names);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	unknown = fs_info->compat_ro & ~UBT_SUPPORTED_COMPAT_RO;
	if (unknown && !fs_info->rdonly) {
		feature_names(names, sizeof(names), unknown, compat_ro_names, ARRAY_SIZE(compat_ro_names));
		ubt_err("%s: unsupported read-only-compatible features (%s): only a read-only mount is possible",
			bdev->name, names);
		ret = -EROFS;
		goto fail;
	}
	if (le64toh(sb->flags) & (BTRFS_SUPER_FLAG_CHANGING_FSID | BTRFS_SUPER_FLAG_CHANGING_FSID_V2)) {
		ubt_err("%s: an fsid change was interrupted; finish it with btrfstune first", bdev->name);
		ret = -EINVAL;
		goto fail;
	}
	if (le64toh(sb->num_devices) != 1)
		ubt_warn("%s: filesystem has %llu devices; only data with a copy on this device can be read",
			 bdev->name, (unsigned long long)le64toh(sb->num_devices));

	ret = ubt_eb_cache_init(fs_info->eb_cache, cache_bytes ? cache_bytes : UBT_DEFAULT_CACHE_BYTES,
				fs_info->nodesize);
	if (ret)
		goto fail;

	ret = ubt_chunk_map_read_sys_array(fs_info->chunk_map, sb, fs_info->sectorsize);
	if (ret)
		goto fail;
	fs_info->chunk_root = (struct ubt_root){ .fs_info = fs_info,
						 .objectid = BTRFS_CHUNK_TREE_OBJECTID,
						 .bytenr = le64toh(sb->chunk_root),
						 .generation = le64toh(sb->chunk_root_generation),
						 .level = sb->chunk_root_level };
	ret = load_chunk_tree(fs_info);
	if (ret) {
		ubt_err("%s: cannot read the chunk tree", bdev->name);
		goto fail;
	}
	fs_info->tree_root = (struct ubt_root){ .fs_info = fs_info,
						.objectid = BTRFS_ROOT_TREE_OBJECTID,
						.bytenr = le64toh(sb->root),
						.generation = le64toh(sb->generation),
						.level = sb->root_level };

	ret = load_root_from_item(fs_info, BTRFS_EXTENT_TREE_OBJECTID, &fs_info->extent_root);
	if (ret) {
		ubt_err("%s: cannot find the extent tree", bdev->name);
		goto fail;
	}
	ret = load_root_from_item(fs_info, BTRFS_CSUM_TREE_OBJECTID, &fs_info->csum_root);
	if (ret) {
		ubt_err("%s: cannot find the checksum tree", bdev->name);
		goto fail;
	}
	{
		/* Trees needed only to write; absent ones stay with bytenr 0. */
		static const struct {
			u64 id;
			size_t off;
		} optional[] = {
			{ BTRFS_DEV_TREE_OBJECTID, offsetof(struct ubt_fs_info, dev_root) },
			{ BTRFS_FREE_SPACE_TREE_OBJECTID, offsetof(struct ubt_fs_info, free_space_root) },
			{ BTRFS_BLOCK_GROUP_TREE_OBJECTID, offsetof(struct ubt_fs_info, block_group_root) },
			{ BTRFS_UUID_TREE_OBJECTID, offsetof(struct ubt_fs_info, uuid_root) },
		};
		for (size_t i = 0; i < ARRAY_SIZE(optional); i++) {
			struct ubt_root *r = (struct ubt_root *)((u8 *)fs_info + optional[i].off);
			ret = load_root_from_item(fs_info, optional[i].id, r);
			if (ret == -ENOENT) {
				memset(r, 0, sizeof(*r));
				r->fs_info = fs_info;
				r->objectid = optional[i].id;
				ret = 0;
			}
			if (ret)
				goto fail;
		}
	}

	if (le64toh(sb->log_root) && !fs_info->rdonly && !(flags & UBT_OPEN_REPLAY_LOG)) {
		ubt_err("%s: the filesystem has a log tree (data fsync'd after its last commit): a read-write "
			"mount must replay it. Mount it read-write without nologreplay, or read-only with "
			"-o ro,nologreplay",
			bdev->name);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (le64toh(sb->log_root) && fs_info->rdonly && (flags & UBT_OPEN_MEMORY_REPLAY) &&
	    !(flags & UBT_OPEN_NOLOGREPLAY)) {
		/* The device stays read-only; the trees become writable in memory for the replay. */
		ubt_info("%s: replaying the log tree in memory for the read-only view", bdev->name);
		fs_info->rdonly = false;
		fs_info->memory_only = true;
	}
	if (le64toh(sb->log_root) && fs_info->rdonly && !(flags & UBT_OPEN_NOLOGREPLAY)) {
		ubt_err("%s: the filesystem has a log tree (data fsync'd after its last commit) and log replay is "
			"not supported on a read-only mount; mount it read-write once to replay the log, or add "
			"-o nologreplay to mount it without those changes",
			bdev->name);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (le64toh(sb->log_root) && fs_info->rdonly)
		ubt_warn("%s: nologreplay: ignoring the log tree; changes fsync'd after the last commit are not shown",
			 bdev->name);

	*out = fs_info;
	return 0;
fail:
	fs_info->bdev = NULL; /* the caller still owns it on failure */
	ubt_close_ctree(fs_info);
	return ret;
}

void ubt_close_ctree(struct ubt_fs_info *fs_info)
{
	struct ubt_root *r, *next;

	if (!fs_info)
		return;
	for (r = fs_info->fs_roots; r; r = next) {
		next = r->next;
		free(r);
	}
	if (fs_info->eb_cache) {
		ubt_eb_cache_destroy(fs_info->eb_cache);
		free(fs_info->eb_cache);
	}
	if (fs_info->chunk_map) {
		ubt_chunk_map_free(fs_info->chunk_map);
		free(fs_info->chunk_map);
	}
	if (fs_info->bdev)
		ubt_bdev_close(fs_info->bdev);
	pthread_mutex_destroy(&fs_info->roots_lock);
	pthread_rwlock_destroy(&fs_info->tree_lock);
	free(fs_info);
}

int ubt_read_fs_root(struct ubt_fs_info *fs_info, u64 objectid, struct ubt_root **out)
{
	struct ubt_root *r, *nr;
	int ret;

	if (objectid != BTRFS_FS_TREE_OBJECTID &&
	    (objectid < BTRFS_FIRST_FREE_OBJECTID || objectid > BTRFS_LAST_FREE_OBJECTID))
		return -ENOENT;
	pthread_mutex_lock(&fs_info->roots_lock);
	for (r = fs_info->fs_roots; r; r = r->next) {
		if (r->objectid == objectid) {
			*out = r;
			pthread_mutex_unlock(&fs_info->roots_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&fs_info->roots_lock);

	nr = calloc(1, sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	ret = load_root_from_item(fs_info, objectid, nr);
	if (ret) {
		free(nr);
		return ret;
	}
	if (le32toh(nr->root_item.refs) == 0) {
		free(nr); /* deleted, being cleaned up */
		return -ENOENT;
	}
	ret = ubt_root_load_highest_objectid(nr);
	if (ret) {
		free(nr);
		return ret;
	}
	pthread_mutex_lock(&fs_info->roots_lock);
	for (r = fs_info->fs_roots; r; r = r->next) {
		if (r->objectid == objectid)
			break;
	}
	if (r) {
		free(nr);
		nr = r;
	} else {
		nr->next = fs_info->fs_roots;
		fs_info->fs_roots = nr;
	}
	pthread_mutex_unlock(&fs_info->roots_lock);
	*out = nr;
	return 0;
}
