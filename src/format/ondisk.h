/*
 * ondisk.h — btrfs on-disk structures (packed, little-endian) and constants.
 *
 * Only layouts and numbers live here; in-memory structures live in each layer's own headers.
 * Every multi-byte field is little-endian: read it through le16toh/le32toh/le64toh (or the
 * get_le* helpers) and never trust a value before the tree checker or the item parser has
 * bounded it. Facts are from the btrfs on-disk format documentation.
 */
#ifndef UBT_FORMAT_ONDISK_H
#define UBT_FORMAT_ONDISK_H

#include "../util/compat.h"

typedef u16 ule16;
typedef u32 ule32;
typedef u64 ule64;

#define BTRFS_MAGIC 0x4D5F53665248425FULL /* "_BHRfS_M" */
#define BTRFS_SUPER_INFO_OFFSET 65536ULL
#define BTRFS_SUPER_INFO_SIZE 4096
#define BTRFS_SUPER_MIRROR_MAX 3
#define BTRFS_SUPER_MIRROR_SHIFT 12
#define BTRFS_CSUM_SIZE 32
#define BTRFS_FSID_SIZE 16
#define BTRFS_UUID_SIZE 16
#define BTRFS_LABEL_SIZE 256
#define BTRFS_SYSTEM_CHUNK_ARRAY_SIZE 2048
#define BTRFS_NUM_BACKUP_ROOTS 4
#define BTRFS_MAX_LEVEL 8
#define BTRFS_NAME_LEN 255
#define BTRFS_STRIPE_LEN (64 * 1024ULL)

/* Offset of super mirror i: 64 KiB, 64 MiB, 256 GiB. */
static inline u64 btrfs_sb_offset(int mirror)
{
	u64 start = 16 * 1024;
	if (mirror)
		return start << (BTRFS_SUPER_MIRROR_SHIFT * mirror);
	return BTRFS_SUPER_INFO_OFFSET;
}

/* Tree object ids. */
#define BTRFS_ROOT_TREE_OBJECTID 1ULL
#define BTRFS_EXTENT_TREE_OBJECTID 2ULL
#define BTRFS_CHUNK_TREE_OBJECTID 3ULL
#define BTRFS_DEV_TREE_OBJECTID 4ULL
#define BTRFS_FS_TREE_OBJECTID 5ULL
#define BTRFS_ROOT_TREE_DIR_OBJECTID 6ULL
#define BTRFS_CSUM_TREE_OBJECTID 7ULL
#define BTRFS_QUOTA_TREE_OBJECTID 8ULL
#define BTRFS_UUID_TREE_OBJECTID 9ULL
#define BTRFS_FREE_SPACE_TREE_OBJECTID 10ULL
#define BTRFS_BLOCK_GROUP_TREE_OBJECTID 11ULL
#define BTRFS_RAID_STRIPE_TREE_OBJECTID 12ULL
#define BTRFS_DEV_STATS_OBJECTID 0ULL
#define BTRFS_BALANCE_OBJECTID ((u64)-4)
#define BTRFS_ORPHAN_OBJECTID ((u64)-5)
#define BTRFS_TREE_LOG_OBJECTID ((u64)-6)
#define BTRFS_TREE_LOG_FIXUP_OBJECTID ((u64)-7)
#define BTRFS_TREE_RELOC_OBJECTID ((u64)-8)
#define BTRFS_DATA_RELOC_TREE_OBJECTID ((u64)-9)
#define BTRFS_EXTENT_CSUM_OBJECTID ((u64)-10)
#define BTRFS_FREE_SPACE_OBJECTID ((u64)-11)
#define BTRFS_FREE_INO_OBJECTID ((u64)-12)
#define BTRFS_MULTIPLE_OBJECTIDS ((u64)-255)
#define BTRFS_FIRST_FREE_OBJECTID 256ULL
#define BTRFS_LAST_FREE_OBJECTID ((u64)-256)
#define BTRFS_FIRST_CHUNK_TREE_OBJECTID 256ULL
#define BTRFS_DEV_ITEMS_OBJECTID 1ULL

