/*
 * unit_fs.c — the unit tests' shared helpers for real images (see unit_fs.h): scratch directory,
 * shell commands, mkfs.btrfs / btrfs check, library mounts and files, model comparisons.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>

#include "unit_fs.h"

#define UFS_SECTOR 4096u

char ufs_dir[256];
char ufs_img[300];

int ufs_setup(const char *name)
{
	snprintf(ufs_dir, sizeof(ufs_dir), "/tmp/ubt-%s-XXXXXX", name);
	if (!mkdtemp(ufs_dir))
		return -1;
	snprintf(ufs_img, sizeof(ufs_img), "%s/img", ufs_dir);
	return 0;
}

int ufs_teardown(const char *mnt)
{
	return ufs_run("umount %s/%s 2>/dev/null; rm -rf %s", ufs_dir, mnt, ufs_dir) == 0 ? 0 : -1;
}

int ufs_run(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int ret;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	ret = system(cmd);
	return WIFEXITED(ret) ? WEXITSTATUS(ret) : -1;
}

void ufs_fresh_image(const char *size, const char *mkfs_opts)
{
	ufs_sh("rm -f %s && truncate -s %s %s && mkfs.btrfs -q -f %s %s >/dev/null 2>&1", ufs_img, size, ufs_img,
	       mkfs_opts ? mkfs_opts : "", ufs_img);
}

void ufs_check_image(void)
{
	ufs_sh("btrfs check --readonly %s >%s/check.log 2>&1 || { cat %s/check.log; exit 1; }", ufs_img, ufs_dir,
	       ufs_dir);
}

ubt_fs *ufs_mount(const struct ubt_mount_opts *o)
{
	struct ubt_mount_opts defaults = { 0 };
	ubt_fs *fs;

	assert_int_equal(ubt_mount(ufs_img, o ? o : &defaults, &fs), 0);
	return fs;
}

ubt_file *ufs_create(ubt_fs *fs, const char *name, int flags, ubt_ino *inop)
{
	ubt_ino ino;
	struct stat st;
	ubt_file *f;

	assert_int_equal(ubt_mknod(fs, UBT_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &ino, &st), 0);
	assert_int_equal(ubt_open(fs, ino, flags, &f), 0);
	if (inop)
		*inop = ino;
	ubt_forget(fs, ino, 1);
	return f;
}

ubt_file *ufs_open_existing(ubt_fs *fs, const char *name, int flags)
{
	ubt_ino ino;
	ubt_file *f;

	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, name, &ino, NULL), 0);
	assert_int_equal(ubt_open(fs, ino, flags, &f), 0);
	ubt_forget(fs, ino, 1);
	return f;
}

uint64_t ufs_file_size(ubt_fs *fs, const char *name)
{
	struct stat st;
	ubt_ino ino;

	assert_int_equal(ubt_lookup(fs, UBT_ROOT_INO, name, &ino, &st), 0);
	ubt_forget(fs, ino, 1);
	return (uint64_t)st.st_size;
}

void ufs_check_content(ubt_file *f, const uint8_t *model, size_t size, bool direct)
{
	/* Room for more than @size (at least a sector more), so a longer file shows. */
	size_t cap = (size + UFS_SECTOR) / UFS_SECTOR * UFS_SECTOR + UFS_SECTOR;
	uint8_t *got = aligned_alloc(UFS_SECTOR, cap);
	ssize_t n = direct ? ubt_pread_direct(f, got, cap, 0) : ubt_pread(f, got, cap, 0);

	assert_int_equal(n, (ssize_t)size);
	assert_memory_equal(got, model, size);
	free(got);
}

void ufs_kernel_compare(const char *name, const uint8_t *model, size_t size)
{
	char path[512];
	FILE *out;

	if (geteuid() != 0) {
		printf("SKIP kernel comparison: needs root\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/model", ufs_dir);
	out = fopen(path, "wb");
	assert_non_null(out);
	assert_int_equal(fwrite(model, 1, size, out), size);
	fclose(out);
	ufs_sh("mkdir -p %s/m && mount -o loop,ro %s %s/m", ufs_dir, ufs_img, ufs_dir);
	ufs_sh("cmp %s/m/%s %s/model; rc=$?; umount %s/m; exit $rc", ufs_dir, name, ufs_dir, ufs_dir);
}

void ufs_verify_image(const char *name, const uint8_t *model, size_t size, bool direct)
{
	ubt_fs *fs;
	ubt_file *f;

	ufs_check_image();
	fs = ufs_mount(NULL);
	f = ufs_open_existing(fs, name, O_RDONLY);
	if (direct)
		assert_int_equal(ufs_file_size(fs, name), size);
	ufs_check_content(f, model, size, false);
	if (direct)
		ufs_check_content(f, model, size, true);
	assert_int_equal(ubt_close(f), 0);
	assert_int_equal(ubt_unmount(fs), 0);
	ufs_kernel_compare(name, model, size);
}

uint64_t ufs_xorshift(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}
