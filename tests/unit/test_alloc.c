/*
 * test_alloc.c — the allocator against btrfs check: on mkfs.btrfs images (free space tree or not,
 * 4 KiB and 16 KiB nodes), files are built by hand in the fs tree (inode, dir entries, file extent
 * items) over data extents from ubt_alloc_data_extent with backrefs through ubt_add_data_ref,
 * committed, partly freed (fragmenting the free space tree into bitmaps), grown past the first
 * data chunk, and filled to ENOSPC; after every commit `btrfs check --readonly` must pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc/alloc.h"
#include "codec/csum.h"
#include "ctree/ctree-write.h"
#include "ctree/disk-io.h"
#include "device/bdev.h"
#include "transaction/transaction.h"
#include "util/messages.h"

static char tmpdir[64];

struct file_ext {
	u64 off, bytenr, len;
	bool live;
};

struct tfile {
	u64 ino;
	struct file_ext *ext;
	size_t nr, cap;
	u64 size;
};

static void run(const char *cmd)
{
	int rc = system(cmd);
	if (rc != 0)
		fail_msg("command failed (%d): %s", rc, cmd);
}

static void make_image(const char *img, const char *size, const char *opts)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -f %s && truncate -s %s %s && mkfs.btrfs -f -q %s %s >/dev/null 2>&1", img, size,
		 img, opts, img);
	run(cmd);
}

static void check_image(const char *img)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
		 "btrfs check --readonly %s > %s/check.log 2>&1; rc=$?; if [ $rc -ne 0 ] || grep -q ERROR %s/check.log; "
		 "then cat %s/check.log; exit 1; fi",
		 img, tmpdir, tmpdir, tmpdir);
	run(cmd);
}

static struct ubt_fs_info *open_rw(const char *img)
{
	struct ubt_bdev *bdev;
	struct ubt_fs_info *fs;

	assert_int_equal(ubt_bdev_open_file(img, false, &bdev), 0);
	assert_int_equal(ubt_open_ctree(bdev, 0, 0, &fs), 0);
	assert_int_equal(ubt_alloc_init(fs), 0);
	return fs;
}

static void close_fs(struct ubt_fs_info *fs)
{
	ubt_alloc_exit(fs);
	ubt_close_ctree(fs);
}

static void fill_inode(struct btrfs_inode_item *ii, u64 transid, u64 size, u64 nbytes, u32 mode, u32 nlink, u64 flags)
{
	memset(ii, 0, sizeof(*ii));
	ii->generation = htole64(transid);
	ii->transid = htole64(transid);
	ii->size = htole64(size);
	ii->nbytes = htole64(nbytes);
	ii->nlink = htole32(nlink);
	ii->mode = htole32(mode);
	ii->flags = htole64(flags);
	ii->atime.sec = ii->ctime.sec = ii->mtime.sec = ii->otime.sec = htole64(1700000000);
}

/* Create regular file @name (inode @ino) in the top-level directory. */
static void create_file(struct ubt_trans_handle *h, struct ubt_root *root, struct tfile *f, const char *name, u64 index)
{
	struct btrfs_inode_item ii;
	u8 buf[256];
	size_t nl = strlen(name);
	struct ubt_key key;
	struct ubt_path path;
	struct btrfs_inode_item *dir;

	fill_inode(&ii, h->transid, 0, 0, S_IFREG | 0644, 1, BTRFS_INODE_NODATASUM | BTRFS_INODE_NODATACOW);
	key = (struct ubt_key){ f->ino, BTRFS_INODE_ITEM_KEY, 0 };
	assert_int_equal(ubt_insert_item(h, root, &key, &ii, sizeof(ii)), 0);

	struct btrfs_inode_ref *ref = (struct btrfs_inode_ref *)buf;
	ref->index = htole64(index);
	ref->name_len = htole16((u16)nl);
	memcpy(buf + sizeof(*ref), name, nl);
	key = (struct ubt_key){ f->ino, BTRFS_INODE_REF_KEY, 256 };
	assert_int_equal(ubt_insert_item(h, root, &key, buf, (u32)(sizeof(*ref) + nl)), 0);

	struct btrfs_dir_item *di = (struct btrfs_dir_item *)buf;
	memset(di, 0, sizeof(*di));
	di->location.objectid = htole64(f->ino);
	di->location.type = BTRFS_INODE_ITEM_KEY;
	di->transid = htole64(h->transid);
	di->name_len = htole16((u16)nl);
	di->type = BTRFS_FT_REG_FILE;
	memcpy(buf + sizeof(*di), name, nl);
	key = (struct ubt_key){ 256, BTRFS_DIR_ITEM_KEY, ubt_name_hash(name, nl) };
	assert_int_equal(ubt_insert_item(h, root, &key, buf, (u32)(sizeof(*di) + nl)), 0);
	key = (struct ubt_key){ 256, BTRFS_DIR_INDEX_KEY, index };
	assert_int_equal(ubt_insert_item(h, root, &key, buf, (u32)(sizeof(*di) + nl)), 0);

	key = (struct ubt_key){ 256, BTRFS_INODE_ITEM_KEY, 0 };
	ubt_path_init(&path);
	assert_int_equal(ubt_search_slot_write(h, root, &key, &path, 0), 0);
	dir = ubt_item_ptr(path.nodes[0], path.slots[0]);
	dir->size = htole64(le64toh(dir->size) + 2 * nl);
	dir->transid = htole64(h->transid);
	ubt_mark_buffer_dirty(h, path.nodes[0]);
	ubt_path_release(&path);
}