/* Item types. */
#define BTRFS_INODE_ITEM_KEY 1
#define BTRFS_INODE_REF_KEY 12
#define BTRFS_INODE_EXTREF_KEY 13
#define BTRFS_XATTR_ITEM_KEY 24
#define BTRFS_VERITY_DESC_ITEM_KEY 36
#define BTRFS_VERITY_MERKLE_ITEM_KEY 37
#define BTRFS_ORPHAN_ITEM_KEY 48
#define BTRFS_DIR_LOG_ITEM_KEY 60
#define BTRFS_DIR_LOG_INDEX_KEY 72
#define BTRFS_DIR_ITEM_KEY 84
#define BTRFS_DIR_INDEX_KEY 96
#define BTRFS_EXTENT_DATA_KEY 108
#define BTRFS_EXTENT_CSUM_KEY 128
#define BTRFS_ROOT_ITEM_KEY 132
#define BTRFS_ROOT_BACKREF_KEY 144
#define BTRFS_ROOT_REF_KEY 156
#define BTRFS_EXTENT_ITEM_KEY 168
#define BTRFS_METADATA_ITEM_KEY 169
#define BTRFS_EXTENT_OWNER_REF_KEY 172
#define BTRFS_TREE_BLOCK_REF_KEY 176
#define BTRFS_EXTENT_DATA_REF_KEY 178
#define BTRFS_SHARED_BLOCK_REF_KEY 182
#define BTRFS_SHARED_DATA_REF_KEY 184
#define BTRFS_BLOCK_GROUP_ITEM_KEY 192
#define BTRFS_FREE_SPACE_INFO_KEY 198
#define BTRFS_FREE_SPACE_EXTENT_KEY 199
#define BTRFS_FREE_SPACE_BITMAP_KEY 200
#define BTRFS_DEV_EXTENT_KEY 204
#define BTRFS_DEV_ITEM_KEY 216
#define BTRFS_CHUNK_ITEM_KEY 228
#define BTRFS_RAID_STRIPE_KEY 230
#define BTRFS_QGROUP_STATUS_KEY 240
#define BTRFS_QGROUP_INFO_KEY 242
#define BTRFS_QGROUP_LIMIT_KEY 244
#define BTRFS_QGROUP_RELATION_KEY 246
#define BTRFS_TEMPORARY_ITEM_KEY 248
#define BTRFS_PERSISTENT_ITEM_KEY 249
#define BTRFS_DEV_REPLACE_KEY 250
#define BTRFS_UUID_KEY_SUBVOL 251
#define BTRFS_UUID_KEY_RECEIVED_SUBVOL 252
#define BTRFS_STRING_ITEM_KEY 253

/* Checksum algorithms (super.csum_type). */
#define BTRFS_CSUM_TYPE_CRC32 0
#define BTRFS_CSUM_TYPE_XXHASH 1
#define BTRFS_CSUM_TYPE_SHA256 2
#define BTRFS_CSUM_TYPE_BLAKE2 3

/* Feature flags. */
#define BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE (1ULL << 0)
#define BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE_VALID (1ULL << 1)
#define BTRFS_FEATURE_COMPAT_RO_VERITY (1ULL << 2)
#define BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE (1ULL << 3)

#define BTRFS_FEATURE_INCOMPAT_MIXED_BACKREF (1ULL << 0)
#define BTRFS_FEATURE_INCOMPAT_DEFAULT_SUBVOL (1ULL << 1)
#define BTRFS_FEATURE_INCOMPAT_MIXED_GROUPS (1ULL << 2)
#define BTRFS_FEATURE_INCOMPAT_COMPRESS_LZO (1ULL << 3)
#define BTRFS_FEATURE_INCOMPAT_COMPRESS_ZSTD (1ULL << 4)
#define BTRFS_FEATURE_INCOMPAT_BIG_METADATA (1ULL << 5)
#define BTRFS_FEATURE_INCOMPAT_EXTENDED_IREF (1ULL << 6)
#define BTRFS_FEATURE_INCOMPAT_RAID56 (1ULL << 7)
#define BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA (1ULL << 8)
#define BTRFS_FEATURE_INCOMPAT_NO_HOLES (1ULL << 9)
#define BTRFS_FEATURE_INCOMPAT_METADATA_UUID (1ULL << 10)
#define BTRFS_FEATURE_INCOMPAT_RAID1C34 (1ULL << 11)
#define BTRFS_FEATURE_INCOMPAT_ZONED (1ULL << 12)
#define BTRFS_FEATURE_INCOMPAT_EXTENT_TREE_V2 (1ULL << 13)
#define BTRFS_FEATURE_INCOMPAT_RAID_STRIPE_TREE (1ULL << 14)
#define BTRFS_FEATURE_INCOMPAT_SIMPLE_QUOTA (1ULL << 16)

