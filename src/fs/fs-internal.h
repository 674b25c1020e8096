/*
 * fs-internal.h — internal entry points of the mount code that are not part of ubtrfs.h: mounting
 * on an already opened device (tests put crash-recording or fault-injecting devices there).
 */
#ifndef UBT_FS_FS_INTERNAL_H
#define UBT_FS_FS_INTERNAL_H

#include <ubtrfs.h>

struct ubt_bdev;

/*
 * ubt_mount on @bdev; @name names it in messages. Takes ownership of @bdev: it is closed at
 * unmount, or before returning on error.
 */
int ubt_mount_bdev(struct ubt_bdev *bdev, const char *name, const struct ubt_mount_opts *opts, ubt_fs **out);

#endif