static void update_inode(struct ubt_trans_handle *h, struct ubt_root *root, struct tfile *f)
{
	struct ubt_key key = { f->ino, BTRFS_INODE_ITEM_KEY, 0 };
	struct ubt_path path;
	struct btrfs_inode_item *ii;
	u64 nbytes = 0;

	for (size_t i = 0; i < f->nr; i++)
		if (f->ext[i].live)
			nbytes += f->ext[i].len;
	ubt_path_init(&path);
	assert_int_equal(ubt_search_slot_write(h, root, &key, &path, 0), 0);
	ii = ubt_item_ptr(path.nodes[0], path.slots[0]);
	ii->size = htole64(f->size);
	ii->nbytes = htole64(nbytes);
	ii->transid = htole64(h->transid);
	ubt_mark_buffer_dirty(h, path.nodes[0]);
	ubt_path_release(&path);
}

/* Append one extent of @len bytes; returns 0 or the allocator's error (-ENOSPC). */
static int append_extent(struct ubt_trans_handle *h, struct ubt_root *root, struct tfile *f, u64 len)
{
	struct btrfs_file_extent_item fe;
	struct ubt_key key;
	u64 bytenr;
	int ret;

	ret = ubt_alloc_data_extent(h, len, 0, &bytenr);
	if (ret)
		return ret;
	assert_int_equal(ubt_add_data_ref(h, bytenr, len, root->objectid, f->ino, f->size, 0), 0);
	memset(&fe, 0, sizeof(fe));
	fe.generation = htole64(h->transid);
	fe.ram_bytes = htole64(len);
	fe.type = BTRFS_FILE_EXTENT_REG;
	fe.disk_bytenr = htole64(bytenr);
	fe.disk_num_bytes = htole64(len);
	fe.num_bytes = htole64(len);
	key = (struct ubt_key){ f->ino, BTRFS_EXTENT_DATA_KEY, f->size };
	assert_int_equal(ubt_insert_item(h, root, &key, &fe, sizeof(fe)), 0);
	if (f->nr == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 64;
		f->ext = realloc(f->ext, f->cap * sizeof(*f->ext));
	}
	f->ext[f->nr++] = (struct file_ext){ f->size, bytenr, len, true };
	f->size += len;
	return 0;
}

static void drop_extent(struct ubt_trans_handle *h, struct ubt_root *root, struct tfile *f, size_t i)
{
	struct ubt_key key = { f->ino, BTRFS_EXTENT_DATA_KEY, f->ext[i].off };
	struct ubt_path path;

	ubt_path_init(&path);
	assert_int_equal(ubt_search_slot_write(h, root, &key, &path, -1), 0);
	assert_int_equal(ubt_del_items(h, root, &path, path.slots[0], 1), 0);
	ubt_path_release(&path);
	assert_int_equal(ubt_drop_data_ref(h, f->ext[i].bytenr, f->ext[i].len, root->objectid, f->ino, f->ext[i].off, 0),
			 0);
	f->ext[i].live = false;
}

static void commit(struct ubt_trans_handle *h)
{
	assert_int_equal(ubt_trans_commit(h), 0);
}

/* Many small extents, then every other one freed (fragments -> FST bitmaps), then the rest. */
static void scenario_fragment(const char *mkfs_opts)
{
	char img[128];
	struct ubt_fs_info *fs;
	struct ubt_root *root;
	struct ubt_trans_handle h;
	struct tfile f = { .ino = 257 };
	const size_t n = 3000;

	snprintf(img, sizeof(img), "%s/frag.img", tmpdir);
	make_image(img, "512M", mkfs_opts);
	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);

	assert_int_equal(ubt_trans_start(fs, &h), 0);
	create_file(&h, root, &f, "frag", 2);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(append_extent(&h, root, &f, 4096 * (1 + i % 3)), 0);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);

	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 0; i < n; i += 2)
		drop_extent(&h, root, &f, i);
	update_inode(&h, root, &f);
	commit(&h);
	/* Reuse freed space in the next transaction, in the same session. */
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 0; i < 500; i++)
		assert_int_equal(append_extent(&h, root, &f, 4096), 0);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);

	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 0; i < f.nr; i++)
		if (f.ext[i].live)
			drop_extent(&h, root, &f, i);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);
	free(f.ext);
}

