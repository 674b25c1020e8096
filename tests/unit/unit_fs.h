/*
 * unit_fs.h — helpers the cmocka unit tests share for work on real images: the test program's
 * scratch directory and image path, shell commands, a fresh mkfs.btrfs image, `btrfs check
 * --readonly`, mounting through the library, creating/opening files in the root directory,
 * comparing a file with a model (through ubtrfs after a remount, and as root through the kernel),
 * and the xorshift generator the randomised tests step. Include after <cmocka.h>.
 */
#ifndef UBT_TESTS_UNIT_FS_H
#define UBT_TESTS_UNIT_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ubtrfs.h>

extern char ufs_dir[256]; /* the scratch directory made by ufs_setup() */
extern char ufs_img[300]; /* its image file, ufs_dir/img */

/* Make /tmp/ubt-@name-XXXXXX and the image path in it: 0, or -1 (for a cmocka group setup). */
int ufs_setup(const char *name);
/* Unmount ufs_dir/@mnt if mounted and remove the directory: 0, or -1 if the command failed. */
int ufs_teardown(const char *mnt);

/* Run a shell command: its exit status, -1 if it did not exit. */
int ufs_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run a shell command that must succeed (a failure is reported at the caller's line). */
#define ufs_sh(...) assert_int_equal(ufs_run(__VA_ARGS__), 0)

/* A new image of @size (truncate's syntax) made by mkfs.btrfs with @mkfs_opts (or none). */
void ufs_fresh_image(const char *size, const char *mkfs_opts);
/* `btrfs check --readonly` of the image must pass; its log is printed when it does not. */
void ufs_check_image(void);

/* Mount the image with @o (NULL: default options); the mount must succeed. */
ubt_fs *ufs_mount(const struct ubt_mount_opts *o);
/* A new regular file @name (0644) in the root directory, opened with @flags; its inode in @inop. */
ubt_file *ufs_create(ubt_fs *fs, const char *name, int flags, ubt_ino *inop);
/* The existing file @name of the root directory, opened with @flags. */
ubt_file *ufs_open_existing(ubt_fs *fs, const char *name, int flags);
/* The size of @name in the root directory. */
uint64_t ufs_file_size(ubt_fs *fs, const char *name);

/* Read the whole file (buffered, or direct in aligned pieces): exactly @size bytes equal to @model. */
void ufs_check_content(ubt_file *f, const uint8_t *model, size_t size, bool direct);
/* As root: the kernel mounts the image read-only and its @name equals @model; else a SKIP line. */
void ufs_kernel_compare(const char *name, const uint8_t *model, size_t size);
/*
 * After unmount: btrfs check, a remount reads @name back (with @direct also its size and a direct
 * read), and as root so does the kernel.
 */
void ufs_verify_image(const char *name, const uint8_t *model, size_t size, bool direct);

/* One xorshift64 step of *@state. */
uint64_t ufs_xorshift(uint64_t *state);

#endif
