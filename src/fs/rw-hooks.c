/*
 * rw-hooks.c — what a read-write mount does after opening and before closing, beyond the trees:
 * processing orphan items left by a crash (inodes unlinked while open), and releasing the
 * held-inode registry at unmount.
 */
#include "fs.h"

#include "../inode/inode-write.h"
#include "../util/messages.h"

int ubt_fs_rw_start(ubt_fs *fs)
{
	int ret = ubt_orphan_cleanup(fs->subvols[0]);

	if (ret)
		ubt_err("cleaning up orphan inodes of subvolume %llu failed: %s",
			(unsigned long long)fs->subvols[0]->objectid, strerror(-ret));
	return ret;
}

void ubt_fs_rw_stop(ubt_fs *fs)
{
	ubt_inode_registry_drop(fs->fs_info);
}