/* Block group / chunk type flags. */
#define BTRFS_BLOCK_GROUP_DATA (1ULL << 0)
#define BTRFS_BLOCK_GROUP_SYSTEM (1ULL << 1)
#define BTRFS_BLOCK_GROUP_METADATA (1ULL << 2)
#define BTRFS_BLOCK_GROUP_RAID0 (1ULL << 3)
#define BTRFS_BLOCK_GROUP_RAID1 (1ULL << 4)
#define BTRFS_BLOCK_GROUP_DUP (1ULL << 5)
#define BTRFS_BLOCK_GROUP_RAID10 (1ULL << 6)
#define BTRFS_BLOCK_GROUP_RAID5 (1ULL << 7)
#define BTRFS_BLOCK_GROUP_RAID6 (1ULL << 8)
#define BTRFS_BLOCK_GROUP_RAID1C3 (1ULL << 9)
#define BTRFS_BLOCK_GROUP_RAID1C4 (1ULL << 10)
#define BTRFS_BLOCK_GROUP_TYPE_MASK (BTRFS_BLOCK_GROUP_DATA | BTRFS_BLOCK_GROUP_SYSTEM | BTRFS_BLOCK_GROUP_METADATA)
#define BTRFS_BLOCK_GROUP_PROFILE_MASK                                                                   \
	(BTRFS_BLOCK_GROUP_RAID0 | BTRFS_BLOCK_GROUP_RAID1 | BTRFS_BLOCK_GROUP_DUP | BTRFS_BLOCK_GROUP_RAID10 | \
	 BTRFS_BLOCK_GROUP_RAID5 | BTRFS_BLOCK_GROUP_RAID6 | BTRFS_BLOCK_GROUP_RAID1C3 | BTRFS_BLOCK_GROUP_RAID1C4)

/* Tree block header flags. */
#define BTRFS_HEADER_FLAG_WRITTEN (1ULL << 0)
#define BTRFS_HEADER_FLAG_RELOC (1ULL << 1)
#define BTRFS_BACKREF_REV_SHIFT 56
#define BTRFS_MIXED_BACKREF_REV 1ULL

/* Super flags. */
#define BTRFS_SUPER_FLAG_SEEDING (1ULL << 32)
#define BTRFS_SUPER_FLAG_METADUMP (1ULL << 33)
#define BTRFS_SUPER_FLAG_METADUMP_V2 (1ULL << 34)
#define BTRFS_SUPER_FLAG_CHANGING_FSID (1ULL << 35)
#define BTRFS_SUPER_FLAG_CHANGING_FSID_V2 (1ULL << 36)

/* File extent types and compression. */
#define BTRFS_FILE_EXTENT_INLINE 0
#define BTRFS_FILE_EXTENT_REG 1
#define BTRFS_FILE_EXTENT_PREALLOC 2
#define BTRFS_COMPRESS_NONE 0
#define BTRFS_COMPRESS_ZLIB 1
#define BTRFS_COMPRESS_LZO 2
#define BTRFS_COMPRESS_ZSTD 3

/* Directory entry types (dir_item.type). */
#define BTRFS_FT_UNKNOWN 0
#define BTRFS_FT_REG_FILE 1
#define BTRFS_FT_DIR 2
#define BTRFS_FT_CHRDEV 3
#define BTRFS_FT_BLKDEV 4
#define BTRFS_FT_FIFO 5
#define BTRFS_FT_SOCK 6
#define BTRFS_FT_SYMLINK 7
#define BTRFS_FT_XATTR 8
#define BTRFS_FT_MAX 9

/* Inode flags (inode_item.flags). */
#define BTRFS_INODE_NODATASUM (1ULL << 0)
#define BTRFS_INODE_NODATACOW (1ULL << 1)
#define BTRFS_INODE_READONLY (1ULL << 2)
#define BTRFS_INODE_NOCOMPRESS (1ULL << 3)
#define BTRFS_INODE_PREALLOC (1ULL << 4)
#define BTRFS_INODE_SYNC (1ULL << 5)
#define BTRFS_INODE_IMMUTABLE (1ULL << 6)
#define BTRFS_INODE_APPEND (1ULL << 7)
#define BTRFS_INODE_NODUMP (1ULL << 8)
#define BTRFS_INODE_NOATIME (1ULL << 9)
#define BTRFS_INODE_DIRSYNC (1ULL << 10)
#define BTRFS_INODE_COMPRESS (1ULL << 11)
#define BTRFS_INODE_ROOT_ITEM_INIT (1ULL << 31)

/* Root item flags. */
#define BTRFS_ROOT_SUBVOL_RDONLY (1ULL << 0)

#define BTRFS_DEV_ITEM_SIZE 98

