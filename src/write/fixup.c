/*
 * fixup.c — the fixup worker (seeds 001/000/004): pages dirtied behind the write path's back are
 * given copy-on-write setup before they are written. Placeholder queue until the worker lands:
 * the page stays dirty and CHECKED, so nothing is written as is and nothing is lost.
 */
#include "write-internal.h"

void ubt_fixup_queue(struct ubt_inode_state *st, struct ubt_page *page)
{
	(void)st;
	(void)page;
}