static void test_fragment_fst_4k(void **state)
{
	(void)state;
	scenario_fragment("-n 4096");
}

static void test_fragment_fst_16k(void **state)
{
	(void)state;
	scenario_fragment("");
}

static void test_fragment_no_fst(void **state)
{
	(void)state;
	scenario_fragment("-n 4096 -R ^free-space-tree");
}

/* Grow a file past the first data chunk (new chunks allocated), then fill the device to ENOSPC. */
static void test_chunks_and_enospc(void **state)
{
	char img[128];
	struct ubt_fs_info *fs;
	struct ubt_root *root;
	struct ubt_trans_handle h;
	struct tfile f = { .ino = 257 };
	int ret = 0;
	u64 total, free_b, avail;

	(void)state;
	snprintf(img, sizeof(img), "%s/enospc.img", tmpdir);
	make_image(img, "256M", "-n 4096");
	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	ubt_alloc_statfs(fs, &total, &free_b, &avail);
	assert_true(free_b > 64 << 20);

	assert_int_equal(ubt_trans_start(fs, &h), 0);
	create_file(&h, root, &f, "big", 2);
	for (int i = 0; i < 64; i++)
		assert_int_equal(append_extent(&h, root, &f, 1 << 20), 0);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);

	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	for (int round = 0; round < 20 && ret != -ENOSPC; round++) {
		assert_int_equal(ubt_trans_start(fs, &h), 0);
		for (int i = 0; i < 16; i++) {
			ret = append_extent(&h, root, &f, 1 << 20);
			if (ret)
				break;
		}
		assert_true(ret == 0 || ret == -ENOSPC);
		update_inode(&h, root, &f);
		commit(&h);
	}
	assert_int_equal(ret, -ENOSPC);
	assert_int_equal(ubt_reserve_space(fs, 0, 64 << 20), -ENOSPC);
	close_fs(fs);
	check_image(img);
	free(f.ext);
}

/* One data extent referenced from 100 file offsets: inline refs (hash-ordered), then keyed refs. */
static void test_shared_refs(void **state)
{
	char img[128];
	struct ubt_fs_info *fs;
	struct ubt_root *root;
	struct ubt_trans_handle h;
	struct tfile f = { .ino = 257 };
	const size_t n = 100;
	u64 bytenr;

	(void)state;
	snprintf(img, sizeof(img), "%s/shared.img", tmpdir);
	make_image(img, "256M", "-n 4096");
	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	create_file(&h, root, &f, "shared", 2);
	assert_int_equal(append_extent(&h, root, &f, 4096), 0);
	bytenr = f.ext[0].bytenr;
	commit(&h);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 1; i < n; i++) {
		struct btrfs_file_extent_item fe;
		struct ubt_key key = { f.ino, BTRFS_EXTENT_DATA_KEY, f.size };

		memset(&fe, 0, sizeof(fe));
		fe.generation = htole64(h.transid);
		fe.ram_bytes = htole64(4096);
		fe.type = BTRFS_FILE_EXTENT_REG;
		fe.disk_bytenr = htole64(bytenr);
		fe.disk_num_bytes = htole64(4096);
		fe.num_bytes = htole64(4096);
		assert_int_equal(ubt_insert_item(&h, root, &key, &fe, sizeof(fe)), 0);
		assert_int_equal(ubt_add_data_ref(&h, bytenr, 4096, root->objectid, f.ino, f.size, 0), 0);
		if (f.nr == f.cap) {
			f.cap *= 2;
			f.ext = realloc(f.ext, f.cap * sizeof(*f.ext));
		}
		f.ext[f.nr++] = (struct file_ext){ f.size, bytenr, 4096, true };
		f.size += 4096;
	}
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);

	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 0; i < n; i += 3)
		drop_extent(&h, root, &f, i);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);

	fs = open_rw(img);
	assert_int_equal(ubt_read_fs_root(fs, BTRFS_FS_TREE_OBJECTID, &root), 0);
	assert_int_equal(ubt_trans_start(fs, &h), 0);
	for (size_t i = 0; i < f.nr; i++)
		if (f.ext[i].live)
			drop_extent(&h, root, &f, i);
	update_inode(&h, root, &f);
	commit(&h);
	close_fs(fs);
	check_image(img);
	free(f.ext);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ubt_alloc_XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	ubt_log_set_level(UBT_LOG_WARN);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (getenv("UBT_KEEP_IMAGES")) {
		printf("images kept in %s\n", tmpdir);
		return 0;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fragment_no_fst),
		cmocka_unit_test(test_fragment_fst_16k),
		cmocka_unit_test(test_fragment_fst_4k),
		cmocka_unit_test(test_chunks_and_enospc),
		cmocka_unit_test(test_shared_refs),
	};

	if (system("command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null") != 0) {
		printf("mkfs.btrfs/btrfs not installed: skipping\n");
		return 0;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