struct btrfs_disk_key {
	ule64 objectid;
	u8 type;
	ule64 offset;
} __attribute__((packed));

struct btrfs_dev_item {
	ule64 devid;
	ule64 total_bytes;
	ule64 bytes_used;
	ule32 io_align;
	ule32 io_width;
	ule32 sector_size;
	ule64 type;
	ule64 generation;
	ule64 start_offset;
	ule32 dev_group;
	u8 seek_speed;
	u8 bandwidth;
	u8 uuid[BTRFS_UUID_SIZE];
	u8 fsid[BTRFS_UUID_SIZE];
} __attribute__((packed));

struct btrfs_root_backup {
	ule64 tree_root;
	ule64 tree_root_gen;
	ule64 chunk_root;
	ule64 chunk_root_gen;
	ule64 extent_root;
	ule64 extent_root_gen;
	ule64 fs_root;
	ule64 fs_root_gen;
	ule64 dev_root;
	ule64 dev_root_gen;
	ule64 csum_root;
	ule64 csum_root_gen;
	ule64 total_bytes;
	ule64 bytes_used;
	ule64 num_devices;
	ule64 unused_64[4];
	u8 tree_root_level;
	u8 chunk_root_level;
	u8 extent_root_level;
	u8 fs_root_level;
	u8 dev_root_level;
	u8 csum_root_level;
	u8 unused_8[10];
} __attribute__((packed));

struct btrfs_super_block {
	u8 csum[BTRFS_CSUM_SIZE];
	u8 fsid[BTRFS_FSID_SIZE];
	ule64 bytenr;
	ule64 flags;
	ule64 magic;
	ule64 generation;
	ule64 root;
	ule64 chunk_root;
	ule64 log_root;
	ule64 unused_log_root_transid;
	ule64 total_bytes;
	ule64 bytes_used;
	ule64 root_dir_objectid;
	ule64 num_devices;
	ule32 sectorsize;
	ule32 nodesize;
	ule32 unused_leafsize;
	ule32 stripesize;
	ule32 sys_chunk_array_size;
	ule64 chunk_root_generation;
	ule64 compat_flags;
	ule64 compat_ro_flags;
	ule64 incompat_flags;
	ule16 csum_type;
	u8 root_level;
	u8 chunk_root_level;
	u8 log_root_level;
	struct btrfs_dev_item dev_item;
	char label[BTRFS_LABEL_SIZE];
	ule64 cache_generation;
	ule64 uuid_tree_generation;
	u8 metadata_uuid[BTRFS_FSID_SIZE];
	ule64 nr_global_roots;
	ule64 reserved[27];
	u8 sys_chunk_array[BTRFS_SYSTEM_CHUNK_ARRAY_SIZE];
	struct btrfs_root_backup super_roots[BTRFS_NUM_BACKUP_ROOTS];
	u8 padding[565];
} __attribute__((packed));

struct btrfs_header {
	u8 csum[BTRFS_CSUM_SIZE];
	u8 fsid[BTRFS_FSID_SIZE];
	ule64 bytenr;
	ule64 flags;
	u8 chunk_tree_uuid[BTRFS_UUID_SIZE];
	ule64 generation;
	ule64 owner;
	ule32 nritems;
	u8 level;
} __attribute__((packed));

struct btrfs_item {
	struct btrfs_disk_key key;
	ule32 offset; /* of the item data, from the end of the header */
	ule32 size;
} __attribute__((packed));

struct btrfs_key_ptr {
	struct btrfs_disk_key key;
	ule64 blockptr;
	ule64 generation;
} __attribute__((packed));

struct btrfs_stripe {
	ule64 devid;
	ule64 offset;
	u8 dev_uuid[BTRFS_UUID_SIZE];
} __attribute__((packed));

struct btrfs_chunk {
	ule64 length;
	ule64 owner;
	ule64 stripe_len;
	ule64 type;
	ule32 io_align;
	ule32 io_width;
	ule32 sector_size;
	ule16 num_stripes;
	ule16 sub_stripes;
	struct btrfs_stripe stripe; /* first of num_stripes */
} __attribute__((packed));

static inline size_t btrfs_chunk_item_size(int num_stripes)
{
	return sizeof(struct btrfs_chunk) + (size_t)(num_stripes - 1) * sizeof(struct btrfs_stripe);
}

struct btrfs_timespec {
	ule64 sec;
	ule32 nsec;
} __attribute__((packed));

struct btrfs_inode_item {
	ule64 generation;
	ule64 transid;
	ule64 size;
	ule64 nbytes;
	ule64 block_group;
	ule32 nlink;
	ule32 uid;
	ule32 gid;
	ule32 mode;
	ule64 rdev;
	ule64 flags;
	ule64 sequence;
	ule64 reserved[4];
	struct btrfs_timespec atime;
	struct btrfs_timespec ctime;
	struct btrfs_timespec mtime;
	struct btrfs_timespec otime;
} __attribute__((packed));

struct btrfs_inode_ref {
	ule64 index;
	ule16 name_len;
	/* name follows */
} __attribute__((packed));

struct btrfs_inode_extref {
	ule64 parent_objectid;
	ule64 index;
	ule16 name_len;
	/* name follows */
} __attribute__((packed));

struct btrfs_dir_item {
	struct btrfs_disk_key location;
	ule64 transid;
	ule16 data_len;
	ule16 name_len;
	u8 type;
	/* name, then data (xattr value) follow */
} __attribute__((packed));

struct btrfs_root_item {
	struct btrfs_inode_item inode;
	ule64 generation;
	ule64 root_dirid;
	ule64 bytenr;
	ule64 byte_limit;
	ule64 bytes_used;
	ule64 last_snapshot;
	ule64 flags;
	ule32 refs;
	struct btrfs_disk_key drop_progress;
	u8 drop_level;
	u8 level;
	/* v2 fields: valid when generation_v2 == generation */
	ule64 generation_v2;
	u8 uuid[BTRFS_UUID_SIZE];
	u8 parent_uuid[BTRFS_UUID_SIZE];
	u8 received_uuid[BTRFS_UUID_SIZE];
	ule64 ctransid;
	ule64 otransid;
	ule64 stransid;
	ule64 rtransid;
	struct btrfs_timespec ctime;
	struct btrfs_timespec otime;
	struct btrfs_timespec stime;
	struct btrfs_timespec rtime;
	ule64 global_tree_id;
	ule64 reserved[7];
} __attribute__((packed));

/* The part of a root item every version has (older images stop after `level`). */
#define BTRFS_ROOT_ITEM_V1_SIZE offsetof(struct btrfs_root_item, generation_v2)

struct btrfs_root_ref {
	ule64 dirid;
	ule64 sequence;
	ule16 name_len;
	/* name follows */
} __attribute__((packed));

struct btrfs_file_extent_item {
	ule64 generation;
	ule64 ram_bytes;
	u8 compression;
	u8 encryption;
	ule16 other_encoding;
	u8 type;
	/* inline data starts here for BTRFS_FILE_EXTENT_INLINE */
	ule64 disk_bytenr;
	ule64 disk_num_bytes;
	ule64 offset;
	ule64 num_bytes;
} __attribute__((packed));

#define BTRFS_FILE_EXTENT_INLINE_DATA_START offsetof(struct btrfs_file_extent_item, disk_bytenr)

struct btrfs_block_group_item {
	ule64 used;
	ule64 chunk_objectid;
	ule64 flags;
} __attribute__((packed));

struct btrfs_extent_item {
	ule64 refs;
	ule64 generation;
	ule64 flags;
} __attribute__((packed));

struct btrfs_dev_extent {
	ule64 chunk_tree;
	ule64 chunk_objectid;
	ule64 chunk_offset;
	ule64 length;
	u8 chunk_tree_uuid[BTRFS_UUID_SIZE];
} __attribute__((packed));

_Static_assert(sizeof(struct btrfs_super_block) == 4096, "superblock size");
_Static_assert(sizeof(struct btrfs_header) == 101, "header size");
_Static_assert(sizeof(struct btrfs_item) == 25, "item size");
_Static_assert(sizeof(struct btrfs_key_ptr) == 33, "key ptr size");
_Static_assert(sizeof(struct btrfs_dev_item) == BTRFS_DEV_ITEM_SIZE, "dev item size");
_Static_assert(sizeof(struct btrfs_inode_item) == 160, "inode item size");
_Static_assert(sizeof(struct btrfs_dir_item) == 30, "dir item size");
_Static_assert(sizeof(struct btrfs_file_extent_item) == 53, "file extent size");
_Static_assert(sizeof(struct btrfs_root_backup) == 168, "backup root size");
_Static_assert(sizeof(struct btrfs_chunk) == 80, "chunk size");
_Static_assert(offsetof(struct btrfs_super_block, sys_chunk_array) == 0x32b, "sys chunk array offset");
_Static_assert(sizeof(struct btrfs_root_item) == 439, "root item size");

#endif
